"""The spatial-temporal generative ConvNet: dynamic textures and sounds.

"Synthesizing Dynamic Patterns by Spatial-Temporal Generative ConvNet"
(Xie, Zhu, Wu, CVPR 2017). The model is the descriptor of
:mod:`gcnjax.descriptor` on videos ``(N, T, H, W, C)`` or sounds
``(N, T, C)``:

    p(x; w) = exp(f(x; w)) q(x) / Z(w),   q = N(0, σ² I),
    E(x; w) = ||x||² / (2σ²) − f(x; w),

with ``f`` a bottom-up ConvNet of 3-D (time × height × width) or 1-D
(time) convolutions whose top responses are summed
(:func:`gcnjax.nets.stg_layers`, :data:`gcnjax.nets.SOUND_LAYERS`).
Learning and sampling are the descriptor's own (:func:`learn_descriptor`,
:mod:`gcnjax.langevin`); this module adds the settings of the authors' code,
the video and sound outputs, synthesis of any length, and recovery of
missing pixels or frames.

Recovery samples the missing values ``x_M`` given the observed ones
``x_O``: Langevin on ``E(x_O, x_M)`` as a function of ``x_M`` alone, i.e.
on ``z`` with ``x = m·x_O + (1 − m)·z`` (``m`` the mask), so the observed
values are put back exactly after every step; the model is learned from
the incomplete video at the same time, each iteration one recovery chain
then one learning step on the recovered video (the paper's algorithm).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax import metrics
from gcnjax.nets import STG_VARIANTS
from gcnjax.run import Family, Outputs, Picture, Trainer, learn, save_video
from gcnjax.sampling import energy_comparison, first_layer_comparison

__all__ = [
    "STG_VARIANTS",
    "sound_to_pixels",
    "pixels_to_sound",
    "learn_dynamic_texture",
    "learn_sound",
    "synthesize_from_noise",
    "clamp_observed",
    "temporal_interpolation",
    "make_recovery_step",
    "recover_video",
]


sound_to_pixels = gdata.sound_to_pixels
pixels_to_sound = gdata.pixels_to_sound


def _as_batch(x: np.ndarray, ndim: int, what: str) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == ndim - 1:
        x = x[None]
    if x.ndim != ndim:
        raise gdata.DataError(f"{what}: expected {ndim - 1} or {ndim} axes, got shape {x.shape}.")
    return x


def synthesize_from_noise(key, net, params, config: D.DescriptorConfig, shape: Sequence[int], *,
                          n_steps: int, scale: float = 1.0) -> jax.Array:
    """Fresh chains of any ``shape`` ``(n, T, H, W, C)`` (model units) from
    N(0, scale²) noise, ``n_steps`` Langevin steps under the learned model.

    The nets are convolutional in time, so ``T`` may exceed the observed
    length. The chain runs as repeated jit'd chunks of
    ``config.langevin.n_steps`` steps (one trace, a short compile).
    """
    sampler = config.langevin
    chunk_steps = max(1, sampler.n_steps)

    @jax.jit
    def chunk(k, x):
        return D.synthesize(k, net.apply, params, x, sampler, config.sigma)[0]

    k0, key = jax.random.split(key)
    x = scale * jax.random.normal(k0, tuple(shape), jnp.float32)
    for i in range(-(-int(n_steps) // chunk_steps)):
        x = chunk(jax.random.fold_in(key, i), x)
    return x


def _write_video_outputs(run_path: Path, observed: np.ndarray, synthesized: np.ndarray, fps: float,
                         name: str = "observed_vs_synthesized") -> Dict[str, Path]:
    """GIF and MP4 of the observed video beside each synthesized one, and a
    PNG frame strip (first row observed, then one row per chain)."""
    paths = save_video(run_path / name, gdata.side_by_side(observed[0], *synthesized), fps)
    # Rows of evenly spaced frames: the observed video (when of the same
    # length), then each synthesized one over its whole length.
    strip = synthesized if observed.shape[1] != synthesized.shape[1] else np.concatenate([observed[:1], synthesized])
    paths["strip"] = gdata.save_frame_strip(run_path / f"{name}_frames.png", strip)
    return paths


def learn_dynamic_texture(config: D.DescriptorConfig, video: np.ndarray, out, *, fps: float = 10.0,
                          synth_frames: Optional[int] = None, synth_steps: Optional[int] = None,
                          title: str = "Dynamic texture", source: str = "", data_spec=None,
                          overwrite: bool = False, resume: bool = False, quiet: bool = False,
                          devices: Optional[int] = None) -> Dict[str, object]:
    """Learn a spatial-temporal descriptor from a video ``(T, H, W, C)`` (or
    a batch of them) with :func:`gcnjax.synthesis.learn_descriptor`, then
    write ``observed_vs_synthesized.gif/.mp4`` and its frame strip PNG.

    ``synth_frames``: also synthesize videos of that many frames (more than
    observed, say) from noise with ``synth_steps`` Langevin steps (default
    25 iterations' worth), written as ``longer.gif``, ``longer_frames.png``
    and ``longer.npy`` (pixels); and compare where they sit in the learned
    energy: ``result["energies"]`` holds the mean ``E = ||x||²/2σ² − f(x)``
    of the observed videos, the persistent chains and the videos from noise
    (on their first T frames, T observed), and the report gets a table of
    them (:func:`gcnjax.sampling.energy_comparison`), with a warning when
    the videos from noise sit far below both: a mode of the model that
    learning's chains never visited; likewise ``result["first_layer"]``
    holds the Gram distances of the first layer's responses to the observed
    videos' (:func:`gcnjax.descriptor.first_layer_statistics`), the videos
    from noise's added as ``"from_noise"`` (over all their frames), with a
    warning when they are farther than white noise
    (:func:`gcnjax.sampling.first_layer_comparison`).
    """
    from gcnjax.synthesis import learn_descriptor

    videos = _as_batch(video, 5, "video")
    result = learn_descriptor(config, videos, out, title=title, source=source, data_spec=data_spec,
                              overwrite=overwrite, resume=resume, quiet=quiet, devices=devices)
    run_path = Path(result["run_dir"])
    scale = result["scale"]
    synthesized = scale.to_pixels(np.asarray(result["state"].chains))
    result["videos"] = _write_video_outputs(run_path, videos, synthesized, fps)
    if synth_frames:
        t0 = time.perf_counter()
        steps = synth_steps or 25 * config.langevin.n_steps
        shape = (config.n_chains, int(synth_frames)) + videos.shape[2:]
        longer_model = synthesize_from_noise(jax.random.key(config.seed + 1), result["net"], result["params"],
                                             config, shape, n_steps=steps, scale=config.init_scale)
        longer = scale.to_pixels(np.asarray(longer_model))
        result["longer"] = _write_video_outputs(run_path, videos, longer, fps, name="longer")
        np.save(run_path / "longer.npy", longer.astype(np.float32))
        result["longer_seconds"] = time.perf_counter() - t0
        result["longer_pixels"] = longer
        result["energies"] = {**result["energies"], **D.mean_energies(
            result["net"].apply, result["params"], config.sigma, from_noise=longer_model[:, : videos.shape[1]])}
        lines = energy_comparison(result["energies"], "from_noise", f"videos from noise ({steps} steps, first frames)")
        if "first_layer" in result:
            # Their first-layer statistics, over all their frames, against the observed videos'.
            distance = metrics.gram_distance_to(np.load(run_path / "first_layer_gram.npy"), longer_model,
                                                D.first_layer_features(result["net"], result["params"]))
            result["first_layer"] = {**result["first_layer"], "from_noise": distance}
            lines += first_layer_comparison(result["first_layer"], f"videos from noise ({steps} steps)", "from_noise")
        with open(run_path / "report.md", "a") as f:
            f.write("\n" + "\n".join(lines))
    result["synthesized_pixels"] = synthesized
    result["observed_pixels"] = videos
    return result


def learn_sound(config: D.DescriptorConfig, samples: np.ndarray, rate: int, out, *, title: str = "Sound",
                source: str = "", data_spec=None, overwrite: bool = False, resume: bool = False,
                quiet: bool = False, devices: Optional[int] = None) -> Dict[str, object]:
    """Learn a 1-D temporal descriptor from a mono waveform ``(T,)`` or
    ``(T, 1)`` in [−1, 1] at ``rate`` Hz; write each chain's synthesized
    sound as ``synthesized_K.wav`` (and the observed one as ``observed.wav``)."""
    from gcnjax.synthesis import learn_descriptor

    samples = np.asarray(samples, np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2 or samples.shape[1] != 1:
        raise gdata.DataError(f"learn_sound needs a mono waveform (T,) or (T, 1), got shape {samples.shape}.")
    pixels = sound_to_pixels(samples)[None]
    result = learn_descriptor(config, pixels, out, title=title, source=source, data_spec=data_spec,
                              overwrite=overwrite, resume=resume, quiet=quiet, devices=devices)
    run_path = Path(result["run_dir"])
    sounds = pixels_to_sound(result["scale"].to_pixels(np.asarray(result["state"].chains)))
    gdata.save_wav(run_path / "observed.wav", samples, rate)
    result["wavs"] = [gdata.save_wav(run_path / f"synthesized_{k}.wav", s, rate) for k, s in enumerate(sounds)]
    result["sounds"] = sounds
    return result


# ---------------------------------------------------------------- recovery


def clamp_observed(z: jax.Array, observed: jax.Array, mask: jax.Array) -> jax.Array:
    """``x = observed`` where ``mask`` is 1 and ``z`` where it is 0 (a
    select, so observed values come back bit for bit)."""
    return jnp.where(jnp.broadcast_to(mask, z.shape) != 0, observed, z)


def temporal_interpolation(videos: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The baseline recovery of a video's missing values: each one linearly
    interpolated in time between the nearest observed values of the same
    pixel and channel,

        x̂_t = x_a + (x_b − x_a) (t − a) / (b − a),   a < t < b the nearest observed frames,

    held at the first / last observed value before / after them; a pixel
    never observed keeps its values. ``videos``: ``(N, T, ...)``; ``mask``:
    1 = observed, broadcastable to it. Observed values come back unchanged."""
    videos = np.asarray(videos, np.float64)
    seen = np.broadcast_to(np.asarray(mask) != 0, videos.shape).reshape(videos.shape[:2] + (-1,))
    flat = videos.reshape(seen.shape)
    t = np.arange(flat.shape[1])[None, :, None]
    before = np.maximum.accumulate(np.where(seen, t, -1), axis=1)  # the last observed frame at or before t
    after = np.flip(np.minimum.accumulate(np.flip(np.where(seen, t, flat.shape[1]), axis=1), axis=1), axis=1)
    a = np.where(before >= 0, before, after)  # before the first observed frame: held at it
    b = np.where(after < flat.shape[1], after, a)  # after the last one: held at it
    a, b = np.minimum(a, flat.shape[1] - 1), np.minimum(b, flat.shape[1] - 1)  # a pixel never observed
    xa, xb = np.take_along_axis(flat, a, axis=1), np.take_along_axis(flat, b, axis=1)
    weight = np.where(b > a, (t - a) / np.maximum(b - a, 1), 0.0)
    filled = np.where(seen | ~seen.any(axis=1, keepdims=True), flat, xa + (xb - xa) * weight)
    return filled.reshape(videos.shape)


def make_recovery_step(config: D.DescriptorConfig, net, optimizer, observed: jax.Array, mask: jax.Array):
    """One iteration of learning from an incomplete video, for :func:`gcnjax.train.fit`.

    ``((state, filled), _) -> ((state, filled), metrics)``: first the missing
    values of ``filled`` move by ``config.langevin`` under the current model,
    with the observed ones clamped, which is Langevin on the conditional
    ``p(x_M | x_O)`` (energy ``E(m·x_O + (1 − m)·z)`` of ``z``: its gradient
    is zero on observed entries, and those are replaced by ``x_O``);
    then the descriptor's own learning step (:func:`gcnjax.descriptor.make_train_step`)
    runs on the recovered video. ``observed`` and ``mask`` are in model units,
    broadcastable to ``(N, T, H, W, C)``.
    """
    observed = jnp.asarray(observed, jnp.float32)
    mask = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), observed.shape)
    train_step = D.make_train_step(config, net.apply, optimizer)

    if observed.shape[0] != 1:
        raise ValueError(f"make_recovery_step recovers one video (N = 1), got {observed.shape[0]}.")

    def masked_apply(params, z):  # z: one chain, (1, T, H, W, C)
        return net.apply(params, clamp_observed(z, observed, mask))

    @jax.jit
    def recover(key, params, filled):
        z, _ = D.synthesize(key, masked_apply, params, filled, config.langevin, config.sigma)
        return clamp_observed(z, observed, mask)

    def step(carry, _):
        state, filled = carry
        filled = recover(jax.random.fold_in(state.key, 7), state.params, filled)
        state, m = train_step(state, filled)
        return (state, filled), m

    return step


def _check_recovery(config: D.DescriptorConfig, video, inputs) -> np.ndarray:
    from gcnjax.synthesis import check_images

    videos = check_images(_as_batch(video, 5, "video"), config)
    if videos.shape[0] != 1:
        raise gdata.DataError(f"recover_video recovers one video at a time, got {videos.shape[0]}.")
    try:
        full_mask = np.broadcast_to(np.asarray(inputs["mask"], np.float32), videos.shape)
    except ValueError:
        raise ValueError(f"mask of shape {np.shape(inputs['mask'])} does not broadcast to the video's shape "
                         f"{videos.shape}; build it with gcnjax.masks for this video.") from None
    if full_mask.min() == 1:
        raise ValueError("the mask marks every value observed; there is nothing to recover.")
    if full_mask.max() == 0:
        raise ValueError("the mask marks every value missing; recovery needs some observed values.")
    inputs["mask"] = full_mask
    return videos


def _observed_mean_scale(config, videos, inputs) -> gdata.PixelScale:
    """``minus_mean`` with the mean of the OBSERVED values (the missing ones are unknown)."""
    mask = inputs["mask"]
    mean = float(np.where(mask != 0, videos, 0.0).sum() / mask.sum())
    return gdata.PixelScale("minus_mean", (mean,) * videos.shape[-1])


def _recovery_trainer(config: D.DescriptorConfig, x, scale: gdata.PixelScale, videos: np.ndarray, inputs) -> Trainer:
    """Learning from one incomplete video: Langevin on its missing values
    (observed ones clamped), then the descriptor's learning step, every
    iteration (:func:`make_recovery_step`); the state is ``(DescriptorState,
    filled video)``."""
    full_mask = inputs["mask"]
    observed = jnp.where(jnp.asarray(full_mask) != 0, x, 0.0)
    net = D.make_net(config)
    cfg = dataclasses.replace(config, n_chains=videos.shape[0])

    def init(phase):
        return D.init_state(jax.random.key(config.seed), cfg, net, observed), observed

    optimizer = D.make_optimizer(cfg, jax.eval_shape(net.init, jax.random.key(0), observed[:1]), image_size=videos.shape[1:-1])
    step = jax.jit(make_recovery_step(cfg, net, optimizer, observed, jnp.asarray(full_mask)))
    mean = scale.mean[0]

    def recovered_pixels(filled):
        return np.clip(np.where(full_mask != 0, videos, scale.to_pixels(np.asarray(filled))), 0, 255)

    def finish(state, params):
        recovered = recovered_pixels(state[1])
        error = float(metrics.recovery_error(videos, recovered, full_mask).mean())
        baseline = float(metrics.recovery_error(videos, np.where(full_mask != 0, videos, mean), full_mask).mean())
        interpolated = float(metrics.recovery_error(videos, temporal_interpolation(videos, full_mask),
                                                    full_mask).mean())
        incomplete = np.where(full_mask != 0, videos, 0.0)
        missing = float(1 - full_mask.mean())
        summary = {"what": inputs["what"], "recovery_error": error, "mean_fill_error": baseline,
                   "temporal_interpolation_error": interpolated,
                   "iterations": config.n_iterations, "missing_fraction": missing,
                   "recovered": recovered, "filled_model": np.asarray(state[1])}
        report = [f"{missing:.0%} of the values missing ({inputs['what']}).", "",
                  f"Mean |error| on missing values (0..255): recovered **{error:.2f}**, filled with the observed "
                  f"mean {baseline:.2f}, linearly interpolated in time between the observed values "
                  f"{interpolated:.2f}.", "", "Rows: incomplete, recovered, true.", "",
                  "![frames](incomplete_recovered_true.png)", ""]
        return Outputs(pictures={"incomplete_recovered_true": Picture(np.stack([incomplete[0], recovered[0], videos[0]]))},
                       videos={"incomplete_recovered_true": (gdata.side_by_side(incomplete[0], recovered[0], videos[0]),
                                                             inputs["fps"])},
                       report=report, summary=summary)

    return Trainer(
        phase_ends=[config.n_iterations],
        init=init,
        step=lambda phase: step,
        batches=lambda i: None,
        snapshot=lambda state, it: {"recovered": Picture(recovered_pixels(state[1]))},
        params=lambda state: state[0].params,
        finish=finish,
        describe=(f"Each iteration one Langevin run of {config.langevin.n_steps} steps (step size "
                  f"{config.langevin.step_size:g}) on the missing values, observed ones clamped, then one "
                  "learning step on the recovered video."),
        plot_keys=("f_data", "f_samples"),
        desc=lambda phase: " (recovery)",
    )


RECOVERY = Family(
    name="video_recovery",
    config_type=D.DescriptorConfig,
    check=_check_recovery,
    scale=_observed_mean_scale,
    load_scale=gdata.PixelScale.from_dict,
    trainer=_recovery_trainer,
    observed=lambda videos, scale, inputs: {},
    recorded=lambda inputs: {"what": inputs["what"], "missing_fraction": float(1 - np.mean(inputs["mask"]))},
)


def recover_video(config: D.DescriptorConfig, video: np.ndarray, mask: np.ndarray, out, *,
                  what: str = "missing values", fps: float = 10.0, overwrite: bool = False, resume: bool = False,
                  quiet: bool = False, devices: Optional[int] = None) -> Dict[str, object]:
    """Learn from an incomplete video and recover its missing values
    (:func:`gcnjax.run.learn` with :data:`RECOVERY`).

    ``video``: the complete ``(T, H, W, C)`` pixels (used only to score the
    recovery: the learner sees ``video`` where ``mask`` is 1);
    ``mask``: 1 = observed, broadcastable to ``(1, T, H, W, C)``
    (:func:`gcnjax.masks.salt_and_pepper` per frame, or
    :func:`gcnjax.masks.missing_frames`). Writes a run with the recovered
    video beside the incomplete and the true ones, and the recovery error
    (:func:`gcnjax.metrics.recovery_error`, mean |error| on missing values, in
    0..255 units) against that of filling with the observed mean.
    """
    return learn(RECOVERY, config, video, out, title=f"Recovery: {what}", overwrite=overwrite, resume=resume,
                 quiet=quiet, devices=devices, mask=mask, what=what, fps=fps)
