"""Cooperative training of a descriptor and a generator (CoopNets; PAPERS §6).

The generator proposes, the descriptor revises by Langevin dynamics, both
learn from the revised images (gcnjax.coop). CPU-sized runs: a subset of the
data, narrower nets (width 32). The settings that give faces and garments here
(experiments/RESULTS.md): the authors' rates, 64 proposals, the revision
clipped to the data range:

    python experiments/coop_training.py --data ../shared/data/faces64 --image-size 32 --limit 700 --chains 64 \
        --iterations 4000 --gen-lr 1e-4 --clip --out runs/coop/faces
    python experiments/coop_training.py --data fashion-mnist:2000 --limit 1900 --chains 64 --iterations 2000 \
        --gen-lr 1e-4 --clip --out runs/coop/fashion

With --limit below the folder's size, the images past the limit are held
out (no model sees them), and summary.json gets the random-feature Fréchet
distance TO THOSE HELD-OUT IMAGES of as many generator samples, revised
samples, training images (the floor: real faces of the same kind) and images
of per-pixel noise. --nets authors takes the authors' nets (gcnjax.presets.coop).
"""

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import coop, metrics, presets
from gcnjax.data import load_data
from gcnjax.data import PixelScale


def sample_quality(config, state, train, held_out, seed=0):
    """Random-feature Fréchet distance (gcnjax.metrics) to the held-out
    images of as many generator samples, revised samples, training images
    and images of per-pixel Gaussian noise (the training images' mean and
    std): equal N, so the values compare; the training images are the
    floor a model of these faces could reach, the noise a model that
    learned only each pixel's mean and spread."""
    n = len(held_out)
    des_net, gen_net = coop.make_nets(config)
    sampler = coop.make_sampler(config, des_net.apply, gen_net.apply)
    key = jax.random.key(seed)
    z = jax.random.normal(key, (n, config.generator.latent_dim), jnp.float32)
    proposals, revised = sampler(state, z, jax.random.fold_in(key, 1))
    scale = PixelScale("unit")
    rng = np.random.default_rng(seed)
    noise = rng.normal(train.mean(0), train.std(0), (n,) + train.shape[1:]).clip(0, 255)
    real = train[rng.choice(len(train), n, replace=False)]
    sets = {"generator": scale.to_pixels(np.asarray(proposals)), "revised": scale.to_pixels(np.asarray(revised)),
            "training_real": real, "pixel_gaussian": noise}
    finite = {name: bool(np.isfinite(x).all()) for name, x in sets.items()}
    return {"n": n, "against": "held-out images",
            **{name: (metrics.random_feature_frechet(x, held_out) if finite[name] else float("nan"))
               for name, x in sets.items()}}


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
    args = parser.parse_args()

    fashion = args.data.startswith("fashion-mnist")
    channels = 1 if fashion else 3
    size = args.image_size or (28 if fashion else 64)
    images = load_data(args.data, size=(size, size), channels=channels)
    held_out = images[args.limit:] if args.limit else images[:0]
    if args.limit:
        images = images[: args.limit]
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
        summary["frechet"] = sample_quality(config, result["state"], images, held_out)
        print("random-feature Fréchet distance to the held-out images:", summary["frechet"])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{result['seconds']:.0f} s; revision lowered the energy in {int((h['revision_drop'] > 0).sum())} of "
          f"{len(h['revision_drop'])} logged iterations; report: {result['report']}")


if __name__ == "__main__":
    main()
