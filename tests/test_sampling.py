"""Sampling at scale: blocks streamed to disk, resumable, the same numbers on any number of devices; every
family's learned run sampled from the command line; BlackJAX's diagnostics and kernels on our energies."""

import errno
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.abp_prior_samples import SETS, score_samples
from gcnjax import cli, metrics, sampling
from gcnjax import data as gdata
from gcnjax.langevin import LangevinConfig
from gcnjax.run import Picture

MU, S = np.array([1.0, -2.0], np.float32), 0.5


def gaussian_chains(n_steps=150, mala=True, trace_points=10, reference=None):
    """Chains on N(MU, S² I) in 2-D from N(0, I): the closed form to check against."""
    energy = lambda x: 0.5 * jnp.sum(jnp.square((x - MU) / S))
    sampler = LangevinConfig(n_steps=n_steps, step_size=0.05, mala=mala)

    def draw(params, key, n):
        k_start, k_chain = jax.random.split(key)
        return sampling.langevin_draw(k_chain, energy, jax.random.normal(k_start, (n, 2)), sampler, trace_points)

    return sampling.Chains(shape=(2,), params={}, draw=draw, to_data=np.asarray,
                           picture=lambda x: Picture(np.clip(x[:, None, :, None] * 40 + 128, 0, 255)),
                           describe="MALA on a Gaussian.", n_steps=n_steps,
                           logdensity=lambda params, x: -energy(x), reference=reference)


def test_blocks_on_disk_hold_the_targets_moments(tmp_path):
    n = 600  # 5 blocks of 128, the last one padded
    result = sampling.sample_chains(gaussian_chains(), tmp_path / "job", n_chains=n, block=128, quiet=True)
    x = np.load(tmp_path / "job" / "samples.npy")
    assert x.shape == (n, 2) and result["block"] == 128
    # MALA is exact: mean MU, variance S² (4 standard errors).
    np.testing.assert_allclose(x.mean(axis=0), MU, atol=4 * S / np.sqrt(n))
    np.testing.assert_allclose(x.var(axis=0), S**2, atol=4 * S**2 * np.sqrt(2 / n))
    energy = np.load(tmp_path / "job" / "energy.npy")
    assert energy.shape == (n, 10) and np.load(tmp_path / "job" / "projections.npy").shape == (n, 10, 3)
    # At the end the energy of a 2-D Gaussian is χ²₂/2: mean 1.
    assert abs(energy[:, -1].mean() - 1.0) < 4 * 1.0 / np.sqrt(n)
    final = np.load(tmp_path / "job" / "final_energy.npy")
    np.testing.assert_allclose(final, 0.5 * np.sum(np.square((x - MU) / S), axis=1), rtol=1e-5, atol=1e-6)
    acceptance = np.load(tmp_path / "job" / "acceptance.npy")
    assert acceptance.shape == (n,) and 0.5 < acceptance.mean() <= 1.0
    diagnostics = result["diagnostics"]
    assert diagnostics["energy"]["rhat"] < 1.05 and diagnostics["energy"]["ess"] > n
    report = (tmp_path / "job" / "report.md").read_text()
    assert "split R̂" in report and "chains/s" in report and (tmp_path / "job" / "samples.png").is_file()


def test_the_end_points_energies_and_where_they_sit_against_the_runs(tmp_path, capsys):
    # Unadjusted, x ← x − a(x − MU)/S² + sqrt(2a)ξ has the stationary
    # variance v = 2a / (1 − (1 − a/S²)²) per axis, so E's mean at the end
    # is v/S² (MALA's, 1, is checked above). Against a run whose data and
    # chains sat at 3.0 and 2.0, the samples sit far below both: a spurious mode.
    n, a = 400, 0.05
    chains = gaussian_chains(n_steps=60, mala=False, trace_points=4, reference={"observed": 3.0, "chains": 2.0})
    result = sampling.sample_chains(chains, tmp_path / "job", n_chains=n, block=200, quiet=True)
    x, final = np.load(tmp_path / "job" / "samples.npy"), np.load(tmp_path / "job" / "final_energy.npy")
    np.testing.assert_allclose(final, 0.5 * np.sum(np.square((x - MU) / S), axis=1), rtol=1e-5, atol=1e-6)
    expected = 2 * a / (1 - (1 - a / S**2) ** 2) / S**2
    assert abs(final.mean() - expected) < 4 * expected / np.sqrt(n)
    assert result["energies"]["samples"] == pytest.approx(final.mean(), rel=1e-6)
    report = (tmp_path / "job" / "report.md").read_text()
    assert f"| 3 | 2 | {final.mean():.4g} |" in report
    assert "Warning: these 400 samples (60 steps) sit far below both" in report
    assert "warning: the samples' mean energy" in capsys.readouterr().err


def test_a_spurious_mode_is_below_both_by_more_than_a_quarter():
    # Below both by less than a quarter of the lower one (−6.02e7 against −5.37e7): no warning.
    assert not sampling.spurious_mode({"observed": -4.75e7, "chains": -5.37e7, "samples": -6.02e7})
    assert sampling.spurious_mode({"observed": -4.75e7, "chains": -5.37e7, "samples": -6.8e7})
    assert not sampling.spurious_mode({"observed": -2.57e8, "chains": -3.25e8, "samples": -3.9e8})
    assert sampling.spurious_mode({"observed": -2.57e8, "chains": -3.25e8, "from_noise": -4.74e8}, "from_noise")
    # Positive energies (σ's reference term dominating): the same quarter of the lower one.
    assert sampling.spurious_mode({"observed": 100.0, "chains": 120.0, "samples": 74.0})
    assert not sampling.spurious_mode({"observed": 100.0, "chains": 120.0, "samples": 76.0})
    lines = sampling.energy_comparison({"observed": -2.57e8, "chains": -3.25e8, "x": -4.74e8}, "x", "videos from noise")
    assert "| -2.57e+08 | -3.25e+08 | -4.74e+08 |" in lines and any(l.startswith("Warning: videos from noise") for l in lines)


def test_samples_unlike_the_data_are_farther_than_white_noise():
    # The demo's brick model: its fresh chains a grey lattice only 12% below the data's energy (no spurious
    # mode by the energies), but far from its first-layer statistics; its learning's chains near them.
    assert not sampling.unlike_data({"chains": 3.0, "white_noise": 400.0, "samples": 350.0})
    assert sampling.unlike_data({"chains": 3.0, "white_noise": 400.0, "samples": 450.0})
    lines = sampling.first_layer_comparison({"chains": 3.0, "white_noise": 400.0, "x": 2.5e4}, "videos from noise",
                                            fresh="x")
    assert "| 3 | 400 | 2.5e+04 |" in lines and any(l.startswith("Warning: videos from noise are farther") for l in lines)
    assert not any(l.startswith("Warning") for l in sampling.first_layer_comparison(
        {"chains": 3.0, "white_noise": 400.0, "samples": 20.0}, "samples"))


def test_a_full_disk_keeps_the_blocks_written_and_resume_finishes_the_same(tmp_path, monkeypatch):
    chains = gaussian_chains(n_steps=20, mala=False, trace_points=4)
    whole = sampling.sample_chains(chains, tmp_path / "whole", n_chains=50, block=16, seed=3, quiet=True)
    write = sampling._NpyFile.write

    def full_from_block_2(self, start, rows):
        if start >= 32:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(self, start, rows)

    monkeypatch.setattr(sampling._NpyFile, "write", full_from_block_2)
    with pytest.raises(OSError, match=r"No space left on device.*kept at block 2 of 4.*--resume"):
        sampling.sample_chains(chains, tmp_path / "job", n_chains=50, block=16, seed=3, quiet=True)
    assert json.loads((tmp_path / "job" / "progress.json").read_text())["blocks"] == 2
    monkeypatch.setattr(sampling._NpyFile, "write", write)
    # Another job's settings are refused; the same job goes on from block 2.
    with pytest.raises(ValueError, match="differs in n_chains"):
        sampling.sample_chains(chains, tmp_path / "job", n_chains=60, block=16, seed=3, quiet=True, resume=True)
    sampling.sample_chains(chains, tmp_path / "job", n_chains=50, block=16, seed=3, quiet=True, resume=True)
    for name in ("samples.npy", "energy.npy", "projections.npy"):
        assert (tmp_path / "job" / name).read_bytes() == (whole["out"] / name).read_bytes(), name


@pytest.fixture(scope="module")
def descriptor_run(tmp_path_factory):
    """A tiny learned texture descriptor (16×16 gray, 3 iterations)."""
    out = tmp_path_factory.mktemp("runs") / "texture"
    argv = ["descriptor", "--data", "skimage:brick", "--gray", "--image-size", "16", "--iterations", "3",
            "--chains", "2", "--steps", "2", "--quiet", "--out", str(out),
            "--layers", '[{"features": 4, "kernel": 5, "stride": 2, "padding": "SAME"}]']
    assert cli.main(argv) == 0
    return out


def test_sample_a_descriptor_run_from_the_command_line(descriptor_run, tmp_path, capsys):
    out = tmp_path / "samples"
    argv = ["sample", "--run", str(descriptor_run), "--chains", "10", "--block", "4", "--steps", "8", "--mala",
            "--langevin.step-size", "0.01", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    assert "report:" in capsys.readouterr().out
    x = np.load(out / "samples.npy")
    assert x.shape == (10, 16, 16, 1) and np.isfinite(x).all()
    job = json.loads((out / "config.json").read_text())
    assert job["settings"]["langevin"] == [["mala", True], ["step_size", 0.01]] and job["n_steps"] == 8
    assert np.load(out / "acceptance.npy").shape == (10,)
    assert "8 MALA steps of step size 0.01" in (out / "report.md").read_text()
    # The run recorded its data's and its chains' mean energy; the job sets
    # its samples' beside them, each recomputed here from the saved arrays.
    from gcnjax import descriptor as D
    from gcnjax.synthesis import load_run

    config, scale, net, params = load_run(descriptor_run)
    reference = json.loads((descriptor_run / "energies.json").read_text())
    chains = scale.to_model(np.load(descriptor_run / "synthesized.npy"))
    direct = np.mean(np.asarray(D.energy(net.apply, params, jnp.asarray(chains), config.sigma)))
    assert reference["chains"] == pytest.approx(float(direct), rel=1e-5)
    observed = gdata.load_data("skimage:brick", size=16, channels=1)
    direct = np.mean(np.asarray(D.energy(net.apply, params, jnp.asarray(scale.to_model(observed)), config.sigma)))
    assert reference["observed"] == pytest.approx(float(direct), rel=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    samples = np.mean(np.asarray(D.energy(net.apply, params, jnp.asarray(scale.to_model(x)), config.sigma)))
    assert summary["energies"]["samples"] == pytest.approx(float(samples), rel=1e-4)
    assert summary["energies"]["observed"] == reference["observed"]
    assert "## Where the samples sit in the learned energy" in (out / "report.md").read_text()
    # Likewise the first layer's statistics: its responses (4 filters 5×5, stride 2, SAME: one zero row and
    # column before, two after, on 16×16) recomputed by a direct conv, their mean Gram matrices compared.
    kernel, bias = (np.asarray(params["params"]["conv1"][k], np.float64) for k in ("kernel", "bias"))

    def gram(images):
        padded = np.pad(np.asarray(images, np.float64), ((0, 0), (1, 2), (1, 2), (0, 0)))
        responses = np.stack([np.einsum("nabd,abdc->nc", padded[:, i:i + 5, j:j + 5], kernel) + bias
                              for i in range(0, 16, 2) for j in range(0, 16, 2)], 1)
        return np.einsum("npc,npd->cd", responses, responses) / (responses.shape[0] * responses.shape[1])

    record = json.loads((descriptor_run / "first_layer.json").read_text())
    g_observed = gram(scale.to_model(observed))
    np.testing.assert_allclose(np.load(descriptor_run / "first_layer_gram.npy"), g_observed, rtol=1e-4,
                               atol=1e-6 * np.abs(g_observed).max())
    assert record["chains"] == pytest.approx(float(np.mean((gram(chains) - g_observed) ** 2)), rel=1e-3)
    assert summary["first_layer"]["samples"] == pytest.approx(
        float(np.mean((gram(scale.to_model(x)) - g_observed) ** 2)), rel=1e-3)
    assert summary["first_layer"]["white_noise"] == record["white_noise"] > 0
    assert "## The samples' first-layer statistics against the data's" in (out / "report.md").read_text()
    # The same job again, resumed when done, changes nothing; another block size is another job.
    before = (out / "samples.npy").read_bytes()
    assert cli.main(argv + ["--resume"]) == 0
    assert (out / "samples.npy").read_bytes() == before
    assert cli.main([a if a != "4" else "5" for a in argv] + ["--resume"]) == 2
    assert "differs in block" in capsys.readouterr().err


def test_blackjax_mala_takes_a_learned_runs_logdensity_and_agrees_with_ours(descriptor_run):
    import blackjax

    logdensity, chains = sampling.logdensity_fn(descriptor_run)
    n, steps, step = 256, 60, 0.02
    x0 = jnp.zeros((n, *chains.shape))
    mala = blackjax.mala(logdensity, step_size=step)

    def chain(key, x):
        def one(state, k):
            state, info = mala.step(k, state)
            return state, info.acceptance_rate
        state, acceptance = jax.lax.scan(one, mala.init(x), jax.random.split(key, steps))
        return state.position, acceptance.mean()

    theirs, their_acceptance = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(1), n), x0)
    # gcnjax's MALA, x − a∇E + sqrt(2a) ξ with BlackJAX's step a = step (its proposal is x + ε∇log p + sqrt(2ε) ξ).
    from gcnjax import langevin

    ours, info = jax.jit(lambda k, x: langevin.sample(k, lambda xi: -logdensity(xi), x, n_steps=steps,
                                                      step_size=step, mala=True))(jax.random.key(2), x0)
    energy = jax.vmap(lambda xi: -logdensity(xi))
    e_theirs, e_ours = np.asarray(energy(theirs)), np.asarray(energy(ours))
    se = np.sqrt(e_theirs.var() / n + e_ours.var() / n)
    assert abs(e_theirs.mean() - e_ours.mean()) < 4 * se, (e_theirs.mean(), e_ours.mean(), se)
    m_theirs, m_ours = np.asarray(theirs).mean(), np.asarray(ours).mean()
    assert abs(m_theirs - m_ours) < 4 * np.sqrt(np.asarray(theirs).var() / theirs.size * 64), (m_theirs, m_ours)
    assert abs(float(their_acceptance.mean()) - float(info.acceptance_rate.mean())) < 0.05


def test_blackjax_mala_and_ours_reach_a_gaussians_moments():
    import blackjax

    from gcnjax import langevin

    cov = np.array([[1.0, 0.6], [0.6, 0.5]], np.float32)
    precision = jnp.asarray(np.linalg.inv(cov))
    logdensity = lambda x: -0.5 * (x - MU) @ precision @ (x - MU)
    n, steps, step = 4000, 200, 0.1
    mala = blackjax.mala(logdensity, step_size=step)

    def chain(key):
        def one(state, k):
            return mala.step(k, state)[0], None
        return jax.lax.scan(one, mala.init(jnp.zeros(2)), jax.random.split(key, steps))[0].position

    theirs = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(0), n)))
    ours = np.asarray(langevin.sample(jax.random.key(1), lambda x: -logdensity(x), jnp.zeros((n, 2)),
                                      n_steps=steps, step_size=step, mala=True)[0])
    for x in (theirs, ours):
        assert np.all(np.abs(x.mean(axis=0) - MU) < 4 * np.sqrt(np.diag(cov) / n)), x.mean(axis=0)
        np.testing.assert_allclose(np.cov(x.T), cov, atol=0.06)


def test_bad_sampling_input_is_one_line(descriptor_run, tmp_path, capsys):
    cases = [
        (["--run", str(tmp_path)], "holds no run"),
        (["--run", str(descriptor_run), "--devices", "99"], "--devices must be between 1 and"),
        (["--run", str(descriptor_run), "--out", str(descriptor_run)], "already holds a run"),
    ]
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"family": "video_recovery", "config": {}}))
    (other / "params.msgpack").write_bytes(b"")
    cases.append((["--run", str(other)], "'video_recovery', which has no sampler"))
    cases.append((["--run", str(descriptor_run), "--given", str(tmp_path)], "--given conditions a generator's"))
    cases.append((["--run", str(descriptor_run), "--latents", "fitted"], "which has no latents"))
    for flags, message in cases:
        out = ["--out", str(tmp_path / "job")] if "--out" not in flags else []
        assert cli.main(["sample", *flags, *out, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert not (tmp_path / "job").exists()
    with pytest.raises(SystemExit):
        cli.main(["sample", "--run", str(descriptor_run), "--chains", "0", "--out", str(tmp_path / "job")])
    assert "expected a number >= 1" in capsys.readouterr().err


_DEVICES = """
import sys, numpy as np
from gcnjax import sampling
import jax
assert len(jax.devices()) == 8
settings = sampling.SampleSettings(n_chains=20, steps=3, trace_points=3)
for n in (1, 8):
    sampling.sample_run(sys.argv[1], f"{sys.argv[2]}/d{n}", settings, block=8, devices=n, quiet=True)
sampling.sample_run(sys.argv[1], f"{sys.argv[2]}/odd", settings, block=5, devices=8, quiet=True)
"""


@pytest.mark.slow
def test_the_same_samples_on_one_and_eight_devices(descriptor_run, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _DEVICES, str(descriptor_run), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    one, eight = (np.load(tmp_path / d / "samples.npy") for d in ("d1", "d8"))
    np.testing.assert_allclose(eight, one, rtol=0, atol=1e-4)
    # A block that does not split over the devices is rounded up to one that does, and said so.
    assert "a block of 5 chains cannot be split over 8 devices; using 8" in proc.stderr
    assert json.loads((tmp_path / "odd" / "config.json").read_text())["block"] == 8


@pytest.mark.slow
def test_a_killed_sampling_job_resumes_without_losing_or_redoing_a_block(descriptor_run, tmp_path):
    import signal
    import time

    out = tmp_path / "job"
    argv = [sys.executable, "-m", "gcnjax.cli", "sample", "--run", str(descriptor_run), "--chains", "400",
            "--block", "8", "--steps", "40", "--out", str(out), "--quiet"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    progress = out / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (progress.is_file() and json.loads(progress.read_text())["blocks"] >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(progress.read_text())["blocks"]
    assert 3 <= done < 50
    assert subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True).returncode == 0
    whole = tmp_path / "whole"
    assert subprocess.run(argv[:-3] + ["--out", str(whole), "--quiet"], env=env).returncode == 0
    assert (out / "samples.npy").read_bytes() == (whole / "samples.npy").read_bytes()
    assert (out / "energy.npy").read_bytes() == (whole / "energy.npy").read_bytes()


def _tiny_run(kind, root, folder):
    """A learned run of each other family, as small as it can be."""
    out = root / kind
    common = ["--out", str(out), "--quiet"]
    argv = {
        "generator": ["abp", "train", "--data", str(folder), "--net", "face32", "--epochs", "1", "--latent-dim", "4"],
        "multigrid": ["multigrid", "--data", str(folder), "--image-size", "16", "--grids", "4,16", "--iterations",
                      "2", "--steps", "2", "--chains", "4"],
        "coop": ["coop", "--data", str(folder), "--image-size", "16", "--iterations", "2", "--chains", "4", "--steps",
                 "2", "--latent-dim", "4", "--descriptor.layers",
                 '[{"features": 8, "kernel": 5, "stride": 2, "padding": "SAME"}]'],
    }[kind]
    assert cli.main(argv + common) == 0
    return out


@pytest.mark.parametrize("kind,shape", [("generator", (32, 32, 3)),
                                        pytest.param("multigrid", (16, 16, 3), marks=pytest.mark.slow),
                                        pytest.param("coop", (16, 16, 3), marks=pytest.mark.slow)])
def test_sample_a_run_of_each_family(kind, shape, tmp_path, image_folder, capsys):
    folder = image_folder(8, 32)
    run = _tiny_run(kind, tmp_path, folder)
    assert cli.main(["sample", "--run", str(run), "--chains", "6", "--block", "4", "--out", str(tmp_path / "s"),
                     "--quiet"]) == 0
    x = np.load(tmp_path / "s" / "samples.npy")
    assert x.shape == (6, *shape) and np.isfinite(x).all() and x.std() > 0
    assert (tmp_path / "s" / "samples.png").is_file()
    assert "learned for inpainting" not in capsys.readouterr().err + (tmp_path / "s" / "report.md").read_text()
    # A generator's draws are exact, and multi-grid chains under batch norm are one chain over the block:
    # neither has a chain of its own to diagnose.
    config = json.loads((run / "config.json").read_text())["config"]
    traced = kind == "coop" or (kind == "multigrid" and config["norm"] != "batch")
    assert (tmp_path / "s" / "energy.npy").exists() == traced
    if kind == "generator":  # the posterior of z given observed images: chains, traced
        assert cli.main(["sample", "--run", str(run), "--given", str(folder), "--chains", "6", "--block",
                         "4", "--steps", "4", "--trace-points", "2", "--out", str(tmp_path / "p"), "--quiet"]) == 0
        z = np.load(tmp_path / "p" / "samples.npy")
        assert z.shape == (6, 4) and np.isfinite(z).all()
        assert np.load(tmp_path / "p" / "energy.npy").shape == (6, 2)
        assert "holds z" in (tmp_path / "p" / "report.md").read_text()
        # z from the Gaussian fitted to the run's training latents: its draws, described as such.
        assert cli.main(["sample", "--run", str(run), "--latents", "fitted", "--chains", "6", "--out",
                         str(tmp_path / "f"), "--quiet"]) == 0
        fitted = np.load(tmp_path / "f" / "samples.npy")
        assert fitted.shape == (6, *shape) and np.isfinite(fitted).all() and not np.allclose(fitted, x[:6])
        assert "fitted to the run's 8 training latents" in (tmp_path / "f" / "report.md").read_text()
        capsys.readouterr()
        assert cli.main(["sample", "--run", str(run), "--latents", "fitted", "--given", str(folder), "--out",
                         str(tmp_path / "g"), "--quiet"]) == 2
        assert "--latents fitted draws new latents" in capsys.readouterr().err
        # The samples' scores of experiments/abp_faces.py: against the training faces themselves, the row of
        # training faces (all of them, reordered) is at Fréchet distance 0, and each source is scored on the
        # samples it wrote.
        train = gdata.load_images(folder)
        scores = score_samples(run, train, train, tmp_path / "scored")
        assert set(scores["frechet"]) == set(SETS)
        assert abs(scores["frechet"]["training_faces"]) < 1e-6
        for source in ("prior", "fitted"):
            written = np.clip(np.load(tmp_path / "scored" / source / "samples.npy"), 0, 255)
            assert written.shape == train.shape
            assert scores["frechet"][source] == pytest.approx(metrics.random_feature_frechet(written, train))
        assert scores["latent_norm_median"] == pytest.approx(
            np.median(np.linalg.norm(np.load(run / "latents.npy"), axis=1)))


@pytest.mark.slow
def test_sampling_a_run_learned_for_inpainting_warns(tmp_path, image_folder, capsys):
    """A multi-grid run learned for inpainting fitted the missing pixels
    given the rest: its whole images are drawn, with a warning on stderr and
    a note in the report (a run learned to synthesize gets neither: the
    test above); inpainting with it under another mask warns too."""
    folder = image_folder(8, 32)
    run = tmp_path / "inpainting"
    assert cli.main(["multigrid", "--data", str(folder), "--image-size", "16", "--grids", "4,16", "--iterations", "2",
                     "--steps", "2", "--chains", "4", "--learn-mask", "block:8", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", "--run", str(run), "--chains", "4", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert "learned for inpainting (8×8 block missing in the centre), not to synthesize" in capsys.readouterr().err
    assert np.isfinite(np.load(tmp_path / "s" / "samples.npy")).all()
    assert "learned for inpainting" in (tmp_path / "s" / "report.md").read_text()
    # Inpainting under the mask it learned is what it is for; under another it warns.
    for spec, warned in (("block:8", False), ("block:8x8", False), ("pepper:0.5", True)):
        assert cli.main(["multigrid", "inpaint", "--run", str(run), "--data", str(folder), "--mask", spec,
                         "--limit", "2", "--out", str(tmp_path / spec.replace(":", "_")), "--quiet"]) == 0
        assert ("asks for a conditional it was not taught" in capsys.readouterr().err) == warned
    report = (tmp_path / "block_8" / "report.md").read_text()
    assert "learned for inpainting (8×8 block missing in the centre)" in report


def test_generator_posterior_chains_reach_a_linear_models_posterior(tmp_path):
    """g(z) = A z + b with x = g(z) + σ ε, z ~ N(0, I): the posterior of z
    given x is N(μ, Σ), Σ = (I + AᵀA/σ²)⁻¹, μ = Σ Aᵀ(x − b)/σ². Each chain
    is tied to observation i mod 2; blocks of 500."""
    from gcnjax.abp import posterior_chains

    rng = np.random.default_rng(0)
    A, b, sigma = rng.normal(size=(5, 2)).astype(np.float32), rng.normal(size=5).astype(np.float32), 0.7
    x = rng.normal(size=(2, 5)).astype(np.float32) * 2
    apply_fn = lambda params, z: z @ params["A"].T + params["b"]
    chains = posterior_chains(apply_fn, {"A": A, "b": b}, x, latent_dim=2, sigma=sigma,
                              sampler=LangevinConfig(n_steps=40, step_size=0.2, mala=True), trace_points=2)
    n = 1000
    sampling.sample_chains(chains, tmp_path / "job", n_chains=n, block=500, quiet=True)
    z = np.load(tmp_path / "job" / "samples.npy").astype(np.float64)
    cov = np.linalg.inv(np.eye(2) + A.T.astype(np.float64) @ A / sigma**2)
    for i in range(2):
        zi, mean = z[i::2], cov @ A.T @ (x[i] - b) / sigma**2
        se = np.sqrt(np.diag(cov) / zi.shape[0])
        assert np.all(np.abs(zi.mean(axis=0) - mean) < 4 * se), (zi.mean(axis=0), mean)
        np.testing.assert_allclose(np.cov(zi.T), cov, atol=0.25 * np.max(np.diag(cov)))
    assert 0.2 < np.load(tmp_path / "job" / "acceptance.npy").mean() < 1


@pytest.mark.slow
def test_sample_videos_of_another_length(tmp_path):
    frames = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3))
    video = gdata.save_video(tmp_path / "v.gif", frames)
    run = tmp_path / "video"
    assert cli.main(["stgconvnet", "--data", str(video), "--frames", "6", "--image-size", "16", "--iterations", "2",
                     "--steps", "2", "--out", str(run), "--quiet"]) == 0
    assert cli.main(["sample", "--run", str(run), "--chains", "3", "--frames", "10", "--out",
                     str(tmp_path / "s"), "--quiet"]) == 0
    assert np.load(tmp_path / "s" / "samples.npy").shape == (3, 10, 16, 16, 3)
