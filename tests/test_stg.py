"""The spatial-temporal generative ConvNet: 3-D and 1-D nets, the descriptor
code on videos and sounds, recovery, video and WAV I/O."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax import langevin, masks, metrics, presets, stg
from gcnjax.nets import SOUND_LAYERS, ConvSpec, DescriptorNet, layer_output_sizes, receptive_field, stg_layers
from gcnjax.synthesis import check_images
from gcnjax.nets import init_params


def _slim(layers, features=2):
    """The same kernels, strides and paddings with few filters (shapes only)."""
    return tuple(dataclasses.replace(spec, features=features) for spec in layers)


def _intermediate_sizes(layers, shape):
    net = DescriptorNet(layers=_slim(layers))
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    params = jax.eval_shape(net.init, jax.random.key(0), x)
    _, inter = jax.eval_shape(lambda p, x: net.apply(p, x, mutable=["intermediates"]), params, x)
    return [tuple(v[0].shape[1:-1]) for v in inter["intermediates"].values()]


@pytest.mark.parametrize("variant,size,expected", [
    # ceil(n / s) for SAME; (n + 2p − k) // s + 1 for the padded layers.
    ("st", 100, [(10, 15, 15), (4, 5, 5), (4, 3, 3)]),
    ("fc_s", 100, [(35, 50, 50), (18, 1, 1), (19, 1, 1)]),
    ("fc_s_large", 224, [(24, 75, 75), (13, 1, 1), (14, 1, 1)]),
])
def test_authors_nets_output_sizes(variant, size, expected):
    layers = stg_layers(variant, size)
    assert [tuple(s) for s in layer_output_sizes(layers, (70, size, size))] == expected
    assert _intermediate_sizes(layers, (1, 70, size, size, 3)) == expected
    # The authors' kernels: the FC layer spans the whole first-layer map.
    assert layers[0].kernel == ((15, 15, 15) if variant == "st" else (7, 7, 7))
    if variant != "st":
        assert layers[1].kernel[1:] == expected[0][1:]


def test_sound_net_output_sizes():
    assert [tuple(s) for s in layer_output_sizes(SOUND_LAYERS, (1000,))] == [(125,), (32,), (16,), (16,)]
    assert _intermediate_sizes(SOUND_LAYERS, (1, 1000, 1)) == [(125,), (32,), (16,), (16,)]
    # A top unit sees 64 + 15·8 + 3·32 + 31·64 samples: two periods of a 15 Hz trill at 16 kHz.
    assert receptive_field(SOUND_LAYERS, 1) == (2264,)


@pytest.mark.slow
def test_receptive_field_is_the_support_of_a_top_unit_gradient():
    """1 + Σ (k_l − 1) Π_{j<l} s_j per axis, checked against where one top
    unit's gradient is non-zero (positive weights and inputs: every unit on)."""
    layers = (ConvSpec(2, (3, 5, 2), (2, 1, 2)), ConvSpec(2, (2, 3, 3), (1, 2, 1)))
    rf = receptive_field(layers)
    assert rf == (1 + 2 + 1 * 2, 1 + 4 + 2 * 1, 1 + 1 + 2 * 2)
    net = DescriptorNet(layers=layers)
    x = jnp.ones((1, 12, 15, 11, 1))
    params = jax.tree_util.tree_map(jnp.abs, init_params(net, jax.random.key(0), x))

    def first_top_unit(x):
        _, inter = net.apply(params, x, mutable=["intermediates"])
        return inter["intermediates"]["preactivation2"][0][0, 0, 0, 0, 0]

    support = np.argwhere(np.asarray(jax.grad(first_top_unit)(x))[0, ..., 0] != 0)
    assert tuple(support.max(axis=0) - support.min(axis=0) + 1) == rf
    assert tuple(support.min(axis=0)) == (0, 0, 0)


def test_st_model_is_stationary_in_time():
    """With periodic (circular) padding and the sum top, f is invariant to a
    circular shift in time by a multiple of the total temporal stride, and
    to a circular shift in space by a multiple of the spatial stride."""
    layers = (ConvSpec(4, (3, 3, 3), (2, 1, 1), "CIRCULAR"), ConvSpec(3, (3, 3, 3), (1, 1, 1), "CIRCULAR"))
    net = DescriptorNet(layers=layers)
    x = jax.random.normal(jax.random.key(1), (1, 8, 6, 6, 2))
    params = init_params(net, jax.random.key(0), x)
    params = jax.tree_util.tree_map(lambda p: p * 30, params)  # ReLUs partly on, partly off
    f = float(net.apply(params, x)[0])
    for shift in (2, 4, 6):
        np.testing.assert_allclose(float(net.apply(params, jnp.roll(x, shift, axis=1))[0]), f, rtol=2e-5)
    np.testing.assert_allclose(float(net.apply(params, jnp.roll(x, (2, 3), axis=(2, 3)))[0]), f, rtol=2e-5)
    # An odd shift changes which frames the stride-2 layer visits: not invariant.
    assert abs(float(net.apply(params, jnp.roll(x, 1, axis=1))[0]) - f) > 1e-3 * abs(f)


def test_st_top_sums_interior_responses_equivariantly():
    """The authors' ST net (SAME padding): away from the borders, delaying a
    video by the total temporal stride (7·3·1 = 21 frames) delays the top
    map by exactly one position."""
    layers = _slim(stg_layers("st"), features=3)
    net = DescriptorNet(layers=layers)
    x = jax.random.normal(jax.random.key(2), (1, 84, 8, 8, 1))
    params = init_params(net, jax.random.key(0), x)
    # The same video delayed by 21 frames (new frames in front): the paddings
    # of every layer stay where they were relative to the start.
    shifted = jnp.concatenate([jax.random.normal(jax.random.key(3), (1, 21, 8, 8, 1)), x], axis=1)

    def top(v):
        _, inter = net.apply(params, v, mutable=["intermediates"])
        return np.asarray(inter["intermediates"]["preactivation3"][0])[0]

    a, b = top(x), top(shifted)
    assert a.shape[0] == 4 and b.shape[0] == 5
    # Top position t sees conv1 positions 3t−2 … 3t+7 (frames 21t−18 …
    # 21t+59): for t = 1 in x (12 conv1 positions) and t = 2 in the delayed
    # video (15) all of them are real, none padding, and the frames match.
    np.testing.assert_allclose(b[2], a[1], rtol=1e-4, atol=1e-6)
    assert np.abs(b[1] - a[0]).max() > 1e-3 * np.abs(a[0]).max()  # at the border: padding differs


class LinearF(nn.Module):
    """f(x) = <w, x>: with a N(0, σ²I) reference the model is N(σ²w, σ²I)."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.zeros, x.shape[1:])
        return jnp.sum(x * w, axis=tuple(range(1, x.ndim)))


def test_linear_descriptor_on_videos_learns_the_closed_form_mean(run_optimised_jit):
    """The descriptor's own learning step on videos (N, T, H, W, C): ML for
    f = <w, x> converges to σ²w = mean(data)."""
    sigma = 0.7
    mean = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 0.0, 2.0, -0.5]).reshape(2, 2, 2, 1)
    data = jnp.asarray(np.random.default_rng(0).normal(mean, 0.3, (16, 2, 2, 2, 1)), jnp.float32)
    n_chains = 3000
    cfg = presets.stg(
        "st", frames=2, image_size=2, channels=1, sigma=sigma, n_chains=n_chains, chain_init="zeros",
        langevin=langevin.LangevinConfig(n_steps=4, step_size=0.5 * sigma**2), optimizer="sgd",
        learning_rate=0.5, momentum=0.0,
    )
    net = LinearF()
    state = D.init_state(jax.random.key(0), cfg, net, data)
    assert state.chains.shape == (n_chains, 2, 2, 2, 1)
    step = run_optimised_jit(D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params)))
    ws = []
    for i in range(250):
        state, _ = step(state, data)
        if i >= 150:
            ws.append(np.asarray(state.params["params"]["w"]))
    tol = 5 * sigma / np.sqrt(n_chains)
    np.testing.assert_allclose(sigma**2 * np.mean(ws, axis=0), np.asarray(data.mean(axis=0)), atol=tol)


def test_video_train_step_is_traced_once_and_uses_position_scales():
    traces = {"n": 0}
    layers = (ConvSpec(3, (3, 3, 3), (1, 2, 2)), ConvSpec(2, (2, 1, 1)))
    net = DescriptorNet(layers=layers)

    def counting_apply(params, x):
        traces["n"] += 1
        return net.apply(params, x)

    cfg = presets.stg("st", frames=6, image_size=8, layers=layers, n_chains=2, divide_by_positions=True,
                         langevin=langevin.LangevinConfig.from_delta(0.3, 2))
    data = jax.random.normal(jax.random.key(0), (1, 6, 8, 8, 3))
    state = D.init_state(jax.random.key(0), cfg, net, data)
    scales = D.spatial_position_scales(state.params, layers, (6, 8, 8))
    # conv1 output 4×3×3 = 36 positions, conv2 3×3×3 = 27.
    assert float(scales["params"]["conv1"]["kernel"]) == pytest.approx(1 / 36)
    assert float(scales["params"]["conv2"]["kernel"]) == pytest.approx(1 / 27)
    step = D.make_train_step(cfg, counting_apply, D.make_optimizer(cfg, state.params, data.shape[1:-1]))
    state, m = step(state, data)
    first = traces["n"]
    for _ in range(2):
        state, m = step(state, data * 2)
    assert traces["n"] == first
    assert state.chains.shape == (2, 6, 8, 8, 3) and np.isfinite(float(m["f_samples"]))


def test_check_images_on_videos_and_sounds():
    cfg = presets.stg("st", frames=30, image_size=32)
    check_images(np.zeros((1, 30, 32, 32, 3)), cfg)
    with pytest.raises(gdata.DataError, match="videos"):
        check_images(np.zeros((1, 32, 32, 3)), cfg)  # a 3-D net given images
    fc = presets.stg("fc_s", frames=30, image_size=64)
    with pytest.raises(gdata.DataError, match="too small"):
        check_images(np.zeros((1, 30, 32, 32, 3)), fc)  # its FC layer spans 32, not 16
    snd = presets.sound(400)
    check_images(np.zeros((1, 400, 1)), snd)


@pytest.mark.slow
def test_recovery_keeps_observed_values_bit_identical():
    video = np.random.default_rng(0).uniform(0, 255, (1, 6, 8, 8, 1)).astype(np.float32)
    pepper = masks.salt_and_pepper(video.shape[1:], 0.5, seed=0)[None]  # per frame: (1, T, H, W, 1)
    assert pepper.shape == (1, 6, 8, 8, 1)
    layers = (ConvSpec(3, (3, 3, 3), 1, "SAME"), ConvSpec(2, (2, 2, 2)))
    cfg = presets.stg("st", frames=6, image_size=8, channels=1, layers=layers, init_std=0.05,
                         langevin=langevin.LangevinConfig.from_delta(3.0, 3))
    net = D.make_net(cfg)
    scale = gdata.PixelScale("minus_mean").fit(video)
    obs = jnp.asarray(scale.to_model(video))
    for mask in (pepper, masks.missing_frames(video.shape, [2, 3])):
        m = jnp.asarray(np.broadcast_to(mask, video.shape))
        state = D.init_state(jax.random.key(0), dataclasses.replace(cfg, n_chains=1), net, obs)
        step = stg.make_recovery_step(dataclasses.replace(cfg, n_chains=1), net,
                                      D.make_optimizer(cfg, state.params), obs, m)
        carry = (state, jnp.where(m != 0, obs, 0.0))
        for _ in range(2):
            carry, metrics_ = step(carry, None)
        filled = np.asarray(carry[1])
        observed = np.asarray(m) != 0
        np.testing.assert_array_equal(filled[observed], np.asarray(obs)[observed])  # bit for bit
        assert np.all(filled[~observed] != 0)  # the missing values moved
        assert np.isfinite(float(metrics_["f_data"]))


def test_recover_video_writes_a_run(tmp_path):
    t = np.arange(6)[:, None, None, None]
    video = (127.5 + 60 * np.sin(t + np.arange(8)[None, None, :, None] / 2)) * np.ones((6, 8, 8, 1))
    layers = (ConvSpec(3, (3, 3, 3), 1, "SAME"),)
    cfg = presets.stg("st", frames=6, image_size=8, channels=1, layers=layers, n_iterations=3,
                         langevin=langevin.LangevinConfig.from_delta(0.3, 2))
    mask = masks.missing_frames((1,) + video.shape, [3])
    result = stg.recover_video(cfg, video, mask, tmp_path / "rec", quiet=True)
    np.testing.assert_array_equal(result["recovered"][0, :3], video[:3].astype(np.float32))
    assert (tmp_path / "rec" / "incomplete_recovered_true.gif").exists()
    assert result["recovery_error"] > 0 and np.isfinite(result["mean_fill_error"])
    # The interpolation baseline: frame 3 as the mean of frames 2 and 4.
    assert result["temporal_interpolation_error"] == pytest.approx(
        np.abs(video[3] - (video[2] + video[4]) / 2).mean())


def test_temporal_interpolation_is_exact_on_a_ramp_and_holds_beyond_the_observed_frames():
    """A video linear in time, x_t = 10 + s·t with a slope s per pixel and
    channel: every missing value between observed frames comes back
    exactly; before the first / after the last observed frame the value is
    held; a pixel never observed keeps its values; observed values are
    unchanged."""
    rng = np.random.default_rng(0)
    slope = rng.uniform(-2, 2, (1, 1, 4, 4, 2))
    video = 10.0 + slope * np.arange(9)[None, :, None, None, None]
    mask = rng.uniform(size=(1, 9, 4, 4, 2)) > 0.4
    mask[:, [0, 8]] = False  # the ends missing
    mask[:, 4, 1, 1, 0] = True
    mask[:, :, 2, 2, 1] = False  # never observed
    mask[:, 2, 3, 3, 0] = True
    filled = stg.temporal_interpolation(video, mask)
    np.testing.assert_array_equal(filled[mask], video[mask])
    np.testing.assert_array_equal(filled[0, :, 2, 2, 1], video[0, :, 2, 2, 1])
    t = np.arange(9)
    for i, j, c in np.ndindex(4, 4, 2):
        seen = mask[0, :, i, j, c]
        if not seen.any():
            continue
        first, last = t[seen].min(), t[seen].max()
        inside = (t >= first) & (t <= last)
        np.testing.assert_allclose(filled[0, inside, i, j, c], video[0, inside, i, j, c], rtol=1e-12)
        np.testing.assert_allclose(filled[0, t < first, i, j, c], video[0, first, i, j, c])
        np.testing.assert_allclose(filled[0, t > last, i, j, c], video[0, last, i, j, c])


def test_spatiotemporal_power_spectrum_of_a_travelling_wave():
    t, h, w = 8, 6, 10
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    wave = np.cos(2 * np.pi * (2 * xx / w + 1 * yy / h - 3 * tt / t))[None, ..., None]
    p = metrics.spatiotemporal_power_spectrum(wave)
    assert p.shape == (t, h, w)
    np.testing.assert_allclose(p.sum(), t * h * w * np.sum((wave - wave.mean()) ** 2), rtol=1e-9)  # Parseval
    peaks = {tuple(i) for i in np.argwhere(p > 1e-6 * p.max())}
    assert peaks == {((-3) % t, 1, 2), (3, (-1) % h, (-2) % w)}
    assert metrics.spatiotemporal_spectrum_distance(wave, wave) == 0.0
    noise = np.random.default_rng(0).normal(0, wave.std(), wave.shape)
    assert metrics.spatiotemporal_spectrum_distance(wave, noise) > 1.0


def test_envelope_modulation_spectrum_of_an_amplitude_modulated_tone():
    # A carrier of 8 samples per period under a loudness constant within each
    # window of 32 samples (4 periods): the RMS of window j is a_j / sqrt(2)
    # exactly, so the envelope's variance lies at the modulation's frequencies
    # in the shares m1² : m2².
    window, n_windows = 32, 64
    j = np.repeat(np.arange(n_windows), window)
    carrier = np.sin(2 * np.pi * np.arange(window * n_windows) / 8)

    def tone(m1, m2, k1=5, k2=12):
        return ((1 + m1 * np.cos(2 * np.pi * k1 * j / n_windows) + m2 * np.cos(2 * np.pi * k2 * j / n_windows))
                * carrier)[None, :, None]

    k = np.arange(n_windows)
    np.testing.assert_allclose(metrics.loudness_envelope(tone(0.3, 0.4), window)[0],
                               (1 + 0.3 * np.cos(2 * np.pi * 5 * k / n_windows)
                                + 0.4 * np.cos(2 * np.pi * 12 * k / n_windows)) / np.sqrt(2), rtol=1e-12)
    p = metrics.envelope_modulation_spectrum(tone(0.3, 0.4), window)
    assert p.shape == (1, n_windows // 2)
    expected = np.zeros(n_windows // 2)
    expected[[4, 11]] = [0.09 / 0.25, 0.16 / 0.25]  # frequencies k = 5 and 12, index k - 1
    np.testing.assert_allclose(p[0], expected, atol=1e-12)
    np.testing.assert_array_equal(metrics.envelope_modulation_spectrum(tone(0.0, 0.0), window), 0.0)  # steady
    assert metrics.modulation_spectrum_distance(tone(0.3, 0.4), tone(0.3, 0.4), window) == 0.0
    np.testing.assert_allclose(metrics.modulation_spectrum_distance(tone(0.3, 0.0), tone(0.0, 0.3), window), 1.0)
    np.testing.assert_allclose(metrics.modulation_spectrum_distance(tone(0.3, 0.4), tone(0.3, 0.0), window), 0.64)
    with pytest.raises(ValueError, match="window"):
        metrics.envelope_modulation_spectrum(tone(0.3, 0.0), window * n_windows // 2)


def test_video_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.uniform(0, 255, (5, 4, 4, 3)), 4, axis=1), 4, axis=2)
    gif = gdata.save_video(tmp_path / "v.gif", frames, fps=5)
    back = gdata.load_video(gif)
    assert back.shape == (5, 16, 16, 3)
    # GIF quantises to a 256-colour palette: a few levels off at most.
    assert np.abs(back - np.round(frames)).mean() < 8
    np.testing.assert_array_equal(gdata.load_video(gif, n_frames=2), back[:2])
    mp4 = gdata.save_video(tmp_path / "v.mp4", frames, fps=5)
    back = gdata.load_video(mp4, size=(8, 8))
    assert back.shape == (5, 8, 8, 3)
    folder = tmp_path / "frames"
    for i, f in enumerate(frames):
        gdata.save_image_grid(folder / f"frame_{i:03d}.png", f[None], n_cols=1)
    # save_image_grid pads by 2: read back as a folder of 20×20 frames.
    assert gdata.load_video(folder, n_frames=3).shape == (3, 20, 20, 3)


@pytest.mark.parametrize("make,match", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"not a video at all" * 10), "cannot read video"),
])
def test_unreadable_videos_are_clear_errors(tmp_path, make, match):
    path = tmp_path / "broken.avi"
    make(path)
    with pytest.raises(gdata.DataError, match=match):
        gdata.load_video(path)
    (tmp_path / "no_frames").mkdir()
    with pytest.raises(gdata.DataError, match="no images"):
        gdata.load_video(tmp_path / "no_frames")


def test_wav_round_trip_and_errors(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)
    path = gdata.save_wav(tmp_path / "a.wav", tone, 8000)
    back, rate = gdata.load_wav(path)
    assert rate == 8000 and back.shape == (800, 1)
    np.testing.assert_allclose(back[:, 0], tone, atol=1 / 32767)
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(gdata.DataError, match="empty.wav"):
        gdata.load_wav(tmp_path / "empty.wav")
    np.testing.assert_allclose(stg.pixels_to_sound(stg.sound_to_pixels(tone)), tone, atol=1e-6)


def test_frame_strip_and_side_by_side():
    a = np.zeros((3, 4, 5, 1))
    b = np.full((6, 4, 5, 1), 100.0)
    movie = gdata.side_by_side(a, b, pad=1)
    assert movie.shape == (6, 4, 11, 1)
    assert np.all(movie[3:, :, :5] == 0)  # the shorter video holds its last frame
    strip = gdata.video_strip(np.stack([b, b]), max_frames=4, pad=1)
    assert strip.shape == (2 * 5 + 1, 4 * 6 + 1)


def test_cli_stgconvnet_learns_a_video_and_refuses_bad_masks(tmp_path, capsys):
    from gcnjax.cli import main

    t = np.arange(8)[:, None, None, None]
    frames = (127.5 + 80 * np.sin(t / 2 + np.arange(16)[None, None, :, None] / 3)) * np.ones((8, 16, 16, 3))
    gif = gdata.save_video(tmp_path / "wave.gif", frames)
    common = ["--data", str(gif), "--frames", "8", "--image-size", "16", "--iterations", "2", "--steps", "2",
              "--chains", "1", "--quiet"]
    assert main(["stgconvnet", *common, "--out", str(tmp_path / "run"), "--synth-frames", "12"]) == 0
    run = tmp_path / "run"
    for name in ("config.json", "metrics.csv", "observed_vs_synthesized.gif", "observed_vs_synthesized_frames.png",
                 "longer.gif", "report.md"):
        assert (run / name).exists(), name
    assert gdata.load_video(run / "longer.gif").shape[0] == 12
    report = (run / "report.md").read_text()
    assert "## Where the samples sit in the learned energy" in report
    # The videos from noise's first-layer statistics, over their 12 frames, against the observed video's.
    from gcnjax.synthesis import load_run

    _, scale, net, params = load_run(run)
    longer = scale.to_model(np.load(run / "longer.npy"))
    g = metrics.mean_gram(longer, D.first_layer_features(net, params))
    gram = np.load(run / "first_layer_gram.npy")
    distance = float(np.mean((g - gram) ** 2))
    assert "## The samples' first-layer statistics against the data's" in report and f"{distance:.4g} |" in report
    assert main(["stgconvnet", *common, "--out", str(tmp_path / "bad"), "--recover", "holes:3"]) == 2
    assert "pepper:FRACTION" in capsys.readouterr().err


def test_reports_state_the_receptive_field_and_warn_where_it_covers_the_data():
    from gcnjax import presets
    from gcnjax.synthesis import receptive_field_note

    st = presets.stg("st", frames=16, image_size=32, channels=3)
    # The ST net (15³ stride 7, 7³ stride 3, 2×3×3 stride 1×2×2) sees 1 + 14 + 6·7 + 1·21 = 78 frames and
    # 1 + 14 + 6·7 + 2·21 = 99 pixels: all of a 16×32×32 clip.
    note = receptive_field_note(st, (16, 32, 32))
    assert note.startswith("A top unit sees 78×99×99 of the data's 16×32×32.") and "Warning" in note
    assert "Warning" not in receptive_field_note(st, (70, 100, 100))
    # The small variant (5³ s2, 3³ s2, 2×3×3 s1×2×2): 1 + 4 + 2·2 + 1·4 = 13 frames, 1 + 4 + 2·2 + 2·4 = 17 pixels.
    small = presets.stg("st_small", frames=16, image_size=32, channels=3)
    assert receptive_field_note(small, (16, 32, 32)) == "A top unit sees 13×17×17 of the data's 16×32×32."
    texture = presets.texture()
    assert receptive_field_note(texture, (224, 224)) == "A top unit sees 33×33 of the data's 224×224."
    assert "Warning" in receptive_field_note(texture, (32, 32))
