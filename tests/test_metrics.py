"""Texture metrics against direct computations."""

import numpy as np
import pytest

from gcnjax import metrics


def test_power_spectrum_parseval_and_sinusoid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16, 12, 2))
    p = metrics.power_spectrum(x)
    centred = x - x.mean(axis=(1, 2), keepdims=True)
    assert p.sum() == pytest.approx(16 * 12 * np.mean(np.sum(centred**2, axis=(1, 2))), rel=1e-10)
    # a pure horizontal sinusoid of 3 cycles puts all its power at (0, ±3)
    cols = np.cos(2 * np.pi * 3 * np.arange(12) / 12)
    wave = np.tile(cols, (16, 1))[None, ..., None]
    pw = metrics.power_spectrum(wave)
    assert pw[0, 3] == pytest.approx(pw[0, 9]) and pw[0, 3] == pytest.approx((16 * 12 / 2) ** 2)
    assert pw.sum() == pytest.approx(2 * pw[0, 3])


def test_log_spectrum_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 16, 16, 1))
    assert metrics.log_spectrum_distance(a, a) == 0.0
    smooth = (a + np.roll(a, 1, axis=1) + np.roll(a, 1, axis=2)) / 3
    other = rng.normal(size=(4, 16, 16, 1))
    # white noise against white noise is closer than white noise against smoothed noise
    assert metrics.log_spectrum_distance(a, other) < metrics.log_spectrum_distance(a, smooth)
    with pytest.raises(ValueError, match="different sizes"):
        metrics.log_spectrum_distance(a, a[:, :8])


# ---------------------------------------------------------------------- Fréchet distance


def _random_cov(rng, d, condition=None):
    a = rng.normal(size=(d, d))
    if condition is None:
        return a @ a.T / d + 0.1 * np.eye(d)
    q, _ = np.linalg.qr(a)
    return (q * np.logspace(0, -np.log10(condition), d)) @ q.T


def _scipy_frechet(mu1, c1, mu2, c2):
    import scipy.linalg

    root = scipy.linalg.sqrtm(c1)
    middle = scipy.linalg.sqrtm(root @ c2 @ root)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(middle).real)


@pytest.mark.parametrize("d,condition", [(1, None), (3, None), (16, None), (64, None), (8, 1e8), (32, 1e12)])
def test_frechet_distance_matches_scipy(d, condition):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = _random_cov(rng, d, condition), _random_cov(rng, d, condition)
    expected = _scipy_frechet(mu1, c1, mu2, c2)
    assert metrics.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    # symmetric in its two Gaussians, zero for identical statistics
    assert metrics.frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert metrics.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-8 * np.trace(c1))


def test_random_feature_frechet_orders_image_sets():
    rng = np.random.default_rng(3)
    texture = lambda n, shift=0.0: np.clip(rng.normal(128 + shift, 40, (n, 16, 16, 3)), 0, 255)
    a, b = texture(200), texture(200)
    assert metrics.random_feature_frechet(a, a) == pytest.approx(0.0, abs=1e-8)
    same = metrics.random_feature_frechet(a, b)
    assert same == metrics.random_feature_frechet(a, b)  # a fixed, seeded net
    # brighter images and blurred images are farther than a second draw of the same ones
    assert metrics.random_feature_frechet(a, texture(200, 60.0)) > 10 * same
    smooth = (b + np.roll(b, 1, 1) + np.roll(b, 1, 2) + np.roll(b, (1, 1), (1, 2))) / 4
    assert metrics.random_feature_frechet(a, smooth) > 10 * same
    with pytest.raises(ValueError, match="image shape"):
        metrics.random_feature_frechet(a, a[:, :8])


def test_frechet_distance_singular_covariances_from_few_features():
    # Fewer samples than dimensions: rank-deficient covariances; the distance stays finite, >= 0, and agrees
    # with scipy on the identical-set case (0) and with itself computed from statistics.
    rng = np.random.default_rng(5)
    f1, f2 = rng.normal(size=(10, 40)), rng.normal(size=(12, 40)) + 0.5
    d = metrics.frechet_distance_from_features(f1, f2)
    assert np.isfinite(d) and d > 0
    assert d == pytest.approx(metrics.frechet_distance(*metrics.feature_statistics(f1), *metrics.feature_statistics(f2)))
    assert metrics.frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_one_dimensional_closed_form():
    # W2² between N(μ1, σ1²) and N(μ2, σ2²) is (μ1 − μ2)² + (σ1 − σ2)².
    for mu1, s1, mu2, s2 in [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.3), (3.0, 1e-3, 3.0, 10.0)]:
        got = metrics.frechet_distance([mu1], [[s1**2]], [mu2], [[s2**2]])
        assert got == pytest.approx((mu1 - mu2) ** 2 + (s1 - s2) ** 2, rel=1e-10, abs=1e-12)


def test_feature_statistics_and_bad_shapes():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(50, 4))
    mean, cov = metrics.feature_statistics(f)
    np.testing.assert_allclose(mean, f.mean(0))
    np.testing.assert_allclose(cov, np.cov(f, rowvar=False))
    with pytest.raises(ValueError, match="expected"):
        metrics.frechet_distance(mean, cov, mean[:3], cov)
    with pytest.raises(ValueError, match="one D"):
        metrics.frechet_distance_from_features(f, f[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.feature_statistics(f[:1])


# ---------------------------------------------------------------------- MMD


def _mmd2_direct(x, y, k):
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_mmd2_matches_direct_sums():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(9, 3)) + 0.3
    poly = lambda a, b: (a @ b / 3 + 1) ** 3
    assert metrics.mmd2(x, y) == pytest.approx(_mmd2_direct(x, y, poly), rel=1e-10)
    h = 1.7
    rbf = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h**2))
    assert metrics.mmd2(x, y, kernel="rbf", bandwidth=h) == pytest.approx(_mmd2_direct(x, y, rbf), rel=1e-10)
    # the median heuristic: the median pairwise distance of the pooled points
    pooled = np.concatenate([x, y])
    dists = [np.linalg.norm(pooled[i] - pooled[j]) for i in range(16) for j in range(i + 1, 16)]
    assert metrics.median_bandwidth(x, y) == pytest.approx(np.median(dists))
    with pytest.raises(ValueError, match="kernel must be one of"):
        metrics.mmd2(x, y, kernel="linear")


@pytest.mark.parametrize("kernel", ["polynomial", "rbf"])
def test_mmd_same_distribution_near_zero_and_grows_with_shift(kernel):
    rng = np.random.default_rng(4)
    d = 8
    # unbiased: over many independent pairs of samples from ONE distribution, the mean is ~0
    same = [metrics.mmd2(rng.normal(size=(100, d)), rng.normal(size=(100, d)), kernel=kernel) for _ in range(30)]
    spread = np.std(same)
    assert abs(np.mean(same)) < 3 * spread / np.sqrt(len(same)) + 1e-12
    base = rng.normal(size=(200, d))
    shifted = [metrics.mmd2(base, rng.normal(size=(200, d)) + s, kernel=kernel, bandwidth=np.sqrt(2 * d))
               if kernel == "rbf" else metrics.mmd2(base, rng.normal(size=(200, d)) + s)
               for s in (0.5, 1.0, 2.0)]
    assert shifted[0] > 5 * spread and shifted[0] < shifted[1] < shifted[2]


def test_kernel_distance_subsets():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(200, 4))
    mean, std = metrics.kernel_distance(a, b, n_subsets=20, subset_size=50)
    assert abs(mean) < 3 * std / np.sqrt(20) + 1e-3 and std > 0
    far_mean, _ = metrics.kernel_distance(a, b + 1.0, n_subsets=20, subset_size=50)
    assert far_mean > 10 * std
    # one subset of every point is the plain MMD² (subset size capped at the smaller set)
    whole, spread = metrics.kernel_distance(a[:200], b, n_subsets=1, subset_size=10_000)
    assert whole == pytest.approx(metrics.mmd2(a[:200], b)) and spread == 0


# ---------------------------------------------------------------------- feature extraction


def test_extract_features_batches_compile_once():
    import jax
    import jax.numpy as jnp

    traces = []
    w = jnp.arange(12.0).reshape(12, 1)

    def extractor(images):
        traces.append(images.shape)
        return images.reshape(images.shape[0], -1) @ w

    images = np.random.default_rng(0).normal(size=(23, 2, 2, 3)).astype(np.float32)
    got = metrics.extract_features(images, extractor, batch_size=5)
    np.testing.assert_allclose(got, images.reshape(23, -1) @ np.arange(12.0)[:, None], rtol=1e-5)
    assert traces == [(5, 2, 2, 3)]  # 5 batches, the last padded: one trace
    metrics.extract_features(images[:7], extractor, batch_size=5)
    assert traces == [(5, 2, 2, 3)]  # a second call with the same batch shape reuses the compiled function
    # a Partial passes its parameters as arguments
    partial = jax.tree_util.Partial(lambda p, x: x.reshape(x.shape[0], -1) @ p, w)
    np.testing.assert_allclose(metrics.extract_features(images, partial, batch_size=8), got, rtol=1e-5)
    # fid / kid through an extractor: identical sets are at distance 0
    assert metrics.fid(images, images, lambda x: x.reshape(x.shape[0], -1)) == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------------- Gram matrices, PSNR


def test_gram_matrices_match_direct_computation():
    rng = np.random.default_rng(7)
    images = rng.normal(size=(2, 9, 8, 3))
    filters = rng.normal(size=(3, 3, 3, 4))
    got = metrics.gram_matrices(images, filters)
    h, w = 9 - 2, 8 - 2
    responses = np.zeros((2, h, w, 4))
    for i in range(h):
        for j in range(w):
            patch = images[:, i:i + 3, j:j + 3, :]
            responses[:, i, j, :] = np.einsum("nabd,abdc->nc", patch, filters)
    flat = responses.reshape(2, -1, 4)
    expected = np.stack([f.T @ f / (h * w) for f in flat])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # a callable extractor works too
    np.testing.assert_allclose(metrics.gram_matrices(images, lambda x: x), np.stack(
        [f.T @ f / 72 for f in images.reshape(2, -1, 3)]), rtol=1e-5)
    assert metrics.gram_distance(images, images, filters) == 0.0
    assert metrics.gram_distance(images, 2 * images, filters) == pytest.approx(
        np.mean((3 * expected.mean(0)) ** 2), rel=1e-4)
    with pytest.raises(ValueError, match="Cin = 3"):
        metrics.gram_matrices(images, filters[:, :, :2])


def test_mean_gram_over_padded_chunks_and_of_white_noise_in_closed_form():
    rng = np.random.default_rng(11)
    images = rng.normal(size=(7, 10, 10, 2))
    filters = rng.normal(size=(3, 3, 2, 4))
    # chunks of 3 (the last one padded) give the mean of the per-image Gram matrices
    np.testing.assert_allclose(metrics.mean_gram(images, filters, batch=3),
                               metrics.gram_matrices(images, filters).mean(0), rtol=1e-6)
    # white noise has the reference's per-channel mean and sd ...
    reference = np.stack([5.0 + 2.0 * rng.normal(size=(40, 40)), -1.0 + 0.5 * rng.normal(size=(40, 40))], -1)
    noise = metrics.white_noise(reference, (50, 24, 24, 2), np.random.default_rng(0))
    np.testing.assert_allclose(noise.mean((0, 1, 2)), reference.mean((0, 1)), atol=0.02)
    np.testing.assert_allclose(noise.std((0, 1, 2)), reference.std((0, 1)), rtol=0.02)
    # ... and for zero-mean noise of sd s per channel, E[F_c F_c'] = Σ_{a,b,d} s_d² w[a,b,d,c] w[a,b,d,c']
    centred = metrics.white_noise(reference - reference.mean((0, 1)), (50, 24, 24, 2), np.random.default_rng(1))
    sd = reference.std((0, 1))
    scaled = filters * sd[None, None, :, None]
    expected = np.einsum("abdc,abde->ce", scaled, scaled)
    np.testing.assert_allclose(metrics.mean_gram(centred, filters), expected, rtol=0.05, atol=0.05 * np.abs(expected).max())
    with pytest.raises(ValueError, match="at least one image"):
        metrics.mean_gram(images[:0], filters)


def test_shuffled_frames_keep_every_frame_and_each_spatial_frequencys_power():
    """Each output frame is one input frame, used once; by Parseval along
    time, the power at each spatial frequency summed over the temporal ones,
    T·Σ_t |FFT2(x_t)(k)|², does not depend on the frames' order, while a
    travelling wave's power at its own (ν, k) spreads to other temporal
    frequencies."""
    from experiments.dynamic_textures import travelling_waves

    video = travelling_waves(12, 8)
    out = metrics.shuffled_frames(video, np.random.default_rng(0))
    used = [next(t for t in range(12) if np.array_equal(video[t], frame)) for frame in out]
    assert sorted(used) == list(range(12)) and used != list(range(12))
    before = metrics.spatiotemporal_power_spectrum(video[None])
    after = metrics.spatiotemporal_power_spectrum(out[None])
    np.testing.assert_allclose(after.sum(axis=0), before.sum(axis=0), rtol=1e-9, atol=1e-6)
    peaks = before > 1e-6 * before.max()
    assert after[peaks].sum() < 0.5 * before[peaks].sum()
    with pytest.raises(ValueError, match="2 frames"):
        metrics.shuffled_frames(video[:1], np.random.default_rng(0))


@pytest.mark.parametrize("length", [64, 63])
def test_spectrally_matched_noise_has_the_power_spectrum_and_random_phases(length):
    """Every draw has the signal's |X_k| at every frequency (so its mean and
    power spectrum), for an even and an odd length; its phases are not the
    signal's: a broadband signal's draws hardly correlate with it (|r| below
    5/√T, where r is about 1/√T for independent phases), while a click
    train's draws keep its period, the only thing its line spectrum says."""
    rng = np.random.default_rng(1)
    signal = np.zeros((length, 2))
    signal[::8, 0] = 1.0  # a click every 8 samples
    signal[:, 1] = rng.normal(size=length) + 3.0
    draws = metrics.spectrally_matched_noise(signal, 20, np.random.default_rng(0))
    assert draws.shape == (20, length, 2) and np.isrealobj(draws)
    np.testing.assert_allclose(np.abs(np.fft.rfft(draws, axis=1)), np.abs(np.fft.rfft(signal, axis=0))[None].repeat(20, 0),
                               atol=1e-9)
    np.testing.assert_allclose(draws.mean(axis=1), signal.mean(axis=0)[None].repeat(20, 0), atol=1e-12)
    r = [np.corrcoef(d[:, 1], signal[:, 1])[0, 1] for d in draws]
    assert np.max(np.abs(r)) < 5 / np.sqrt(length)
    if length % 8 == 0:  # the clicks' spectrum lies at multiples of T/8: every draw repeats every 8 samples
        np.testing.assert_allclose(draws[:, 8:, 0], draws[:, :-8, 0], atol=1e-12)
        assert not np.allclose(draws[:, :, 0], signal[None, :, 0], atol=0.1)
    with pytest.raises(ValueError, match="one signal"):
        metrics.spectrally_matched_noise(signal[None], 2, rng)


def test_shuffled_patches_keeps_every_tile_and_the_histogram():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(13, 12, 2))          # 13 rows: the last row is cut off (13 // 4 = 3 tiles)
    out = metrics.shuffled_patches(image, 4, np.random.default_rng(0))
    window = image[:12, :12]
    assert out.shape == (12, 12, 2)
    # the same pixel values, exactly: the histogram of every channel
    for c in range(2):
        np.testing.assert_array_equal(np.sort(out[..., c], axis=None), np.sort(window[..., c], axis=None))
    # each output tile is one input tile, each input tile used once
    tiles_in = [window[i:i + 4, j:j + 4] for i in range(0, 12, 4) for j in range(0, 12, 4)]
    tiles_out = [out[i:i + 4, j:j + 4] for i in range(0, 12, 4) for j in range(0, 12, 4)]
    used = [next(k for k, t in enumerate(tiles_in) if np.array_equal(t, u)) for u in tiles_out]
    assert sorted(used) == list(range(9)) and used != list(range(9))
    # one tile the size of the image: nothing moves
    np.testing.assert_array_equal(metrics.shuffled_patches(window, 12, rng), window)
    with pytest.raises(ValueError, match="patch"):
        metrics.shuffled_patches(image, 14, rng)


def test_texture_scores_closed_forms():
    rng = np.random.default_rng(5)
    observed = 100.0 + 20.0 * rng.normal(size=(64, 64, 2)) * np.array([1.0, 0.5])
    identity = np.eye(2).reshape(1, 1, 2, 2)          # 1×1 filters: the Gram matrix is E[x xᵀ] over pixels
    s = metrics.texture_scores(observed[None].repeat(3, 0), observed[None], observed, identity, patch=64, seed=1,
                               with_observed=True)
    # the observed image itself and its one-patch shuffles are at distance 0, both measures
    for name in ("synthesized", "shuffled_patches", "observed"):
        assert s[name] == {"spectrum": pytest.approx(0.0, abs=1e-12), "gram": pytest.approx(0.0, abs=1e-12)}
    # white noise of the per-channel mean and sd has the observed second moments per channel: E[x²] =
    # m² + sd²; its Gram matrix differs from the observed one by the cross term m₁m₂ − E[x₁x₂] ≈ 0 and by
    # sampling noise only, far below a copy of twice the contrast around the mean
    doubled = metrics.texture_scores(2 * observed[None] - observed.mean((0, 1)), observed[None], observed, identity,
                                     patch=64, seed=1)
    # twice the contrast: E[x'²] − E[x²] = 3 sd² per channel (sd 20 and 10), the cross term unchanged
    assert doubled["synthesized"]["gram"] == pytest.approx((9 * 20.0**4 + 9 * 10.0**4) / 4, rel=0.1)
    assert s["white_noise"]["gram"] < 1e-2 * doubled["synthesized"]["gram"]
    assert s["white_noise"]["spectrum"] > 0.5
    # the same seed draws the same baselines; to_model maps every set before the Gram matrices only
    again = metrics.texture_scores(observed[None].repeat(3, 0), observed[None], observed, identity, patch=16, seed=1)
    assert again["white_noise"] == s["white_noise"]
    flat = metrics.texture_scores(observed[None].repeat(3, 0), observed[None], observed, identity, patch=16, seed=1,
                                  to_model=lambda x: 0 * x)
    assert flat["white_noise"]["gram"] == 0.0 and flat["white_noise"]["spectrum"] == s["white_noise"]["spectrum"]
    with pytest.raises(ValueError, match="observed must be one image"):
        metrics.texture_scores(observed[None], observed[None], observed[None], identity, patch=16)
    # the pyramid statistic, where asked for: copies of the observed image at 0, white noise's as computed directly
    pyr = metrics.texture_scores(observed[None].repeat(2, 0), observed[None], observed, identity, patch=64, seed=1,
                                 pyramid_levels=(1, 2))
    for name in ("synthesized", "shuffled_patches"):  # (float32 responses: the chunks' sums round)
        assert pyr[name]["pyramid"] == {1: pytest.approx(0.0, abs=1e-12), 2: pytest.approx(0.0, abs=1e-12)}
    assert pyr["white_noise"]["pyramid"] == metrics.pyramid_gram_distances(
        metrics.white_noise(observed, (2,) + observed.shape, np.random.default_rng(1)), observed[None], levels=(1, 2))
    assert "pyramid" not in s["synthesized"]


def test_psnr_closed_form():
    x = np.zeros((2, 4, 4, 1))
    y = x + np.array([1.0, 10.0])[:, None, None, None]
    # per example: 10 log10(255² / e²)
    np.testing.assert_allclose(metrics.psnr(x, y, 255.0, per_example=True), 20 * np.log10(255.0 / np.array([1, 10])))
    assert metrics.mse(x, y) == pytest.approx(50.5)
    assert metrics.psnr(x, y, 255.0) == pytest.approx(10 * np.log10(255.0**2 / 50.5))
    assert metrics.psnr(x, x, 2.0) == np.inf
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(x, y, 0)


# ---------------------------------------------------------------------- MCMC diagnostics


def _ar1(rng, rho, n_chains, n_draws, offsets=0.0):
    """Stationary AR(1) chains x_t = ρ x_{t−1} + sqrt(1 − ρ²) ε_t (unit variance), plus per-chain offsets."""
    from scipy.signal import lfilter

    noise = rng.normal(size=(n_chains, n_draws)) * np.sqrt(1 - rho**2)
    noise[:, 0] = rng.normal(size=n_chains)  # start in the stationary N(0, 1)
    return lfilter([1.0], [1.0, -rho], noise, axis=1) + np.reshape(offsets, (-1, 1))


def _stan_ess(traces):
    """Stan's ESS written out directly in float64 (BDA3 §11.5, Geyer's
    initial monotone sequence; autocovariances by direct sums): the
    reference BlackJAX's estimator must agree with."""
    m, n = traces.shape
    c = traces - traces.mean(axis=1, keepdims=True)
    acov = np.array([[np.sum(ci[: n - t] * ci[t:]) / n for t in range(n)] for ci in c])
    within = (acov[:, 0] * n / (n - 1)).mean()
    var_plus = within * (n - 1) / n + traces.mean(axis=1).var(ddof=1)
    rho = 1 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    stop = int(np.argmax(pairs <= 0)) if np.any(pairs <= 0) else len(pairs)
    tau = -1 + 2 * np.minimum.accumulate(pairs[:stop]).sum()
    if stop < len(pairs) and rho[2 * stop] > 0:
        tau += rho[2 * stop]
    return m * n / max(tau, 1 / np.log10(m * n))


@pytest.mark.parametrize("rho", [0.0, 0.6])
def test_blackjax_ess_agrees_with_stans_formula(rho):
    traces = _ar1(np.random.default_rng(8), rho, 3, 400)
    half = traces.shape[1] // 2
    split = np.concatenate([traces[:, :half], traces[:, -half:]])
    assert metrics.effective_sample_size(traces) == pytest.approx(_stan_ess(split), rel=1e-4)


def test_ess_independent_draws():
    rng = np.random.default_rng(9)
    ess = [metrics.effective_sample_size(rng.normal(size=(4, 1000))) for _ in range(5)]
    assert np.mean(ess) == pytest.approx(4000, rel=0.1)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_ar1_closed_form(rho):
    rng = np.random.default_rng(10)
    traces = _ar1(rng, rho, 4, 20_000)
    expected = traces.size * (1 - rho) / (1 + rho)
    assert metrics.effective_sample_size(traces) == pytest.approx(expected, rel=0.15)


def test_rhat():
    rng = np.random.default_rng(11)
    mixed = _ar1(rng, 0.5, 4, 2000)
    assert metrics.rhat(mixed) == pytest.approx(1.0, abs=0.01)
    apart = _ar1(rng, 0.5, 4, 2000, offsets=np.array([0.0, 0.0, 1.0, 2.0]))
    assert metrics.rhat(apart) > 1.2
    # split R-hat sees a drift within one chain that plain R-hat misses
    drift = rng.normal(size=(1, 2000)) + np.linspace(0, 3, 2000)
    assert metrics.rhat(drift) > 1.2
    with pytest.raises(ValueError, match="at least 2 chains"):
        metrics.rhat(drift, split=False)
    # non-split R-hat by its formula
    w = mixed.var(axis=1, ddof=1).mean()
    b = mixed.mean(axis=1).var(ddof=1)
    assert metrics.rhat(mixed, split=False) == pytest.approx(np.sqrt((1999 / 2000 * w + b) / w))


def test_ess_and_rhat_of_langevin_chains():
    # Unadjusted Langevin on N(0, 1) with step ε is the AR(1) x' = (1 − ε) x + sqrt(2ε) ξ; its energy trace
    # x²/2 has lag-k autocorrelation ρ^{2k} (Gaussian: corr(X², Y²) = corr(X, Y)²), so ESS = n(1 − ρ²)/(1 + ρ²).
    import jax
    import jax.numpy as jnp

    from gcnjax import langevin

    eps, n_steps = 0.2, 5000
    energy = lambda x: 0.5 * jnp.sum(x**2)
    x0 = jax.random.normal(jax.random.key(0), (4, 1))
    _, info = langevin.sample(jax.random.key(1), energy, x0, n_steps=n_steps, step_size=eps)
    traces = np.asarray(info.energy, np.float64).T  # (chains, draws)
    rho2 = (1 - eps) ** 2
    assert metrics.effective_sample_size(traces) == pytest.approx(traces.size * (1 - rho2) / (1 + rho2), rel=0.15)
    assert metrics.rhat(traces) == pytest.approx(1.0, abs=0.02)
    # chains started far apart and stopped early have not mixed
    _, early = langevin.sample(jax.random.key(2), energy, jnp.array([[-20.0], [-10.0], [10.0], [20.0]]),
                               n_steps=10, step_size=0.01)
    positions = np.sqrt(2 * np.asarray(early.energy, np.float64).T) * np.sign([[-1], [-1], [1], [1]])
    assert metrics.rhat(positions) > 2


def test_mean_sd_over_seeds():
    """Mean and the sample sd (n − 1): 1, 2, 3, 4 → 2.5 and sqrt(5/3)."""
    from gcnjax.metrics import format_mean_sd, mean_sd

    mean, sd = mean_sd([1, 2, 3, 4])
    assert mean == 2.5 and sd == pytest.approx(np.sqrt(5 / 3), rel=1e-12)
    assert mean_sd([0.25]) == (0.25, None)
    assert format_mean_sd([1, 2, 3, 4], ".2f") == "2.50 ± 1.29"
    assert format_mean_sd([1, 2, 3, 4], ".3g", ".1g") == "2.5 ± 1"
    assert format_mean_sd([7.0], ".2f") == "7.00"
    with pytest.raises(ValueError, match="at least one"):
        mean_sd([])


def test_rectified_gram_of_white_noise_is_the_arc_cosine_kernel():
    """For white Gaussian noise of std s the responses u_c = w_c · patch are
    Gaussian with covariance s² WᵀW, and E[max(0, u_c) max(0, u_d)] =
    σ_c σ_d (sin θ + (π − θ) cos θ) / 2π with cos θ their correlation
    (Cho & Saul's arc-cosine kernel): the pyramid statistic's Gram at level 1."""
    import jax

    rng = np.random.default_rng(0)
    s = 0.4
    noise = s * rng.standard_normal((4, 96, 96, 3))  # already in the statistic's [−1, 1] units
    w = metrics.random_zero_mean_filters(3, 5, n_filters=8, seed=1)
    np.testing.assert_allclose(w.mean(axis=(0, 1, 2)), 0.0, atol=1e-7)
    gram = metrics.mean_gram(noise, jax.jit(lambda x: jax.nn.relu(metrics.filter_responses(x, w))))
    flat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    cov = s ** 2 * flat.T @ flat
    sd = np.sqrt(np.diag(cov))
    theta = np.arccos(np.clip(cov / np.outer(sd, sd), -1.0, 1.0))
    expected = np.outer(sd, sd) * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
    assert np.abs(gram - expected).max() < 0.03 * np.abs(expected).max()


def test_pyramid_levels_must_leave_room_for_the_filters():
    with pytest.raises(ValueError, match="smaller than the 5×5 filters"):
        metrics.pyramid_gram_distances(np.zeros((1, 16, 16, 1)), np.zeros((1, 16, 16, 1)), levels=(1, 4))
    # sides that the level does not divide lose their last rows and columns
    odd = np.random.default_rng(0).uniform(0, 255, (2, 17, 19, 1))
    assert metrics.pyramid_gram_distances(odd, odd, levels=(1, 2)) == {1: 0.0, 2: 0.0}


def test_pyramid_gram_sees_shapes_that_shuffled_patches_break():
    """Long vertical lines against other such images cut into 8×8 tiles and
    shuffled: each tile keeps its pixels and only the seams break the lines,
    so the distance grows with the level whose filters span them (5, 10, 20
    pixels). Another draw of the lines is the floor."""
    rng = np.random.default_rng(0)

    def lines(n=8, size=96, length=32, count=40):
        x = np.full((n, size, size, 1), 60.0)
        for i in range(n):
            for _ in range(count):
                r, c = rng.integers(0, size - length), rng.integers(0, size)
                x[i, r:r + length, c] = 220.0
        return x

    reference, other = lines(), lines()
    shuffled = np.stack([metrics.shuffled_patches(x, 8, rng) for x in other])
    floor = metrics.pyramid_gram_distances(other, reference)
    broken = metrics.pyramid_gram_distances(shuffled, reference)
    assert metrics.pyramid_gram_distances(reference, reference) == {1: 0.0, 2: 0.0, 4: 0.0}
    assert all(broken[f] > 4 * floor[f] for f in (1, 2, 4))
    assert broken[4] > 3 * broken[1]
