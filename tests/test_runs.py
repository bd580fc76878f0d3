"""Runs that survive: kill and resume, divergence guard, checkpoints."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import cli
from gcnjax import descriptor as D
from gcnjax.langevin import LangevinConfig
from gcnjax.synthesis import learn_descriptor
from gcnjax.train import RunConfig

ITERATIONS = 60
DEMO = ["demo", "--iterations", str(ITERATIONS), "--image-size", "40", "--chains", "2", "--steps", "3",
        "--checkpoint-every", "2", "--quiet"]


def _cli(*args):
    return [sys.executable, "-m", "gcnjax.cli", *args]


def _env():
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _steps(checkpoints: Path):
    if not checkpoints.exists():
        return []
    return [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()]


def _kill_when(proc, checkpoints: Path, *, after_step=None, writing=False, delay=0.0, timeout=120.0):
    """SIGKILL ``proc`` once a checkpoint past ``after_step`` exists (then
    after ``delay`` seconds), or, with ``writing``, as soon as a checkpoint
    is being written (its temporary directory appears)."""
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        if writing and checkpoints.exists() and any("tmp" in p.name for p in checkpoints.iterdir()):
            break
        if after_step is not None and any(s > after_step for s in _steps(checkpoints)):
            time.sleep(delay)
            break
        time.sleep(0.001)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(_cli(*DEMO, "--out", str(reference)), check=True, env=_env(), capture_output=True)

    out = tmp_path / "killed"
    checkpoints = out / "checkpoints"
    rng = random.Random(0)
    quiet = dict(env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Killed at a random point of the run, then the resumed run killed at
    # another random point, then killed in the middle of a checkpoint write.
    kills = [_kill_when(subprocess.Popen(_cli(*DEMO, "--out", str(out)), **quiet), checkpoints,
                        after_step=rng.randint(2, 8), delay=rng.uniform(0, 0.1))]
    kills.append(_kill_when(subprocess.Popen(_cli("demo", "--resume", "--out", str(out), "--quiet"), **quiet),
                            checkpoints, after_step=max(_steps(checkpoints)) + rng.randint(2, 6),
                            delay=rng.uniform(0, 0.1)))
    kills.append(_kill_when(subprocess.Popen(_cli("demo", "--resume", "--out", str(out), "--quiet"), **quiet),
                            checkpoints, writing=True))
    assert kills == [-signal.SIGKILL] * 3, f"a run finished before it could be killed: {kills}"
    assert max(_steps(checkpoints)) < ITERATIONS
    done = subprocess.run(_cli("demo", "--resume", "--out", str(out), "--quiet"), env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "params.msgpack").read_bytes() == (reference / "params.msgpack").read_bytes()
    np.testing.assert_array_equal(np.load(out / "synthesized.npy"), np.load(reference / "synthesized.npy"))
    rows = (out / "metrics.csv").read_text().strip().splitlines()[1:]
    iterations = [int(r.split(",")[0]) for r in rows]
    assert iterations == sorted(set(iterations)) and iterations[-1] == ITERATIONS  # no duplicated rows


def _tiny_config(**kw):
    base = dict(
        layers=D.DescriptorConfig().layers[:1], image_size=(20, 20), channels=1, n_chains=2, n_iterations=8,
        langevin=LangevinConfig.from_delta(0.3, 2), learning_rate=1e-3,
        run=RunConfig(log_every=1, image_every=4, checkpoint_every=2),
    )
    base.update(kw)
    return D.DescriptorConfig(**base)


def _images():
    return np.random.default_rng(0).uniform(0, 255, (1, 20, 20, 1)).astype(np.float32)


def test_divergence_in_the_first_iteration_stops_and_leaves_nothing(tmp_path):
    # A step far too large: the chains overflow in the first iteration, so the
    # last good checkpoint is the start: nothing worth resuming.
    cfg = _tiny_config(langevin=LangevinConfig(n_steps=40, step_size=40.0, noise_scale=0.0), sigma=0.1,
                       run=RunConfig(log_every=1, checkpoint_every=2, on_divergence="stop"))
    with pytest.raises(D.langevin.ChainDivergedError, match="step_size=40.0") as info:
        learn_descriptor(cfg, _images(), tmp_path / "run", quiet=True)
    assert "last good checkpoint is step 0" in str(info.value)
    assert "nothing was kept" in str(info.value) and not (tmp_path / "run").exists()
    # The same call with a sane step runs in the same place.
    good = dataclasses.replace(cfg, langevin=LangevinConfig(n_steps=2, step_size=0.01), n_iterations=2)
    assert learn_descriptor(good, _images(), tmp_path / "run", quiet=True)["iterations"] == 2


@pytest.mark.slow
def test_divergence_retry_with_smaller_step_recovers(tmp_path, capsys):
    cfg = _tiny_config(langevin=LangevinConfig(n_steps=30, step_size=4.0, noise_scale=0.0), sigma=0.5,
                       run=RunConfig(log_every=1, checkpoint_every=2, on_divergence="retry", max_retries=8,
                                     retry_step_factor=0.1))
    result = learn_descriptor(cfg, _images(), tmp_path / "run", quiet=False)
    err = capsys.readouterr().err
    assert "retrying from iteration" in err
    report = (tmp_path / "run" / "report.md").read_text()
    assert "reduced" in report
    assert np.isfinite(np.load(tmp_path / "run" / "synthesized.npy")).all()
    assert result["history"]["iteration"][-1] == cfg.n_iterations
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["retries"] >= 1  # recorded, so that a resumed run keeps the smaller step
    assert saved["adjusted_langevin"]["step_size"] == pytest.approx(4.0 * 0.1 ** saved["retries"])


@pytest.mark.slow
def test_layer_by_layer_resume_matches(tmp_path):
    cfg = _tiny_config(layers=D.DescriptorConfig().layers[:2], image_size=(40, 40), grow_iterations=(3, 3),
                       run=RunConfig(log_every=1, image_every=3, checkpoint_every=3))
    images = np.random.default_rng(1).uniform(0, 255, (1, 40, 40, 1)).astype(np.float32)
    full = learn_descriptor(cfg, images, tmp_path / "full", quiet=True)
    # Simulate a crash right after the stage boundary: drop the final checkpoint and outputs.
    partial = learn_descriptor(cfg, images, tmp_path / "part", quiet=True)
    import shutil

    shutil.rmtree(tmp_path / "part" / "checkpoints" / "6")
    (tmp_path / "part" / "params.msgpack").unlink()
    resumed = learn_descriptor(cfg, images, tmp_path / "part", resume=True, quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(resumed["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(resumed["state"].params["params"]) == {"conv1", "conv2"}
    del partial


@pytest.mark.slow
def test_resume_keeps_the_decaying_learning_rate_where_it_was(tmp_path):
    # The schedule's step count lives in the optimizer state: a run resumed
    # from iteration 4 of 8 continues the cosine from there, not from lr_0.
    cfg = _tiny_config(learning_rate_decay="cosine", learning_rate_decay_to=0.1, learning_rate=0.05,
                       run=RunConfig(log_every=1, image_every=4, checkpoint_every=4))
    full = learn_descriptor(cfg, _images(), tmp_path / "full", quiet=True)
    learn_descriptor(cfg, _images(), tmp_path / "part", quiet=True)
    import shutil

    shutil.rmtree(tmp_path / "part" / "checkpoints" / "8")
    (tmp_path / "part" / "params.msgpack").unlink()
    resumed = learn_descriptor(cfg, _images(), tmp_path / "part", resume=True, quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(resumed["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    restarted = learn_descriptor(dataclasses.replace(cfg, learning_rate_decay="constant"), _images(),
                                 tmp_path / "constant", quiet=True)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(restarted["state"].params)))


def test_resume_from_a_different_model_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    learn_descriptor(_tiny_config(), _images(), out, quiet=True)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(ValueError, match="different model"):
        learn_descriptor(_tiny_config(n_chains=3), _images(), out, resume=True, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == before
    # At the CLI: resuming a directory that holds no run is a one-line error.
    assert cli.main(["demo", "--resume", "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert cli.main(["demo", "--resume", "--out", str(out), "--lr", "0.1"]) == 2
    assert "--learning-rate 0.1 (the run's: " in capsys.readouterr().err


@pytest.mark.slow
def test_a_finished_run_is_extended_by_resuming_with_more_iterations(tmp_path, capsys):
    full = learn_descriptor(_tiny_config(), _images(), tmp_path / "full", quiet=True)
    short = tmp_path / "short"
    learn_descriptor(_tiny_config(n_iterations=4), _images(), short, quiet=True)
    extended = learn_descriptor(_tiny_config(), _images(), short, resume=True, quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params),
                    jax.tree_util.tree_leaves(extended["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The new length is recorded, so a plain resume continues to it.
    saved = json.loads((short / "config.json").read_text())
    assert D.DescriptorConfig.from_dict(saved["config"]).n_iterations == 8
    # At the CLI, --iterations is the one option a resume takes.
    demo = tmp_path / "demo"
    args = ["demo", "--image-size", "40", "--chains", "2", "--steps", "2", "--checkpoint-every", "2", "--quiet"]
    assert cli.main(args + ["--iterations", "2", "--out", str(demo)]) == 0
    assert cli.main(["demo", "--resume", "--out", str(demo), "--iterations", "4", "--quiet"]) == 0
    capsys.readouterr()
    saved = json.loads((demo / "config.json").read_text())
    assert D.DescriptorConfig.from_dict(saved["config"]).n_iterations == 4
    assert max(_steps(demo / "checkpoints")) == 4


def test_a_run_resumes_with_other_speed_settings(tmp_path):
    # How the chains are computed (unrolling, chain groups) is not what the run
    # learns: a run begun with one setting (say on a CPU) resumes with another
    # (on a GPU), to the same numbers up to float rounding; the new settings are
    # recorded. The model itself may not change.
    full = learn_descriptor(_tiny_config(), _images(), tmp_path / "full", quiet=True)
    part = tmp_path / "part"
    learn_descriptor(_tiny_config(n_iterations=4), _images(), part, quiet=True)
    base = _tiny_config()
    other = dataclasses.replace(base, langevin=dataclasses.replace(base.langevin, chain_batch=1, unroll=1))
    resumed = learn_descriptor(other, _images(), part, resume=True, quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params),
                    jax.tree_util.tree_leaves(resumed["state"].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert D.DescriptorConfig.from_dict(json.loads((part / "config.json").read_text())["config"]) == other
    with pytest.raises(ValueError, match="langevin differ"):
        learn_descriptor(dataclasses.replace(other, langevin=dataclasses.replace(other.langevin, n_steps=3)),
                         _images(), part, resume=True, quiet=True)


def test_run_config_rejects_bad_values():
    for kw in (dict(log_every=0), dict(checkpoint_every=-1), dict(on_divergence="pray"),
               dict(retry_step_factor=1.5), dict(max_retries=-1)):
        with pytest.raises(ValueError, match="RunConfig"):
            RunConfig(**kw)


def test_config_json_round_trip(tmp_path):
    out = tmp_path / "run"
    learn_descriptor(_tiny_config(), _images(), out, quiet=True)
    saved = json.loads((out / "config.json").read_text())
    assert D.DescriptorConfig.from_dict(saved["config"]) == _tiny_config()
    assert (out / "checkpoints").is_dir() and len(list((out / "checkpoints").iterdir())) <= 3


def test_tensorboard_events_when_installed(tmp_path):
    pytest.importorskip("tensorboardX")
    from gcnjax.train import RunDir

    run = RunDir(tmp_path / "run")
    for i in (1, 2):
        run.log({"iteration": i, "f_data": 1.5 * i, "note": "text is skipped"})
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert run.read_metrics()["f_data"].tolist() == [1.5, 3.0]
    other = RunDir(tmp_path / "table")
    other.log({"start": 0, "residual": 0.1})  # rows without an iteration go to the CSV only
    assert other.read_metrics()["residual"].tolist() == [0.1]


def test_dead_net_stops_with_a_clear_message(tmp_path):
    """All ReLUs off (biases far below any response): f ≡ 0, the learning
    gradient is exactly 0 for good, and the run says so instead of going on."""
    from gcnjax.train import TrainingStalled

    cfg = _tiny_config()
    net = D.make_net(cfg)
    data = jnp.asarray(_images()) - 128.0

    def dead_state():  # fresh arrays each time: the step donates its state
        state = D.init_state(jax.random.key(0), cfg, net, data)
        return state._replace(params=jax.tree_util.tree_map_with_path(
            lambda path, p: p - 1e6 if path[-1].key == "bias" else p, state.params))

    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, dead_state().params, (20, 20)))
    _, metrics = step(dead_state(), data)
    assert float(metrics["dead_units"]) == 1.0 and float(metrics["grad_norm"]) == 0.0
    from gcnjax.train import fit

    with pytest.raises(TrainingStalled, match="inactive.*--lr"):
        fit(step, dead_state(), lambda i: data, end=3, run=RunConfig(log_every=1), quiet=True)
    # a live net is not flagged
    live = D.init_state(jax.random.key(0), cfg, net, data)
    _, metrics = step(live, data)
    assert float(metrics["dead_units"]) == 0.0 and float(metrics["samples_flat"]) == 0.0


def test_ml_update_splits_the_gradient_and_sees_a_flat_samples_half():
    """f(x) = relu(<w, x>) + b: on data with <w, x> > 0 and samples with
    <w, x> < 0 the samples' half E_model[∂f/∂w] is exactly 0 (∂f/∂b = 1 on
    every input, left out), and the whole gradient is −mean(data) for w and
    0 for b, the closed form."""
    import optax

    def apply_fn(params, x):
        return jax.nn.relu(x @ params["w"]) + params["b"]

    w = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.float32(0.3)}
    data = jnp.array([[2.0, 0.0, 1.0], [1.0, -1.0, 0.0]])  # <w, x> = 2.5, 3
    samples = jnp.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # −1, −1.5
    opt = optax.sgd(0.1)
    params, _, grads, terms = D.ml_update(opt, apply_fn, w, opt.init(w), data, samples)
    np.testing.assert_allclose(grads["w"], -data.mean(0), rtol=1e-6)
    assert float(grads["b"]) == 0.0
    np.testing.assert_allclose(params["w"], w["w"] + 0.1 * data.mean(0), rtol=1e-6)
    assert float(terms.samples_grad_norm) == 0.0
    np.testing.assert_allclose([terms.f_samples, terms.f_data], [0.3, 3.05], rtol=1e-6)
    assert float(D.flat_samples(terms, optax.tree.norm(grads))) == 1.0
    # samples on the active side: the halves are the two means, the whole their difference
    live = -samples
    _, _, grads, terms = D.ml_update(opt, apply_fn, w, opt.init(w), data, live)
    np.testing.assert_allclose(grads["w"], live.mean(0) - data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(terms.samples_grad_norm, np.linalg.norm(live.mean(0)), rtol=1e-6)
    assert float(D.flat_samples(terms, optax.tree.norm(grads))) == 0.0


def test_fit_stops_a_run_whose_chains_keep_landing_where_f_is_flat():
    """The share of flat iterations is an exponential average over
    FLAT_SAMPLES_HORIZON = 100 iterations: flat at every step it passes
    FLAT_SAMPLES_LIMIT = 0.25 when 1 − 0.99^n > 0.25, first at n = 29. Flat
    at one step in ten it stays near 0.1, and the run goes on."""
    from gcnjax.train import FLAT_SAMPLES_HORIZON, FLAT_SAMPLES_LIMIT, TrainingStalled, fit

    assert (FLAT_SAMPLES_HORIZON, FLAT_SAMPLES_LIMIT) == (100, 0.25)

    def step(every):
        def step_fn(i, _):
            return i + 1, {"f_data": jnp.float32(1.0), "samples_flat": jnp.float32((i + 1) % every == 0)}
        return step_fn

    with pytest.raises(TrainingStalled, match=r"collapsed at iteration 29\b.*25%.*--lr"):
        fit(step(1), 0, lambda i: None, end=200, run=RunConfig(log_every=1), quiet=True)
    state, history = fit(step(10), 0, lambda i: None, end=300, run=RunConfig(log_every=1), quiet=True)
    assert state == 300 and len(history) == 300


def test_a_descriptor_run_whose_chains_sit_where_f_is_flat_is_stopped():
    """One conv layer of positive filters, f = Σ relu(w * x + b): on data of
    +50 every unit is on, on chains started at −300 every unit is off, so
    the step's samples' half is exactly zero (samples_flat = 1) while f of
    the data grows; the run stops at iteration 29, where the average of the
    flat iterations first passes 0.25 (1 − 0.99^29)."""
    from gcnjax.train import TrainingStalled, fit

    cfg = _tiny_config(activate_last=True, top="sum", persistent=True, sigma=1.0)
    net = D.make_net(cfg)
    data = jnp.full((1, 20, 20, 1), 50.0)

    def flat_state():  # fresh arrays each time: the step donates its state
        state = D.init_state(jax.random.key(0), cfg, net, data)
        params = jax.tree_util.tree_map_with_path(
            lambda path, p: jnp.abs(p) + 0.05 if path[-1].key == "kernel" else jnp.zeros_like(p), state.params)
        return state._replace(params=params, chains=jnp.full(state.chains.shape, -300.0))

    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, flat_state().params, (20, 20)))
    _, metrics = step(flat_state(), data)
    assert float(metrics["samples_flat"]) == 1.0 and float(metrics["f_samples"]) == 0.0
    assert float(metrics["f_data"]) > 0 and float(metrics["dead_units"]) == 0.0
    with pytest.raises(TrainingStalled, match=r"collapsed at iteration 29\b"):
        fit(step, flat_state(), lambda i: data, end=60, run=RunConfig(log_every=1), quiet=True)
