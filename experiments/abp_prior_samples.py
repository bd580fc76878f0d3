"""Samples of a learned generator from its prior N(0, I) against samples from
the Gaussian fitted to its training latents, scored against faces it never
saw.

    python experiments/abp_prior_samples.py --run runs/reproduction/abp/test/seed0 \\
        --heldout runs/reproduction/abp/split/test --train runs/reproduction/abp/split/train --out runs/prior-samples

Draws as many samples of each kind as there are held-out faces
(``gcnjax sample --latents prior|fitted``) and prints, per kind, the
random-feature Fréchet distance to the held-out faces
(:func:`gcnjax.metrics.random_feature_frechet`, equal numbers of images)
and the pixels' standard deviation (contrast), with the training latents'
median norm against the prior's; beside them
the same numbers for as many training faces (the reference a perfect
sampler reaches, up to the sets' sampling noise), the run's reconstructions
of its training faces g(z_i) (the latents the fitted Gaussian summarises),
the training faces' mean image repeated, and the linear model of the same
d: draws of PCA's Gaussian (the run's components, with the Gaussian of the
training faces' coefficients on them).
"""

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from gcnjax import abp, metrics, sampling
from gcnjax import generator as G
from gcnjax import data as gdata


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="a finished `gcnjax abp train` run")
    p.add_argument("--heldout", required=True, type=Path, help="faces the run never learned from (a folder)")
    p.add_argument("--train", required=True, type=Path, help="the run's training faces (a folder)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    config, scale, net, params, _ = abp.load_generator_run(args.run)
    size = json.loads((args.run / "config.json").read_text())["observed_shape"][1]
    heldout = gdata.load_images(args.heldout, size=size).astype(np.float32)
    train = gdata.load_images(args.train, size=size).astype(np.float32)
    n = heldout.shape[0]
    latents = np.load(args.run / "latents.npy")
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(latents), n, replace=len(latents) < n)
    rows = {"training faces": train[rng.choice(len(train), n, replace=len(train) < n)],
            "training faces' mean image": np.broadcast_to(train.mean(0), heldout.shape),
            "reconstructions g(z_i) of training faces":
                np.clip(scale.to_data(np.asarray(net.apply(params, jnp.asarray(latents[chosen])))), 0, 255)}
    # The linear model of the same d: PCA's Gaussian, the training faces' coefficients on the run's components
    # (model units) drawn from the Gaussian fitted to them.
    mean, components = np.load(args.run / "pca_mean.npy"), np.load(args.run / "pca_components.npy")
    basis = components.reshape(components.shape[0], -1).astype(np.float64)
    coefficients = (scale.to_model(train).reshape(len(train), -1) - mean.reshape(1, -1)) @ basis.T
    drawn = np.asarray(G.gaussian_latents(G.fitted_latent_gaussian(coefficients),
                                          rng.standard_normal((n, basis.shape[0]))), np.float64) @ basis
    drawn += mean.reshape(1, -1)
    rows[f"PCA's Gaussian (d = {basis.shape[0]}, the training faces' coefficients)"] = np.clip(
        scale.to_data(drawn.reshape(heldout.shape)), 0, 255)
    for source in sampling.LATENT_SOURCES:
        out = args.out / source
        sampling.sample_run(args.run, out, sampling.SampleSettings(n_chains=n, latents=source), seed=args.seed,
                            overwrite=True, quiet=True)
        label = "the prior N(0, I)" if source == "prior" else "the Gaussian fitted to the training latents"
        rows[f"samples, z from {label}"] = np.clip(np.load(out / "samples.npy"), 0, 255)
    print(f"{args.run}: {n} images per row against {n} held-out faces ({args.heldout}); training latents' norm "
          f"median {np.median(np.linalg.norm(latents, axis=1)):.1f} (N(0, I_{config.latent_dim}): "
          f"{np.sqrt(config.latent_dim):.1f})")
    print("| images | Fréchet distance (random features) | pixel sd (held-out faces: "
          f"{heldout.std():.1f}) |")
    print("|---|---|---|")
    for name, images in rows.items():
        fd = metrics.random_feature_frechet(images, heldout)
        print(f"| {name} | {fd:.4g} | {np.asarray(images).std():.1f} |")


if __name__ == "__main__":
    main()
