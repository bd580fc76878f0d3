"""Multi-grid learning of 64×64 faces, inpainting, and single-grid vs
multi-grid at equal compute (PAPERS §5).

    python experiments/multigrid_faces.py ../shared/data/faces64 --out runs/multigrid_faces

Sized for a busy 2-core CPU: a subset of faces, nets at a fraction of the
authors' widths, few Langevin steps per grid. Writes the run directories
(multigrid/, one per single-grid baseline: singlegrid_START_STEPS/), an inpainting run
(inpaint/), and summary.json with the comparison numbers; --results copies
small PNGs for RESULTS.md. The single-grid baselines (``--single-grids``)
model the finest grid alone, their chains from noise or from the multi-grid's
start (each face's mean colour), with as many Langevin steps as all the grids
take or as many as cost the same FLOPs (XLA's cost analysis of one step at
each grid, ``summary.json``'s ``langevin_flops_per_step``), each with its own
Langevin step and learning rate where given (``mean:flops:delta=1.2``); by
default one, from the multi-grid's start at its Langevin FLOPs
(``mean:flops``). ``--delta`` and ``--lr`` set the multi-grid's own Langevin
step and learning rate, so that its settings are searched the same way;
a baseline without ``lr=`` takes the multi-grid's.

The comparison statistic: gcnjax.metrics.random_feature_frechet, the
Fréchet distance between Gaussians fitted to the features of a fixed,
seeded random conv net (the library's trained extractor, the FCD
classifier, knows Fashion-MNIST, not faces, and an Inception-v3 port needs
weights on disk), plus the log power-spectrum distance of gcnjax.metrics. Both are computed against the training faces,
with two references: held-out real faces (what a perfect model would
score) and the chains' start (each face's mean colour, flat images), and
again against the held-out faces, to choose a baseline's settings on.

Inpainting fills a mask of the held-out faces (a centred 32×32 block by
default) with the multi-grid model and, beside it, with PCA (d = 20), ridge
regression of the missing pixels on the observed ones (the best linear fill,
its ridge chosen by leave-one-out on the training faces), the training
faces' mean and the nearest training face, all fitted on the training
faces; the errors are mean absolute errors on the missing pixels (0..255).
Where the error is made: the fill after each grid beside the baselines'
fills read at that grid (``coarse_errors``), and the finer grids started
from the truth's, PCA's and the ridge fill's coarse images
(``refined_from_coarse``).
``--learn-mask`` learns the models for inpainting instead (the conditional
likelihood of the missing pixels, :class:`gcnjax.multigrid.MultigridConfig`'s
``learn_mask``); ``--validation N`` holds the N faces after the training
ones for choosing settings (inpainted and scored as well), the held-out
faces following them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import abp, masks, metrics
from gcnjax import descriptor as D
from gcnjax import multigrid as M
from gcnjax import presets
from gcnjax.metrics import log_spectrum_distance, recovery_error
from gcnjax.train import RunConfig


def inpainting_baselines(train, faces, mask, pca_dim):
    """Fills of the missing pixels (mask 0) of ``faces`` (pixels) by models
    fitted on the ``train`` faces: PCA of ``pca_dim`` components
    (:func:`gcnjax.abp.baseline_recoveries`: the least-squares fit to the
    observed pixels), ridge regression of the missing pixels on the observed
    ones (:func:`gcnjax.abp.ridge_fill`, its ridge chosen by leave-one-out on
    the training faces: the best linear fill), the training faces' mean, and
    the nearest training face on the observed pixels; observed pixels kept.
    Returns ``(fills, ridge)``, the ridge multiple used."""
    fills = abp.baseline_recoveries(abp.pca_fit(train, pca_dim), faces, mask)
    ridge, ridge_info = abp.ridge_fill(train, faces, mask)
    observed = np.broadcast_to(np.asarray(mask) != 0, faces.shape)
    flat_t = train.reshape(len(train), -1).astype(np.float64)
    nearest = []
    for face, seen in zip(faces, observed):
        keep = seen.reshape(-1)
        d = ((flat_t[:, keep] - face.reshape(-1)[keep]) ** 2).sum(axis=1)
        nearest.append(np.where(seen, face, train[int(np.argmin(d))]))
    return {"pca": fills["pca"], "ridge_regression": ridge, "training_mean": fills["mean"],
            "nearest_training_face": np.stack(nearest)}, ridge_info["ridge"]


def scored_inpainting(out, name, train, faces, mask_spec, pca_dim, grids, overwrite):
    """Inpaint ``faces`` under ``mask_spec`` (made for them by
    :func:`gcnjax.masks.from_spec`) with the models in
    ``out/multigrid`` (a run directory ``out/name``) and score the fill
    beside the baselines fitted on ``train`` (:func:`inpainting_baselines`),
    in total and after each of the models' ``grids``. Returns
    ``(scores, fill, baselines, mask)``."""
    mask = masks.from_spec(mask_spec, faces.shape)
    fill = M.inpaint_run(out / "multigrid", faces, mask, out / name, mask_spec=mask_spec, overwrite=overwrite)
    baselines, ridge = inpainting_baselines(train, faces, mask, pca_dim)
    scores = {"mask": mask_spec, "faces": len(faces), "mean_recovery_error": fill["mean_recovery_error"],
              "mean_colour_fill_error": fill["mean_colour_fill_error"],
              "per_image": [float(e) for e in fill["errors"]],
              **{f"{kind}_error": float(recovery_error(faces, x, mask).mean()) for kind, x in baselines.items()},
              "mean_recovery_error_by_grid": fill["mean_recovery_error_by_grid"],
              "baselines_by_grid": {kind: coarse_errors(faces, x, mask, grids) for kind, x in baselines.items()},
              "pca_dim": pca_dim, "ridge_multiple": ridge}
    return scores, fill, baselines, mask


def coarse_errors(faces, fill, mask, grids):
    """The error on the missing pixels of ``fill`` read at each grid: averaged
    over the grid's blocks, up-sampled back (nearest); what a fill gets right
    at that coarseness, comparable with the multi-grid fill after that grid."""
    size = faces.shape[1]
    return {M.grid_key(int(g)): float(recovery_error(
        faces, np.asarray(M.upsample(M.downsample(jnp.asarray(fill, jnp.float32), int(g)), size)), mask).mean())
        for g in grids}


def refined_from_coarse(run_dir, faces, mask, fills):
    """The error on the missing pixels when the multi-grid models refine a
    given fill from a coarse grid on: each ``fills`` image set (pixels)
    down-sampled to each grid but the finest, then the finer grids' chains
    (:func:`gcnjax.multigrid.inpaint` with ``start``). From the truth, it
    measures the finer grids alone; from another method's fill, whether the
    finer grids improve on it."""
    config, scale, nets, params = M.load_multigrid_run(run_dir)
    apply_fns = {g: n.apply for g, n in nets.items()}
    refine = jax.jit(lambda key, params, observed, m, start: M.inpaint(key, config, apply_fns, params, observed,
                                                                        m, scale.range, start=start))
    observed, m = jnp.asarray(scale.to_model(faces)), jnp.asarray(mask, jnp.float32)
    out = {}
    for name, fill in fills.items():
        for g in config.grids[:-1]:
            start = M.downsample(jnp.asarray(scale.to_model(fill)), int(g))
            finest = scale.to_pixels(np.asarray(refine(jax.random.key(0), params, observed, m, start)[
                M.grid_key(config.image_size)]))
            out[f"{name}_from_{M.grid_key(int(g))}"] = float(recovery_error(faces, finest, mask).mean())
    return out


def langevin_flops(config, nets, params, box):
    """FLOPs of one Langevin step (the gradient of the batch's energy in x)
    at each grid of ``config``, batch ``config.batch_size``, from XLA's cost
    analysis of the compiled gradient: ``{grid: flops}``."""
    flops = {}
    for g in config.grids:
        g = int(g)
        x = jnp.zeros((config.batch_size, g, g, config.channels), jnp.float32)
        grad = jax.grad(lambda x, p=params[M.grid_key(g)], f=nets[g].apply: jnp.sum(
            D.energy(f, p, x, config.sigma)))
        cost = jax.jit(grad).lower(x).compile().cost_analysis()
        flops[g] = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    return flops


def single_grid(config, spec, flops):
    """The single-grid model of a ``START:STEPS[:delta=D][:lr=L]`` spec: the
    finest grid alone, chains from ``START`` (``noise`` or ``mean``, the
    multi-grid start), with ``STEPS`` Langevin steps per iteration: a number,
    ``steps`` (as many as all the grids of ``config`` take) or ``flops`` (as
    many as cost the FLOPs of the multi-grid's steps at all its grids,
    ``flops`` by :func:`langevin_flops`); ``delta`` its Langevin step δ
    (step size δ²/2; default the multi-grid's) and ``lr`` its learning rate
    (default the multi-grid's), so that the single grid can be tuned on its
    own."""
    start, _, rest = spec.partition(":")
    steps, *options = rest.split(":") if rest else [""]
    base = M.single_grid_baseline(config)
    if steps == "flops":
        total = config.langevin.n_steps * sum(flops.values())
        steps = max(1, round(total / flops[config.image_size]))
    elif steps in ("steps", ""):
        steps = base.langevin.n_steps
    else:
        steps = int(steps)
    langevin, lr = dataclasses.replace(base.langevin, n_steps=steps), base.learning_rate
    for option in options:
        name, _, value = option.partition("=")
        if name == "delta":
            langevin = langevin.with_delta(float(value))
        elif name == "lr":
            lr = float(value)
        else:
            raise SystemExit(f"--single-grids {spec!r}: unknown option {option!r}; use delta=D or lr=L.")
    return dataclasses.replace(base, start=start, langevin=langevin, learning_rate=lr)


def learned(cfg, train, out, *, reuse, overwrite, title, source):
    """A run of ``cfg`` in ``out``: learned, or with ``reuse`` loaded when
    ``out`` holds a finished run of the same config."""
    if reuse and (out / "params.msgpack").exists():
        config, scale, nets, params = M.load_multigrid_run(out)
        if config != cfg:
            raise SystemExit(f"--reuse: {out} holds a run of another config; drop --reuse or choose another --out.")
        return {"nets": nets, "params": params, "scale": scale, "seconds": None}
    t0 = time.perf_counter()
    res = M.learn_multigrid(cfg, train, out, title=title, source=source, overwrite=overwrite, quiet=True)
    return {"nets": res["nets"], "params": res["state"].params, "scale": res["scale"],
            "seconds": time.perf_counter() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="folder of 64×64 faces (e.g. ../shared/data/faces64)")
    ap.add_argument("--out", default="runs/multigrid_faces")
    ap.add_argument("--results", default=None, help="folder for small PNGs (e.g. experiments/results)")
    ap.add_argument("--faces", type=int, default=160, help="training faces (the first N by name)")
    ap.add_argument("--held-out", type=int, default=64, help="next N faces: inpainting and the real reference")
    ap.add_argument("--validation", type=int, default=0,
                    help="faces after the training ones to choose settings on (inpainted and scored too, as "
                         "summary.json's inpainting_validation); the --held-out faces then follow them")
    ap.add_argument("--iterations", type=int, default=120)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=15, help="Langevin steps per grid")
    ap.add_argument("--width", type=float, default=0.125, help="fraction of the authors' filter counts")
    ap.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the preset's)")
    ap.add_argument("--delta", type=float, default=None,
                    help="Langevin step δ at every grid, step size δ²/2 in pixel units 0..255 (default: the preset's)")
    ap.add_argument("--preset", default="authors", choices=["authors", "paper"])
    ap.add_argument("--mask", default="block:32")
    ap.add_argument("--learn-mask", default=None,
                    help="learn the multi-grid models for inpainting with this mask (e.g. block:32): "
                         "MultigridConfig.learn_mask; default: the paper's learning of whole images")
    ap.add_argument("--inpaint", type=int, default=None,
                    help="held-out faces to inpaint (default: all --held-out of them)")
    ap.add_argument("--pca-dim", type=int, default=20, help="dimension of the PCA baseline of inpainting")
    ap.add_argument("--single-grids", nargs="*", default=["mean:flops"],
                    help="single-grid baselines, START:STEPS[:delta=D][:lr=L] each: START noise or mean (the "
                         "multi-grid's start), STEPS a number, 'steps' (as many as all grids take) or 'flops' (the "
                         "multi-grid's Langevin FLOPs), then optionally its own Langevin step δ and learning rate; "
                         "default mean:flops, equal compute from the same start; none given (--single-grids "
                         "alone): the multi-grid models only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="load the finished runs in --out instead of learning again")
    ap.add_argument("--no-inpainting", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    out = Path(args.out)
    paths = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in gdata.IMAGE_EXTENSIONS)
    first_held = args.faces + args.validation
    need = first_held + args.held_out
    if len(paths) < need:
        raise SystemExit(f"{args.data} holds {len(paths)} images; need {need} (--faces + --validation + --held-out).")
    train = gdata.load_images(paths[:args.faces], size=64)
    validation = gdata.load_images(paths[args.faces:first_held], size=64) if args.validation else None
    held = gdata.load_images(paths[first_held:need], size=64)

    base = presets.get_multigrid(args.preset)
    config = dataclasses.replace(
        base, width=args.width, batch_size=args.batch, n_iterations=args.iterations,
        learning_rate=args.lr or base.learning_rate,
        langevin=dataclasses.replace(base.langevin if args.delta is None else base.langevin.with_delta(args.delta),
                                     n_steps=args.steps, unroll=1),
        run=RunConfig(log_every=5, image_every=max(1, args.iterations // 4), checkpoint_every=args.iterations // 2),
        seed=args.seed, learn_mask=args.learn_mask,
    )
    summary = {"settings": {"faces": args.faces, "validation": args.validation, "held_out": args.held_out,
                            "config": config.to_dict()}}

    results = {}

    def learn_and_sample(name, cfg):
        res = learned(cfg, train, out / name, reuse=args.reuse, overwrite=args.overwrite, title=f"{name} faces",
                      source=args.data)
        # Fresh synthesis after learning: up to 4 batches, started from the training
        # faces' mean colours or from noise, as the model's chains start.
        apply_fns = {g: n.apply for g, n in res["nets"].items()}
        synth = M.make_synthesizer(cfg, apply_fns, res["scale"].range)
        key = jax.random.key(123)
        samples = []
        for i in range(max(1, min(4, len(train) // args.batch))):
            batch = jnp.asarray(res["scale"].to_model(train[i * args.batch:(i + 1) * args.batch]))
            s = synth(jax.random.fold_in(key, i), res["params"], batch)
            samples.append(res["scale"].to_pixels(np.asarray(s[M.grid_key(64)])))
        samples = np.clip(np.concatenate(samples), 0, 255)
        gdata.save_image_grid(out / name / "fresh_samples.png", samples[:16], n_cols=8)
        results[name] = {"seconds": res["seconds"], "samples": samples, "res": res, "steps": cfg.langevin.n_steps}
        print(f"{name}: learned in {res['seconds'] or 0:.0f} s", flush=True)
        return res

    multi = learn_and_sample("multigrid", config)
    flops = langevin_flops(config, multi["nets"], multi["params"], multi["scale"].range)
    summary["settings"]["langevin_flops_per_step"] = {str(g): f for g, f in flops.items()}
    singles = {}
    for spec in args.single_grids:
        name = "singlegrid_" + spec.replace(":", "_").replace("=", "").replace(".", "p")
        cfg = single_grid(config, spec, flops)
        learn_and_sample(name, cfg)
        singles[name] = {"spec": spec, "start": cfg.start, "langevin_steps": cfg.langevin.n_steps,
                         "langevin_step_size": cfg.langevin.step_size, "learning_rate": cfg.learning_rate,
                         "flops_per_iteration_vs_multigrid": cfg.langevin.n_steps * flops[config.image_size] / (
                             config.langevin.n_steps * sum(flops.values()))}
    summary["settings"]["single_grids"] = singles

    flat = np.broadcast_to(train[:64].mean(axis=(1, 2), keepdims=True), train[:64].shape).copy()
    distances = {}
    sets = {"held-out real faces": held, "start: flat mean colours": flat, "multi-grid samples": results[
        "multigrid"]["samples"], **{f"{name} samples": results[name]["samples"] for name in singles}}
    for label, images in sets.items():
        distances[label] = {"random_feature_frechet": metrics.random_feature_frechet(images, train),
                            "log_spectrum_distance": log_spectrum_distance(images, train)}
    summary["distances_to_training_faces"] = distances
    # The same against the held-out faces: what settings are chosen on (the report reads the training faces).
    summary["distances_to_held_out_faces"] = {
        label: {"random_feature_frechet": metrics.random_feature_frechet(images, held),
                "log_spectrum_distance": log_spectrum_distance(images, held)}
        for label, images in sets.items() if label != "held-out real faces"}
    summary["seconds"] = {k: v["seconds"] for k, v in results.items()}

    if args.no_inpainting:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps({k: summary[k] for k in ("distances_to_training_faces", "seconds")}, indent=2))
        return
    n_fill = args.inpaint or len(held)
    if validation is not None:
        summary["inpainting_validation"] = scored_inpainting(
            out, "inpaint_validation", train, validation[:n_fill], args.mask, args.pca_dim, config.grids,
            args.overwrite)[0]
    faces = held[:n_fill]
    summary["inpainting"], fill, baselines, mask = scored_inpainting(
        out, "inpaint", train, faces, args.mask, args.pca_dim, config.grids, args.overwrite)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["inpainting"]["refined_from_coarse"] = refined_from_coarse(
        out / "multigrid", faces, mask, {"truth": faces, "pca": baselines["pca"], "ridge_regression": baselines["ridge_regression"]})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("distances_to_training_faces", "inpainting", "seconds")}, indent=2))

    if args.results:
        dest = Path(args.results)
        dest.mkdir(parents=True, exist_ok=True)
        mg = out / "multigrid"
        shutil.copy(mg / "images" / "pyramid_final.png", dest / "multigrid_faces_pyramid.png")
        shutil.copy(mg / "fresh_samples.png", dest / "multigrid_faces_samples.png")
        for name in singles:
            shutil.copy(out / name / "fresh_samples.png", dest / f"{name}_faces_samples.png")
        gdata.save_image_grid(dest / "multigrid_faces_observed.png", train[:16], n_cols=8)
        rows = np.concatenate([faces[:8], np.where(mask[:8] > 0, faces[:8], 127.5), fill["recovered"][:8],
                               baselines["pca"][:8], baselines["ridge_regression"][:8]])
        gdata.save_image_grid(dest / "multigrid_faces_inpainting.png", rows, n_cols=8)


if __name__ == "__main__":
    main()
