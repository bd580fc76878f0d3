"""Texture synthesis from one image (Xie et al. 2016, §1 of PAPERS.md).

Learns one stationary descriptor per texture: the paper's ivy and
scikit-image's brick, grass and gravel, and writes a run directory for each
(and seed) plus a summary report.

    python experiments/texture_synthesis.py --ivy ../shared/data/textures/ivy.jpg --out runs/textures
    python experiments/texture_synthesis.py --ivy ... --only ivy brick grass --seeds 0 1 2
    python experiments/texture_synthesis.py --full ...    # the authors' 224×224 size and 1000 iterations
    python experiments/texture_synthesis.py --ivy ... --only ivy --steps 50 --first-stride 1   # variants of the net and chains
    python experiments/texture_synthesis.py --ivy ... --size 128      # a 128² crop instead of 64²
    python experiments/texture_synthesis.py --ivy ... --persistent false --chain-init noise --init-scale 50 --steps 30
                                                   # short-run learning: chains from noise every iteration

Every field of the descriptor's config can be set as in ``gcnjax descriptor``
(``--restart-fraction``, ``--langevin.step-size``, ...).

Scores, per texture (:func:`gcnjax.metrics.texture_scores`; mean ± sd over
the seeds where several are run):

- spectrum distance (:func:`gcnjax.metrics.log_spectrum_distance`) of the
  synthesized images to the observed one, and of white noise of the observed
  per-channel mean and variance;
- Gram distance (:func:`gcnjax.metrics.gram_distance`) with the learned
  net's own first-layer filters (its ``conv1`` kernels, 15×15, on the model's
  scale: pixels minus the observed mean), of the synthesized images, of the
  shuffled-patch baseline (:func:`gcnjax.metrics.shuffled_patches`: the
  observed image cut into 16×16 tiles, about the filters' size, and put back
  in random order) and of the white noise;
- pyramid Gram distances (:func:`gcnjax.metrics.pyramid_gram_distances`) at
  the levels 1, 2 and 4 (a fixed random 5×5 bank on the image and on its
  2×2 and 4×4 block means: structure spanning 5, 10 and 20 pixels) of the
  same three sets: the shuffled 16² tiles keep every structure within a
  tile, so a synthesis nearer than them at level 4 has shapes larger than
  a tile, which the first-layer Gram (15×15 filters) does not see.

The first seed's run is ``OUT/NAME`` (the auto-encoding check reads it);
further seeds go to ``OUT/NAME-seedS``.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from gcnjax import options, presets
from gcnjax.cli import DESCRIPTOR_SHORTCUTS
from gcnjax.data import load_data
from gcnjax.descriptor import DescriptorConfig
from gcnjax.metrics import PYRAMID_LEVELS, format_mean_sd, mean_sd, texture_scores
from gcnjax.synthesis import learn_descriptor, load_run
from gcnjax.train import RunConfig

# The shuffled-patch baseline's tile: the first-layer filters' size (15)
# rounded up to a side that divides the crops.
PATCH = 16
CPU_SIZE = (64, 64)
CPU_ITERATIONS = 200


def config(full: bool, iterations=None):
    cfg = presets.texture() if full else dataclasses.replace(
        presets.texture(), image_size=CPU_SIZE, n_iterations=CPU_ITERATIONS,
        run=RunConfig(image_every=50, checkpoint_every=100))
    return cfg if iterations is None else dataclasses.replace(cfg, n_iterations=iterations)


def scores(images: np.ndarray, run_dir: Path, seed: int, synthesized=None) -> dict:
    """The spectrum and Gram distances of one finished run's synthesized
    images (or of ``synthesized``, pixels: samples of its model), see the
    module's docstring."""
    _, scale, _, params = load_run(run_dir)
    filters = np.asarray(params["params"]["conv1"]["kernel"])
    synthesized = np.load(run_dir / "synthesized.npy") if synthesized is None else synthesized
    s = texture_scores(synthesized, images, images[0], filters, patch=PATCH, seed=seed, to_model=scale.to_model,
                       pyramid_levels=PYRAMID_LEVELS)
    return {"spectrum_distance_synthesized": s["synthesized"]["spectrum"],
            "spectrum_distance_noise": s["white_noise"]["spectrum"],
            "gram_distance_synthesized": s["synthesized"]["gram"],
            "gram_distance_shuffled": s["shuffled_patches"]["gram"],
            "gram_distance_noise": s["white_noise"]["gram"],
            **{f"pyramid{level}_{short}": s[name]["pyramid"][level] for level in PYRAMID_LEVELS
               for name, short in (("synthesized", "synthesized"), ("shuffled_patches", "shuffled"),
                                   ("white_noise", "noise"))}}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ivy", help="path of the paper's ivy.jpg (skipped if not given)")
    parser.add_argument("--out", type=Path, default=Path("runs/textures"))
    parser.add_argument("--full", action="store_true", help="the authors' size (GPU)")
    parser.add_argument("--only", nargs="*", help="run only these textures")
    parser.add_argument("--iterations", type=int,
                        help=f"learning iterations (default: {CPU_ITERATIONS}, or the preset's with --full)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds (net initialisation and chains) to run each texture with; scores are "
                             "reported as mean ± sd over them")
    parser.add_argument("--size", type=int,
                        help=f"side of the crop learned at the CPU size (default {CPU_SIZE[0]}; a multiple of "
                             f"{PATCH}, the shuffled tiles' side)")
    parser.add_argument("--steps", type=int, help="Langevin steps per iteration (default: the preset's 10)")
    parser.add_argument("--first-stride", type=int,
                        help="the first layer's stride (default: the preset's 3; the other layers' is 1)")
    options.add_config_flags(parser, DescriptorConfig, skip=("seed", "channels", "image_size", "n_iterations"))
    args = parser.parse_args()

    base = options.apply_shortcuts(options.apply_config_flags(config(args.full, args.iterations), args), args,
                                   {"steps": DESCRIPTOR_SHORTCUTS["steps"]})
    if args.size is not None:
        if args.full or args.size < PATCH or args.size % PATCH:
            parser.error(f"--size {args.size}: give a multiple of {PATCH} (the shuffled tiles' side), "
                         "and not with --full (the authors' size)")
        base = dataclasses.replace(base, image_size=(args.size, args.size))
    if args.first_stride is not None:
        base = dataclasses.replace(base, layers=(dataclasses.replace(base.layers[0], stride=args.first_stride),
                                                 *base.layers[1:]))
    size = base.image_size
    # At the CPU size the 224×224 ivy is cropped, not shrunk, so its leaves
    # keep their size. Bundled textures are 512×512: halve them, then take the
    # central window, so that stones and bricks keep a size the 33-pixel
    # receptive field sees.
    jobs = {
        "ivy": (args.ivy, dict(crop=size) if not args.full else dict(size=size), 3),
        "brick": ("skimage:brick", dict(size=(256, 256), crop=size), 1),
        "grass": ("skimage:grass", dict(size=(256, 256), crop=size), 1),
        "gravel": ("skimage:gravel", dict(size=(256, 256), crop=size), 1),
    }
    rows, pyramid_rows, summary = [], [], {}
    for name, (source, geometry, channels) in jobs.items():
        if source is None or (args.only and name not in args.only):
            continue
        images = load_data(source, channels=channels, **geometry)
        spec = dict(spec=source, channels=channels, size=geometry.get("size"), crop=geometry.get("crop"))
        per_seed, seconds = [], []
        for i, seed in enumerate(args.seeds):
            cfg = dataclasses.replace(base, channels=channels, seed=seed)
            run_dir = args.out / (name if i == 0 else f"{name}-seed{seed}")
            result = learn_descriptor(cfg, images, run_dir, title=f"Texture: {name} (seed {seed})", source=source,
                                      data_spec=spec, overwrite=True)
            per_seed.append(scores(images, run_dir, seed))
            seconds.append(result["seconds"])
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in per_seed[-1].items()), flush=True)
        keys = per_seed[0].keys()
        summary[name] = {**{k: mean_sd([s[k] for s in per_seed])[0] for k in keys},
                         **{f"{k}_sd": mean_sd([s[k] for s in per_seed])[1] for k in keys},
                         "per_seed": {str(seed): s for seed, s in zip(args.seeds, per_seed)},
                         "seeds": list(args.seeds), "seconds": float(np.mean(seconds)),
                         "iterations": base.n_iterations, "size": list(size)}
        col = {k: [s[k] for s in per_seed] for k in keys}
        pyramid_rows.append(f"| {name} | " + " | ".join(
            f"{format_mean_sd(col[f'pyramid{level}_synthesized'], '.3g')} "
            f"| {format_mean_sd(col[f'pyramid{level}_shuffled'], '.3g')} "
            f"| {format_mean_sd(col[f'pyramid{level}_noise'], '.3g')}" for level in PYRAMID_LEVELS) + " |")
        rows.append(f"| {name} | ![observed]({name}/observed.png) | ![synthesized]({name}/synthesized.png) "
                    f"| {format_mean_sd(col['spectrum_distance_synthesized'], '.2f')} "
                    f"| {format_mean_sd(col['spectrum_distance_noise'], '.2f')} "
                    f"| {format_mean_sd(col['gram_distance_synthesized'], '.3g')} "
                    f"| {format_mean_sd(col['gram_distance_shuffled'], '.3g')} "
                    f"| {format_mean_sd(col['gram_distance_noise'], '.3g')} | {np.mean(seconds):.0f} s |")
    report = [
        "# Texture synthesis", "",
        f"{size[0]}×{size[1]}, {base.n_iterations} iterations, seeds {' '.join(map(str, args.seeds))} "
        "(mean ± sd over the seeds; the pictures are the first seed's).", "",
        "Spectrum distance: mean |log(1+P_observed) − log(1+P)| of the spatial power spectra, for the "
        "synthesized images and, for scale, for Gaussian white noise of the observed mean and variance.", "",
        "Gram distance: mean squared difference of the Gram matrices of the responses to the learned net's "
        f"first-layer filters (pixels minus the observed mean), for the synthesized images, for the observed "
        f"image cut into {PATCH}×{PATCH} tiles shuffled (as many images as chains), and for the white noise.", "",
        "| texture | observed | synthesized | spectrum distance | white noise | Gram distance | shuffled "
        f"{PATCH}² patches | white noise | time per run |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Pyramid Gram distances (relative; a fixed random 5×5 bank on the image and on its block means, "
        "structure spanning 5, 10 and 20 pixels at levels 1, 2, 4) of the synthesized images, the shuffled "
        f"{PATCH}² tiles and the white noise:", "",
        "| texture | " + " | ".join(f"level {level}: synthesized | shuffled | white noise" for level in PYRAMID_LEVELS)
        + " |",
        "|---|" + "---|---|---|" * len(PYRAMID_LEVELS), *pyramid_rows,
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(report) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"report: {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
