"""FRAME: frozen extractors, the filter bank, the top weights, the VGG loader."""

import dataclasses
import importlib.util
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import descriptor as D
from gcnjax import frame as F
from gcnjax import langevin, presets
from gcnjax.data import DataError
from gcnjax.nets import init_params


def test_filter_bank_has_zero_mean_and_unit_norm():
    kernels, names = F.filter_bank_kernels(sizes=(5, 9), n_orientations=4, dog=True)
    assert kernels.shape == (9, 9, 1, 2 * (4 * 2 + 1)) and len(names) == kernels.shape[-1]
    k = kernels[:, :, 0, :].astype(np.float64)
    # Zero DC: the response to a constant image is 0 (relative to the L1 mass).
    np.testing.assert_array_less(np.abs(k.sum(axis=(0, 1))) / np.abs(k).sum(axis=(0, 1)), 1e-6)
    np.testing.assert_allclose(np.sqrt((k ** 2).sum(axis=(0, 1))), 1.0, rtol=1e-5)
    # The even Gabor is symmetric, the odd one antisymmetric (point reflection).
    even, odd = k[..., names.index("gabor5_45deg_cos")], k[..., names.index("gabor5_45deg_sin")]
    np.testing.assert_allclose(even, even[::-1, ::-1], atol=1e-7)
    np.testing.assert_allclose(odd, -odd[::-1, ::-1], atol=1e-7)


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_filter_bank_equals_one_convolution_with_the_padded_bank(padding):
    """The bank runs one conv per filter size; it must equal the single
    depthwise conv with every filter zero-padded to the largest size."""
    bank = F.FilterBank(sizes=(3, 7), n_orientations=2, padding=padding, nonlinearity="identity")
    x = jax.random.normal(jax.random.key(0), (2, 14, 14, 3))
    params = init_params(bank, jax.random.key(1), x)
    padded = np.tile(np.asarray(params["params"]["kernel"]), (1, 1, 1, 3))
    ref = jax.lax.conv_general_dilated(x, padded, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       feature_group_count=3)
    np.testing.assert_allclose(bank.apply(params, x), ref, atol=1e-5)


def _grating(side, wavelength, theta):
    y, x = np.meshgrid(np.arange(side) - side / 2, np.arange(side) - side / 2, indexing="ij")
    return np.cos(2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / wavelength)


def test_gabor_pair_responds_most_to_its_orientation_and_frequency():
    sizes, n_orient = (7, 13), 6
    bank = F.FilterBank(sizes=sizes, n_orientations=n_orient, dog=False, nonlinearity="identity", padding="VALID")
    params = init_params(bank, jax.random.key(0), jnp.zeros((1, 40, 40, 1)))
    _, names = F.filter_bank_kernels(sizes, n_orient, dog=False)
    for s in sizes:
        wavelength = 2.0 * s / 5.0
        for j in range(n_orient):
            theta = j * np.pi / n_orient
            img = _grating(40, wavelength, theta)[None, :, :, None].astype(np.float32)
            r = np.asarray(bank.apply(params, img))[0]  # (h, w, K)
            # Phase-invariant energy of each (cos, sin) pair, averaged over positions.
            energy = (r[..., 0::2] ** 2 + r[..., 1::2] ** 2).mean(axis=(0, 1))
            best = names[2 * int(np.argmax(energy))]
            assert best == f"gabor{s}_{round(np.degrees(theta))}deg_cos", (s, j, best)


def test_filter_bank_is_depthwise_on_colour_and_takes_its_nonlinearity():
    bank = F.FilterBank(sizes=(3, 5), n_orientations=2, nonlinearity="identity")
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 3))
    params = init_params(bank, jax.random.key(1), x)
    k = params["params"]["kernel"].shape[-1]
    h = bank.apply(params, x)
    assert h.shape == (2, 12, 12, 3 * k)
    # Group c (features c·K … c·K + K − 1) sees channel c only.
    h_red = bank.apply(params, x.at[..., 1:].set(0.0))
    np.testing.assert_allclose(h_red[..., :k], h[..., :k], atol=1e-5)
    np.testing.assert_allclose(h_red[..., k:], 0.0, atol=1e-6)
    for name, fn in (("abs", np.abs), ("relu", lambda a: np.maximum(a, 0))):
        out = F.FilterBank(sizes=(3, 5), n_orientations=2, nonlinearity=name).apply(params, x)
        np.testing.assert_allclose(out, fn(np.asarray(h)), atol=1e-6)
    with pytest.raises(ValueError, match="nonlinearity"):
        F.FilterBank(nonlinearity="tanh").init(jax.random.key(0), x)


class SmallExtractor(nn.Module):
    """A user's feature extractor: one random conv and ReLU."""

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3), padding="SAME")(x))


def _config(**kw):
    base = dict(layers=(), sigma=1.0, langevin=langevin.LangevinConfig.from_delta(0.3, 3), n_chains=3,
                optimizer="sgd", learning_rate=1e-3, momentum=0.0, weight_decay=0.0, divide_by_positions=False,
                max_abs_grad=None, image_size=(8, 8), channels=1)
    base.update(kw)
    base["layers"] = base["layers"] or (D.ConvSpec(1, 3, 1, "SAME"),)
    return D.DescriptorConfig(**base)


def _learned_weights(cfg, net, data, iterations, average_from, jit, seed=0):
    """Learn ``net``'s top weights from ``data`` with the descriptor's own ML
    step (compiled by ``jit``); the mean of each weight array over iterations
    ``average_from`` onwards (averaging out the chains' noise): ``{name: mean}``."""
    state = D.init_state(jax.random.key(seed), cfg, net, data)
    step = jit(D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params)))
    history = []
    for i in range(iterations):
        state, _ = step(state, data)
        if i >= average_from:
            history.append({k: np.asarray(v, np.float64) for k, v in state.params["params"].items()})
    return {k: np.mean([h[k] for h in history], axis=0) for k in history[0]}


@pytest.mark.parametrize("top", F.TOPS)
def test_frozen_extractor_params_stay_bit_identical_while_the_top_learns(top):
    module = SmallExtractor()
    ext_params = init_params(module, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    before = jax.tree_util.tree_map(lambda a: np.array(a, copy=True), ext_params)
    net = F.FrameNet(F.frozen(module, ext_params), top=top)
    data = jax.random.normal(jax.random.key(1), (5, 8, 8, 1)) + 1.0
    cfg = _config(optimizer="adam", learning_rate=0.05)
    state = D.init_state(jax.random.key(2), cfg, net, data)
    # Only the top weights are optimized.
    shapes = jax.tree_util.tree_map(jnp.shape, state.params)
    expected = {"dense": {"w": (8, 8, 4)}, "sum": {"w": (4,)}, "pairwise": {"w": (4,), "pair": (4, 4)}}
    assert shapes == {"params": expected[top]}
    before_top = jax.tree_util.tree_map(np.array, state.params)
    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params))
    for _ in range(4):
        state, metrics = step(state, data)
    assert np.isfinite(float(metrics["f_data"]))
    for name, start in before_top["params"].items():
        assert np.abs(np.asarray(state.params["params"][name]) - start).max() > 1e-3, name
    for a, b in zip(jax.tree_util.tree_leaves(ext_params), jax.tree_util.tree_leaves(before)):
        assert np.asarray(a).tobytes() == b.tobytes()
    # The features the net uses are the frozen module's.
    np.testing.assert_allclose(net.features(data), module.apply(before, data), rtol=1e-6)


class Identity(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x


def test_frame_with_identity_features_learns_the_closed_form_mean(run_optimised_jit):
    """f = <w, x> (dense top on identity features) on N(0, σ²I): the model is
    N(σ²w, σ²I), so ML learning converges to σ²w = mean of the data."""
    sigma = 0.7
    data = jnp.asarray(np.random.default_rng(0).normal([[1.0, -2.0], [0.5, 3.0]], 0.3, (64, 2, 2)))[..., None]
    n_chains = 4000
    cfg = _config(sigma=sigma, n_chains=n_chains, langevin=langevin.LangevinConfig(n_steps=4, step_size=0.5 * sigma**2),
                  learning_rate=0.5, image_size=(2, 2))
    module = Identity()
    net = F.FrameNet(F.frozen(module, init_params(module, jax.random.key(0), data[:1])), top="dense")
    w = _learned_weights(cfg, net, data, 300, 200, run_optimised_jit)["w"]
    tol = 5 * sigma / np.sqrt(n_chains)
    np.testing.assert_allclose(sigma**2 * w, np.asarray(data.mean(axis=0)), atol=tol)


def test_stationary_top_with_identity_features_learns_the_pooled_mean(run_optimised_jit):
    """The sum top: f = w Σ_positions x, so the model is N(σ²w·1, σ²I) and
    σ²w = the mean of the data over examples AND positions."""
    sigma = 1.0
    data = jnp.asarray(np.random.default_rng(1).normal([[1.5, -0.5], [0.0, 2.0]], 0.3, (32, 2, 2)))[..., None]
    cfg = _config(sigma=sigma, n_chains=1000, langevin=langevin.LangevinConfig(n_steps=4, step_size=0.25),
                  learning_rate=0.1, image_size=(2, 2))
    net = F.FrameNet(lambda x: x, top="sum")
    w = _learned_weights(cfg, net, data, 300, 200, run_optimised_jit, seed=3)["w"]
    tol = 5 * sigma / np.sqrt(1000 * 4)
    np.testing.assert_allclose(sigma**2 * w[0], float(data.mean()), atol=tol)


def test_thresholded_features_are_a_piecewise_linear_potential_per_feature():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(0, 1, (3, 5, 5, 2)), jnp.float32)
    b = F.response_quantiles(lambda v: v, x, (0.0, 0.3, 0.9))
    np.testing.assert_allclose(b, np.quantile(np.asarray(x).reshape(-1, 2), [0.0, 0.3, 0.9], axis=0), rtol=1e-6)
    features = F.thresholded(lambda v: v, b)
    h = np.asarray(features(x))
    assert h.shape == (3, 5, 5, 6)  # threshold-major: (t0: k0 k1, t1: k0 k1, t2: k0 k1)
    np.testing.assert_allclose(h[..., 3], np.maximum(np.asarray(x)[..., 1] - b[1, 1], 0.0), rtol=1e-6)
    # The stationary top on them is Σ_k Σ_pos λ_k(x_k) with λ_k(r) = Σ_t w_tk (r − b_tk)₊.
    net = F.FrameNet(features, top="sum")
    params = {"params": {"w": jnp.asarray(rng.normal(0, 1, 6), jnp.float32)}}
    w = np.asarray(params["params"]["w"]).reshape(3, 2)
    r = np.asarray(x, np.float64)
    expected = sum(w[t, k] * np.maximum(r[..., k] - b[t, k], 0).sum(axis=(1, 2)) for t in range(3) for k in range(2))
    np.testing.assert_allclose(net.apply(params, x), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="columns"):
        F.thresholded(lambda v: v, np.zeros((2, 3)))(x)
    with pytest.raises(ValueError, match="quantiles"):
        F.response_quantiles(lambda v: v, x, (0.5, 1.5))


def test_frame_potential_on_thresholds_recovers_a_known_model(run_optimised_jit):
    """One pixel, f(x) = Σ_t w_t (x − b_t)₊, p(x) ∝ exp(f(x) − x²/2). Data
    drawn exactly from the model with known w (inverse CDF on a fine grid):
    ML learning recovers w, and the learned model matches the data's
    E[(x − b_t)₊] at every knot, both computed by quadrature, independently
    of the chains that learned it."""
    knots = np.array([-0.5, 0.3, 1.0])
    w_true = np.array([1.0, -1.5, 1.0])
    grid = np.linspace(-8, 12, 40001)
    tails = np.maximum(grid[:, None] - knots[None, :], 0.0)

    def density(w):
        log_p = tails @ w - grid ** 2 / 2
        p = np.exp(log_p - log_p.max())
        return p / p.sum()

    rng = np.random.default_rng(4)
    data_np = np.interp(rng.uniform(size=4000), np.cumsum(density(w_true)), grid).reshape(-1, 1, 1, 1)
    net = F.FrameNet(F.thresholded(lambda v: v, knots), top="sum")
    # δ small: the discretisation bias of Langevin at δ = 0.6 shifts these
    # moments by ~0.07, and ML learning would fit the biased chains.
    cfg = _config(sigma=1.0, n_chains=4000, langevin=langevin.LangevinConfig.from_delta(0.25, 10),
                  optimizer="adam", learning_rate=0.02, image_size=(1, 1))
    w = _learned_weights(cfg, net, jnp.asarray(data_np, jnp.float32), 600, 400, run_optimised_jit, seed=5)["w"]
    np.testing.assert_allclose(w, w_true, atol=0.3)
    data_moments = np.maximum(data_np.reshape(-1, 1) - knots[None, :], 0.0).mean(axis=0)
    np.testing.assert_allclose(density(w) @ tails, data_moments, atol=0.02)


def test_pairwise_top_adds_the_features_co_occurrence():
    """f = Σ_k w_k Σ_pos φ_k + (1/K) Σ_pos φᵀPφ, against a direct sum."""
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(0, 1, (3, 4, 5, 2)), jnp.float32)
    net = F.FrameNet(lambda v: jnp.concatenate([v, jnp.abs(v)], axis=-1), top="pairwise")
    shapes = jax.tree_util.tree_map(jnp.shape, init_params(net, jax.random.key(0), x))
    assert shapes == {"params": {"w": (4,), "pair": (4, 4)}}
    w, pair = rng.normal(0, 1, 4), rng.normal(0, 1, (4, 4))
    params = {"params": {"w": jnp.asarray(w, jnp.float32), "pair": jnp.asarray(pair, jnp.float32)}}
    phi = np.concatenate([np.asarray(x, np.float64), np.abs(np.asarray(x, np.float64))], axis=-1)
    expected = [sum(phi[n, i, j] @ w + phi[n, i, j] @ pair @ phi[n, i, j] / 4 for i in range(4) for j in range(5))
                for n in range(3)]
    np.testing.assert_allclose(net.apply(params, x), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="top"):
        F.FrameNet(lambda v: v, top="gram").init(jax.random.key(0), x)


def test_pairwise_top_learns_the_datas_mean_and_variance(run_optimised_jit):
    """One pixel, identity feature: f = w x + P x², so p(x) ∝ exp(f − x²/2σ²)
    is N(w/λ, 1/λ) with λ = 1/σ² − 2P. ML learning matches the first two
    moments: on data of mean m and variance s², λ = 1/s² and w = m/s² (here
    P < 0: the data are narrower than the reference)."""
    sigma = 1.0
    data_np = np.random.default_rng(8).normal(0.8, 0.6, (4000, 1, 1, 1))
    m, s2 = data_np.mean(), data_np.var()
    net = F.FrameNet(lambda v: v, top="pairwise")
    # δ = 0.1: Langevin's stationary variance 1/(λ(1 − δ²λ/4)) is then 0.7% off 1/λ.
    cfg = _config(sigma=sigma, n_chains=4000, langevin=langevin.LangevinConfig.from_delta(0.1, 10),
                  optimizer="adam", learning_rate=0.02, image_size=(1, 1))
    learned = _learned_weights(cfg, net, jnp.asarray(data_np, jnp.float32), 500, 350, run_optimised_jit, seed=9)
    precision = 1 / sigma**2 - 2 * float(learned["pair"][0, 0])
    assert precision > 0
    np.testing.assert_allclose(float(learned["w"][0]) / precision, m, atol=0.03)
    np.testing.assert_allclose(1 / precision, s2, rtol=0.06)


def test_opponent_colour_bank_filters_the_rotated_channels():
    np.testing.assert_allclose(F.OPPONENT @ F.OPPONENT.T, np.eye(3), atol=1e-6)
    x = jax.random.normal(jax.random.key(7), (2, 12, 12, 3))
    rgb = F.FilterBank(sizes=(3, 5), n_orientations=2, nonlinearity="identity")
    opp = F.FilterBank(sizes=(3, 5), n_orientations=2, nonlinearity="identity", colour="opponent")
    params = init_params(rgb, jax.random.key(0), x)
    np.testing.assert_allclose(opp.apply(params, x), rgb.apply(params, x @ jnp.asarray(F.OPPONENT.T)), atol=1e-5)
    with pytest.raises(ValueError, match="3 channels"):
        opp.apply(params, x[..., :1])


def _random_vgg_npz(path, rng):
    state, in_ch = {}, 3
    for name, index, features in F.VGG16_LAYERS:
        if name == "pool":
            continue
        state[f"features.{index}.weight"] = rng.normal(0, 0.1, (features, in_ch, 3, 3)).astype(np.float32)
        state[f"features.{index}.bias"] = rng.normal(0, 0.1, (features,)).astype(np.float32)
        in_ch = features
    np.savez(path, **state)
    return state


def test_vgg16_loader_round_trip_on_a_random_weight_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "vgg16.npz"
    state = _random_vgg_npz(path, rng)
    params = F.load_vgg16_params(path)
    assert sorted(params["params"]) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"]
    np.testing.assert_array_equal(params["params"]["conv2_1"]["kernel"],
                                  state["features.5.weight"].transpose(2, 3, 1, 0))
    # conv1_1 on a small image against an independent NCHW/OIHW convolution.
    offset = (120.0, 110.0, 100.0)
    pixels = rng.uniform(0, 255, (2, 12, 12, 3)).astype(np.float32)
    x = pixels - np.asarray(offset, np.float32)
    module = F.VGG16Features(last="conv1_1", pixel_offset=offset)
    got = module.apply(F.load_vgg16_params(path, last="conv1_1"), x)
    normalised = (pixels / 255.0 - np.asarray(F.IMAGENET_MEAN)) / np.asarray(F.IMAGENET_STD)
    ref = jax.lax.conv_general_dilated(
        jnp.asarray(normalised.transpose(0, 3, 1, 2), jnp.float32), jnp.asarray(state["features.0.weight"]),
        (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"),
    ) + state["features.0.bias"][None, :, None, None]
    np.testing.assert_allclose(got, np.maximum(np.asarray(ref), 0).transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    # Up to conv3_1: two pools, 256 channels; FRAME on it has dense weights per feature.
    net = F.vgg16_net(path, top="sum", pixel_offset=offset)
    assert jax.eval_shape(net.features, jnp.asarray(x)).shape == (2, 3, 3, 256)
    assert init_params(net, jax.random.key(0), x)["params"]["w"].shape == (256,)


def test_vgg16_loader_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        F.load_vgg16_params(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", **{"features.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(DataError, match="features.0.bias"):
        F.load_vgg16_params(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", **{"features.0.weight": np.zeros((64, 3, 5, 5), np.float32),
                                        "features.0.bias": np.zeros(64, np.float32)})
    with pytest.raises(DataError, match="needs"):
        F.load_vgg16_params(tmp_path / "shape.npz")
    (tmp_path / "w.pth").write_bytes(b"not torch")
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(DataError, match="np.savez"):
            F.load_vgg16_params(tmp_path / "w.pth")


def test_learn_frame_writes_a_run(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype(np.float32)
    cfg = presets.frame("object", channels=1, image_size=(16, 16), n_iterations=2, n_chains=2,
                         langevin=langevin.LangevinConfig.from_delta(0.3, 2),
                         run=dataclasses.replace(presets.frame().run, checkpoint_every=2))
    net = F.filter_bank_net("dense", sizes=(3, 5), n_orientations=2)
    result = F.learn_frame(cfg, net, images, tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "synthesized.png").is_file() and (tmp_path / "run" / "report.md").is_file()
    assert result["state"].params["params"]["w"].shape == (16, 16, 10)


def test_a_frame_run_is_loaded_and_sampled_with_the_extractor_it_records(tmp_path):
    """The run records the bank and its thresholds; the net built from the
    record gives the learned net's f bit for bit, and `gcnjax sample` draws
    from it."""
    import json

    from gcnjax import cli, synthesis
    from gcnjax.data import PixelScale

    images = np.random.default_rng(0).uniform(0, 255, (1, 16, 16, 1)).astype(np.float32)
    cfg = presets.frame("texture", channels=1, image_size=(16, 16), n_iterations=2, n_chains=2,
                        langevin=langevin.LangevinConfig.from_delta(0.1, 2),
                        run=dataclasses.replace(presets.frame().run, checkpoint_every=2))
    model_images = PixelScale(cfg.pixel_scale).fit(images).to_model(images)
    net = F.filter_bank_net("pairwise", sizes=(3, 5), n_orientations=2, threshold_quantiles=(0.0, 0.5),
                            images=model_images)
    result = F.learn_frame(cfg, net, images, tmp_path / "run", quiet=True)
    recorded = json.loads((tmp_path / "run" / "frame_net.json").read_text())
    assert recorded["sizes"] == [3, 5] and np.shape(recorded["thresholds"]) == (2, 10)

    config, _, loaded, params = synthesis.load_run(tmp_path / "run")
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 16, 16, 1)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(loaded.apply(params, x)),
                                  np.asarray(net.apply(result["state"].params, x)))
    assert cli.main(["sample", "--run", str(tmp_path / "run"), "--chains", "3", "--steps", "2",
                     "--out", str(tmp_path / "s"), "--quiet"]) == 0
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (3, 16, 16, 1) and np.isfinite(samples).all() and samples.std() > 0
    # The run recorded the mean Gram matrix of the observed image's FRAME features, and the job set its
    # samples' distance to it beside learning's chains' and white noise's.
    phi = np.asarray(net.features(jnp.asarray(model_images)), np.float64).reshape(-1, 20)
    np.testing.assert_allclose(np.load(tmp_path / "run" / "first_layer_gram.npy"), phi.T @ phi / len(phi),
                               rtol=1e-4, atol=1e-6)
    job = json.loads((tmp_path / "s" / "summary.json").read_text())["first_layer"]
    assert job["samples"] > 0 and job["white_noise"] > 0 and "fixed features" in (tmp_path / "s" / "report.md").read_text()

    # A run that does not record its extractor is refused with the way out.
    (tmp_path / "run" / "frame_net.json").unlink()
    with pytest.raises(ValueError, match="without frame_net.json.*descriptor_chains"):
        synthesis.load_run(tmp_path / "run")


def test_virial_ratio_is_one_under_the_model_and_zero_at_a_minimum():
    # One-pixel FRAME f(x) = w|x| (a 1-homogeneous f): p ∝ exp(−x²/2σ² + w|x|).
    sigma, w = 1.5, 0.8
    net = F.FrameNet(lambda x: jnp.abs(x), top="sum")
    params = {"params": {"w": jnp.asarray([w], jnp.float32)}}
    grid = np.linspace(-12.0, 12.0, 24001)
    ratio = np.asarray(D.virial_ratio(net.apply, params, jnp.asarray(grid.reshape(-1, 1, 1, 1)), sigma))
    # Pointwise: x·∇E = x²/σ² − w|x| (closed form).
    np.testing.assert_allclose(ratio, grid ** 2 / sigma ** 2 - w * np.abs(grid), rtol=1e-5, atol=1e-4)
    # Its average under the model is 1 (the virial identity), by quadrature.
    density = np.exp(-grid ** 2 / (2 * sigma ** 2) + w * np.abs(grid))
    np.testing.assert_allclose(np.sum(ratio * density) / np.sum(density), 1.0, rtol=1e-6)
    # The minima x = ±σ²w (where x = σ²∇f) read exactly 0.
    minima = jnp.asarray([sigma ** 2 * w, -sigma ** 2 * w]).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(D.virial_ratio(net.apply, params, minima, sigma), 0.0, atol=1e-6)
    # d = 1024 pixels of exact reference samples (w = 0): mean ≈ 1 within
    # its standard error sqrt(2/d)/sqrt(n) (chi-square / d).
    zero = {"params": {"w": jnp.zeros((1,), jnp.float32)}}
    x = sigma * jax.random.normal(jax.random.key(0), (8, 32, 32, 1))
    r = np.asarray(D.virial_ratio(net.apply, zero, x, sigma))
    assert abs(r.mean() - 1.0) < 4 * np.sqrt(2 / 1024) / np.sqrt(8)


def test_the_frame_script_scores_samples_against_the_held_out_tiles(tmp_path, monkeypatch):
    # A 64² gray image cut into 32² tiles: the first is learned, the other
    # three are held out. Scored as samples, the held-out tiles themselves
    # are at distance 0 on every statistic (a set against itself), and the
    # pyramid's figures are pyramid_gram_distances computed directly.
    import sys

    import imageio.v3 as iio

    from experiments import frame_synthesis
    from gcnjax import metrics

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    image = np.clip(128 + 60 * np.sin(2 * np.pi * (xx + 0.5 * yy) / 7) + 20 * rng.standard_normal((64, 64)), 0, 255)
    iio.imwrite(tmp_path / "texture.png", image.astype(np.uint8))
    tiles = frame_synthesis._tiles(iio.imread(tmp_path / "texture.png").astype(np.float32)[..., None], 32)
    np.save(tmp_path / "held_out.npy", tiles[1:])
    np.save(tmp_path / "noise.npy", rng.uniform(0, 255, (3, 32, 32, 1)).astype(np.float32))
    monkeypatch.setattr(sys, "argv", ["frame_synthesis", "--data", str(tmp_path / "texture.png"), "--gray",
                                      "--image-size", "32", "--sizes", "5", "7", "--patch", "8", "--out",
                                      str(tmp_path / "scores"), "--score", str(tmp_path / "held_out.npy"),
                                      str(tmp_path / "noise.npy")])
    frame_synthesis.main()
    scores = json.loads((tmp_path / "scores" / "sample_scores.json").read_text())
    itself = scores[str(tmp_path / "held_out.npy")]["scores"]
    assert itself["synthesized"]["spectrum"] == pytest.approx(0.0, abs=1e-9)
    assert itself["synthesized"]["gram"] == pytest.approx(0.0, abs=1e-9)
    assert set(itself["synthesized"]["pyramid"]) == {str(level) for level in metrics.PYRAMID_LEVELS}
    assert all(value == pytest.approx(0.0, abs=1e-9) for value in itself["synthesized"]["pyramid"].values())
    noise = scores[str(tmp_path / "noise.npy")]["scores"]
    direct = metrics.pyramid_gram_distances(np.load(tmp_path / "noise.npy"), tiles[1:])
    for level, value in direct.items():
        assert noise["synthesized"]["pyramid"][str(level)] == pytest.approx(value, rel=1e-6)
        assert value > 0.1
    # The observed tile against the held-out ones: the floor, above 0.
    assert noise["observed"]["pyramid"]["1"] == pytest.approx(
        metrics.pyramid_gram_distances(tiles[:1], tiles[1:])[1], rel=1e-6)
