"""Contrastive divergence tends to reconstruct the observed images (Xie et al. 2016).

Learns a descriptor by CD-k (one chain starts at each observed image of the
batch, k = 10 steps, δ = 0.5) on the codebook images (rose, hummingbirds).
CD's gradient vanishes when k Langevin steps leave the observed images where
they are, i.e. when x ≈ x − (δ²/2)(x/σ² − ∇f(x)), that is x ≈ σ²∇f(x): the
model auto-encodes the observed images, σ²∇f(x) being the reconstruction of x by
the filters its active units select. The report gives the relative error
||x − σ²∇f(x)|| / ||x|| at the observed images under the initial and the
CD-learned model, the reconstructions, and how far the CD chains moved.

Whether the auto-encoding is of the observed images or of any image: the
same error of the learned model at images it never saw, the observed images
mirrored left to right (every local statistic kept, the arrangement new) and,
with --unseen, the images of another folder (e.g. the hummingbirds).

    python experiments/contrastive_divergence.py --data ../shared/data/codebook/rose \
        --unseen ../shared/data/codebook/hummingbird --out runs/cd-rose
"""

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax import presets
from gcnjax.train import RunConfig
from gcnjax.synthesis import learn_descriptor


def config(full: bool, iterations=None, seed: int = 0):
    cfg = presets.contrastive_divergence() if full else dataclasses.replace(
        presets.contrastive_divergence(), image_size=(96, 96), n_iterations=1500,
        run=RunConfig(image_every=250, checkpoint_every=250))
    return dataclasses.replace(cfg, seed=seed, n_iterations=iterations or cfg.n_iterations)


def reconstruction(net, params, sigma, x):
    """σ²∇f(x) and its relative error ||x − σ²∇f(x)|| / ||x||, per image."""
    grad_f = jax.vmap(jax.grad(lambda xi: net.apply(params, xi[None])[0]))(x)
    recon = sigma**2 * grad_f
    flat = lambda a: np.asarray(a).reshape(len(a), -1)
    return recon, np.linalg.norm(flat(x) - flat(recon), axis=1) / np.linalg.norm(flat(x), axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of images (rose or hummingbird)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--iterations", type=int, help="learning iterations (default: 1500, or the preset's with --full)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (initial weights, noise, batch order)")
    parser.add_argument("--unseen", help="folder of images the model never sees, to score its auto-encoding at")
    args = parser.parse_args()

    cfg = config(args.full, args.iterations, args.seed)
    images = gdata.load_images(args.data, size=cfg.image_size, channels=cfg.channels)
    result = learn_descriptor(cfg, images, args.out, title=f"Contrastive divergence: {Path(args.data).name}",
                              source=args.data, overwrite=True)
    scale, net, state = result["scale"], result["net"], result["state"]
    observed = jnp.asarray(scale.to_model(images))
    initial = D.init_state(jax.random.fold_in(jax.random.key(cfg.seed), 0), cfg, net, observed).params  # the run's start
    recon_before, err_before = reconstruction(net, initial, cfg.sigma, observed)
    recon_after, err_after = reconstruction(net, state.params, cfg.sigma, observed)
    mirrored = observed[:, :, ::-1, :]
    recon_mirrored, err_mirrored = reconstruction(net, state.params, cfg.sigma, mirrored)
    unseen = err_unseen = None
    if args.unseen:
        unseen = gdata.load_images(args.unseen, size=cfg.image_size, channels=cfg.channels)
        recon_unseen, err_unseen = reconstruction(net, state.params, cfg.sigma, jnp.asarray(scale.to_model(unseen)))
    # The last chains started at the last iteration's batch: all the images,
    # in their order, when there are at most batch_size of them.
    started = gdata.shuffled_batches(observed, cfg.batch_size, cfg.seed)(cfg.total_iterations - 1)
    flat = lambda a: np.asarray(a).reshape(len(a), -1)
    moved = np.linalg.norm(flat(state.chains) - flat(started), axis=1) / np.linalg.norm(flat(started), axis=1)

    n = min(len(images), 6)
    rows = [images, scale.to_pixels(np.asarray(recon_before)), scale.to_pixels(np.asarray(recon_after)),
            scale.to_pixels(np.asarray(state.chains))]
    gdata.save_image_grid(args.out / "reconstruction.png", np.concatenate([r[:n] for r in rows]), n_cols=n)
    others = [(scale.to_pixels(np.asarray(mirrored)), scale.to_pixels(np.asarray(recon_mirrored)))]
    if unseen is not None:
        others.append((unseen, scale.to_pixels(np.asarray(recon_unseen))))
    m = min(max(len(x) for x, _ in others), 6)
    pad = lambda a: np.concatenate([a[:m], np.full((m - len(a[:m]),) + a.shape[1:], 255.0)])
    gdata.save_image_grid(args.out / "reconstruction_unseen.png",
                          np.concatenate([pad(a) for pair in others for a in pair]), n_cols=m)
    unseen_row = "" if err_unseen is None else (
        f"| ‖x − σ²∇f(x)‖/‖x‖, CD-learned model, {len(unseen)} unseen images ({Path(args.unseen).name}) | "
        f"{err_unseen.mean():.3f} | {err_unseen.max():.3f} |\n")
    with open(args.out / "report.md", "a") as fh:
        fh.write(
            "\n## CD reconstructs the observed images\n\n"
            "Rows: observed x; σ²∇f(x) under the initial model; σ²∇f(x) under the CD-learned model; "
            f"the last CD chains ({cfg.langevin.n_steps} steps from the last batch's x).\n\n"
            "![reconstruction](reconstruction.png)\n\n"
            "| relative error | mean | max |\n|---|---|---|\n"
            f"| ‖x − σ²∇f(x)‖/‖x‖, initial model | {err_before.mean():.3f} | {err_before.max():.3f} |\n"
            f"| ‖x − σ²∇f(x)‖/‖x‖, CD-learned model | {err_after.mean():.3f} | {err_after.max():.3f} |\n"
            f"| ‖x_k − x‖/‖x‖, last CD chains | {moved.mean():.3f} | {moved.max():.3f} |\n"
            f"| ‖x − σ²∇f(x)‖/‖x‖, CD-learned model, the observed images mirrored | {err_mirrored.mean():.3f} | "
            f"{err_mirrored.max():.3f} |\n" + unseen_row +
            "\nImages the model never saw, and σ²∇f under the CD-learned model, row by row: the observed "
            "images mirrored left to right" + ("" if unseen is None else f", the {Path(args.unseen).name} images") +
            ".\n\n![unseen](reconstruction_unseen.png)\n"
        )
    summary = {"images": len(images), "iterations": cfg.n_iterations, "seconds": result["seconds"],
               "autoencoding_error_initial": float(err_before.mean()),
               "autoencoding_error_learned": float(err_after.mean()), "chain_moved": float(moved.mean()),
               "autoencoding_error_mirrored": float(err_mirrored.mean())}
    if err_unseen is not None:
        summary.update(autoencoding_error_unseen=float(err_unseen.mean()), unseen_images=len(unseen),
                       unseen=str(args.unseen))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"auto-encoding error ||x − σ²∇f(x)||/||x||: initial model {err_before.mean():.3f}, "
          f"CD-learned {err_after.mean():.3f} (mirrored {err_mirrored.mean():.3f}"
          + ("" if err_unseen is None else f", unseen {err_unseen.mean():.3f}") + f"); CD chains moved {moved.mean():.3f}")
    print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
