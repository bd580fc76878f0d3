"""Descriptor runs: learn from images, synthesize, and check the theory.

These are the paper experiments as library functions (the CLI and the
scripts in ``experiments/`` call them): each writes a run directory with the
config, PNG grids of observed and synthesized images over the iterations, a
CSV of the energies, a plot, the learned params, and a markdown report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax.nets import receptive_field
from gcnjax.train import RunDir, fit, write_atomic

__all__ = ["learn_descriptor", "load_run", "autoencoding_check", "check_run_autoencoding", "check_images",
           "plot_metrics"]


def check_images(images: np.ndarray, config: D.DescriptorConfig, name: str = "images") -> np.ndarray:
    """Validate observed pixel images against a config; return them as float32."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise gdata.DataError(f"{name}: expected a non-empty batch (N, H, W, C), got shape {images.shape}.")
    if images.shape[-1] != config.channels:
        raise gdata.DataError(
            f"{name}: images have {images.shape[-1]} channels but the config has channels={config.channels}."
        )
    rf = receptive_field(config.layers)
    if min(images.shape[1:3]) < rf:
        raise gdata.DataError(
            f"{name}: images of {images.shape[2]}x{images.shape[1]} pixels are smaller than the net's "
            f"receptive field ({rf}x{rf}); use larger images (--image-size) or a net with smaller filters."
        )
    if not np.all(np.isfinite(images)):
        raise gdata.DataError(f"{name}: images contain NaN or infinite values.")
    return images


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


def learn_descriptor(
    config: D.DescriptorConfig,
    images: np.ndarray,
    out: str | Path,
    *,
    title: str = "Descriptor",
    source: str = "",
    overwrite: bool = False,
    quiet: bool = False,

) -> Dict[str, object]:
    """Learn a descriptor from observed ``images`` (pixels 0..255, N×H×W×C)
    by maximum likelihood (or CD, as ``config`` says) and write a run.

    Returns a summary dict (paths and final numbers).
    """
    images = check_images(images, config)
    run = RunDir(out, overwrite=overwrite)
    scale = gdata.PixelScale(config.pixel_scale).fit(images)
    x = jnp.asarray(scale.to_model(images))
    run.save_config(config, pixel_scale=scale, source=source, observed_shape=list(images.shape))
    gdata.save_image_grid(run.path / "observed.png", images)

    stages = (
        [(d + 1, n) for d, n in enumerate(config.grow_iterations) if n > 0]
        if config.grow_iterations
        else [(None, config.n_iterations)]
    )
    key = jax.random.key(config.seed)
    state = None
    t0 = time.perf_counter()
    batches = _batches(x, config.batch_size, config.seed)
    snapshots = []

    def snapshot(state, it):
        path = run.images / f"synthesized_{it:06d}.png"
        gdata.save_image_grid(path, scale.to_pixels(np.asarray(state.chains)))
        snapshots.append(path)

    done = 0
    for depth, n_iter in stages:
        net = D.make_net(config, depth=depth)
        key, k_init = jax.random.split(key)
        if state is None:
            state = D.init_state(k_init, config, net, x)
        else:
            state = D.grow(k_init, state, config, net, x)
        optimizer = D.make_optimizer(config, state.params, image_size=x.shape[1:3])
        step = D.make_train_step(config, net.apply, optimizer)
        state, _ = fit(
            step, state, batches,
            n_iterations=n_iter, start=done, run_dir=run, log_every=config.log_every,
            snapshot_every=config.image_every, on_snapshot=snapshot, quiet=quiet,
            desc=f"{title} ({'layers ' + str(depth) if depth else 'training'})",
            step_size=config.langevin.step_size, extra_row={"layers": depth or len(config.layers)},
        )
        done += n_iter
    seconds = time.perf_counter() - t0

    (run.path / "params.msgpack").write_bytes(flax.serialization.to_bytes(jax.device_get(state.params)))
    final = scale.to_pixels(np.asarray(state.chains))
    np.save(run.path / "synthesized.npy", final.astype(np.float32))
    gdata.save_image_grid(run.path / "synthesized.png", final)
    history = run.read_metrics()
    plot_metrics(history, run.path / "energy.png")

    last = {k: float(v[-1]) for k, v in history.items()}
    report = [
        f"# {title}",
        "",
        f"Source: {source or 'given images'}; {images.shape[0]} observed image(s) of "
        f"{images.shape[2]}×{images.shape[1]}×{images.shape[3]}.",
        f"{done} iterations in {seconds:.0f} s; {config.n_chains} chain(s), "
        f"{config.langevin.n_steps} Langevin steps of step size {config.langevin.step_size:g} "
        f"(noise {config.langevin.noise_scale}) per iteration; σ = {config.sigma}.",
        "",
        "| observed | synthesized (final) |",
        "|---|---|",
        "| ![observed](observed.png) | ![synthesized](synthesized.png) |",
        "",
        "## Over the iterations",
        "",
        *[f"![iteration {p.stem.split('_')[-1]}](images/{p.name})" for p in snapshots],
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
    x_min, residual = D.descend_to_minimum(net.apply, params, starts, sigma, n_steps=n_steps, unroll=10)
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
                           n_steps: int = 500, seed: int = 0, overwrite: bool = False) -> Dict[str, object]:
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
