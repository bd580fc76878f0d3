"""The run engine: the divergence policy for every family, kernels chosen by the backend a run resumes on."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from gcnjax import abp, ops, presets
from gcnjax import generator as G
from gcnjax.langevin import LangevinConfig
from gcnjax.run import smaller_step
from gcnjax.synthesis import learn_descriptor
from gcnjax.train import RunConfig


def test_smaller_step_keeps_the_temperature():
    decoupled = LangevinConfig(n_steps=5, step_size=1.0, noise_scale=0.01, chain_batch=3)
    smaller = smaller_step(decoupled, 0.25)
    temperature = lambda c: c.noise_scale ** 2 / (2 * c.step_size)
    assert smaller.step_size == 0.25 and np.isclose(temperature(smaller), temperature(decoupled))
    assert smaller.chain_batch == 3 and smaller.n_steps == 5
    assert smaller_step(LangevinConfig(step_size=0.5), 0.5).noise_scale is None  # exact noise follows the step


@pytest.mark.slow
def test_a_generator_run_retries_with_a_smaller_step(tmp_path, capsys):
    # Inference steps of 1e30 overflow z at once; one retry at 1e-31 of it learns on.
    config = G.GeneratorConfig(
        net="digit", latent_dim=3, langevin=LangevinConfig(n_steps=2, step_size=1e30, noise_scale=0.0),
        batch_size=4, n_epochs=2, learning_rate=1e-3,
        run=RunConfig(log_every=1, image_every=4, checkpoint_every=1, on_divergence="retry",
                      retry_step_factor=1e-31))
    data = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype(np.float32)
    result = abp.learn_generator(config, data, tmp_path / "run", quiet=False)
    assert "retrying from iteration 0" in capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["retries"] == result["retries"] == 1
    assert saved["adjusted_langevin"]["step_size"] == pytest.approx(0.1)
    assert np.isfinite(result["train_mse"]) and result["iterations"] == 2
    assert "reduced 1 time(s)" in (tmp_path / "run" / "report.md").read_text()


def test_a_run_resumed_on_another_backend_takes_that_backends_convs(tmp_path, monkeypatch):
    config = dataclasses.replace(
        presets.texture(), layers=presets.texture().layers[:1], image_size=(20, 20), channels=1, n_chains=2,
        n_iterations=2, langevin=LangevinConfig.from_delta(0.3, 1),
        run=RunConfig(log_every=1, image_every=2, checkpoint_every=1))
    images = np.random.default_rng(0).uniform(0, 255, (1, 20, 20, 1)).astype(np.float32)
    chosen = []
    choose = ops.choose_conv_impl
    monkeypatch.setattr(ops, "choose_conv_impl", lambda backend, *a: chosen.append((backend, choose(backend, *a)))
                        or chosen[-1][1])
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    learn_descriptor(config, images, tmp_path / "run", quiet=True)
    on_cpu, chosen[:] = list(chosen), []
    assert on_cpu and all(b == "cpu" for b, _ in on_cpu) and "subpixel_grad" in {i for _, i in on_cpu}
    # Resumed "on a GPU" for two more iterations: the same saved config, the GPU's (XLA's) convs.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    longer = dataclasses.replace(config, n_iterations=4)
    resumed = learn_descriptor(longer, images, tmp_path / "run", resume=True, quiet=True)
    assert chosen and {b for b, _ in chosen} == {"gpu"} and {i for _, i in chosen} == {"xla"}
    assert resumed["iterations"] == 4
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert "conv" not in saved


@pytest.mark.slow
def test_a_saturated_generator_stops_the_run(tmp_path, capsys, image_folder):
    from gcnjax import cli

    folder = image_folder(8, 16)
    # At a learning rate of 1e9 the generator's tanh saturates: its gradient is exactly 0 from then on.
    argv = ["coop", "--data", str(folder), "--image-size", "16", "--chains", "4", "--steps", "2", "--iterations",
            "6", "--gen-lr", "1e9", "--out", str(tmp_path / "run"), "--quiet",
            "--descriptor.layers", '[{"features": 8, "kernel": 5, "stride": 2, "padding": "SAME"}]']
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "learning stalled at iteration" in err and "--gen-lr" in err


def test_theory_on_another_kind_of_run_is_one_line(tmp_path, capsys):
    from gcnjax import cli

    for family, config in (("generator", {"latent_dim": 3}), ("multigrid", {"grids": [4, 16]})):
        run = tmp_path / family
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"family": family, "config": config}))
        (run / "params.msgpack").write_bytes(b"")
        assert cli.main(["theory", "--run", str(run), "--out", str(tmp_path / f"t-{family}")]) == 2
        err = capsys.readouterr().err
        assert f"is a {family} run; give the directory of a descriptor run" in err and "Traceback" not in err
