"""Dynamic textures and sound with the spatial-temporal generative ConvNet
(Xie, Zhu, Wu, CVPR 2017), at sizes a busy 2-core CPU runs in minutes.

    # a procedural travelling-wave texture with a known spectrum
    python experiments/dynamic_textures.py procedural --out runs/stg-wave
    # the paper's fire pot: synthesis, then recovery of missing pixels / frames
    python experiments/dynamic_textures.py fire --data ../shared/data/videos/fire_pot.avi --out runs/stg-fire
    python experiments/dynamic_textures.py recover --data ../shared/data/videos/fire_pot.avi \\
        --mask pepper:0.5 --out runs/stg-fire-pepper
    # a sound (a WAV file, or a synthesized tone when --data is left out)
    python experiments/dynamic_textures.py sound --data /usr/share/sounds/sound-icons/xxx.wav --out runs/stg-sound

Each writes a run directory (config, metrics.csv, GIF/MP4, frame strips,
WAVs, report.md) and a ``summary.json`` with the numbers of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from gcnjax import data as gdata
from gcnjax import metrics, presets, stg
from gcnjax.cli import _video_mask
from gcnjax.langevin import LangevinConfig
from gcnjax.train import RunConfig, write_atomic


def travelling_waves(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """A gray dynamic texture with a known spatial-temporal spectrum: the sum
    of three plane waves ``cos(2π(k·r − ν t) + φ)`` travelling in different
    directions, in 0..255: its power spectrum is six peaks at ``±(k, −ν)``."""
    rng = np.random.default_rng(seed)
    tt, yy, xx = np.meshgrid(np.arange(frames), np.arange(size), np.arange(size), indexing="ij")
    waves = [(3, 1, 2), (-1, 4, 3), (2, -3, -1)]  # (kx, ky, ν) in cycles per video side / per video length
    x = sum(np.cos(2 * np.pi * (kx * xx / size + ky * yy / size - nu * tt / frames) + rng.uniform(0, 2 * np.pi))
            for kx, ky, nu in waves)
    return (127.5 + 40.0 * x)[..., None].astype(np.float32)


def peak_power_fraction(observed: np.ndarray, videos: np.ndarray) -> float:
    """Mean fraction of each video's spatial-temporal power at the frequencies
    where the observed video has its power (its peaks, > 1e-6 of the
    largest): 1 for the observed waves, about peaks/size for white noise."""
    p0 = metrics.spatiotemporal_power_spectrum(observed)
    peaks = p0 > 1e-6 * p0.max()
    fractions = []
    for v in videos:
        p = metrics.spatiotemporal_power_spectrum(v[None])
        fractions.append(p[peaks].sum() / p.sum())
    return float(np.mean(fractions))


def best_copy_correlation(observed: np.ndarray, videos: np.ndarray) -> float:
    """Largest correlation of a synthesized video with the observed one over
    all circular shifts in time and space (1: a shifted copy)."""
    a = observed[0, ..., 0] - observed.mean()
    best = []
    for v in videos:
        b = v[..., 0] - v.mean()
        corr = np.fft.ifftn(np.fft.fftn(a) * np.conj(np.fft.fftn(b))).real
        best.append(corr.max() / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.mean(best))


def envelope_window(rate: int) -> int:
    """The loudness envelope's window: 2 ms of samples, short against a
    trill's pulse (tens of ms), long against a carrier's period."""
    return max(1, round(0.002 * rate))


def plot_spectrograms(observed: np.ndarray, sounds: np.ndarray, rate: int, path: Path) -> Path:
    """Spectrograms (matplotlib ``specgram``, 256-sample windows) of the
    observed sound and the first two synthesized ones, side by side, and
    under each its loudness envelope (RMS over :func:`envelope_window`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    waves = [("observed", observed)] + [(f"synthesized {k}", s) for k, s in enumerate(sounds[:2])]
    window = envelope_window(rate)
    fig, axes = plt.subplots(2, len(waves), figsize=(3.2 * len(waves), 4.4), dpi=90, sharex=True,
                             gridspec_kw={"height_ratios": [2, 1]})
    for col, (name, wave) in enumerate(waves):
        wave = np.asarray(wave, np.float64).reshape(-1)
        axes[0, col].specgram(wave, NFFT=256, Fs=rate, noverlap=192, cmap="magma")
        axes[0, col].set_title(name, fontsize=9)
        envelope = metrics.loudness_envelope(wave[None], window)[0]
        axes[1, col].plot((np.arange(envelope.size) + 0.5) * window / rate, envelope, lw=0.8)
        axes[1, col].set_xlabel("s")
    for col in range(1, len(waves)):
        axes[0, col].sharey(axes[0, 0])
        axes[1, col].sharey(axes[1, 0])
    axes[0, 0].set_ylabel("Hz")
    axes[1, 0].set_ylabel("loudness (RMS)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def other_clip_fills(whole: np.ndarray, first: int, clip: np.ndarray, mask: np.ndarray) -> dict:
    """Baselines that fill the missing values with real frames: the same
    entries of other clips of the same video (every clip of the clip's
    length that does not overlap it). Returns the recovery error (mean
    |error| on the missing values) of the nearest other clip, the one
    nearest to the clip on its OBSERVED values (a real draw that agrees
    with what was seen), and the mean error over all other clips (real
    frames with no regard to what was seen). ``whole``: ``(T_all, H, W, C)``;
    ``clip``: ``whole[first:first + T]``; ``mask``: 1 = observed, broadcastable
    to ``(T, H, W, C)``."""
    length = clip.shape[0]
    observed = np.broadcast_to(mask, clip.shape) != 0
    starts = [u for u in range(whole.shape[0] - length + 1) if u + length <= first or u >= first + length]
    if not starts:
        return {}
    others = np.stack([whole[u:u + length] for u in starts])
    truth = np.broadcast_to(clip, others.shape)
    errors = metrics.recovery_error(truth, others, observed)
    seen = metrics.recovery_error(truth, others, ~observed)  # the same distance on the observed values
    return {"nearest_other_clip_error": float(errors[np.argmin(seen)]),
            "nearest_other_clip_first_frame": starts[int(np.argmin(seen))],
            "other_clips_error": float(errors.mean()), "other_clips": len(starts)}


def spectrum_distances(observed: np.ndarray, synthesized: np.ndarray) -> tuple[dict, np.ndarray]:
    """The spatial-temporal spectrum distance of one observed video (or
    sound) to each synthesized one, and to as many draws of white noise with
    the observed per-channel mean and variance (``metrics.white_noise``,
    seed 0), each averaged over its set. Returns the two means and the noise,
    for other statistics of the same baseline."""
    noise = metrics.white_noise(observed, synthesized.shape, np.random.default_rng(0))
    return {"spectrum_distance_synthesized": np.mean([metrics.spatiotemporal_spectrum_distance(observed, s[None])
                                                      for s in synthesized]),
            "spectrum_distance_noise": np.mean([metrics.spatiotemporal_spectrum_distance(observed, n[None])
                                                for n in noise])}, noise


def shuffled_frames_baseline(observed: np.ndarray, n: int) -> tuple[float, np.ndarray]:
    """The bar for a dynamic texture: ``n`` draws of the observed video
    ``(1, T, H, W, C)`` with its frames shuffled (``metrics.shuffled_frames``,
    seed 0: every spatial statistic kept, the order in time lost), and their
    mean spatial-temporal spectrum distance to it. Returns the distance and
    the videos, for other statistics of the same baseline."""
    rng = np.random.default_rng(0)
    videos = np.stack([metrics.shuffled_frames(observed[0], rng) for _ in range(n)])
    return float(np.mean([metrics.spatiotemporal_spectrum_distance(observed, v[None]) for v in videos])), videos


def _run_config(iterations: int) -> RunConfig:
    """Pictures and checkpoints four times a run, so that a run stopped on
    the way (diverged, collapsed) keeps states from before it stopped."""
    every = max(1, iterations // 4)
    return RunConfig(log_every=5, image_every=every, checkpoint_every=every)


def small_config(args, variant: str, frames: int, size: int, channels: int):
    """The authors' settings (:func:`gcnjax.presets.stg`) with the
    iterations, chains and Langevin steps cut to fit the CPU budget."""
    return presets.stg(
        variant, frames=frames, image_size=size, channels=channels, n_chains=args.chains,
        n_iterations=args.iterations, langevin=LangevinConfig.from_delta(args.delta, args.steps),
        learning_rate=args.lr, seed=args.seed, pixel_scale=args.pixel_scale,
        restart_fraction=args.restart_fraction, run=_run_config(args.iterations),
    )


def run_procedural(args):
    video = travelling_waves(args.frames, args.size)
    config = small_config(args, "st", args.frames, args.size, 1)
    t0 = time.perf_counter()
    result = stg.learn_dynamic_texture(config, video, args.out, fps=args.fps, synth_frames=args.synth_frames,
                                       title="Travelling waves (ST)", source="travelling_waves()",
                                       overwrite=True)
    observed, synthesized = result["observed_pixels"], result["synthesized_pixels"]
    distances, noise = spectrum_distances(observed, synthesized)
    summary = {
        "video": list(video.shape), "iterations": args.iterations, "chains": args.chains, "steps": args.steps,
        "seconds": round(time.perf_counter() - t0, 1), **distances,
    }
    summary["spectrum_distance_shuffled_frames"], shuffled = shuffled_frames_baseline(observed, len(synthesized))
    summary["peak_power_fraction_synthesized"] = peak_power_fraction(observed, synthesized)
    summary["peak_power_fraction_noise"] = peak_power_fraction(observed, noise)
    summary["peak_power_fraction_shuffled_frames"] = peak_power_fraction(observed, shuffled)
    summary["best_shifted_copy_correlation"] = best_copy_correlation(observed, synthesized)
    if "longer_pixels" in result:
        longer = result["longer_pixels"]
        # The longer videos' spectra on the observed length: their first frames.
        summary["spectrum_distance_longer_first_frames"] = np.mean(
            [metrics.spatiotemporal_spectrum_distance(observed, s[None, : observed.shape[1]]) for s in longer])
        summary["peak_power_fraction_longer_first_frames"] = peak_power_fraction(observed, longer[:, : observed.shape[1]])
        summary["longer_frames"] = int(longer.shape[1])
        summary["longer_seconds"] = round(result["longer_seconds"], 1)
    _finish(args, summary)


LATER_CLIPS = 5  # the observed video's clips after the learned one, to scale the spectrum distance


def observed_clip_distance(path, frames: int, size: int, channels: int):
    """The fire's own variation: the mean spatial-temporal spectrum distance
    of the observed video's next clips of ``frames`` frames (up to
    :data:`LATER_CLIPS` of them, as many as it holds) to its first, the one
    the model learns; None when the video holds no second clip. A synthesized
    video this near the first clip is as near as the fire itself comes."""
    video = gdata.load_video(path, n_frames=frames * (LATER_CLIPS + 1), size=(size, size), channels=channels)
    first = video[None, :frames]
    later = [video[None, start:start + frames] for start in range(frames, len(video) - frames + 1, frames)]
    if not later:
        return None, 0
    return float(np.mean([metrics.spatiotemporal_spectrum_distance(first, clip) for clip in later])), len(later)


def run_fire(args):
    channels = 1 if args.gray else 3
    video = gdata.load_video(args.data, n_frames=args.frames, size=(args.size, args.size), channels=channels)
    config = small_config(args, args.variant, video.shape[0], args.size, channels)
    t0 = time.perf_counter()
    result = stg.learn_dynamic_texture(config, video, args.out, fps=args.fps, synth_frames=args.synth_frames,
                                       title=f"Fire pot ({args.variant})", source=str(args.data), overwrite=True)
    observed, synthesized = result["observed_pixels"], result["synthesized_pixels"]
    summary = {
        "video": list(video.shape), "variant": args.variant, "iterations": args.iterations, "chains": args.chains,
        "steps": args.steps, "seconds": round(time.perf_counter() - t0, 1),
        **spectrum_distances(observed, synthesized)[0],
    }
    summary["spectrum_distance_observed_later_clips"], summary["observed_later_clips"] = observed_clip_distance(
        args.data, video.shape[0], args.size, channels)
    summary["spectrum_distance_shuffled_frames"] = shuffled_frames_baseline(observed, len(synthesized))[0]
    if "energies" in result:  # where the samples sit in the learned energy
        e = result["energies"]
        summary.update(energy_observed=e["observed"], energy_chains=e["chains"],
                       energy_longer_first_frames=e["from_noise"])
    if "from_noise" in result.get("first_layer", {}):  # and against the data's first-layer statistics
        g = result["first_layer"]
        summary.update(first_layer_gram_chains=g["chains"], first_layer_gram_noise=g["white_noise"],
                       first_layer_gram_longer=g["from_noise"])
    # Copies or new videos? The persistent chains against the observed video,
    # and each frame of the videos synthesized from noise against its nearest
    # observed frame (pixel values 0..255; consecutive observed frames differ
    # by the mean given for scale).
    obs = np.asarray(observed, np.float64).reshape((-1,) + tuple(observed.shape[-4:]))[0]
    summary["chains_mae_to_observed"] = float(np.abs(np.asarray(synthesized, np.float64) - obs).mean())
    summary["observed_consecutive_frames_mae"] = float(np.abs(np.diff(obs, axis=0)).mean())
    if "longer_pixels" in result:
        longer = np.asarray(result["longer_pixels"], np.float64)
        nearest = [[np.abs(frame - obs).mean(axis=(1, 2, 3)).min() for frame in video] for video in longer]
        summary["longer_frames"] = int(longer.shape[1])
        summary["longer_nearest_observed_frame_mae"] = float(np.mean(nearest))
        summary["longer_between_videos_mae"] = float(np.abs(longer[0] - longer[-1]).mean()) if len(longer) > 1 else None
        summary["spectrum_distance_longer_first_frames"] = np.mean(
            [metrics.spatiotemporal_spectrum_distance(observed, v[None, : obs.shape[0]]) for v in longer])
    _finish(args, summary)


def run_recover(args):
    channels = 1 if args.gray else 3
    whole = gdata.load_video(args.data, size=(args.size, args.size), channels=channels)
    video = whole[args.first_frame: args.first_frame + args.frames]
    if video.shape[0] < args.frames:
        raise SystemExit(f"--first-frame {args.first_frame} and --frames {args.frames} need "
                         f"{args.first_frame + args.frames} frames; {args.data} has {whole.shape[0]}.")
    config = small_config(args, args.variant, video.shape[0], args.size, channels)
    config = dataclasses.replace(config, n_chains=1)
    mask = _video_mask(args.mask, (1,) + video.shape)
    result = stg.recover_video(config, video, mask, args.out, what=args.mask, fps=args.fps, overwrite=True)
    summary = {k: result[k] for k in ("what", "recovery_error", "mean_fill_error", "temporal_interpolation_error",
                                      "seconds", "iterations", "missing_fraction")}
    summary.update(video=list(video.shape), first_frame=args.first_frame, variant=args.variant, steps=args.steps)
    summary.update(other_clip_fills(whole, args.first_frame, video, np.broadcast_to(mask, (1,) + video.shape)[0]))
    _finish(args, summary)


def run_sound(args):
    later = later_start = None  # the observed sound's last clip of the same length, where the file is longer
    if args.data:
        samples, rate = gdata.load_wav(args.data)
        whole = samples.mean(axis=1)
        samples = whole[args.offset: args.offset + args.samples]
        if whole.size > args.offset + samples.size:
            later_start = whole.size - samples.size
            later = whole[later_start:]
        source = str(args.data)
    else:  # a decaying two-partial tone
        rate = 8000
        t = np.arange(args.samples) / rate
        samples = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
        source = "440 + 660 Hz tone"
    config = dataclasses.replace(
        presets.sound(len(samples)), n_chains=args.chains, n_iterations=args.iterations,
        langevin=LangevinConfig.from_delta(args.delta, args.steps), learning_rate=args.lr, seed=args.seed,
        run=_run_config(args.iterations))
    t0 = time.perf_counter()
    result = stg.learn_sound(config, samples, rate, args.out, title=f"Sound: {Path(source).name}", source=source,
                             overwrite=True)
    observed = np.asarray(samples, np.float32)[None, :, None]
    sounds = result["sounds"]
    plot_spectrograms(observed[0], sounds, rate, Path(args.out) / "spectrograms.png")
    spectra, noise = spectrum_distances(observed, sounds)
    window = envelope_window(rate)
    modulation = metrics.envelope_modulation_spectrum(sounds, window)
    hz = rate / ((len(samples) // window) * window)  # the modulation spectrum's frequency step
    observed_modulation = metrics.envelope_modulation_spectrum(observed, window)[0]
    summary = {
        "samples": len(samples), "rate": rate, "source": source, "iterations": args.iterations,
        "chains": args.chains, "steps": args.steps, "seconds": round(time.perf_counter() - t0, 1),
        **spectra,
        "envelope_window": window,
        "modulation_distance_synthesized": metrics.modulation_spectrum_distance(observed, sounds, window),
        "modulation_distance_noise": metrics.modulation_spectrum_distance(observed, noise, window),
        # The song's own power spectrum with random phases: its timbre without its course in time.
        "modulation_distance_matched_noise": metrics.modulation_spectrum_distance(
            observed, metrics.spectrally_matched_noise(observed[0], len(sounds), np.random.default_rng(0)), window),
        "observed_pulse_rate_hz": float((np.argmax(observed_modulation) + 1) * hz),
        "observed_pulse_share": float(observed_modulation.max()),
        "synthesized_pulse_rate_hz": [float((np.argmax(m) + 1) * hz) for m in modulation],
        "synthesized_pulse_share": [float(m.max()) for m in modulation],
    }
    if later is not None:
        summary["spectrum_distance_observed_later_clip"] = metrics.spatiotemporal_spectrum_distance(
            observed, later[None, :, None])
        summary["modulation_distance_observed_later_clip"] = metrics.modulation_spectrum_distance(
            observed, later[None, :, None], window)
        summary["observed_later_clip_first_sample"] = later_start
    _finish(args, summary)


def _finish(args, summary):
    summary = {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v) for k, v in summary.items()}
    write_atomic(Path(args.out) / "summary.json", json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", choices=["procedural", "fire", "recover", "sound"])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variant", default="st", choices=list(stg.STG_VARIANTS))
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--first-frame", type=int, default=0,
                    help="recover: the clip starts at this frame of the video (a later clip for choosing settings)")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--synth-frames", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--delta", type=float, default=0.3, help="Langevin step δ, in the units of --pixel-scale")
    ap.add_argument("--pixel-scale", default="minus_mean", choices=["minus_mean", "standard"],
                    help="the authors' 0..255 minus the mean (σ = 1 pixel), or standardised (σ = the data's sd)")
    ap.add_argument("--restart-fraction", type=float, default=0.0,
                    help="probability with which each persistent chain restarts from its start every iteration")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--gray", action="store_true")
    ap.add_argument("--mask", default="pepper:0.5")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--offset", type=int, default=0)
    args = ap.parse_args(argv)
    if args.experiment in ("fire", "recover") and args.data is None:
        ap.error(f"{args.experiment} needs --data (a video file or folder of frames)")
    {"procedural": run_procedural, "fire": run_fire, "recover": run_recover, "sound": run_sound}[args.experiment](args)


if __name__ == "__main__":
    main()
