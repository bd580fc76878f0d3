"""Cooperative training of a descriptor and a generator (CoopNets; PAPERS §6).

The generator proposes, the descriptor revises by Langevin dynamics, both
learn from the revised images (gcnjax.coop). The runs of experiments/RESULTS.md
("CoopNets with the authors' nets"): the authors' nets and rates, the revision
unclipped, at a CPU size (32², width 32, 64 proposals) and at the authors'
(64², width 64, 100 proposals: a GPU run):

    python experiments/coop_training.py --data ../shared/data/faces64 --image-size 32 --limit 700 --chains 64 \
        --iterations 2000 --nets authors --gen-lr 1e-4 --out runs/coop/faces32
    python experiments/coop_training.py --data ../shared/data/faces64 --image-size 64 --limit 700 --chains 100 \
        --width 64 --iterations 2050 --nets authors --gen-lr 1e-4 --out runs/coop/faces64
    python experiments/coop_training.py --data fashion-mnist:2000 --limit 1900 --chains 64 --iterations 300 \
        --image-size 32 --nets authors --gen-lr 1e-4 --out runs/coop/fashion

With --limit below the folder's size, the images past the limit are held
out (no model sees them), and summary.json's "quality" holds two Fréchet
distances TO THOSE HELD-OUT IMAGES (random conv features; eigenface
coordinates) of as many generator samples, revised samples, training images
(the floor: real faces of the same kind) and images of per-pixel noise, over
5 draws each (sample_quality; --score recomputes them for a finished run).
--nets authors takes the authors' nets (gcnjax.presets.coop).
"""

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import abp, coop, metrics, presets
from gcnjax.data import load_data
from gcnjax.data import PixelScale


def sample_quality(config, params, train, held_out, seed=0, draws=5, pca_dim=20):
    """Distances to the held-out images (no model saw them) of sets of as
    many images as there are held-out ones: generator samples g(z), the
    descriptor's revisions of them, training images (the floor: real faces
    of the same kind) and per-pixel Gaussian noise of the training images'
    mean and std (a model of each pixel's spread alone). Two distances:

    * ``random_conv``: the Fréchet distance of a fixed random conv net's
      pooled features (gcnjax.metrics.random_feature_frechet: colour,
      contrast, edges; blind to where they are);
    * ``eigenface``: the Fréchet distance of the coordinates in the top
      ``pca_dim`` principal components of the training images, pixels in
      [0, 1] (where the light and dark regions of a face sit: its layout).

    Each set is drawn ``draws`` times (fresh z, fresh training images,
    fresh noise): ``{set: {distance: [value per draw]}}``."""
    n = len(held_out)
    des_net, gen_net = coop.make_nets(config)
    sampler = coop.make_sampler(config, des_net.apply, gen_net.apply)
    state = coop.CoopState(params["descriptor"], None, params["generator"], None, None, None)
    scale = PixelScale("unit")
    mean, components = abp.pca_fit(np.asarray(train, np.float64) / 255.0, pca_dim)

    def eigen(x):  # coordinates of images scaled to [0, 1]
        return (np.asarray(x, np.float64).reshape(len(x), -1) / 255.0 - mean.reshape(-1)) @ components.T

    held_eigen = eigen(held_out)
    rng = np.random.default_rng(seed)
    out = {name: {"random_conv": [], "eigenface": []} for name in ("generator", "revised", "training_real",
                                                                    "pixel_gaussian")}
    for draw in range(draws):
        key = jax.random.fold_in(jax.random.key(seed), draw)
        z = jax.random.normal(key, (n, config.generator.latent_dim), jnp.float32)
        proposals, revised = sampler(state, z, jax.random.fold_in(key, 1))
        sets = {"generator": scale.to_pixels(np.asarray(proposals)), "revised": scale.to_pixels(np.asarray(revised)),
                "training_real": train[rng.choice(len(train), n, replace=False)],
                "pixel_gaussian": rng.normal(train.mean(0), train.std(0), (n,) + train.shape[1:]).clip(0, 255)}
        for name, x in sets.items():
            finite = bool(np.isfinite(x).all())
            out[name]["random_conv"].append(metrics.random_feature_frechet(x, held_out) if finite else float("nan"))
            out[name]["eigenface"].append(
                metrics.frechet_distance_from_features(eigen(x), held_eigen) if finite else float("nan"))
    return {"n": n, "draws": draws, "against": "held-out images", "pca_dim": pca_dim, **out}


def _brief(quality) -> str:
    return "; ".join(f"{name}: " + ", ".join(f"{d} {metrics.format_mean_sd(v, '.4g', '.2g')}"
                                           for d, v in quality[name].items())
                     for name in ("generator", "revised", "training_real", "pixel_gaussian"))


def _split(args):
    """(training images, held-out images) of ``--data`` and ``--limit``."""
    fashion = args.data.startswith("fashion-mnist")
    channels = 1 if fashion else 3
    size = args.image_size or (28 if fashion else 64)
    images = load_data(args.data, size=(size, size), channels=channels)
    if args.limit:
        return images[: args.limit], images[args.limit:]
    return images, images[:0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a folder of images, or fashion-mnist[:N]")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-size", type=int, help="default 28 (fashion-mnist) or 64")
    parser.add_argument("--limit", type=int, help="use the first N images of a folder")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15, help="descriptor revision steps")
    parser.add_argument("--lr", type=float, default=0.007, help="descriptor learning rate (Adam)")
    parser.add_argument("--gen-lr", type=float, default=5e-4)
    parser.add_argument("--infer-steps", type=int, default=0)
    parser.add_argument("--clip", action="store_true",
                        help="keep the revised images in the data range [-1, 1] (the chains are clipped each step)")
    parser.add_argument("--nets", choices=presets.COOP_NETS, default="ours",
                        help="the nets of gcnjax.presets.coop: the authors' (batch-normalised generator from a 4x4 "
                             "start, 100 summed top units) or ours")
    parser.add_argument("--top-units", type=int, help="override the nets' number of summed top units (ablations)")
    parser.add_argument("--gen-norm", choices=["none", "layer", "batch"],
                        help="override the nets' generator normalisation (ablations)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--score", action="store_true",
                        help="only score the finished run in --out against the held-out images (summary.json's "
                             "'quality'), with the --data and --limit it was trained with")
    args = parser.parse_args()
    if args.score:
        images, held_out = _split(args)
        config, _, _, _, params = coop.load_coop_run(args.out)
        path = args.out / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {}
        summary["quality"] = sample_quality(config, params, images, held_out)
        path.write_text(json.dumps(summary, indent=2))
        print(_brief(summary["quality"]))
        return

    images, held_out = _split(args)
    size, channels = images.shape[1], images.shape[-1]
    config = presets.coop(size, channels, width=args.width, nets=args.nets, n_iterations=args.iterations,
                          seed=args.seed)
    d = dataclasses.replace(config.descriptor, n_chains=args.chains, batch_size=args.chains, learning_rate=args.lr,
                            langevin=dataclasses.replace(config.descriptor.langevin, n_steps=args.steps,
                                                         clip=(-1.0, 1.0) if args.clip else None))
    g = dataclasses.replace(config.generator, learning_rate=args.gen_lr,
                            langevin=dataclasses.replace(config.generator.langevin, n_steps=args.infer_steps))
    if args.top_units is not None:
        d = dataclasses.replace(d, top_units=args.top_units)
    config = dataclasses.replace(config, descriptor=d, generator=g,
                                 generator_norm=args.gen_norm or config.generator_norm)
    result = coop.learn_coop(config, images, args.out, title=f"CoopNets: {args.data}", source=args.data,
                             overwrite=not args.resume, resume=args.resume)
    h = result["history"]
    summary = {"images": len(images), "iterations": args.iterations, "seconds": result["seconds"],
               "revision_lowered_energy": int((h["revision_drop"] > 0).sum()),
               "logged_iterations": len(h["revision_drop"]),
               "mean_revision_drop": float(np.mean(h["revision_drop"])),
               "nets": args.nets, "clip": bool(args.clip), "seed": args.seed,
               "top_units": config.descriptor.top_units, "generator_norm": config.generator_norm,
               "f_data_last": float(h["f_data"][-1]), "f_revised_last": float(h["f_revised"][-1]),
               "max_abs_f": float(np.nanmax(np.abs(h["f_data"]))),
               "revision_mse_last": float(h["revision_mse"][-1])}
    if len(held_out) >= 50:
        state = result["state"]
        summary["quality"] = sample_quality(config, {"descriptor": state.des_params, "generator": state.gen_params},
                                            images, held_out)
        print("distances to the held-out images:", _brief(summary["quality"]))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{result['seconds']:.0f} s; revision lowered the energy in {int((h['revision_drop'] > 0).sum())} of "
          f"{len(h['revision_drop'])} logged iterations; report: {result['report']}")


if __name__ == "__main__":
    main()
