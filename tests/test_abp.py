"""Generator runs: learning, held-out reconstruction against PCA, recovery,
resume, and the ``gcnjax abp`` commands, on tiny settings."""

import json
import shutil

import flax.serialization

import jax
import numpy as np
import pytest
from PIL import Image

from gcnjax import abp, cli, masks
from gcnjax import generator as G
from gcnjax.data import DataError, load_data
from gcnjax.langevin import LangevinConfig
from gcnjax.train import RunConfig
from gcnjax.nets import init_params


def _digits(n, seed=0):
    """n 28×28 gray images (0..255): a bright bar at a random place and angle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28, 1), np.float32)
    for i in range(n):
        angle, cx, cy = rng.uniform(0, np.pi), rng.uniform(9, 19), rng.uniform(9, 19)
        d = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
        out[i, ..., 0] = 255.0 * np.exp(-0.5 * (d / 1.5) ** 2) * (np.hypot(xx - cx, yy - cy) < 9)
    return out


TINY = G.GeneratorConfig(net="digit", latent_dim=4, langevin=LangevinConfig.from_delta(0.3, 3), batch_size=4,
                         n_epochs=2, learning_rate=1e-3,
                         run=RunConfig(log_every=1, image_every=2, checkpoint_every=2, keep_checkpoints=10))


def test_pca_reconstruction_error_is_the_discarded_variance():
    rng = np.random.default_rng(0)
    # Data with known principal axes and variances 9, 4, 1, 0.25 (an orthonormal basis Q).
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    scales = np.array([3.0, 2.0, 1.0, 0.5])
    train = (rng.normal(size=(20000, 4)) * scales) @ q.T + 5.0
    test = (rng.normal(size=(20000, 4)) * scales) @ q.T + 5.0
    for d in (1, 2, 3):
        rec = abp.pca_reconstruct(train, test, d)
        mse = np.mean(np.sum((test - rec) ** 2, axis=1))
        np.testing.assert_allclose(mse, np.sum(scales[d:] ** 2), rtol=0.03)
    np.testing.assert_allclose(abp.pca_reconstruct(train, test, 4), test, atol=1e-8)


def _subspace_data(n, dim=30, d=3, seed=0):
    """n examples lying exactly in a d-dimensional affine subspace of R^dim (shaped (n, dim, 1, 1))."""
    rng = np.random.default_rng(seed)
    basis, offset = rng.normal(size=(d, dim)), rng.normal(size=dim)
    return lambda m, s: (offset + np.random.default_rng(s).normal(size=(m, d)) @ basis).reshape(m, dim, 1, 1)


def test_pca_completion_recovers_the_missing_values_of_data_in_a_subspace():
    make = _subspace_data(0)
    train, test = make(200, 1), make(12, 2)
    mean, components = abp.pca_fit(train, 3)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-10)
    rng = np.random.default_rng(3)
    # 3 or more observed values of a generic example determine its 3 coefficients: exact completion.
    mask = np.zeros(test.shape)
    for i in range(12):
        mask[i, rng.choice(30, size=3 + i, replace=False)] = 1
    scrambled = np.where(mask == 1, test, 1e6)  # the missing values never enter
    np.testing.assert_allclose(abp.pca_complete(mean, components, scrambled, mask), test, atol=1e-8)
    # 2 observed values cannot: the minimum-norm fit misses the rest.
    few = np.zeros(test.shape)
    few[:, :2] = 1
    assert np.abs(abp.pca_complete(mean, components, test, few) - test)[:, 2:].max() > 0.1
    # Baselines keep the observed values; the mean fill puts the training mean in the missing ones.
    rec = abp.baseline_recoveries((mean, components), scrambled, mask)
    np.testing.assert_allclose(rec["pca"], test, atol=1e-8)
    np.testing.assert_array_equal(rec["mean"][mask == 1], test[mask == 1])
    np.testing.assert_allclose(rec["mean"][mask == 0], np.broadcast_to(train.mean(axis=0), test.shape)[mask == 0])


def test_ridge_fill_is_the_conditional_mean_of_a_gaussian_and_the_primal_ridge_regression():
    rng = np.random.default_rng(7)
    mu = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + 0.5 * np.eye(5)
    train = rng.multivariate_normal(mu, cov, size=40000)
    test = rng.multivariate_normal(mu, cov, size=6)
    mask = np.array([1, 0, 1, 1, 0])
    o, m = mask == 1, mask == 0
    scrambled = np.where(o, test, 1e6)  # the missing values never enter
    filled, info = abp.ridge_fill(train, scrambled, mask, ridge=1e-9)
    np.testing.assert_array_equal(filled[:, o], test[:, o])
    # The Gaussian's conditional mean μ_M + Σ_MO Σ_OO⁻¹ (x_O − μ_O), from the true moments.
    conditional = mu[m] + (test[:, o] - mu[o]) @ np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)])
    np.testing.assert_allclose(filled[:, m], conditional, atol=0.05)
    # Fewer examples than observed values, a real ridge: the ridge regression's normal equations.
    small, x = rng.normal(size=(8, 12)), rng.normal(size=(3, 12))
    mask = (np.arange(12) % 3 != 0).astype(float)
    o, m = mask == 1, mask == 0
    mean = small.mean(axis=0)
    xo, xm = small[:, o] - mean[o], small[:, m] - mean[m]
    lam = 0.3 * np.sum(xo ** 2) / len(small)
    w = np.linalg.solve(xo.T @ xo + lam * np.eye(o.sum()), xo.T @ xm)
    filled, _ = abp.ridge_fill(small, x, mask, ridge=0.3)
    np.testing.assert_allclose(filled[:, m], mean[m] + (x[:, o] - mean[o]) @ w, atol=1e-10)
    # A mask per example: each example filled by the fit of its own mask.
    masks = np.stack([mask, 1 - mask, mask])
    each, info = abp.ridge_fill(small, x, masks, ridge=0.3)
    np.testing.assert_allclose(each[1], abp.ridge_fill(small, x[1:2], 1 - mask, ridge=0.3)[0][0], atol=1e-12)
    np.testing.assert_allclose(each[[0, 2]], filled[[0, 2]], atol=1e-12)
    assert info["ridge"] == [0.3] * 3
    with pytest.raises(ValueError, match="nothing observed"):
        abp.ridge_fill(small, x, np.zeros(12))


def test_ridge_fill_chooses_its_ridge_by_the_exact_leave_one_out_error():
    rng = np.random.default_rng(8)
    train = rng.normal(size=(15, 2, 5)) + np.linspace(0, 1, 10).reshape(2, 5)
    mask = np.ones((2, 5))
    mask[1, 1:4] = 0
    filled, info = abp.ridge_fill(train, train[:2], mask)
    o, m = mask.reshape(-1) == 1, mask.reshape(-1) == 0
    flat = train.reshape(15, -1)
    xo = flat[:, o] - flat[:, o].mean(axis=0)
    scale = np.sum(xo ** 2) / len(flat)
    brute = {}
    for multiple in abp.RIDGE_MULTIPLES:  # refit the mean and the weights without each example, predict it
        errors = []
        for i in range(len(flat)):
            rest = flat[np.arange(len(flat)) != i]
            mo, mm = rest[:, o].mean(axis=0), rest[:, m].mean(axis=0)
            ro, rm = rest[:, o] - mo, rest[:, m] - mm
            w = np.linalg.solve(ro.T @ ro + multiple * scale * np.eye(o.sum()), ro.T @ rm)
            errors.append(np.mean((mm + (flat[i, o] - mo) @ w - flat[i, m]) ** 2))
        brute[multiple] = np.mean(errors)
    np.testing.assert_allclose([info["leave_one_out"][k] for k in brute], list(brute.values()), rtol=1e-8)
    assert info["ridge"] == min(brute, key=brute.get)
    again, _ = abp.ridge_fill(train, train[:2], mask, ridge=info["ridge"])
    np.testing.assert_allclose(filled, again)


def test_pca_learned_from_incomplete_data_finds_the_subspace():
    make = _subspace_data(0, seed=4)
    train, test = make(200, 5), make(10, 6)
    rng = np.random.default_rng(1)
    train_mask = (rng.uniform(size=train.shape) > 0.3).astype(float)
    test_mask = (rng.uniform(size=test.shape) > 0.5).astype(float)
    scrambled = np.where(train_mask == 1, train, -1e6)
    # Alternating least squares never raises the observed values' error ...
    errors = []
    for rounds in range(1, 6):
        mean, components = abp.pca_fit(scrambled, 3, mask=train_mask, iterations=rounds)
        errors.append(np.sum(train_mask * (abp.pca_complete(mean, components, scrambled, train_mask) - train) ** 2))
    assert all(b <= a * (1 + 1e-9) for a, b in zip(errors, errors[1:])), errors
    # ... and converges to the subspace: new examples are completed exactly.
    mean, components = abp.pca_fit(scrambled, 3, mask=train_mask, iterations=200)
    np.testing.assert_allclose(abp.pca_complete(mean, components, test, test_mask), test, atol=1e-6)


@pytest.mark.slow
def test_learn_generator_writes_a_run_with_the_pca_table(tmp_path):
    data = _digits(14)
    train, test = data[:10], data[10:]
    r = abp.learn_generator(TINY, train, tmp_path / "run", test_observations=test, test_rounds=2, quiet=True)
    assert r["iterations"] == TINY.total_iterations(10) == 6
    for name in ("config.json", "metrics.csv", "observed.png", "samples.png", "reconstructed.png", "heldout.png",
                 "params.msgpack", "latents.npy", "report.md", "heldout_errors.npy"):
        assert (tmp_path / "run" / name).is_file(), name
    report = (tmp_path / "run" / "report.md").read_text()
    assert "ABP against PCA" in report and "| 4 |" in report
    errors = np.load(tmp_path / "run" / "heldout_errors.npy")
    assert errors.shape == (3, 4)
    # The PCA column is PCA's error, computed independently here.
    x = train / 127.5 - 1.0
    pca = (abp.pca_reconstruct(x, test / 127.5 - 1.0, 4) + 1.0) * 127.5
    np.testing.assert_allclose(errors[2], np.mean(((test - pca) / 255.0) ** 2, axis=(1, 2, 3)), rtol=1e-4)
    np.testing.assert_allclose(r["test_mse_pca"], errors[2].mean(), rtol=1e-6)
    np.testing.assert_allclose([r["test_mse_abp"], r["test_mse_abp_fit"]], errors[:2].mean(axis=1), rtol=1e-6)
    assert np.load(tmp_path / "run" / "latents.npy").shape == (10, 4)
    # Samples from the Gaussian fitted to the training latents, beside the prior's, with the latents' scale.
    assert (tmp_path / "run" / "samples_fitted.png").is_file()
    norms = np.linalg.norm(np.load(tmp_path / "run" / "latents.npy"), axis=1)
    assert f"norm has median {np.median(norms):.1f}" in report

    # The run loads back, and its params generate what the run saved.
    config, scale, net, params, _ = abp.load_generator_run(tmp_path / "run")
    assert config == TINY
    np.testing.assert_allclose(
        scale.to_data(net.apply(params, jax.numpy.asarray(np.load(tmp_path / "run" / "latents.npy")))),
        scale.to_data(net.apply(r["state"].params, r["state"].latents)), atol=1e-4)


@pytest.mark.slow
def test_early_stopping_keeps_the_params_of_the_best_validation_error(tmp_path):
    data = _digits(16, seed=2)
    r = abp.learn_generator(TINY, data[:10], tmp_path / "run", validation_observations=data[10:13],
                            validation_rounds=2, test_rounds=2, quiet=True)
    record = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert [row["iteration"] for row in record["rows"]] == [2, 4, 6]
    best = min(record["rows"], key=lambda row: row["mse"])
    assert (record["best_iteration"], record["best_mse"]) == (best["iteration"], best["mse"])
    # params.msgpack holds the params that gave the best error: evaluating them again gives it.
    config, scale, net, params, _ = abp.load_generator_run(tmp_path / "run")
    fit, _ = abp.reconstruct_images(jax.random.key(TINY.seed + 3), config, net, params,
                                    scale.to_model(data[10:13]), rounds=2, prior_weight=0.0)
    np.testing.assert_allclose(abp.mean_squared_error(data[10:13], scale.to_data(fit), scale.unit).mean(),
                               best["mse"], rtol=1e-5)
    final = flax.serialization.from_bytes(params, (tmp_path / "run" / "params_final.msgpack").read_bytes())
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(r["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert r["validation"]["best_iteration"] == best["iteration"]
    # Every output comes from the kept params: the training latents saved (refined under them when they
    # are not the last iteration's) give the reported training error through them.
    latents = np.load(tmp_path / "run" / "latents.npy")
    regenerated = scale.to_data(net.apply(params, jax.numpy.asarray(latents)))
    np.testing.assert_allclose(abp.mean_squared_error(data[:10], regenerated, scale.unit).mean(), r["train_mse"],
                               rtol=1e-4)
    if best["iteration"] == r["iterations"]:
        np.testing.assert_array_equal(latents, np.asarray(r["state"].latents))
    else:
        assert not np.allclose(latents, np.asarray(r["state"].latents))
        assert "refined under them" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.slow
def test_resume_gives_the_uninterrupted_run_with_its_latents(tmp_path):
    data = _digits(8, seed=1)
    full = abp.learn_generator(TINY, data, tmp_path / "full", quiet=True)
    # An interrupted copy: the run as it stood at its checkpoint of iteration 2.
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for p in (tmp_path / "cut" / "checkpoints").iterdir():
        if p.name.isdigit() and int(p.name) > 2:
            shutil.rmtree(p)
    (tmp_path / "cut" / "params.msgpack").unlink()
    resumed = abp.learn_generator(TINY, data, tmp_path / "cut", resume=True, quiet=True)
    f, r = full["state"], resumed["state"]
    for a, b in zip(jax.tree_util.tree_leaves((f.params, f.opt_state, f.step)),
                    jax.tree_util.tree_leaves((r.params, r.opt_state, r.step))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(full["state"].latents), np.asarray(resumed["state"].latents))
    rows = (tmp_path / "cut" / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 5)]
    with pytest.raises(ValueError, match="different model or data"):
        abp.learn_generator(TINY, data[:6], tmp_path / "cut", resume=True, quiet=True)


def test_learning_from_incomplete_data_never_sees_the_missing_pixels(tmp_path):
    data = _digits(8, seed=2)
    mask = masks.salt_and_pepper(data.shape, 0.5, seed=0)
    scrambled = np.where(mask == 0, 255.0 - data, data)  # different values where missing
    a = abp.learn_generator(TINY, data, tmp_path / "a", mask=mask, mask_spec="pepper:0.5", quiet=True)
    b = abp.learn_generator(TINY, scrambled, tmp_path / "b", mask=mask, mask_spec="pepper:0.5", quiet=True)
    for x, y in zip(jax.tree_util.tree_leaves(a["state"].params), jax.tree_util.tree_leaves(b["state"].params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert "Learning from incomplete data" in (tmp_path / "a" / "report.md").read_text()
    assert 0 < a["train_recovery_error"] < 1
    # Rows: ABP pasted, ABP g(z) alone, PCA completion, mean fill. On the missing values the pasted
    # recovery is g(z); over the whole image the pasted one errs only there.
    missing = np.load(tmp_path / "a" / "recovery_errors.npy")
    whole = np.load(tmp_path / "a" / "whole_image_errors.npy")
    assert missing.shape == whole.shape == (4, 8)
    np.testing.assert_allclose(missing[0], missing[1])
    fraction = 1 - mask.reshape(8, -1).mean(axis=1)
    np.testing.assert_allclose(whole[0], missing[0] * fraction, rtol=1e-5)
    np.testing.assert_allclose(whole[2:], missing[2:] * fraction, rtol=1e-5)
    assert np.all(whole[1] > whole[0])
    np.testing.assert_allclose(a["train_recovery_error_pca"], missing[2].mean())
    # The mean fill is the observed mean of each position, computed here independently (a position
    # never observed gets the model's 0, mid-grey 127.5).
    counts = mask.sum(axis=0)
    position_mean = np.where(counts > 0, (data * mask).sum(axis=0) / np.maximum(counts, 1), 127.5)
    per_image = [np.abs(data[i] - position_mean)[mask[i] == 0].mean() / 255.0 for i in range(8)]
    np.testing.assert_allclose(missing[3], per_image, rtol=1e-4)
    for name in ("recovered.png", "generated.png", "recovered_pca.png"):
        assert (tmp_path / "a" / name).is_file()


def test_recovery_keeps_observed_pixels_and_scores_the_missing_ones(tmp_path):
    data = _digits(6, seed=3)
    abp.learn_generator(TINY, data, tmp_path / "run", quiet=True)
    config, scale, net, params, _ = abp.load_generator_run(tmp_path / "run")
    mask = masks.block(data.shape, 10)
    out = abp.recover_images(jax.random.key(0), config, net, params, scale, data, mask, rounds=2)
    observed = np.broadcast_to(mask, data.shape) == 1
    np.testing.assert_array_equal(out["recovered"][observed], data[observed])
    np.testing.assert_array_equal(out["recovered"][~observed], out["generated"][~observed])
    direct = np.abs(data - out["generated"])[~observed].reshape(6, -1).mean(axis=1) / 255.0
    np.testing.assert_allclose(out["errors"], direct, rtol=1e-5)


@pytest.mark.slow
def test_reconstruction_is_one_call_per_chunk_and_chunking_changes_nothing():
    config = G.GeneratorConfig(net="digit", latent_dim=3, latent_init="zeros",
                               langevin=LangevinConfig.from_delta(0.3, 4, noise=False))
    net = G.make_net(config)
    params = init_params(net, jax.random.key(0), np.zeros((1, 3), np.float32))
    x = _digits(7) / 127.5 - 1.0
    whole, z_whole = abp.reconstruct_images(jax.random.key(1), config, net, params, x, rounds=2)
    parts, z_parts = abp.reconstruct_images(jax.random.key(1), config, net, params, x, rounds=2, chunk=3)
    np.testing.assert_allclose(z_whole, z_parts, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole, parts, atol=1e-5)


def test_bad_inputs_name_the_fix(tmp_path):
    data = _digits(4)
    with pytest.raises(DataError, match="'digit' generator makes"):
        abp.learn_generator(TINY, np.zeros((4, 32, 32, 1)), tmp_path / "a", quiet=True)
    with pytest.raises(DataError, match="different shapes"):
        abp.learn_generator(TINY, [data[0], data[1, :20]], tmp_path / "c", quiet=True)
    with pytest.raises(ValueError, match="mask of shape"):
        abp.learn_generator(TINY, data, tmp_path / "b", mask=np.ones((4, 10, 10, 1)), quiet=True)
    with pytest.raises(ValueError, match="latent_dim must be an integer >= 1"):
        G.GeneratorConfig(latent_dim=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        abp.load_generator_run(tmp_path / "no-such-run")
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def _image_folder(path, images):
    path.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im[..., 0].astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


def test_abp_train_mirror_learns_from_the_training_images_and_their_mirrors(tmp_path):
    folder = _image_folder(tmp_path / "bars", _digits(10, seed=4))
    run = tmp_path / "run"
    assert cli.main(["abp", "train", "--data", str(folder), "--net", "digit", "--latent-dim", "3", "--epochs", "1",
                     "--batch-size", "4", "--steps", "2", "--holdout", "2", "--validation", "2", "--mirror",
                     "--max-grad-norm", "1.0", "--out", str(run), "--quiet"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["observed_shape"] == [12, 28, 28, 1] and saved["config"]["max_grad_norm"] == 1.0
    assert "the mirror images of its training examples; 12 observed" in (run / "report.md").read_text()
    # The held-out table's PCA is fitted on the 6 training images and their mirrors, not on the
    # validation or held-out ones (an independent fit here).
    images = load_data(str(folder), size=(28, 28), channels=1)
    train = np.concatenate([images[:6], images[:6, :, ::-1]])
    projected = (abp.pca_reconstruct(train / 127.5 - 1, images[8:] / 127.5 - 1, 3) + 1) * 127.5
    np.testing.assert_allclose(np.load(run / "heldout_errors.npy")[2],
                               abp.mean_squared_error(images[8:], projected), rtol=1e-4)


def test_abp_train_mirror_mirrors_the_mask_with_the_images(tmp_path, monkeypatch):
    # Learning from incomplete data: a mirror image must hide the mirror of its original's missing pixels,
    # or the mirrored copies would show what the mask withholds.
    folder = _image_folder(tmp_path / "bars", _digits(6, seed=5))
    seen = {}

    def learn(config, train, out, *, mask=None, **kwargs):
        seen.update(train=train, mask=mask)
        return {"seconds": 0.0, "train_mse": 0.0, "report": out}

    monkeypatch.setattr(abp, "learn_generator", learn)
    assert cli.main(["abp", "train", "--data", str(folder), "--net", "digit", "--mask", "pepper:0.5", "--mirror",
                     "--out", str(tmp_path / "run"), "--quiet"]) == 0
    images = load_data(str(folder), size=(28, 28), channels=1)
    mask = masks.from_spec("pepper:0.5", images.shape, seed=G.GeneratorConfig().seed)
    np.testing.assert_array_equal(seen["train"], np.concatenate([images, images[:, :, ::-1]]))
    np.testing.assert_array_equal(seen["mask"], np.concatenate([mask, mask[:, :, ::-1]]))
    observed = seen["train"] * seen["mask"]
    np.testing.assert_array_equal(observed[6:], observed[:6, :, ::-1])


def test_abp_commands_end_to_end(tmp_path, capsys):
    folder = _image_folder(tmp_path / "bars", _digits(10, seed=4))
    run = tmp_path / "run"
    argv = ["abp", "train", "--data", str(folder), "--net", "digit", "--latent-dim", "3", "--epochs", "1",
            "--batch-size", "4", "--steps", "2", "--holdout", "2", "--validation", "2", "--log-every", "1", "--image-every", "1",
            "--out", str(run), "--quiet"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out reconstruction MSE" in printed
    assert json.loads((run / "config.json").read_text())["observed_shape"] == [6, 28, 28, 1]
    assert [r["iteration"] for r in json.loads((run / "validation.json").read_text())["rows"]] == [1, 2]
    assert cli.main(["abp", "inpaint", "--run", str(run), "--data", str(folder), "--mask", "pepper:0.5",
                     "--mask", "block:8", "--rounds", "1", "--out", str(tmp_path / "inpaint")]) == 0
    results = json.loads((tmp_path / "inpaint" / "results.json").read_text())
    assert set(results) == {"pepper:0.5", "block:8"}
    assert all(set(r) == {"abp", "pca", "mean", "abp_bound", "pca_bound"} for r in results.values())
    # The bounds: the errors on each mask's missing values of PCA's projection of the whole image (fitted
    # here independently on the run's 6 training images) and of g(z) with z inferred from the whole image.
    images = load_data(str(folder), size=(28, 28), channels=1)
    config, scale, net, params, _ = abp.load_generator_run(run)
    projected = (abp.pca_reconstruct(images[:6] / 127.5 - 1, images / 127.5 - 1, 3) + 1) * 127.5
    whole, _ = abp.reconstruct_images(jax.random.key(0), config, net, params, scale.to_model(images), rounds=1)
    for i, spec in enumerate(["pepper:0.5", "block:8"]):
        mask = masks.from_spec(spec, images.shape, seed=i)
        missing = np.broadcast_to(mask, images.shape) == 0
        for key, fill in (("pca_bound", projected), ("abp_bound", scale.to_data(whole))):
            direct = np.mean([np.abs(images[j] - fill[j])[missing[j]].mean() for j in range(len(images))]) / 255.0
            np.testing.assert_allclose(results[spec][key], direct, rtol=1e-4)
    assert (tmp_path / "inpaint" / "recovery_block_8.png").is_file()
    assert cli.main(["abp", "reconstruct", "--run", str(run), "--data", str(folder), "--rounds", "1",
                     "--out", str(tmp_path / "rec")]) == 0
    rec = json.loads((tmp_path / "rec" / "results.json").read_text())
    assert {"reconstruction_mse", "reconstruction_mse_pca"} <= set(rec)
    # PCA's column is PCA's error on these images, fitted on the run's 6 training images.
    np.testing.assert_allclose(rec["reconstruction_mse_pca"], abp.mean_squared_error(images, projected).mean(),
                               rtol=1e-4)
    # Bad input: one line, exit status 2.
    capsys.readouterr()
    assert cli.main(["abp", "inpaint", "--run", str(tmp_path / "nope"), "--data", str(folder), "--mask",
                     "pepper:0.5", "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["abp", "inpaint", "--run", str(run), "--data", str(folder), "--mask", "holes:3",
                     "--out", str(tmp_path / "y")]) == 2
    assert "pepper:FRACTION" in capsys.readouterr().err
    assert cli.main(argv[:-3] + ["--validation", "8", "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "--validation 8 leaves no training examples" in capsys.readouterr().err
