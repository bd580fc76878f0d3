"""Multi-grid modeling and sampling: pyramid, coarse-to-fine chains,
learning step (closed form for a linear f), inpainting, runs, config."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gcnjax import cli, masks, presets
from gcnjax import multigrid as M
from gcnjax.langevin import LangevinConfig
from gcnjax.nets import DES4_LAYERS, MultigridNet, multigrid_layers
from gcnjax.train import RunConfig
from gcnjax.nets import init_params


class LinearF(nn.Module):
    """f(x) = <w, x>: the ML gradient of w is mean(data) − mean(samples)."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(1.0), x.shape[1:])
        return jnp.sum(x * w, axis=tuple(range(1, x.ndim)))


def tiny_config(**kw):
    """The authors' preset shrunk: what the CLI test's flags give, so that
    the run, inpainting and CLI tests share one compiled step (the
    multigrid module caches them by config)."""
    base = dict(grids=(4, 8), width=0.04, batch_size=3, n_iterations=4,
                langevin=LangevinConfig.from_delta(0.3, 2, noise=False),
                run=RunConfig(log_every=1, image_every=2, checkpoint_every=2))
    base.update(kw)
    return dataclasses.replace(presets.get_multigrid("authors"), **base)


def pixel_images(n=3, size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------- pyramid


def test_downsample_of_upsample_is_identity():
    # Integer pixels and power-of-two blocks: the block means are exact in
    # any summation order, so equality is exact.
    x = jnp.asarray(pixel_images(2, 4))
    for size in (4, 16, 64):
        np.testing.assert_array_equal(M.downsample(M.upsample(x, size), 4), x)
    # Any floats, any block (3×3): equal up to round-off.
    y = jax.random.normal(jax.random.key(0), (2, 5, 5, 1))
    np.testing.assert_allclose(M.downsample(M.upsample(y, 15), 5), y, rtol=1e-6, atol=1e-6)


def test_pyramid_equals_blockwise_numpy_means():
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 3))
    pyr = M.pyramid(jnp.asarray(x, jnp.float32), grids=(1, 2, 4, 8, 16))
    for s, y in pyr.items():
        k = 16 // s
        expected = np.zeros((2, s, s, 3))
        for i in range(s):
            for j in range(s):
                expected[:, i, j] = x[:, i * k:(i + 1) * k, j * k:(j + 1) * k].mean(axis=(1, 2))
        np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pyr[16], x, rtol=1e-6)


def test_upsample_is_nearest_neighbour_replication():
    x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    expected = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]], np.float32)
    np.testing.assert_array_equal(M.upsample(x, 4)[0, ..., 0], expected)


def test_pyramid_sizes_must_divide():
    with pytest.raises(ValueError, match="must divide"):
        M.downsample(jnp.zeros((1, 64, 64, 3)), 24)
    with pytest.raises(ValueError, match="multiple"):
        M.upsample(jnp.zeros((1, 4, 4, 3)), 10)


# ---------------------------------------------------------------- sampling and learning


def _step_for(cfg, apply_fns, optimizer=None):
    optimizer = optimizer or M.make_optimizer(cfg)
    nets = {g: apply_fns[g] for g in cfg.grids}
    return M.make_train_step(cfg, nets, optimizer, (0.0, 255.0)), optimizer


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_linear_f_learning_step_matches_closed_form(norm):
    """f_s(x) = <w_s, x>, no noise, no reference, no clip: each chain moves by
    a·w_s per step, so samples_s = upsample(samples_prev) + n·a·w_s, and one
    SGD step gives w_s + lr·(mean downsample(data, s) − mean samples_s).
    The batch-coupled chain (norm="batch") must give the same: the summed
    energy of independent images has the same per-image gradient."""
    n_steps, delta, lr = 4, 0.5, 0.1
    a = 0.5 * delta**2
    cfg = tiny_config(grids=(2, 4, 8), norm=norm, clip_to_data=False,
                      langevin=LangevinConfig.from_delta(delta, n_steps, noise=False, unroll=1))
    lin = LinearF()
    apply_fns = {g: lin.apply for g in cfg.grids}
    opt = optax.sgd(lr)
    step, _ = _step_for(cfg, apply_fns, opt)
    params = {M.grid_key(g): init_params(lin, jax.random.key(g), jnp.zeros((1, g, g, 3))) for g in cfg.grids}
    state = M.MultigridState(params, {k: opt.init(p) for k, p in params.items()},
                             {}, jax.random.key(1), jnp.zeros((), jnp.int32))
    w0 = {g: np.asarray(params[M.grid_key(g)]["params"]["w"], np.float64) for g in cfg.grids}
    data = pixel_images(seed=3)
    new, metrics = step(state, jnp.asarray(data))

    x = data.mean(axis=(1, 2), keepdims=True).astype(np.float64)
    for g in cfg.grids:
        k = g // x.shape[1]
        x = np.repeat(np.repeat(x, k, axis=1), k, axis=2) + n_steps * a * w0[g]
        np.testing.assert_allclose(np.asarray(new.samples[M.grid_key(g)]), x, rtol=1e-4, atol=1e-3)
        data_g = data.reshape(3, g, 8 // g, g, 8 // g, 3).mean(axis=(2, 4))
        ml_gradient = data_g.mean(axis=0) - x.mean(axis=0)
        w1 = np.asarray(new.params[M.grid_key(g)]["params"]["w"])
        np.testing.assert_allclose(w1, w0[g] + lr * ml_gradient, rtol=1e-4, atol=1e-3)
        # The step raises f(data) − f(samples) (the ML direction): by lr·||gradient||².
        gap = lambda w: np.mean(np.sum(data_g * w, axis=(1, 2, 3))) - np.mean(np.sum(x * w, axis=(1, 2, 3)))
        np.testing.assert_allclose(gap(w1) - gap(w0[g]), lr * np.sum(ml_gradient**2), rtol=1e-3)
        assert gap(w1) > gap(w0[g])
        np.testing.assert_allclose(float(metrics[f"f_data_{g}"]), np.mean(np.sum(data_g * w0[g], axis=(1, 2, 3))),
                                   rtol=1e-4)


def test_learning_for_inpainting_is_the_conditional_likelihood_gradient():
    """Learned with a mask, the chains are the batch's inpainting chains:
    with f_s(x) = <w_s, x> and no noise, the missing coarse pixels move by
    n·a·w_s from the up-sampled coarser fill, the observed ones stay at the
    data, and the ML step is w_s + lr·mean (1 − m_s)·(data_s − fill_s): the
    gradient of log p(x_M | x_O) vanishes on what is observed. With nothing
    missing the samples are the data and the params do not move."""
    n_steps, delta, lr = 3, 0.5, 0.1
    a = 0.5 * delta**2
    lin = LinearF()
    data = pixel_images(seed=4)
    mask = masks.block(data.shape, 4)  # a centred 4×4 of 8×8
    for spec in ("block:4", "pepper:0"):
        cfg = tiny_config(grids=(2, 4, 8), norm="none", clip_to_data=False, learn_mask=spec,
                          langevin=LangevinConfig.from_delta(delta, n_steps, noise=False, unroll=1))
        step, opt = _step_for(cfg, {g: lin.apply for g in cfg.grids}, optax.sgd(lr))
        params = {M.grid_key(g): init_params(lin, jax.random.key(g), jnp.zeros((1, g, g, 3))) for g in cfg.grids}
        state = M.MultigridState(params, {k: opt.init(p) for k, p in params.items()},
                                 {}, jax.random.key(1), jnp.zeros((), jnp.int32))
        w0 = {g: np.asarray(params[M.grid_key(g)]["params"]["w"], np.float64) for g in cfg.grids}
        new, _ = step(state, jnp.asarray(data))
        w1 = {g: np.asarray(new.params[M.grid_key(g)]["params"]["w"], np.float64) for g in cfg.grids}
        if spec == "pepper:0":
            for g in cfg.grids:
                np.testing.assert_allclose(np.asarray(new.samples[M.grid_key(g)]),
                                           data.reshape(3, g, 8 // g, g, 8 // g, 3).mean(axis=(2, 4)), rtol=1e-5)
                np.testing.assert_allclose(w1[g], w0[g], rtol=0, atol=1e-6)
            continue
        x = (data * mask).sum(axis=(1, 2), keepdims=True) / mask.sum(axis=(1, 2), keepdims=True)
        np.testing.assert_allclose(np.asarray(new.samples["start"]), x, rtol=1e-5)
        for g in cfg.grids:
            k = 8 // g
            data_g = data.reshape(3, g, k, g, k, 3).mean(axis=(2, 4))
            m_g = (mask.reshape(3, g, k, g, k, 1).min(axis=(2, 4)) > 0).astype(np.float64)
            up = np.repeat(np.repeat(x, g // x.shape[1], axis=1), g // x.shape[2], axis=2)
            x = m_g * data_g + (1 - m_g) * (up + n_steps * a * w0[g])
            np.testing.assert_allclose(np.asarray(new.samples[M.grid_key(g)]), x, rtol=1e-4, atol=1e-3)
            gradient = ((1 - m_g) * (data_g - x)).mean(axis=0)
            np.testing.assert_allclose(w1[g], w0[g] + lr * gradient, rtol=1e-4, atol=1e-3)
            observed = np.broadcast_to(m_g.mean(axis=0) == 1, w1[g].shape)
            assert (g == 2) == (not observed.any())  # no 4×4 block is whole at 2×2; a ring is at 4×4 and 8×8
            np.testing.assert_allclose(w1[g][observed], w0[g][observed], rtol=0, atol=1e-6)


def test_learning_for_inpainting_draws_a_random_mask_kind_afresh_each_iteration():
    """With ``pepper:0.5`` the finest chains equal the data on exactly half
    of each image's pixels (clamped) and differ on the rest (filled); the
    missing set changes from one iteration to the next, and from one run's
    key to another's."""
    lin = LinearF()
    data = jnp.asarray(pixel_images(seed=5))
    cfg = tiny_config(grids=(2, 8), norm="none", clip_to_data=False, learn_mask="pepper:0.5",
                      langevin=LangevinConfig.from_delta(0.5, 2, noise=False, unroll=1))
    step, opt = _step_for(cfg, {g: lin.apply for g in cfg.grids}, optax.sgd(0.1))

    def missing_sets(seed, iterations):
        params = {M.grid_key(g): init_params(lin, jax.random.key(g), jnp.zeros((1, g, g, 3))) for g in cfg.grids}
        state = M.MultigridState(params, {k: opt.init(p) for k, p in params.items()},
                                 {}, jax.random.key(seed), jnp.zeros((), jnp.int32))
        sets = []
        for _ in range(iterations):
            state, _ = step(state, data)
            filled = np.asarray(state.samples[M.grid_key(8)])
            sets.append(~np.all(np.isclose(filled, np.asarray(data), rtol=0, atol=1e-6), axis=-1))
        return sets

    first, second = missing_sets(seed=1, iterations=2)
    np.testing.assert_array_equal(first.sum(axis=(1, 2)), 32)
    np.testing.assert_array_equal(second.sum(axis=(1, 2)), 32)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, missing_sets(seed=2, iterations=1)[0])


@pytest.mark.slow
def test_train_step_traced_once_and_chains_start_at_mean_colour():
    traces = {"n": 0}
    cfg = tiny_config(grids=(4,))
    nets = M.make_nets(cfg)

    def counting(net):
        def apply(params, x):
            traces["n"] += 1  # runs only while jax traces
            return net.apply(params, x)
        return apply

    step, opt = _step_for(cfg, {g: counting(n) for g, n in nets.items()})
    state = M.init_state(jax.random.key(0), cfg, nets, opt)
    data = pixel_images()
    state, _ = step(state, jnp.asarray(data))
    first = traces["n"]
    # The chains start at each image's 1×1 mean colour; up-sampled, a flat
    # image of that colour.
    mean_colour = data.mean(axis=(1, 2))  # (N, C)
    start = np.asarray(state.samples["start"])
    assert start.shape == (3, 1, 1, 3)
    np.testing.assert_allclose(start[:, 0, 0], mean_colour, rtol=1e-5)
    flat = np.asarray(M.upsample(jnp.asarray(start), 4))
    np.testing.assert_array_equal(flat, np.broadcast_to(start, (3, 4, 4, 3)))
    data = jnp.asarray(data)
    assert first > 0
    for _ in range(3):
        state, metrics = step(state, data + 1.0)
    assert traces["n"] == first, "the step was traced again for the same shapes"
    assert set(metrics) >= {f"energy_samples_{g}" for g in cfg.grids} | {"diverged"}


@pytest.mark.slow
def test_batch_norm_net_normalises_by_its_batch():
    net = MultigridNet(layers=multigrid_layers(4, 0.05), norm="batch")
    x = jax.random.normal(jax.random.key(0), (5, 4, 4, 3))
    params = init_params(net, jax.random.key(1), x)
    # Batch statistics: f of an image depends on its batch mates; without
    # the norm it does not.
    apply = jax.jit(net.apply)
    assert not np.allclose(apply(params, x)[:3], apply(params, x[:3]), rtol=1e-3)
    plain = MultigridNet(layers=multigrid_layers(4, 0.05), norm="none")
    pp = init_params(plain, jax.random.key(1), x)
    apply = jax.jit(plain.apply)
    np.testing.assert_allclose(apply(pp, x)[:3], apply(pp, x[:3]), rtol=1e-5)
    assert [s.features for s in multigrid_layers(4)] == [s.features for s in DES4_LAYERS] == [96, 128, 256]
    assert [s.features for s in multigrid_layers(64)] == [64, 128, 256, 512]
    assert [s.features for s in multigrid_layers(16)] == [96, 128, 256, 512]


# ---------------------------------------------------------------- inpainting


@pytest.mark.slow
def test_inpainting_leaves_observed_pixels_unchanged():
    cfg = tiny_config()
    nets, optimizer, _, fill = M._compiled(M._step_key(cfg), (0.0, 255.0))
    params = M.init_state(jax.random.key(0), cfg, nets, optimizer).params
    data = pixel_images(seed=5)
    mask = masks.block(data.shape, 4)  # centred 4×4 of 8×8
    out = fill(jax.random.key(2), params, jnp.asarray(data), jnp.asarray(mask))
    finest = np.asarray(out["grid8"])
    observed = np.broadcast_to(mask > 0, data.shape)
    np.testing.assert_array_equal(finest[observed], data[observed])
    assert np.all(finest[~observed] != data[~observed])  # the missing pixels were sampled
    # The start is the mean colour of the observed pixels only.
    expected = (data * mask).sum(axis=(1, 2)) / mask.sum(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(out["start"])[:, 0, 0], expected, rtol=1e-5)
    # At 4×4, coarse pixels whose 2×2 block is fully observed are the data's block means.
    coarse = np.asarray(out["grid4"])
    data4 = data.reshape(3, 4, 2, 4, 2, 3).mean(axis=(2, 4))
    ring = np.ones((4, 4), bool)
    ring[1:3, 1:3] = False
    np.testing.assert_allclose(coarse[:, ring], data4[:, ring], rtol=1e-5)

    # Refining a given 4×4 start runs the 8×8 grid only: from the run's own 4×4 fill
    # (noise-free chains) it is the run's 8×8 fill.
    apply_fns = {g: n.apply for g, n in nets.items()}
    refined = M.inpaint(jax.random.key(9), cfg, apply_fns, params, jnp.asarray(data), jnp.asarray(mask),
                        (0.0, 255.0), start=out["grid4"])
    assert sorted(refined) == ["grid8", "start"]
    np.testing.assert_allclose(np.asarray(refined["grid8"]), finest, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="coarser than the finest grid"):
        M.inpaint(jax.random.key(9), cfg, apply_fns, params, jnp.asarray(data), jnp.asarray(mask), (0.0, 255.0),
                  start=jnp.asarray(data))


# ---------------------------------------------------------------- runs


@pytest.mark.slow
def test_run_writes_all_grids_and_resumes_identically(tmp_path):
    cfg = tiny_config()
    images = pixel_images(5)
    full = M.learn_multigrid(cfg, images, tmp_path / "full", quiet=True)
    for name in ("config.json", "metrics.csv", "report.md", "params.msgpack", "synthesized.png"):
        assert (tmp_path / "full" / name).is_file(), name
    for name in ("start", "grid4", "grid8", "pyramid"):
        assert (tmp_path / "full" / "images" / f"{name}_final.png").is_file(), name
    history = full["history"]
    assert {"energy_data_8", "energy_samples_8", "energy_data_4"} <= set(history)
    assert list(history["iteration"]) == [1, 2, 3, 4]

    import shutil

    shutil.copytree(tmp_path / "full", tmp_path / "part")
    shutil.rmtree(tmp_path / "part" / "checkpoints" / "4")  # as if killed after iteration 2
    resumed = M.learn_multigrid(cfg, images, tmp_path / "part", resume=True, quiet=True)
    for a, b in zip(jax.tree_util.tree_leaves(full["state"].params), jax.tree_util.tree_leaves(resumed["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="different model"):
        M.learn_multigrid(dataclasses.replace(cfg, width=0.05), images, tmp_path / "part", resume=True, quiet=True)

    # Inpainting with the learned models through the run directory.
    images = images[:3]
    mask = masks.block(images.shape, 4)
    result = M.inpaint_run(tmp_path / "full", images, mask, tmp_path / "fill", mask_spec="block:4")
    observed = np.broadcast_to(mask > 0, images.shape)
    np.testing.assert_array_equal(result["recovered"][observed], images[observed])
    from gcnjax.metrics import recovery_error

    np.testing.assert_allclose(result["errors"], recovery_error(images, result["recovered"], mask))
    summary = json.loads((tmp_path / "fill" / "summary.json").read_text())
    assert summary["n_images"] == 3
    assert "learned to synthesize whole images" in (tmp_path / "fill" / "report.md").read_text()
    by_grid = summary["mean_recovery_error_by_grid"]
    assert list(by_grid) == ["start", "grid4", "grid8"]
    assert by_grid["grid8"] == pytest.approx(float(result["errors"].mean()), rel=1e-6)
    assert by_grid["start"] == pytest.approx(summary["mean_colour_fill_error"], rel=1e-6)
    # The 4×4 fill read at 8×8, recomputed: each coarse pixel over its 2×2 block, observed pixels kept.
    config, scale, nets, params = M.load_multigrid_run(tmp_path / "full")
    fills = M.inpaint(jax.random.key(0), config, {g: n.apply for g, n in nets.items()}, params,
                      jnp.asarray(scale.to_model(images)), jnp.asarray(mask), scale.range)
    coarse = scale.to_pixels(np.repeat(np.repeat(np.asarray(fills["grid4"]), 2, axis=1), 2, axis=2))
    expected = recovery_error(images, np.where(mask > 0, images, coarse), mask).mean()
    assert by_grid["grid4"] == pytest.approx(float(expected), rel=1e-4)


def test_single_grid_baseline_has_equal_steps():
    cfg = tiny_config(langevin=LangevinConfig.from_delta(0.3, 7, noise=False))
    base = M.single_grid_baseline(cfg)
    assert base.grids == (8,) and base.start == "noise"
    assert base.langevin.n_steps == 7 * len(cfg.grids)


def test_cli_learns_and_rejects_bad_input(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for i, im in enumerate(pixel_images(4, 8, seed=7)):
        Image.fromarray(im.astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    args = ["multigrid", "--data", str(folder), "--out", str(out), "--grids", "4,8", "--width", "0.04",
            "--iterations", "2", "--chains", "3", "--steps", "2", "--quiet"]
    assert cli.main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert M.MultigridConfig.from_dict(saved["config"]) == tiny_config(
        n_iterations=2, run=RunConfig(image_every=1, checkpoint_every=2))
    assert cli.main(["multigrid", "inpaint", "--run", str(out), "--data", str(folder), "--mask", "block:4",
                     "--limit", "3", "--out", str(tmp_path / "fill"), "--quiet"]) == 0
    assert "recovery error" in capsys.readouterr().out
    assert cli.main(["multigrid", "--data", str(folder), "--out", str(tmp_path / "x"), "--grids", "4,6"]) == 2
    assert "divide" in capsys.readouterr().err
    assert cli.main(["multigrid", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert cli.main(["multigrid", "inpaint", "--run", str(tmp_path / "nothing"), "--data", str(folder),
                     "--out", str(tmp_path / "z")]) == 2


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("change, message", [
    (dict(grids=(4, 6)), "divide"),
    (dict(grids=(16, 4)), "increase"),
    (dict(grids=()), "grids"),
    (dict(norm="layer"), "norm"),
    (dict(start="zeros"), "start"),
    (dict(width=0), "width"),
    (dict(batch_size=0), "batch_size"),
    (dict(learning_rate=-1.0), "learning_rate"),
    (dict(pixel_scale="raw"), "pixel_scale"),
    (dict(langevin=LangevinConfig(n_steps=2, clip=(0.0, 255.0))), "clip_to_data"),
    (dict(sigma=0.0), "sigma"),
    (dict(learn_mask="hole:3"), "learn_mask.*unknown mask"),
    (dict(learn_mask="block:9"), "learn_mask.*fit"),
    (dict(learn_mask="block:4", start="noise"), "learn_mask needs start='mean'"),
])
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)


def test_config_round_trip_and_presets():
    from gcnjax import presets

    cfg = tiny_config()
    assert M.MultigridConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    authors, paper = presets.get_multigrid("authors"), presets.get_multigrid("paper")
    assert authors.langevin.noise_scale == 0.0 and authors.sigma is None and authors.clip_to_data
    assert authors.pixel_scale == "pixels" and authors.langevin.n_steps == 90
    assert paper.langevin.noise_scale == pytest.approx(0.3) and paper.sigma == 50.0
    with pytest.raises(ValueError, match="preset"):
        presets.get_multigrid("nope")


def test_pixels_scale_is_the_identity_on_0_255():
    from gcnjax.data import PixelScale

    scale = PixelScale("pixels").fit(pixel_images())
    x = pixel_images()
    np.testing.assert_array_equal(scale.to_model(x), x)
    np.testing.assert_array_equal(scale.to_pixels(x), x)
    assert scale.range == (0.0, 255.0) and scale.mean is None


def test_a_single_grid_baseline_takes_the_multigrid_compute_and_its_own_step_and_rate():
    from experiments.multigrid_faces import single_grid

    config = presets.get_multigrid("authors")  # 3 grids, 90 steps each, δ = 0.3, lr 0.3
    flops = {4: 1.0, 16: 10.0, 64: 100.0}  # 90 steps at all grids cost as much as 90·111/100 steps at 64
    tuned = single_grid(config, "mean:flops:delta=1.2:lr=0.1", flops)
    assert tuned.grids == (64,) and tuned.start == "mean"
    assert tuned.langevin.n_steps == round(90 * 111 / 100)
    assert tuned.langevin.step_size == pytest.approx(1.2 ** 2 / 2) and tuned.learning_rate == 0.1
    plain = single_grid(config, "noise:steps", flops)
    assert plain.langevin.n_steps == 270 and plain.langevin.step_size == config.langevin.step_size
    assert plain.learning_rate == config.learning_rate and plain.start == "noise"
    with pytest.raises(SystemExit, match="unknown option 'sigma=2'"):
        single_grid(config, "mean:flops:sigma=2", flops)
