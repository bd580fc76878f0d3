"""Sampling at scale: any learned run's chains, block by block, on every device, streamed to disk.

A family says how its learned model draws samples (:class:`Chains`: a pure,
jit-able ``draw(params, key, n)``: where its chains start, what they run,
what they record); :func:`sample_run` does the rest the same way for every
family:

1. the ``N`` chains are cut into blocks of ``block`` chains, each block one
   compiled call (the last one padded to the same size, so one compilation
   serves them all), its chains split over the devices of a 1-D mesh
   (:mod:`gcnjax.sharding`; params replicated);
2. each finished block is written into ``samples.npy`` (an ``.npy`` file
   of the final shape, filled in place: ``N`` is bounded by the disk, not
   the memory) with its energy traces and acceptance rates, while the next
   block runs on the device;
3. ``progress.json`` records the blocks done after their rows are written,
   so a killed job continues with ``resume=True`` from its last finished
   block: none computed twice, none lost;
4. the report: a grid of samples, the energy traces, the chains'
   diagnostics (ESS and split R̂ of the energy and of three fixed
   projections of x, by BlackJAX's :mod:`blackjax.diagnostics`), the
   throughput, and for a descriptor run where its samples sit against the
   data: their mean learned energy (:func:`spurious_mode`) and their first
   layer's Gram statistics (:func:`unlike_data`).

Block ``b`` draws with ``jax.random.fold_in(key, b)``: the samples depend on
the seed and the block size only: not on the number of devices (JAX's
partitionable threefry draws the same numbers however the array is split),
nor on where a job was interrupted.

:func:`logdensity_fn` gives a learned run's log-density in the form
BlackJAX's kernels take (``blackjax.mala(logdensity, step_size)``, HMC,
NUTS).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import sharding
from gcnjax.langevin import LangevinConfig
from gcnjax.train import RunDir, _jsonable, interrupt_between_steps, write_atomic

__all__ = ["Draw", "Chains", "SampleSettings", "ChainChanges", "langevin_draw", "sample_run", "sample_chains", "load_chains",
           "logdensity_fn", "chain_diagnostics", "N_PROJECTIONS", "spurious_mode", "energy_comparison",
           "SPURIOUS_MODE_MARGIN", "unlike_data",
           "first_layer_comparison", "STATISTICS_SAMPLES"]

N_PROJECTIONS = 3


class Draw(NamedTuple):
    """One block's chains.

    x: the samples ``(n, *shape)`` in model units.
    energy: ``(T, n)`` the energy at ``T`` evenly spaced steps of each
      chain (None for exact draws, e.g. a generator's ``g(z)``).
    projections: ``(T, n, P)`` x projected on ``P`` fixed unit directions
      at the same steps (None likewise).
    acceptance: ``(n,)`` each chain's mean Metropolis–Hastings acceptance
      probability (None without MALA).
    final_energy: ``(n,)`` the energy of each chain's end point (None where
      nothing is recorded).
    """

    x: jax.Array
    energy: Optional[jax.Array] = None
    projections: Optional[jax.Array] = None
    acceptance: Optional[jax.Array] = None
    final_energy: Optional[jax.Array] = None


class Chains(NamedTuple):
    """A learned model's chains, as :func:`sample_chains` draws them.

    shape: one sample's shape (model units).
    params: the model's params (replicated over the devices).
    draw: ``(params, key, n) -> Draw``: ``n`` chains from their start to
      their end; pure and jit-able, ``n`` static.
    to_data: model units → data units (pixels 0..255, or sound in [−1, 1]).
    picture: data units → a :class:`gcnjax.run.Picture` (a grid, a frame
      strip per video, waveforms).
    describe: one sentence of what a chain does, for the report.
    n_steps: the Langevin steps of one chain (0 for exact draws).
    logdensity: ``(params, x) -> log p(x)`` up to a constant, of ONE sample
      (no chain axis): what BlackJAX's kernels take; None where the model
      has no density over x.
    conditions: observations the chains are conditioned on (model units,
      ``(M, ...)``), or None: chain ``i`` of the job is conditioned on row
      ``i % M``, and ``draw`` takes the block's rows as a fourth argument,
      ``draw(params, key, n, rows)`` (a generator's posterior of z given x).
    reference: the learned run's mean energies under the same params, of
      its observed data (``"observed"``) and of its learning's own chains
      at the end (``"chains"``), or None: the report sets the samples' mean
      energy beside them and warns of a spurious mode
      (:func:`spurious_mode`).
    statistics: ``samples (data units) -> {"samples": d, "white_noise": d₀,
      "chains": d₁}``, or None: the Gram distance of the samples' first-layer
      responses to the observed data's beside white noise's and learning's
      chains' (:func:`gcnjax.descriptor.first_layer_statistics`); the report
      warns when the samples are farther than the noise (:func:`unlike_data`).
    """

    shape: Tuple[int, ...]
    params: Any
    draw: Callable[[Any, jax.Array, int], Draw]
    to_data: Callable[[np.ndarray], np.ndarray]
    picture: Callable[[np.ndarray], Any]
    describe: str
    n_steps: int = 0
    logdensity: Optional[Callable[[Any, jax.Array], jax.Array]] = None
    conditions: Optional[np.ndarray] = None
    reference: Optional[Dict[str, float]] = None
    statistics: Optional[Callable[[np.ndarray], Dict[str, float]]] = None

    def rows(self, first: int, n: int) -> Optional[np.ndarray]:
        """The conditions of chains ``first .. first + n − 1`` (None if the
        chains are not conditioned)."""
        if self.conditions is None:
            return None
        return self.conditions[(first + np.arange(n)) % self.conditions.shape[0]]


LATENT_SOURCES = ("prior", "fitted")


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """What a sampling job draws, besides the run's own chain settings.

    n_chains: how many samples.
    steps: Langevin steps per chain (None: the run's).
    langevin: changes to the run's :class:`gcnjax.langevin.LangevinConfig`
      (``{"step_size": 0.01, "mala": True}``), applied after ``steps``.
    start: where descriptor chains start: ``"zeros"``, ``"noise"``,
      ``"uniform"`` (None: the run's own ``chain_init``).
    start_scale: the noise's scale for ``start`` (None: the run's).
    frames: the length of a video or sound sample (None: the observed one);
      the spatial-temporal nets are convolutional in time.
    trace_points: energy and projections recorded at this many steps of
      each chain (0: none).
    given: observations (a data path, as ``gcnjax abp train --data`` takes)
      for a generator's posterior: Langevin on z given each of them, chain
      ``i`` on observation ``i % M`` (None: the prior's exact draws).
    latents: where a generator's exact draws take z: ``"prior"``, the
      model's N(0, I); ``"fitted"``, the Gaussian fitted to the run's
      training latents (:func:`gcnjax.generator.fitted_latent_gaussian`).
    """

    n_chains: int = 64
    steps: Optional[int] = None
    langevin: Tuple[Tuple[str, Any], ...] = ()
    start: Optional[str] = None
    start_scale: Optional[float] = None
    frames: Optional[int] = None
    trace_points: int = 10
    given: Optional[str] = None
    latents: str = "prior"

    def __post_init__(self):
        if not isinstance(self.n_chains, (int, np.integer)) or self.n_chains < 1:
            raise ValueError(f"the number of chains must be a whole number >= 1 (--chains), got {self.n_chains!r}.")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"--steps must be >= 0, got {self.steps!r}.")
        if self.trace_points < 0:
            raise ValueError(f"trace_points must be >= 0, got {self.trace_points!r}.")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"--frames must be >= 1, got {self.frames!r}.")
        if self.latents not in LATENT_SOURCES:
            raise ValueError(f"--latents must be one of {LATENT_SOURCES}, got {self.latents!r}.")
        if self.latents != "prior" and self.given is not None:
            raise ValueError("--latents fitted draws new latents; --given samples the posterior of z given "
                             "observations: give one of them.")

    def chain(self, sampler: LangevinConfig) -> LangevinConfig:
        """The run's chain with this job's changes."""
        if self.steps is not None:
            sampler = dataclasses.replace(sampler, n_steps=int(self.steps))
        return dataclasses.replace(sampler, **dict(self.langevin)) if self.langevin else sampler


@dataclasses.dataclass(frozen=True)
class ChainChanges:
    """The chain settings a sampling job may change, as command-line flags:
    one per field of :class:`gcnjax.langevin.LangevinConfig`
    (``--langevin.step-size``, ``--langevin.mala``, ...)."""

    langevin: LangevinConfig = LangevinConfig()


# ---------------------------------------------------------------- chains


def _directions(shape: Sequence[int], n: int = N_PROJECTIONS) -> jax.Array:
    """``n`` fixed unit directions in the space of one sample (key 0): the
    projections the diagnostics follow."""
    size = int(np.prod(shape))
    d = jax.random.normal(jax.random.key(0), (n, size), jnp.float32)
    return d / jnp.linalg.norm(d, axis=1, keepdims=True)


def langevin_draw(key: jax.Array, energy_fn: Callable[[jax.Array], jax.Array], x0: jax.Array,
                  sampler: LangevinConfig, trace_points: int) -> Draw:
    """``sampler`` run from ``x0`` (a batch of chains) on ``energy_fn`` (of
    one chain), recording E and :data:`N_PROJECTIONS` fixed projections of x
    at ``trace_points`` evenly spaced steps.

    The chain runs as ``trace_points`` segments of ``K // trace_points``
    steps (the remainder first). The record costs no extra evaluation of E:
    without MALA it is taken where each segment starts (the sampler computes
    E there for its gradient), with MALA where it ends (the sampler's
    ``info.energy`` is after the step); the end points' E (``final_energy``)
    costs one evaluation per chain without MALA. ``trace_points=0`` records
    nothing (one call of :meth:`LangevinConfig.run`).
    """
    K = sampler.n_steps
    points = min(int(trace_points), K)
    if points == 0 or K == 0:
        x, info = sampler.run(key, energy_fn, x0) if K else (x0, None)
        acceptance = jnp.mean(info.acceptance_rate, axis=0) if (K and sampler.mala) else None
        return Draw(x, acceptance=acceptance)
    directions = _directions(x0.shape[1:])
    project = lambda x: x.reshape(x.shape[0], -1) @ directions.T
    seg, rem = divmod(K, points)
    k_rem, k_segments = jax.random.split(key)
    x, acc_sum = x0, jnp.zeros(x0.shape[0], jnp.float32)
    if rem:
        x, info = dataclasses.replace(sampler, n_steps=rem).run(k_rem, energy_fn, x)
        acc_sum = acc_sum + jnp.sum(info.acceptance_rate, axis=0)
    segment = dataclasses.replace(sampler, n_steps=seg)

    def body(carry, k):
        x, acc = carry
        x_next, info = segment.run(k, energy_fn, x)
        record = (info.energy[-1], project(x_next)) if sampler.mala else (info.energy[0], project(x))
        return (x_next, acc + jnp.sum(info.acceptance_rate, axis=0)), record

    # Unrolled as the chain itself would be (XLA:CPU runs a short chain fastest without a loop).
    unroll = points if sampler.resolved_unroll is True else 1
    (x, acc_sum), (energy, projections) = jax.lax.scan(body, (x, acc_sum), jax.random.split(k_segments, points),
                                                       unroll=unroll)
    final = energy[-1] if sampler.mala else jax.vmap(energy_fn)(x)
    return Draw(x, energy, projections, acc_sum / K if sampler.mala else None, final)


# ---------------------------------------------------------------- the job


def _families():
    from gcnjax import abp, coop, multigrid, synthesis

    return {f.name: f for f in (synthesis.FAMILY, abp.FAMILY, multigrid.FAMILY, coop.FAMILY)}


def load_chains(run_dir, settings: SampleSettings = SampleSettings()) -> Chains:
    """The :class:`Chains` of the learned run in ``run_dir`` (any family),
    with ``settings``' changes to its chain."""
    run_dir = Path(run_dir)
    payload = RunDir.read_config(run_dir)
    if not (run_dir / "params.msgpack").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no learned params (params.msgpack): is the run finished? "
                                "Finish it with --resume, then sample it.")
    name = payload.get("family", "descriptor")
    family = _families().get(name)
    if family is None or family.chains is None:
        known = ", ".join(sorted(n for n, f in _families().items() if f.chains is not None))
        raise ValueError(f"{str(run_dir)!r} is a run of {name!r}, which has no sampler; runs of {known} can be "
                         "sampled.")
    if settings.latents != "prior" and name != "generator":
        raise ValueError(f"--latents chooses where a generator's z is drawn; {str(run_dir)!r} is a run of {name!r}, "
                         "which has no latents: leave --latents out.")
    if settings.given is not None and name != "generator":
        raise ValueError(f"--given conditions a generator's latents on observations; {str(run_dir)!r} is a run of "
                         f"{name!r}, whose chains are not conditioned: leave --given out.")
    return family.chains(run_dir, payload, settings)


def _peak_memory_gib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _NpyFile:
    """A ``.npy`` file of a fixed shape, created whole (sparse) and filled
    row block by row block with ordinary writes: a full disk is an
    ``OSError``, never a crash of a memory map."""

    def __init__(self, path: Path, shape: Tuple[int, ...], dtype=np.float32, *, create: bool):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if create:
            with open(path, "wb") as fh:
                np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                         "fortran_order": False, "shape": self.shape})
                self.offset = fh.tell()
                fh.truncate(self.offset + self.shape[0] * self.row_bytes)
        else:
            array = np.load(path, mmap_mode="r")
            if array.shape != self.shape or array.dtype != self.dtype:
                raise ValueError(f"{str(path)!r} holds {array.shape} {array.dtype}, not {self.shape} {self.dtype}; "
                                 "it belongs to another job: start again with --overwrite.")
            self.offset = array.offset
        self.fh = open(path, "r+b")

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        self.fh.seek(self.offset + start * self.row_bytes)
        self.fh.write(rows.tobytes())

    def flush(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _settings_record(chains: Chains, settings: SampleSettings, block: int, seed: int, run_dir) -> Dict[str, Any]:
    return {"job": "samples", "run": str(Path(run_dir).resolve()) if run_dir else None, "n_chains": settings.n_chains,
            "block": block, "seed": seed, "settings": _jsonable(settings),
            "shape": list(chains.shape), "n_steps": chains.n_steps, "describe": chains.describe}


def default_block(n_chains: int, n_devices: int) -> int:
    """Chains per compiled call: up to 256 per device (enough to fill a
    CPU's or a GPU's lanes for the papers' nets, small enough to keep a
    block's activations in memory), a multiple of the device count."""
    per_device = min(256, -(-n_chains // n_devices))
    return per_device * n_devices


def sample_chains(chains: Chains, out, *, n_chains: int, seed: int = 0, block: Optional[int] = None,
                  devices: Optional[int] = None, resume: bool = False, overwrite: bool = False,
                  quiet: bool = False, title: str = "Samples", run_dir=None,
                  settings: Optional[SampleSettings] = None) -> Dict[str, Any]:
    """Draw ``n_chains`` samples of ``chains`` into the directory ``out``
    (see the module's docstring): ``samples.npy`` (data units), its
    ``energy.npy`` ``(N, T)`` and ``projections.npy`` ``(N, T, P)`` traces,
    ``acceptance.npy`` (MALA), ``final_energy.npy`` ``(N,)`` (E at each
    chain's end), ``samples.png``, ``energy.png``,
    ``report.md``, ``summary.json`` (throughput, memory, diagnostics), ``config.json`` (the
    job), ``progress.json``.

    ``devices``: how many of ``jax.devices()`` to use (default all);
    ``block``: chains per compiled call (default :func:`default_block`), a
    multiple of the devices (rounded up to one, with a note). Returns a
    summary: ``out``, ``report``, ``samples`` (path), ``seconds``,
    ``chains_per_second``, ``chain_steps_per_second`` (blocks after the
    first, which compiles), ``peak_memory_gib``, ``diagnostics``.
    """
    from gcnjax.run import out_of_memory

    settings = settings or SampleSettings(n_chains=n_chains)
    available = jax.devices()
    n_dev = len(available) if devices is None else int(devices)
    if not 1 <= n_dev <= len(available):
        raise ValueError(f"--devices must be between 1 and {len(available)} (the devices here), got {devices!r}.")
    mesh = sharding.chain_mesh(available[:n_dev])
    block = default_block(n_chains, n_dev) if block is None else int(block)
    if block < 1:
        raise ValueError(f"--block must be >= 1 chain, got {block}.")
    if block % n_dev:
        rounded = -(-block // n_dev) * n_dev
        print(f"note: a block of {block} chains cannot be split over {n_dev} devices; using {rounded}.",
              file=sys.stderr)
        block = rounded
    n_blocks = -(-n_chains // block)
    shape = tuple(chains.shape)
    sample_bytes = n_chains * int(np.prod(shape)) * 4
    record = _settings_record(chains, settings, block, seed, run_dir)
    lead = jax.process_index() == 0
    opened = RunDir(out, overwrite=overwrite, resume=resume and (Path(out) / "config.json").is_file()) if lead \
        else _Follower(out)
    with opened as run:
        progress = run.path / "progress.json"
        done = 0
        if lead and resume and (run.path / "config.json").is_file():
            saved = json.loads((run.path / "config.json").read_text())
            differ = [k for k in record if k != "describe" and saved.get(k) != _jsonable(record[k])]
            if differ:
                raise ValueError(f"cannot resume {str(run.path)!r}: its job differs in {', '.join(differ)}; resume "
                                 "with the same --run, --chains, --block, --seed and chain settings, or --overwrite.")
            done = json.loads(progress.read_text())["blocks"] if progress.is_file() else 0
        elif lead:
            free = shutil.disk_usage(run.path).free
            if sample_bytes > free:
                raise OSError(f"the samples need {sample_bytes / 2**30:.1f} GiB and {str(run.path)!r} has "
                              f"{free / 2**30:.1f} GiB free; sample fewer chains or write elsewhere (--out).")
            write_atomic(run.path / "config.json", json.dumps(record, indent=2))
        first = _draw_block(chains, mesh, block)
        probe = jax.eval_shape(lambda: first.fn(chains.params, jax.random.key(0), chains.rows(0, block)))
        names = {"samples": (n_chains, *shape)}
        if probe.energy is not None:
            t = probe.energy.shape[0]
            names.update(energy=(n_chains, t), projections=(n_chains, t, N_PROJECTIONS))
        if probe.acceptance is not None:
            names["acceptance"] = (n_chains,)
        if probe.final_energy is not None and (not done or (run.path / "final_energy.npy").is_file()):
            names["final_energy"] = (n_chains,)  # (a job begun before it was recorded goes on without it)
        files = {name: _NpyFile(run.path / f"{name}.npy", size, create=not done) for name, size in names.items()} \
            if lead else {}
        if jax.process_count() > 1:  # the other processes open what the first made
            _sync("gcnjax-sample-open")
            done = json.loads(progress.read_text())["blocks"] if progress.is_file() else 0
            files = files or {name: _NpyFile(run.path / f"{name}.npy", size, create=False)
                              for name, size in names.items()}
        key = jax.random.key(seed)
        timing = {"first": None, "rest": 0.0, "rest_blocks": 0}
        t0 = time.perf_counter()
        bar = _bar(n_chains, done * block, quiet or not lead, title)
        try:
            with interrupt_between_steps() as interrupted:  # Ctrl-C: the block in hand is written first
                pending = first.call(jax.random.fold_in(key, done), done * block) if done < n_blocks else None
                for b in range(done, n_blocks):
                    t_block = time.perf_counter()
                    result = pending
                    if b + 1 < n_blocks:  # the device runs the next block while this one is written
                        pending = first.call(jax.random.fold_in(key, b + 1), (b + 1) * block)
                    lo, hi = b * block, min(n_chains, (b + 1) * block)
                    for start, rows in _local_rows(result.x, 0, hi - lo):
                        files["samples"].write(lo + start, chains.to_data(rows))
                    if "energy" in files:
                        for start, rows in _local_rows(result.energy, 1, hi - lo):
                            files["energy"].write(lo + start, rows.T)
                        for start, rows in _local_rows(result.projections, 1, hi - lo):
                            files["projections"].write(lo + start, rows.transpose(1, 0, 2))
                    for name in ("acceptance", "final_energy"):
                        if name in files:
                            for start, rows in _local_rows(getattr(result, name), 0, hi - lo):
                                files[name].write(lo + start, rows)
                    for f in files.values():
                        f.flush()
                    _return_freed_memory()
                    if jax.process_count() > 1:
                        _sync(f"gcnjax-sample-block-{b}")
                    if lead:
                        write_atomic(progress, json.dumps({"blocks": b + 1, "of": n_blocks}))
                    seconds = time.perf_counter() - t_block
                    if timing["first"] is None:
                        timing["first"] = seconds
                    else:
                        timing["rest"] += seconds
                        timing["rest_blocks"] += 1
                    bar.update(hi - lo)
                    bar.set_postfix({"chains/s": f"{(hi - lo) / max(seconds, 1e-9):.0f}"})
                    if interrupted.is_set():
                        raise KeyboardInterrupt
        except jax.errors.JaxRuntimeError as err:
            memory = out_of_memory(err, f"lower --block (now {block} chains per call)")
            if memory is None:
                raise
            raise memory from None
        except OSError as err:
            raise OSError(f"cannot write the samples in {str(run.path)!r} ({err.strerror or err}); free some "
                          "space") from None
        except KeyboardInterrupt:
            raise KeyboardInterrupt("interrupted") from None
        finally:
            bar.close()
            for f in files.values():
                f.close()
        seconds = time.perf_counter() - t0
        if not lead:
            return {"out": run.path, "samples": run.path / "samples.npy", "seconds": seconds}
        return _finish(run.path, chains, n_chains, block, n_dev, seconds, timing, title, settings)


def _return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's
    ``malloc_trim``), so that the freed host copies of a long job's blocks
    do not stay resident; a no-op where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


class _Follower:
    """A process other than the first of a multi-process job: it writes its
    rows into the files the first one made, and holds no lock."""

    def __init__(self, path):
        self.path = Path(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sync(name: str) -> None:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _local_rows(array: jax.Array, axis: int, n: int):
    """``(start, rows)`` of this process's part of a block's ``array``
    along its chain ``axis``, the first ``n`` chains only (the rest pad the
    last block): the whole array on one process, its addressable shards
    (each once) on several."""
    if array.is_fully_addressable:
        yield 0, np.take(np.asarray(jax.device_get(array)), np.arange(n), axis=axis)
        return
    seen = set()
    for shard in array.addressable_shards:
        rows = shard.index[axis]
        start = rows.start or 0
        if start in seen or start >= n:
            continue
        seen.add(start)
        data = np.asarray(shard.data)
        keep = min(data.shape[axis], n - start)
        yield start, np.take(data, np.arange(keep), axis=axis)


class _Compiled(NamedTuple):
    fn: Callable
    call: Callable


def _draw_block(chains: Chains, mesh, block: int) -> _Compiled:
    """One block's draw, jit'd for ``block`` chains split over ``mesh``."""
    split = sharding.chains_sharding(mesh)

    def fn(params, key, rows=None):
        d = chains.draw(params, key, block) if rows is None else chains.draw(params, key, block, rows)
        constrain = lambda a, axis: None if a is None else jax.lax.with_sharding_constraint(
            a, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*([None] * axis + [sharding.CHAIN_AXIS]))))
        return Draw(jax.lax.with_sharding_constraint(d.x, split), constrain(d.energy, 1),
                    constrain(d.projections, 1), constrain(d.acceptance, 0), constrain(d.final_energy, 0))

    params = sharding.replicate(chains.params, mesh)
    compiled = jax.jit(fn)

    def call(key, first):
        rows = chains.rows(first, block)
        return compiled(params, key) if rows is None else compiled(params, key, sharding.shard_chains(rows, mesh))

    return _Compiled(fn, call)


def _bar(total: int, initial: int, quiet: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="chain", disable=quiet or not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------- diagnostics and report


def chain_diagnostics(traces: np.ndarray) -> Dict[str, float]:
    """ESS and split R̂ of ``(n_chains, n_points)`` traces of one scalar, by
    BlackJAX (:func:`blackjax.diagnostics.effective_sample_size` and
    :func:`~blackjax.diagnostics.potential_scale_reduction` on the chains'
    halves: split R̂). NaN where undefined (fewer than 4 points, constant
    traces)."""
    from gcnjax.metrics import effective_sample_size, rhat

    traces = np.asarray(traces, np.float64)
    try:
        return {"ess": effective_sample_size(traces), "rhat": rhat(traces)}
    except ValueError:
        return {"ess": float("nan"), "rhat": float("nan")}


def _finish(path: Path, chains: Chains, n_chains: int, block: int, n_dev: int, seconds: float, timing,
            title: str, settings: SampleSettings) -> Dict[str, Any]:
    from gcnjax.run import save_picture

    samples = np.load(path / "samples.npy", mmap_mode="r")
    save_picture(path / "samples.png", chains.picture(np.asarray(samples[:64])))
    lines = [f"# {title}", "", f"{n_chains} samples of shape {'×'.join(map(str, chains.shape))}: {chains.describe}",
             f"Blocks of {block} chains (one compiled call each) over {n_dev} device(s) "
             f"({jax.devices()[0].platform}).", "", "![samples](samples.png)", ""]
    diagnostics: Dict[str, Dict[str, float]] = {}
    if (path / "energy.npy").is_file():
        energy = np.load(path / "energy.npy", mmap_mode="r")
        projections = np.load(path / "projections.npy", mmap_mode="r")
        _plot_energy(np.asarray(energy), _trace_steps(chains.n_steps, energy.shape[1], (path / "acceptance.npy").is_file()),
                     path / "energy.png")
        diagnostics["energy"] = chain_diagnostics(energy)
        for p in range(projections.shape[-1]):
            diagnostics[f"projection {p + 1}"] = chain_diagnostics(projections[..., p])
        lines += ["## Chains", "", "![energy](energy.png)", "",
                  f"Over the {n_chains} chains, each recorded at {energy.shape[1]} evenly spaced steps of "
                  f"{chains.n_steps} (BlackJAX's diagnostics; split R̂ near 1: the chains agree; short-run chains "
                  "that have not mixed show a large R̂):", "",
                  "| quantity | ESS | split R̂ |", "|---|---|---|",
                  *[f"| {name} | {d['ess']:.1f} | {d['rhat']:.3f} |" for name, d in diagnostics.items()], ""]
    if (path / "acceptance.npy").is_file():
        acceptance = np.load(path / "acceptance.npy")
        diagnostics["acceptance"] = {"mean": float(acceptance.mean()), "min": float(acceptance.min())}
        lines += [f"MALA acceptance: mean {acceptance.mean():.3f}, lowest chain {acceptance.min():.3f}.", ""]
    energies = None
    if (path / "final_energy.npy").is_file() and chains.reference is not None:
        final = np.load(path / "final_energy.npy", mmap_mode="r")
        energies = {**chains.reference, "samples": float(np.mean(final, dtype=np.float64))}
        lines += energy_comparison(energies, "samples", f"these {n_chains} samples ({chains.n_steps} steps)")
        if spurious_mode(energies):
            print(f"warning: the samples' mean energy {energies['samples']:.4g} is far below the observed data's "
                  f"({energies['observed']:.4g}) and learning's chains' ({energies['chains']:.4g}): the model has a "
                  f"mode its learning never visited, or the chains have not yet left their start (see "
                  f"{path / 'report.md'}).", file=sys.stderr)
    first_layer = None
    if chains.statistics is not None:
        first_layer = chains.statistics(np.asarray(samples[:STATISTICS_SAMPLES]))
        label = f"these samples ({min(n_chains, STATISTICS_SAMPLES)} of them)"
        lines += first_layer_comparison(first_layer, label)
        if unlike_data(first_layer):
            print(f"warning: the samples' first-layer statistics are farther from the observed data's than white "
                  f"noise's (Gram distance {first_layer['samples']:.4g} against {first_layer['white_noise']:.4g}): "
                  f"they do not look like the data (see {path / 'report.md'}).", file=sys.stderr)
    rate = None
    if timing["rest_blocks"]:
        rate = timing["rest_blocks"] * block / timing["rest"]
    elif timing["first"]:
        rate = min(n_chains, block) / timing["first"]
    peak = _peak_memory_gib()
    when = "after the first block (which compiles)" if timing["rest_blocks"] else "its one block's compilation included"
    lines += ["## Throughput", "",
              f"{seconds:.1f} s in this session; " + (
                  f"{rate:.1f} chains/s ({rate * max(chains.n_steps, 1):.0f} chain-steps/s), {when}; "
                  if rate else "") + f"peak resident memory {peak:.2f} GiB.", ""]
    report = path / "report.md"
    write_atomic(report, "\n".join(lines) + "\n")
    summary = {"seconds": seconds, "chains_per_second": rate,
               "chain_steps_per_second": None if rate is None else rate * chains.n_steps,
               "peak_memory_gib": peak, "diagnostics": diagnostics, "block": block, "devices": n_dev,
               "n_chains": n_chains, "n_steps": chains.n_steps, "energies": energies, "first_layer": first_layer}
    write_atomic(path / "summary.json", json.dumps(summary, indent=2))
    return {"out": path, "report": report, "samples": path / "samples.npy", **summary}


SPURIOUS_MODE_MARGIN = 0.25


def spurious_mode(energies: Dict[str, float], fresh: str = "samples") -> bool:
    """True when the fresh chains' mean energy ``energies[fresh]`` sits below
    both the observed data's (``"observed"``) and the learning chains'
    (``"chains"``) by more than :data:`SPURIOUS_MODE_MARGIN` of the lower
    one's magnitude: the model has a mode that learning's chains never
    visited (were it a good model of the data, chains from anywhere would
    end where the data and the learning chains sit). A small difference is
    left alone: fresh chains that have not finished mixing differ a little
    anyway."""
    floor = min(energies["observed"], energies["chains"])
    return energies[fresh] < floor - SPURIOUS_MODE_MARGIN * abs(floor)


def energy_comparison(energies: Dict[str, float], fresh: str, label: str) -> list:
    """The report's section (markdown lines): the mean learned energy of the
    observed data, of learning's chains and of the fresh chains
    ``energies[fresh]`` (described by ``label``), with a warning when
    :func:`spurious_mode` holds."""
    lines = ["## Where the samples sit in the learned energy", "",
             f"| observed data | learning's chains | {label} |", "|---|---|---|",
             f"| {energies['observed']:.4g} | {energies['chains']:.4g} | {energies[fresh]:.4g} |", ""]
    if spurious_mode(energies, fresh):
        lines += [f"Warning: {label} sit far below both the observed data and learning's chains in the learned "
                  "energy: the model has a mode that learning's chains never visited, and its samples from there "
                  "are not like the data. More chains, or chains restarted from noise during learning, can find "
                  "it. (Chains too short to leave a start at the reference's mode, such as zeros, also sit low: "
                  "compare with more steps.)", ""]
    return lines


STATISTICS_SAMPLES = 256


def unlike_data(distances: Dict[str, float], fresh: str = "samples") -> bool:
    """True when the fresh samples' first-layer statistics are farther from
    the observed data's than white noise's are (``distances[fresh] >
    distances["white_noise"]``, Gram distances as
    :func:`gcnjax.descriptor.first_layer_statistics` computes them): noise
    with the data's mean and variance is the baseline any sample of a model
    of the data must beat, whatever its energy."""
    return distances[fresh] > distances["white_noise"]


def first_layer_comparison(distances: Dict[str, float], label: str, fresh: str = "samples") -> list:
    """The report's section (markdown lines): the Gram distance to the
    observed data's first-layer statistics of learning's chains, of white
    noise and of the fresh samples ``distances[fresh]`` (described by
    ``label``), with a warning when :func:`unlike_data` holds."""
    lines = ["## The samples' first-layer statistics against the data's", "",
             "Gram distance of the first layer's responses (a FRAME net's fixed features) to the observed data's "
             "(0: the same second-order statistics):", "",
             f"| learning's chains | white noise | {label} |", "|---|---|---|",
             f"| {distances['chains']:.4g} | {distances['white_noise']:.4g} | {distances[fresh]:.4g} |", ""]
    if unlike_data(distances, fresh):
        lines += [f"Warning: {label} are farther from the observed data's first-layer statistics than white noise "
                  "with the data's mean and variance: they do not look like the data, whatever their energy (a mode "
                  "learning's chains never visited, or chains that have not mixed).", ""]
    return lines


def _trace_steps(n_steps: int, points: int, mala: bool) -> np.ndarray:
    """The steps at which :func:`langevin_draw` recorded its trace: where
    each segment starts (the remainder run first), or ends under MALA."""
    seg, rem = divmod(n_steps, points)
    return rem + seg * (np.arange(points) + (1 if mala else 0))


def _plot_energy(energy: np.ndarray, steps: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gcnjax.run import _save_figure

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    lo, mid, hi = np.percentile(energy, [10, 50, 90], axis=0)
    ax.fill_between(steps, lo, hi, alpha=0.3, label="10–90% of chains")
    ax.plot(steps, mid, label="median")
    ax.set_xlabel("Langevin step")
    ax.set_ylabel("energy E(x)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


# ---------------------------------------------------------------- entry points


def sample_run(run_dir, out, settings: SampleSettings, *, seed: int = 0, block: Optional[int] = None,
               devices: Optional[int] = None, resume: bool = False, overwrite: bool = False,
               quiet: bool = False) -> Dict[str, Any]:
    """:func:`sample_chains` of the learned run in ``run_dir`` (any family):
    ``gcnjax sample``."""
    chains = load_chains(run_dir, settings)
    return sample_chains(chains, out, n_chains=settings.n_chains, seed=seed, block=block, devices=devices,
                         resume=resume, overwrite=overwrite, quiet=quiet, run_dir=run_dir, settings=settings,
                         title=f"Samples of {Path(run_dir).name}")


def logdensity_fn(run_dir) -> Tuple[Callable[[jax.Array], jax.Array], Chains]:
    """``(logdensity, chains)``: the learned run's ``log p(x)`` up to a
    constant, a function of ONE sample in model units (no chain axis), as
    BlackJAX's kernels take it, and its :class:`Chains` (``chains.shape``,
    ``chains.to_data``)::

        logdensity, chains = logdensity_fn("runs/demo-brick")
        mala = blackjax.mala(logdensity, step_size=1e-3)
        state = mala.init(jnp.zeros(chains.shape))
        state, info = jax.jit(mala.step)(jax.random.key(0), state)
    """
    chains = load_chains(run_dir)
    if chains.logdensity is None:
        raise ValueError(f"{str(run_dir)!r}: its model has no density over x (a generator draws g(z) exactly); "
                         "sample it with gcnjax sample.")
    params = chains.params
    return (lambda x: chains.logdensity(params, x)), chains
