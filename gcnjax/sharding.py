"""Chains over many devices: the chain axis sharded, the params replicated.

Langevin chains are independent given the params, so the natural way past
one device is data parallelism over chains: every device holds a slice of
the chains (their leading axis split over a 1-D mesh of all devices) and a
full copy of the params. Nothing in the samplers or train steps changes:
they are jit'd functions of arrays, and jit compiles them for the shardings
of the arrays it is given (GSPMD); the learning gradient's mean over chains
becomes an all-reduce. The numbers do not depend on the sharding: the same
keys give the same samples and params on one device or on many (to float32
rounding of the reductions).

    from gcnjax import sharding
    mesh = sharding.chain_mesh()                     # all devices, axis "chains"
    state = sharding.shard_state(state, mesh)        # chains split, the rest replicated
    data = sharding.shard_chains(data, mesh)         # the data batch split too
    state, metrics = train_step(state, data)         # the ordinary jit'd step

    x, info = sharding.sample(key, energy_fn, x0, mesh=mesh, n_steps=..., step_size=...)

The number of chains (and of data) must be a multiple of the number of
devices.

Several hosts (e.g. a GPU cluster): call ``jax.distributed.initialize()``
first in every process (with ``coordinator_address="host0:1234",
num_processes=N, process_id=i`` where the cluster does not set them; on
Cloud TPU and SLURM they are found automatically). ``jax.devices()`` then
lists the devices of all hosts and :func:`chain_mesh` spans them. Each
process builds its own part of a global array with
``jax.make_array_from_process_local_data(sharding.chains_sharding(mesh),
local_rows)`` (every process passes its rows of the chain axis), runs the
same program, and reads back only its addressable shards
(``x.addressable_shards``); params are initialised from the same key in
every process, so the replicated copies agree.

On one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` makes
eight host devices to try this (tests/test_sharding.py does, in a
subprocess, since the flag must be set before jax starts).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gcnjax import langevin

PyTree = Any

__all__ = ["CHAIN_AXIS", "chain_mesh", "chains_sharding", "replicated", "shard_chains", "replicate",
           "shard_state", "sample"]

CHAIN_AXIS = "chains"


def chain_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh (axis ``"chains"``) of ``devices`` (default: all of them)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("chain_mesh needs at least one device.")
    return Mesh(np.array(devices), (CHAIN_AXIS,))


def chains_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (chain) axis split over the mesh, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(CHAIN_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def _check_divisible(tree: PyTree, mesh: Mesh, what: str) -> None:
    n_devices = mesh.devices.size
    for leaf in jax.tree_util.tree_leaves(tree):
        if np.ndim(leaf) == 0 or np.shape(leaf)[0] % n_devices:
            raise ValueError(
                f"{what} of shape {np.shape(leaf)} cannot be split over {n_devices} devices: its leading (chain) "
                f"axis must be a multiple of {n_devices}; use a multiple of {n_devices} chains (or fewer devices "
                "in chain_mesh(devices=...))."
            )


def _place(tree: PyTree, mesh: Mesh, where: NamedSharding) -> PyTree:
    """``jax.device_put(tree, where)``; where ``mesh`` spans other processes
    each process places the same full value from the host (PRNG keys by
    their data) and keeps its own part."""
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return jax.device_put(tree, where)

    def put(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(a)), where)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
        return jax.device_put(np.asarray(a), where)

    return jax.tree_util.tree_map(put, tree)


def shard_chains(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf with its leading axis split over ``mesh``."""
    _check_divisible(tree, mesh, "an array of chains")
    return _place(tree, mesh, chains_sharding(mesh))


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf whole on every device of ``mesh``."""
    return _place(tree, mesh, replicated(mesh))


def shard_state(state, mesh: Mesh, chain_fields: Sequence[str] = ("chains",)):
    """A training state (a NamedTuple such as ``DescriptorState``) with the
    fields named in ``chain_fields`` sharded over the chains and all other
    fields (params, optimizer state, key, step) replicated.

    For a ``GeneratorState`` pass ``chain_fields=("latents",)``: the
    training set's latents are then split over devices (its size must be a
    multiple of the device count).
    """
    missing = [f for f in chain_fields if f not in state._fields]
    if missing:
        raise ValueError(f"the state has no field(s) {missing}; its fields are {state._fields}.")
    return state._replace(**{
        name: shard_chains(value, mesh) if name in chain_fields else replicate(value, mesh)
        for name, value in zip(state._fields, state)
    })


def sample(key, energy_fn, x0: PyTree, *, mesh: Optional[Mesh] = None, **sample_kwargs):
    """:func:`gcnjax.langevin.sample` with the chains split over ``mesh``
    (default: all devices) and the samples left split: ``(x, info)``.

    ``sample_kwargs`` are those of :func:`gcnjax.langevin.sample`
    (``n_steps``, ``step_size``, ``noise_scale``, ``chunk``, …). The energy's
    params are closed over, so jit copies them to every device.
    """
    mesh = chain_mesh() if mesh is None else mesh
    x0 = shard_chains(x0, mesh)
    run = jax.jit(lambda k, x: langevin.sample(k, energy_fn, x, **sample_kwargs),
                  in_shardings=(replicated(mesh), chains_sharding(mesh)))
    return run(key, x0)
