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
training faces' coefficients on them). ``experiments/abp_faces.py``'s
``samples`` stage scores its test runs with :func:`score_samples`.
"""

import argparse
import json
from pathlib import Path
from typing import Dict

import jax.numpy as jnp
import numpy as np

from gcnjax import abp, metrics, sampling
from gcnjax import generator as G
from gcnjax import data as gdata

# The image sets scored, by key: what each one is.
SETS = {
    "training_faces": "training faces",
    "mean_image": "training faces' mean image",
    "reconstructions": "reconstructions g(z_i) of training faces",
    "pca_gaussian": "PCA's Gaussian (the training faces' coefficients on the run's components, the same d)",
    "prior": "samples, z from the prior N(0, I)",
    "fitted": "samples, z from the Gaussian fitted to the training latents",
}


def score_samples(run: Path, heldout: np.ndarray, train: np.ndarray, out: Path, seed: int = 0) -> Dict:
    """The random-feature Fréchet distance to ``heldout`` (faces the run never
    learned from, ``(N, H, W, C)`` in 0..255) and the pixel sd of N images of
    each of :data:`SETS`, drawn with ``seed``; the samples are written under
    ``out/prior`` and ``out/fitted``. Returns ``{"frechet": {key: d},
    "pixel_sd": {key: sd}, "heldout_pixel_sd", "latent_norm_median",
    "latent_dim"}``."""
    config, scale, net, params, _ = abp.load_generator_run(run)
    heldout, train = np.asarray(heldout, np.float32), np.asarray(train, np.float32)
    n = heldout.shape[0]
    latents = np.load(run / "latents.npy")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(latents), n, replace=len(latents) < n)
    images = {"training_faces": train[rng.choice(len(train), n, replace=len(train) < n)],
              "mean_image": np.broadcast_to(train.mean(0), heldout.shape),
              "reconstructions":
                  np.clip(scale.to_data(np.asarray(net.apply(params, jnp.asarray(latents[chosen])))), 0, 255)}
    # The linear model of the same d: PCA's Gaussian, the training faces' coefficients on the run's components
    # (model units) drawn from the Gaussian fitted to them.
    mean, components = np.load(run / "pca_mean.npy"), np.load(run / "pca_components.npy")
    basis = components.reshape(components.shape[0], -1).astype(np.float64)
    coefficients = (scale.to_model(train).reshape(len(train), -1) - mean.reshape(1, -1)) @ basis.T
    drawn = np.asarray(G.gaussian_latents(G.fitted_latent_gaussian(coefficients),
                                          rng.standard_normal((n, basis.shape[0]))), np.float64) @ basis
    drawn += mean.reshape(1, -1)
    images["pca_gaussian"] = np.clip(scale.to_data(drawn.reshape(heldout.shape)), 0, 255)
    for source in sampling.LATENT_SOURCES:
        sampling.sample_run(run, out / source, sampling.SampleSettings(n_chains=n, latents=source), seed=seed,
                            overwrite=True, quiet=True)
        images[source] = np.clip(np.load(out / source / "samples.npy"), 0, 255)
    return {"frechet": {k: float(metrics.random_feature_frechet(v, heldout)) for k, v in images.items()},
            "pixel_sd": {k: float(np.asarray(v).std()) for k, v in images.items()},
            "heldout_pixel_sd": float(heldout.std()),
            "latent_norm_median": float(np.median(np.linalg.norm(latents, axis=1))),
            "latent_dim": int(config.latent_dim)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="a finished `gcnjax abp train` run")
    p.add_argument("--heldout", required=True, type=Path, help="faces the run never learned from (a folder)")
    p.add_argument("--train", required=True, type=Path, help="the run's training faces (a folder)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    size = json.loads((args.run / "config.json").read_text())["observed_shape"][1]
    heldout = gdata.load_images(args.heldout, size=size)
    scores = score_samples(args.run, heldout, gdata.load_images(args.train, size=size), args.out, args.seed)
    print(f"{args.run}: {len(heldout)} images per row against {len(heldout)} held-out faces ({args.heldout}); "
          f"training latents' norm median {scores['latent_norm_median']:.1f} (N(0, I_{scores['latent_dim']}): "
          f"{np.sqrt(scores['latent_dim']):.1f})")
    print(f"| images | Fréchet distance (random features) | pixel sd (held-out faces: {scores['heldout_pixel_sd']:.1f}) |")
    print("|---|---|---|")
    for key, label in SETS.items():
        print(f"| {label} | {scores['frechet'][key]:.4g} | {scores['pixel_sd'][key]:.1f} |")


if __name__ == "__main__":
    main()
