"""Chains sharded over 8 host devices give the numbers of one device.

The device count of the CPU platform is fixed when jax starts, so the
8-device runs happen in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; it computes the same
Langevin chains and a descriptor train step on one device and sharded over
all eight, from the same keys, and reports the largest differences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from gcnjax import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import dataclasses, json
    import jax, jax.numpy as jnp, numpy as np
    from gcnjax import descriptor as D, langevin, presets, sharding
    from gcnjax.nets import init_params

    assert len(jax.devices()) == 8, jax.devices()
    config = dataclasses.replace(presets.shortrun(2), n_chains=8, batch_size=8,
                                 langevin=langevin.LangevinConfig(n_steps=3, step_size=1.0, noise_scale=0.01))
    net = D.make_net(config)
    data = jax.random.uniform(jax.random.key(0), (8, 32, 32, 3), minval=-1, maxval=1)
    out = {}

    # Langevin chains alone
    params = init_params(net, jax.random.key(1), data[:1])
    energy_fn = D.make_energy_fn(net.apply, params, None)
    kw = dict(n_steps=3, step_size=1.0, noise_scale=0.01)
    one = jax.jit(lambda k, x: langevin.sample(k, energy_fn, x, **kw)[0])(jax.random.key(2), data)
    mesh = sharding.chain_mesh()
    many, info = sharding.sample(jax.random.key(2), energy_fn, data, mesh=mesh, **kw)
    out["sample_diff"] = float(jnp.max(jnp.abs(one - many)))
    out["sample_moved"] = float(jnp.max(jnp.abs(one - data)))
    out["sample_devices"] = len({s.device for s in many.addressable_shards})
    out["sample_shard_rows"] = many.addressable_shards[0].data.shape[0]

    # a whole train step (Langevin + Adam) on the ordinary jit'd step
    def run(shard):
        state = D.init_state(jax.random.key(3), config, net, data)
        step = D.make_train_step(config, net.apply, D.make_optimizer(config, state.params, (32, 32)))
        d = data
        if shard:
            state, d = sharding.shard_state(state, mesh), sharding.shard_chains(data, mesh)
        for _ in range(2):
            state, metrics = step(state, d)
        return state, metrics

    s1, m1 = run(False)
    s8, m8 = run(True)
    out["chains_diff"] = float(jnp.max(jnp.abs(s1.chains - s8.chains)))
    out["params_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                             zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s8.params)))
    out["params_moved"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                              zip(jax.tree_util.tree_leaves(s1.params),
                                  jax.tree_util.tree_leaves(init_params(net, jax.random.split(jax.random.key(3), 3)[0],
                                                                     data[:1]))))
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in
                            zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s8.params))])
    out["params_frac_differ"] = float(np.mean(diffs > 1e-6))
    out["loss_diff"] = abs(float(m1["f_samples"] - m1["f_data"]) - float(m8["f_samples"] - m8["f_data"]))
    out["state_chain_devices"] = len({s.device for s in s8.chains.addressable_shards})
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_eight_devices_match_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    out = json.loads(line[len("RESULT"):])
    # the chains really were split over the 8 devices, one row each
    assert out["sample_devices"] == 8 and out["sample_shard_rows"] == 1
    assert out["state_chain_devices"] == 8
    # and the numbers are those of one device
    assert out["sample_moved"] > 1e-2
    assert out["sample_diff"] < 1e-5
    assert out["chains_diff"] < 1e-5
    assert out["params_moved"] > 1e-4  # two Adam steps of lr 1e-4
    # Adam's first steps move each param by about ±lr whatever |g|: where a
    # gradient is at rounding level, the order of the 8-device all-reduce can
    # flip its sign. So: (almost) every param equal, none off by more than
    # the two steps' 2·lr.
    assert out["params_frac_differ"] < 0.01
    assert out["params_diff"] <= 2.5e-4
    assert out["loss_diff"] < 1e-4


def test_indivisible_chains_are_refused():
    mesh = sharding.chain_mesh()
    x = sharding.shard_chains(jnp.zeros((3, 2)), mesh)  # one device here: anything divides
    assert x.shape == (3, 2) and x.sharding.spec == jax.sharding.PartitionSpec("chains")

    class TwoDevices:  # the divisibility check only looks at the mesh's device count
        devices = jnp.zeros(2)

    with pytest.raises(ValueError, match="multiple of 2"):
        sharding._check_divisible(jnp.zeros((3, 2)), TwoDevices(), "x0")


RUNS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from gcnjax import cli
    base = ["descriptor", "--data", "skimage:brick", "--gray", "--image-size", "16", "--iterations", "3",
            "--steps", "2", "--quiet", "--checkpoint-every", "3",
            "--layers", '[{"features": 4, "kernel": 5, "stride": 2, "padding": "SAME"}]']
    out = sys.argv[1]
    for devices in ("1", "8"):
        assert cli.main(base + ["--chains", "8", "--devices", devices, "--out", f"{out}/d{devices}"]) == 0
    assert cli.main(base + ["--chains", "6", "--out", f"{out}/six"]) == 0
    from PIL import Image
    import os
    os.makedirs(f"{out}/faces")
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(f"{out}/faces/{i}.png")
    others = {
        "multigrid": ["multigrid", "--data", f"{out}/faces", "--image-size", "16", "--grids", "4,16",
                      "--iterations", "2", "--steps", "2", "--chains", "8"],
        "coop": ["coop", "--data", f"{out}/faces", "--image-size", "16", "--iterations", "2", "--chains", "8",
                 "--steps", "2", "--latent-dim", "4", "--descriptor.layers",
                 '[{"features": 8, "kernel": 5, "stride": 2, "padding": "SAME"}]'],
        "abp": ["abp", "train", "--data", f"{out}/faces", "--net", "face32", "--epochs", "2", "--latent-dim", "4",
                "--batch-size", "8"],
    }
    for name, argv in others.items():
        for devices in ("1", "8"):
            assert cli.main(argv + ["--quiet", "--devices", devices, "--out", f"{out}/{name}{devices}"]) == 0
""")


@pytest.mark.slow
def test_a_training_run_on_eight_devices_learns_what_one_does(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", RUNS, str(tmp_path)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    one, eight = (np.load(tmp_path / d / "synthesized.npy") for d in ("d1", "d8"))
    np.testing.assert_allclose(eight, one, rtol=0, atol=1e-3)
    # 6 chains split over 6 of the 8 devices, and the run says so.
    assert "6 chains per step do not split evenly over 8 devices; using 6" in proc.stderr
    # Multi-grid (its chains split), CoopNets and the generator (their batches split) learn the same on 8 devices.
    for name, picture in (("multigrid", "synthesized.npy"), ("coop", "params.msgpack"), ("abp", "params.msgpack")):
        a, b = (tmp_path / f"{name}{d}" / picture for d in ("1", "8"))
        if picture.endswith(".npy"):
            np.testing.assert_allclose(np.load(b), np.load(a), rtol=0, atol=1e-2)
        else:
            from flax.serialization import msgpack_restore

            leaves = [jax.tree_util.tree_leaves(msgpack_restore(p.read_bytes())) for p in (a, b)]
            for x, y in zip(*leaves):
                np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-4)


PROCESSES = textwrap.dedent("""
    import sys
    import jax
    port, index, count, run, out = sys.argv[1:6]
    if int(count) > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=int(count),
                                   process_id=int(index))
    import numpy as np
    from jax.experimental import multihost_utils
    from gcnjax import descriptor as D, sampling, sharding
    from gcnjax.langevin import LangevinConfig

    settings = sampling.SampleSettings(n_chains=12, steps=3, trace_points=3)
    sampling.sample_run(run, f"{out}/samples", settings, block=4, quiet=True)

    # One learning step of a descriptor, its chains split over every process's device.
    config = D.DescriptorConfig(layers=(D.ConvSpec(4, 3, 2, "SAME"),), image_size=(8, 8), channels=1, n_chains=4,
                                langevin=LangevinConfig(n_steps=2, step_size=0.01))
    data = np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 1)).astype(np.float32)
    net = D.make_net(config)
    state = D.init_state(jax.random.key(0), config, net, data)
    mesh = sharding.chain_mesh()
    state = sharding.shard_state(state, mesh)
    step = D.make_train_step(config, net.apply, D.make_optimizer(config, state.params, (8, 8)))
    state, metrics = step(state, sharding.replicate(data, mesh))
    chains = multihost_utils.process_allgather(state.chains, tiled=True)
    leaves = [np.asarray(a.addressable_data(0)) for a in jax.tree_util.tree_leaves(state.params)]
    if jax.process_index() == 0:
        np.savez(f"{out}/step.npz", chains=np.asarray(chains), *leaves)
""")


@pytest.mark.slow
def test_two_processes_sample_and_learn_what_one_does(tmp_path):
    import socket

    import numpy as np

    from gcnjax import cli

    run = tmp_path / "run"
    assert cli.main(["descriptor", "--data", "skimage:brick", "--gray", "--image-size", "16", "--iterations", "2",
                     "--chains", "2", "--steps", "2", "--quiet", "--out", str(run),
                     "--layers", '[{"features": 4, "kernel": 5, "stride": 2, "padding": "SAME"}]']) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = lambda i, n, out: [sys.executable, "-c", PROCESSES, str(port), str(i), str(n), str(run), str(out)]
    one = subprocess.run(command(0, 1, tmp_path / "one"), env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr
    workers = [subprocess.Popen(command(i, 2, tmp_path / "two"), env=env, cwd=ROOT, stderr=subprocess.PIPE,
                                text=True) for i in range(2)]
    errors = [w.communicate(timeout=300)[1] for w in workers]
    assert all(w.returncode == 0 for w in workers), errors
    for name in ("samples.npy", "energy.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "two" / "samples" / name),
                                   np.load(tmp_path / "one" / "samples" / name), rtol=1e-5, atol=1e-4)
    a, b = (np.load(tmp_path / d / "step.npz") for d in ("one", "two"))
    for name in a.files:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6)
