"""FRAME with fixed filters (Lu, Zhu, Wu; PAPERS §2): texture and object synthesis.

Only the top weights on a frozen Gabor/DoG filter bank are learned
(gcnjax.frame); sampling and learning are the descriptor's.

    python experiments/frame_synthesis.py --data skimage:brick --gray --load-size 128 --seeds 0 1 2 \
        --out runs/frame/brick
    python experiments/frame_synthesis.py --data ../shared/data/textures/ivy.jpg --load-size 128 --colour opponent \
        --out runs/frame/ivy
    python experiments/frame_synthesis.py --data ../shared/data/objects/egret --kind object --out runs/frame/egret

Texture defaults (presets.frame("texture") and this script): images
standardised, σ = 1 (a reference of the observed variance), 10 Langevin
steps of δ = 0.1 per iteration, Adam lr 0.01 decaying by a cosine to 0.001 over
600 iterations, a bank of sizes 5, 7, 11, 15
with |response| thresholded at the 0, 50, 80 and 95% quantiles of the
observed responses (a piecewise-linear potential per filter), and the
pairwise top (the thresholded features' co-occurrence at each position,
``--top sum`` for the potentials alone). Objects keep
the paper's σ = 1 on 0..255 minus the mean, δ = 0.3, 30 steps, dense top.
Any DescriptorConfig field is a flag (--sigma, --pixel-scale,
--langevin.mala, ...).

Textures are scored on held-out data. The image, resized to --load-size,
is cut into non-overlapping --image-size tiles; the model learns from the
first (top-left) tile only, and its synthesized images, the baselines and
the observed tile itself are compared with the other tiles:

* spectrum distance (gcnjax.metrics.log_spectrum_distance);
* Gram distance of the bank's own LINEAR filter responses (the same
  sizes, orientations and colour handling as the model, no nonlinearity,
  valid positions; gcnjax.metrics.gram_distance);
* pyramid Gram distances (gcnjax.metrics.pyramid_gram_distances: a fixed
  random 5×5 bank, not the model's, on the images and their 2×2 and 4×4
  block means: structure spanning 5, 10 and 20 pixels), the statistic
  texture_synthesis.py reports beside these;

for the synthesized images, white noise of the observed tile's mean and
variance per channel, and the observed tile cut into --patch × --patch
patches, shuffled and reassembled (as many images as chains). The same
scores against the observed tile itself (``on_observed_tile``: how
texture_synthesis.py scores the descriptor, whose texture has no held-out
part) go beside them. With
--seeds S1 S2 ... each seed is a run of its own (OUT/seed<S>); the scores of
all seeds, their mean and standard deviation go to OUT/summary.json and
OUT/scores.md. With --score SAMPLES.npy ... nothing is learned: the samples
(e.g. fresh chains of a finished run, `gcnjax sample --run OUT/seed0 ...`)
are scored against the same held-out tiles (OUT/sample_scores.json).
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from gcnjax import frame, metrics, options, presets
from gcnjax.cli import DESCRIPTOR_SHORTCUTS
from gcnjax.data import load_data
from gcnjax.data import PixelScale
from gcnjax.descriptor import DescriptorConfig


# Knots of the texture model's piecewise-linear potentials (quantiles of each
# |response|): one weight per filter cannot give sparse responses.
TEXTURE_THRESHOLDS = (0.0, 0.5, 0.8, 0.95)


def _thresholds(values, kind: str):
    if values is None:
        return TEXTURE_THRESHOLDS if kind == "texture" else None
    if [v.lower() for v in values] == ["none"]:
        return None
    return tuple(float(v) for v in values)


def _tiles(image: np.ndarray, side: int) -> np.ndarray:
    """The non-overlapping ``side × side`` tiles of ``image`` (H, W, C), row by row."""
    rows, cols = image.shape[0] // side, image.shape[1] // side
    return np.stack([image[r * side:(r + 1) * side, c * side:(c + 1) * side]
                     for r in range(rows) for c in range(cols)])


def chain_diagnostics(net, params, sigma, observed_model, chains_model) -> dict:
    """Whether the final chains are samples of the learned model:
    ``virial`` (gcnjax.descriptor.virial_ratio, 1 at equilibrium, 0 at a
    local minimum of E), ``f_gap`` (mean f of the data minus mean f of the
    chains, per pixel: 0 when the chains match the statistic that learning
    drives to agreement; compare with the thermal ½ per pixel) and ``sd_ratio`` (the
    chains' pixel standard deviation over the observed one)."""
    import jax.numpy as jnp

    from gcnjax.descriptor import virial_ratio

    chains = jnp.asarray(chains_model, jnp.float32)
    f_data = float(np.mean(net.apply(params, jnp.asarray(observed_model, jnp.float32))))
    f_chains = float(np.mean(net.apply(params, chains)))
    return {"virial": float(np.mean(virial_ratio(net.apply, params, chains, sigma))),
            "f_gap": (f_data - f_chains) / np.prod(np.shape(observed_model)[1:]),
            "sd_ratio": float(np.std(chains_model) / np.std(observed_model))}


def _flat(scores: dict) -> dict:
    """One set's scores as ``{metric: value}``: the spectrum and Gram
    distances and ``pyramid<level>`` for each pyramid level."""
    return {"spectrum": scores["spectrum"], "gram": scores["gram"],
            **{f"pyramid{level}": value for level, value in scores.get("pyramid", {}).items()}}


def _table(rows) -> list:
    lines = ["| seed | spectrum: synthesized | white noise | Gram: synthesized | shuffled patches | white noise "
             "| observed tile (spectrum, Gram) | chains: virial, f gap, sd ratio | time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        s, c = row["scores"], row["chains"]
        lines.append(f"| {row['seed']} | {s['synthesized']['spectrum']:.3f} | {s['white_noise']['spectrum']:.3f} | "
                     f"{s['synthesized']['gram']:.4g} | {s['shuffled_patches']['gram']:.4g} | "
                     f"{s['white_noise']['gram']:.4g} | {s['observed']['spectrum']:.3f}, {s['observed']['gram']:.4g} "
                     f"| {c['virial']:.2f}, {c['f_gap']:.3f}, {c['sd_ratio']:.2f} | {row['seconds']:.0f} |")
    return lines


def _scores(samples, held_out, observed, gram_filters, patch: int, seed: int) -> tuple:
    """``(on the held-out tiles, on the observed tile)``: the texture scores
    of ``samples`` with every statistic (spectrum, the bank's Gram, the
    pyramid), against the held-out tiles (the observed tile scored beside
    them) and against the observed tile itself."""
    options = dict(patch=patch, seed=seed, pyramid_levels=metrics.PYRAMID_LEVELS)
    return (metrics.texture_scores(samples, held_out, observed, gram_filters, with_observed=True, **options),
            metrics.texture_scores(samples, observed[None], observed, gram_filters, **options))


def score_samples(paths, held_out, observed, gram_filters, patch: int, out: Path) -> None:
    """The texture scores of each samples file (``(N, side, side, C)``
    pixels) against ``held_out``, beside the baselines of as many images
    (seed 0); to ``OUT/sample_scores.json`` and the screen."""
    results = {}
    for path in paths:
        try:
            samples = np.load(path)
        except (OSError, ValueError) as err:
            raise SystemExit(f"--score {str(path)!r}: cannot read it as a .npy array ({err}).") from None
        if samples.ndim != 4 or samples.shape[1:] != observed.shape:
            hint = (f"--image-size {samples.shape[1]}{' --gray' if samples.shape[-1] == 1 else ''}"
                    if samples.ndim == 4 else "samples (N, side, side, C) of a run of this script")
            raise SystemExit(f"--score {str(path)!r} holds an array of shape {samples.shape}; the held-out tiles "
                             f"are {observed.shape}: score it with the options of its run ({hint}).")
        scores, on_tile = _scores(samples, held_out, observed, gram_filters, patch, seed=0)
        results[str(path)] = {"samples": int(samples.shape[0]), "scores": scores, "on_observed_tile": on_tile}
        print(f"{path} ({samples.shape[0]} samples): " + "; ".join(
            f"{name} " + ", ".join(f"{metric} {value:.4g}" for metric, value in _flat(v).items())
            for name, v in scores.items()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sample_scores.json").write_text(json.dumps(results, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="image, folder, or skimage:brick|grass|gravel")
    parser.add_argument("--kind", choices=["texture", "object"], default="texture")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--load-size", type=int,
                        help="textures: resize to this before cutting tiles (default: the image's own size)")
    parser.add_argument("--gray", action="store_true")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--chains", type=int, help="synthesized images")
    parser.add_argument("--steps", type=int, help="Langevin steps per iteration")
    parser.add_argument("--delta", type=float, help="Langevin step δ (x ← x − (δ²/2)∇E + δξ) (model units)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--top", choices=frame.TOPS, help="default: pairwise (texture), dense (object); pairwise: "
                        "sum plus the features' co-occurrence at each position (their Gram matrix)")
    parser.add_argument("--nonlinearity", choices=frame.NONLINEARITIES, default="abs")
    parser.add_argument("--orientations", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="filter sizes of the bank (default: 5 7 11 15 for textures, 7 11 15 for objects)")
    parser.add_argument("--padding", choices=["SAME", "VALID"], default="SAME",
                        help="the bank's convolution: zero padding at the border, or valid positions only")
    parser.add_argument("--thresholds", nargs="+", metavar="Q",
                        help="threshold each response at these quantiles of the observed responses: a "
                             f"piecewise-linear potential per filter (default for textures: {TEXTURE_THRESHOLDS}); "
                             "'none' for one weight per filter (the default for objects)")
    parser.add_argument("--colour", choices=frame.COLOURS, default="rgb",
                        help="filter R, G, B, or the opponent channels (luminance, red-green, yellow-blue)")
    parser.add_argument("--patch", type=int, default=16, help="patch side of the shuffled-patch baseline")
    parser.add_argument("--score", type=Path, nargs="+", metavar="SAMPLES",
                        help="learn nothing: score these samples (.npy of pixels, e.g. the samples.npy of "
                             "`gcnjax sample` on a run of this script) against the same held-out tiles")
    options.add_config_flags(parser, DescriptorConfig, skip=("seed", "channels", "image_size", "top"))
    args = parser.parse_args()

    channels = 1 if args.gray else 3
    side = args.image_size
    held_out = None
    if args.kind == "texture":
        image = load_data(args.data, channels=channels, size=(args.load_size,) * 2 if args.load_size else None)[0]
        tiles = _tiles(image, side)
        if len(tiles) < 2:
            raise SystemExit(f"{args.data}: a {image.shape[0]}×{image.shape[1]} image has no held-out "
                             f"{side}×{side} tile; raise --load-size or lower --image-size.")
        images, held_out = tiles[:1], tiles[1:]
    else:
        images = load_data(args.data, channels=channels, size=(side, side))
    config = presets.frame(args.kind, channels=channels, image_size=(side, side))
    config = options.apply_shortcuts(options.apply_config_flags(config, args), args, DESCRIPTOR_SHORTCUTS)
    model_scale = PixelScale(config.pixel_scale).fit(images).to_model(images)
    sizes = args.sizes or ([5, 7, 11, 15] if args.kind == "texture" else [7, 11, 15])
    bank = dict(sizes=tuple(sizes), n_orientations=args.orientations, colour=args.colour)
    net = frame.filter_bank_net(args.top or config.top, nonlinearity=args.nonlinearity, padding=args.padding,
                                threshold_quantiles=_thresholds(args.thresholds, args.kind), images=model_scale, **bank)
    gram_filters = frame.filter_bank_net(nonlinearity="identity", padding="VALID", **bank).extract
    if args.score:
        if held_out is None:
            raise SystemExit("--score scores textures against held-out tiles; objects have none.")
        return score_samples(args.score, held_out, images[0], gram_filters, args.patch, args.out)

    rows = []
    for seed in args.seeds:
        out = args.out if len(args.seeds) == 1 else args.out / f"seed{seed}"
        t0 = time.perf_counter()
        result = frame.learn_frame(dataclasses.replace(config, seed=seed), net, images, out,
                                   title=f"FRAME {args.kind}: {args.data}", source=args.data, overwrite=True)
        seconds = time.perf_counter() - t0
        print(f"seed {seed}: {seconds:.0f} s; report: {result['report']}")
        if held_out is None:
            continue
        synthesized = np.load(Path(result["run_dir"]) / "synthesized.npy")
        scores, on_tile = _scores(synthesized, held_out, images[0], gram_filters, args.patch, seed=seed)
        chains = chain_diagnostics(net, result["params"], config.sigma, model_scale,
                                   result["scale"].to_model(synthesized))
        rows.append({"seed": seed, "seconds": seconds, "scores": scores, "on_observed_tile": on_tile,
                     "chains": chains})
        with open(Path(result["report"]), "a") as f:
            f.write("\n## Texture scores (held-out tiles)\n\n" + "\n".join(_table(rows[-1:])) + "\n")
    if not rows:
        return
    summary = {"data": args.data, "tiles": {"side": side, "train": 1, "held_out": len(held_out)},
               "patch": args.patch, "runs": rows, "mean": {}, "sd": {}}
    def columns(key):  # {"set.metric": [value of each seed]}
        return {f"{name}.{metric}": [_flat(row[key][name])[metric] for row in rows]
                for name in rows[0][key] for metric in _flat(rows[0][key][name])}

    for column, values in columns("scores").items():
        summary["mean"][column], summary["sd"][column] = metrics.mean_sd(values)
    summary["mean_on_observed_tile"] = {column: metrics.mean_sd(values)[0]
                                        for column, values in columns("on_observed_tile").items()}
    def targets(m):
        return {"spectrum_below_half_white_noise": m["synthesized.spectrum"] < 0.5 * m["white_noise.spectrum"],
                "gram_below_shuffled_patches": m["synthesized.gram"] < m["shuffled_patches.gram"]}

    summary["targets"] = targets(summary["mean"])
    summary["targets_on_observed_tile"] = targets(summary["mean_on_observed_tile"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# FRAME texture scores: {args.data}", "",
             f"Learned from 1 tile of {side}×{side}; compared with {len(held_out)} held-out tiles. Shuffled patches: "
             f"{args.patch}×{args.patch}.", ""] + _table(rows) + [""]
    lines += [f"mean ± sd over {len(rows)} seed(s): " + "; ".join(
        f"{column} " + metrics.format_mean_sd(values, ".4g", ".2g") for column, values in columns("scores").items()),
        "", f"targets: {summary['targets']}", "",
        "Against the observed tile itself (as the descriptor's texture is scored), mean ± sd: " + "; ".join(
            f"{column} " + metrics.format_mean_sd(values, ".4g", ".2g")
            for column, values in columns("on_observed_tile").items()),
        "", f"targets on the observed tile: {summary['targets_on_observed_tile']}"]
    (args.out / "scores.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
