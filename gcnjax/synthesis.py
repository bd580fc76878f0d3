"""Descriptor runs: learn from images, synthesize, and check the theory.

These are the paper experiments as library functions (the CLI and the
scripts in ``experiments/`` call them): each writes a run directory with the
config, PNG grids of observed and synthesized images over the iterations, a
CSV of the energies, a plot, the learned params, and a markdown report.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax.langevin import LangevinConfig
from gcnjax.nets import layer_output_sizes, receptive_field
from gcnjax.train import Checkpointer, RunDir, TrainingDiverged, fit, write_atomic, write_npy

__all__ = ["learn_descriptor", "load_run", "autoencoding_check", "check_run_autoencoding", "check_images",
           "plot_metrics", "save_picture", "plot_waveforms"]


def check_images(images: np.ndarray, config: D.DescriptorConfig, name: str = "images") -> np.ndarray:
    """Validate observed pixel images against a config; return them as float32.

    Images are ``(N, H, W, C)``; videos ``(N, T, H, W, C)`` and sounds
    ``(N, T, C)`` are checked the same way, along their own axes.
    """
    images = np.asarray(images, np.float32)
    if images.ndim not in (3, 4, 5) or images.shape[0] == 0:
        raise gdata.DataError(
            f"{name}: expected a non-empty batch (N, H, W, C) of images (or (N, T, H, W, C) videos, "
            f"(N, T, C) sounds), got shape {images.shape}."
        )
    if images.shape[-1] != config.channels:
        raise gdata.DataError(
            f"{name}: images have {images.shape[-1]} channels but the config has channels={config.channels}."
        )
    n_axes = images.ndim - 2
    net_axes = {spec.n_axes() for spec in config.layers} - {None}
    kinds = {1: "sounds (N, T, C)", 2: "images (N, H, W, C)", 3: "videos (N, T, H, W, C)"}
    if net_axes and net_axes != {n_axes}:
        raise gdata.DataError(
            f"{name}: the net's convolutions are for {kinds.get(max(net_axes), f'{max(net_axes)}-axis data')} "
            f"but the data are {kinds.get(n_axes, f'{n_axes}-axis')}; choose a net for this kind of data."
        )
    sizes = images.shape[1:-1]
    # A 2-D net of padded layers only (a stationary texture net) needs images
    # that hold its receptive field: otherwise every top unit sees mostly
    # padding. A net that ends in an unpadded layer (the short-run net's
    # last conv maps 4×4 to 1×1) needs only a top map of one position.
    ends_unpadded = config.layers[-1].padding == "VALID"
    fully_valid = all(spec.padding == "VALID" for spec in config.layers)
    if n_axes == 2 and (fully_valid or not ends_unpadded):
        rf = receptive_field(config.layers, n_axes)
        if min(sizes) < min(rf):
            raise gdata.DataError(
                f"{name}: images of {images.shape[2]}x{images.shape[1]} pixels are smaller than the net's "
                f"receptive field ({rf[1]}x{rf[0]}); use larger images (--image-size) or a net with smaller filters."
            )
    else:
        # Videos, sounds and nets that end unpadded: every layer must keep at
        # least one position (padded layers see past the border, so the data
        # may be smaller than the receptive field).
        out = layer_output_sizes(config.layers, sizes)
        if any(min(o) < 1 for o in out):
            raise gdata.DataError(
                f"{name}: data of size {'x'.join(map(str, sizes))} are too small for the net (layer output sizes "
                f"{[tuple(o) for o in out]}); use more or larger frames (--frames, --image-size) or a net with "
                "smaller filters."
            )
    if not np.all(np.isfinite(images)):
        raise gdata.DataError(f"{name}: images contain NaN or infinite values.")
    return images


def save_picture(path: Path, pixels: np.ndarray) -> Path:
    """A PNG of a batch in pixel units: a grid of images ``(N, H, W, C)``, a
    strip of frames per video ``(N, T, H, W, C)``
    (:func:`gcnjax.data.save_frame_strip`), or the waveforms of sounds
    ``(N, T, C)`` (in the pixel units of :func:`gcnjax.data.sound_to_pixels`,
    plotted in [−1, 1])."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 5:
        return gdata.save_frame_strip(path, pixels)
    if pixels.ndim == 3:
        return plot_waveforms(gdata.pixels_to_sound(pixels), path)
    return gdata.save_image_grid(path, pixels)


def plot_waveforms(sounds: np.ndarray, path: Path) -> Path:
    """Plot each waveform of ``(N, T, C)`` sounds (first channel) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sounds = np.asarray(sounds)
    fig, axes = plt.subplots(len(sounds), 1, figsize=(7, 1.3 * len(sounds) + 0.4), dpi=90, squeeze=False)
    for ax, wave in zip(axes[:, 0], sounds):
        ax.plot(wave[:, 0], lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("sample")
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)


def plot_metrics(history: Dict[str, np.ndarray], path: Path, keys=("f_data", "f_samples")) -> Optional[Path]:
    """Plot metric curves against iterations to a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for k in keys:
        if k in history:
            ax.plot(history["iteration"], history[k], label=k)
    ax.set_xlabel("iteration")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)


def _batches(x: jax.Array, batch_size: int, seed: int):
    n = x.shape[0]
    if n <= batch_size:
        return lambda i: x
    orders = {}

    def batch(i):
        epoch, pos = divmod(i * batch_size, n)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        idx = np.take(orders[epoch], np.arange(pos, pos + batch_size), mode="wrap")
        return x[idx]

    return batch


def _stages(config: D.DescriptorConfig):
    """``[(depth, begin, end)]``: the net depth for iterations begin..end−1."""
    if not config.grow_iterations:
        return [(None, 0, config.n_iterations)]
    stages, begin = [], 0
    for d, n in enumerate(config.grow_iterations):
        if n > 0:
            stages.append((d + 1, begin, begin + n))
            begin += n
    return stages


def _smaller_step(sampler, factor: float):
    """The Langevin settings with the step multiplied by ``factor`` and the
    noise by sqrt(factor): the same temperature b²/(2a), a smaller move."""
    noise = None if sampler.noise_scale is None else sampler.noise_scale * float(np.sqrt(factor))
    return dataclasses.replace(sampler, step_size=sampler.step_size * factor, noise_scale=noise)




def learn_descriptor(
    config: D.DescriptorConfig,
    images: np.ndarray,
    out: str | Path,
    *,
    title: str = "Descriptor",
    source: str = "",
    data_spec: Optional[Dict[str, object]] = None,
    overwrite: bool = False,
    resume: bool = False,
    quiet: bool = False,
    net=None,
) -> Dict[str, object]:
    """Learn a descriptor from observed ``images`` (pixels 0..255, N×H×W×C)
    by maximum likelihood (or CD, as ``config`` says) and write a run.

    The run is checkpointed every ``config.run.checkpoint_every`` iterations;
    ``resume=True`` continues a run in ``out`` from its last checkpoint, with
    the same result as an uninterrupted run. A diverging chain rolls the run
    back to its last good checkpoint, then stops with a message or retries
    with a smaller Langevin step (``config.run.on_divergence``).
    ``data_spec`` (how the images were loaded) is saved for resuming.
    ``net`` (anything with Flax's ``init``/``apply``, e.g. a
    :class:`gcnjax.frame.FrameNet`) replaces the net that ``config.layers``
    describes (no layer-by-layer growth then).
    Returns a summary dict (paths and final numbers).
    """
    if net is not None and config.grow_iterations:
        raise ValueError("learn_descriptor: a given net cannot grow layer by layer; set grow_iterations=None.")

    def make_net(depth):
        return net if net is not None else D.make_net(config, depth=depth)

    images = check_images(images, config)
    run = RunDir(out, overwrite=overwrite, resume=resume)
    scale = gdata.PixelScale(config.pixel_scale).fit(images)
    if resume:
        saved = run.load_for_resume(config, observed_shape=images.shape)
        scale = gdata.PixelScale(saved["pixel_scale"]["kind"], tuple(saved["pixel_scale"]["mean"] or ()) or None)
    x = jnp.asarray(scale.to_model(images))
    if not resume:
        run.save_config(config, pixel_scale=scale, source=source, observed_shape=list(images.shape),
                        data_spec=data_spec or {}, title=title)
        save_picture(run.path / "observed.png", images)

    t0 = time.perf_counter()
    batches = _batches(x, config.batch_size, config.seed)
    base_key = jax.random.key(config.seed)

    def snapshot(state, it):
        path = run.images / f"synthesized_{it:06d}.png"
        save_picture(path, scale.to_pixels(np.asarray(state.chains)))

    stages = _stages(config)
    total = stages[-1][2]
    sampler = config.langevin
    retries = 0
    if resume and saved.get("adjusted_langevin"):  # a divergence retry made the step smaller
        sampler = LangevinConfig.from_dict(saved["adjusted_langevin"])
        retries = int(saved.get("retries", 0))
    with Checkpointer(run.checkpoints, keep=config.run.keep_checkpoints) as checkpointer:
        done = checkpointer.latest_step() if resume else None
        if resume and done is None:
            raise FileNotFoundError(f"cannot resume {str(run.path)!r}: it has no checkpoint yet; start it again.")
        done = done or 0
        if resume:
            run.truncate_metrics(done)
        state = None
        index = 0
        while index < len(stages):
            depth, begin, end = stages[index]
            if end <= done:
                index += 1
                continue
            stage_net = make_net(depth)
            stage_key = jax.random.fold_in(base_key, index)  # the same on resume
            if state is None:
                # A state to restore into (or to start from): this stage's
                # structure, or the previous stage's when the stage begins now.
                restore_index = index - 1 if (done == begin and index > 0) else index
                r_net = make_net(stages[restore_index][0])
                state = D.init_state(jax.random.fold_in(base_key, restore_index), config, r_net, x)
                if done in checkpointer.all_steps():
                    state = checkpointer.restore(state, done)
                else:
                    checkpointer.save(0, state)  # the start is the first good checkpoint
                if restore_index != index:
                    state = D.grow(stage_key, state, config, stage_net, x)
            elif done == begin and index > 0:
                state = D.grow(stage_key, state, config, stage_net, x)
            optimizer = D.make_optimizer(config, state.params, image_size=x.shape[1:-1])
            step = D.make_train_step(dataclasses.replace(config, langevin=sampler), stage_net.apply, optimizer)
            try:
                state, _ = fit(
                    step, state, batches, start=done, end=end, total=total, run_dir=run, run=config.run,
                    checkpointer=checkpointer, on_snapshot=snapshot, quiet=quiet,
                    desc=f"{title}" + (f" (layers 1-{depth})" if depth else ""),
                    step_size=sampler.step_size, extra_row={"layers": depth or len(config.layers)},
                )
            except TrainingDiverged as err:
                if config.run.on_divergence == "stop" or retries >= config.run.max_retries:
                    raise
                retries += 1
                sampler = _smaller_step(sampler, config.run.retry_step_factor)
                # Recorded, so that a resumed run goes on with the smaller step.
                payload = run.load_config()
                payload.update(adjusted_langevin=dataclasses.asdict(sampler), retries=retries)
                write_atomic(run.path / "config.json", json.dumps(payload, indent=2, sort_keys=True))
                done = err.last_good
                run.truncate_metrics(done)
                state = None  # restored from the last good checkpoint
                index = 0
                if not quiet:
                    print(f"{err}\nretrying from iteration {done} with Langevin step_size={sampler.step_size:g}",
                          file=sys.stderr)
                continue
            done = end
            index += 1
        if state is None:  # resumed after the last checkpoint: only the outputs are left to write
            template = D.init_state(base_key, config, make_net(stages[-1][0]), x)
            state = checkpointer.restore(template, done)
    net = make_net(stages[-1][0])
    seconds = time.perf_counter() - t0

    write_atomic(run.path / "params.msgpack", flax.serialization.to_bytes(jax.device_get(state.params)))
    final = scale.to_pixels(np.asarray(state.chains))
    write_npy(run.path / "synthesized.npy", final)
    save_picture(run.path / "synthesized.png", final)
    history = run.read_metrics()
    plot_metrics(history, run.path / "energy.png")

    last = {k: float(v[-1]) for k, v in history.items() if v.dtype.kind == "f"}
    report = [
        f"# {title}",
        "",
        f"Source: {source or 'given images'}; {images.shape[0]} observed image(s) of "
        f"{images.shape[2]}×{images.shape[1]}×{images.shape[3]}." if images.ndim == 4 else
        f"Source: {source or 'given data'}; {images.shape[0]} observed "
        f"{'video' if images.ndim == 5 else 'sound'}(s) of shape {'×'.join(map(str, images.shape[1:]))}.",
        f"{done} iterations ({seconds:.0f} s in this session); {config.n_chains} chain(s), "
        f"{sampler.n_steps} Langevin steps of step size {sampler.step_size:g} "
        f"(noise {sampler.noise_scale}) per iteration; σ = {config.sigma}."
        + (f" The step was reduced {retries} time(s) after divergence." if retries else ""),
        "",
        "| observed | synthesized (final) |",
        "|---|---|",
        "| ![observed](observed.png) | ![synthesized](synthesized.png) |",
        "",
        "## Over the iterations",
        "",
        *[f"![iteration {int(p.stem.split('_')[-1])}](images/{p.name})" for p in sorted(run.images.glob("synthesized_*.png"))],
        "",
        "## Energies",
        "",
        "![f of data and samples](energy.png)",
        "",
        f"Final mean f: data {last.get('f_data', float('nan')):.4g}, "
        f"samples {last.get('f_samples', float('nan')):.4g}. Per-iteration values in `metrics.csv`.",
        "",
        "Config: `config.json`; params: `params.msgpack`.",
    ]
    run.write_report("\n".join(report) + "\n")
    return {
        "run_dir": run.path,
        "report": run.path / "report.md",
        "synthesized": run.path / "synthesized.png",
        "seconds": seconds,
        "state": state,
        "scale": scale,
        "net": net,
        "history": history,
    }


def load_run(run_dir: str | Path):
    """``(config, pixel_scale, net, params)`` of a finished descriptor run."""
    run_dir = Path(run_dir)
    cfg_path, params_path = run_dir / "config.json", run_dir / "params.msgpack"
    for p in (cfg_path, params_path):
        if not p.exists():
            raise FileNotFoundError(f"{str(p)!r} is missing: is {str(run_dir)!r} a finished descriptor run?")
    payload = json.loads(cfg_path.read_text())
    config = D.DescriptorConfig.from_dict(payload["config"])
    scale_d = payload["pixel_scale"]
    scale = gdata.PixelScale(scale_d["kind"], None if scale_d["mean"] is None else tuple(scale_d["mean"]))
    net = D.make_net(config)
    shape = payload["observed_shape"]
    template = net.init(jax.random.key(0), jnp.zeros((1, *shape[1:]), jnp.float32))
    params = flax.serialization.from_bytes(template, params_path.read_bytes())
    return config, scale, net, params


def autoencoding_check(
    net,
    params,
    sigma: float,
    starts: jax.Array,
    out: str | Path,
    *,
    scale: gdata.PixelScale,
    n_steps: int = 300,
    overwrite: bool = False,
    labels: Optional[Sequence[str]] = None,
) -> Dict[str, object]:
    """The theory check of the generative ConvNet (ReLU, Gaussian reference).

    From each start, noise-free gradient descent on E reaches a local
    minimum, where ``x = σ²∇f(x)``: the minimum is an auto-encoding fixed
    point, a reconstruction by the filters that its binary activation
    pattern selects. Reports the residual ``||x − σ²∇f(x)|| / ||x||`` at each
    end point and the number of distinct activation patterns reached.
    """
    run = RunDir(out, overwrite=overwrite)
    x_min, residual = D.descend_to_minimum(net.apply, params, starts, sigma, n_steps=n_steps)
    residual = np.asarray(residual)
    patterns = D.activation_pattern(net, params, x_min)
    distinct = len({p.tobytes() for p in np.packbits(patterns, axis=1)})
    energies = np.asarray(D.energy(net.apply, params, x_min, sigma))
    labels = list(labels or [f"start {i}" for i in range(len(starts))])
    gdata.save_image_grid(run.path / "starts.png", scale.to_pixels(np.asarray(starts)))
    gdata.save_image_grid(run.path / "minima.png", scale.to_pixels(np.asarray(x_min)))
    for i, (lab, r, e) in enumerate(zip(labels, residual, energies)):
        run.log({"start": i, "label": lab, "residual": float(r), "energy": float(e)})
    rows = "\n".join(f"| {lab} | {r:.2e} | {e:.4g} |" for lab, r, e in zip(labels, residual, energies))
    report = f"""# Auto-encoding check of the generative ConvNet

Noise-free gradient descent on E(x) = ||x||²/(2σ²) − f(x) (σ = {sigma}), {n_steps} steps
of size σ²/2, from {len(starts)} starts. At a local minimum x = σ²∇f(x), so the
residual ||x − σ²∇f(x)|| / ||x|| is 0 there.

- largest residual: {residual.max():.2e} (median {np.median(residual):.2e})
- distinct binary activation patterns reached: {distinct} of {len(starts)} starts

| start | residual | energy |
|---|---|---|
{rows}

| starts | local minima |
|---|---|
| ![starts](starts.png) | ![minima](minima.png) |
"""
    run.write_report(report)
    summary = {"max_residual": float(residual.max()), "median_residual": float(np.median(residual)),
               "distinct_patterns": distinct, "n_starts": len(starts)}
    write_atomic(run.path / "summary.json", json.dumps(summary, indent=2))
    return {"run_dir": run.path, "report": run.path / "report.md", "residual": residual, **summary}


def check_run_autoencoding(run_dir: str | Path, out: str | Path, *, n_noise_starts: int = 6,
                           n_steps: int = 200, seed: int = 0, overwrite: bool = False) -> Dict[str, object]:
    """:func:`autoencoding_check` on a finished run's model, from noise
    images of standard deviation 1 to 100 (model units) and from the run's
    synthesized images."""
    run_dir = Path(run_dir)
    config, scale, net, params = load_run(run_dir)
    if config.sigma is None:
        raise ValueError(f"run {str(run_dir)!r} has no Gaussian reference (sigma=None); the check needs sigma.")
    synthesized = scale.to_model(np.load(run_dir / "synthesized.npy"))
    shape = synthesized.shape[1:]
    sds = np.geomspace(1.0, 100.0, n_noise_starts)
    keys = jax.random.split(jax.random.key(seed), n_noise_starts)
    noise = np.stack([sd * np.asarray(jax.random.normal(k, shape)) for k, sd in zip(keys, sds)])
    starts = jnp.asarray(np.concatenate([noise, synthesized]), jnp.float32)
    labels = [f"noise, sd {sd:.3g}" for sd in sds] + [f"synthesized image {i}" for i in range(len(synthesized))]
    return autoencoding_check(net, params, config.sigma, starts, out, scale=scale, n_steps=n_steps,
                              overwrite=overwrite, labels=labels)
