"""Alternating back-propagation on faces, with the command line's defaults:
reconstruction of faces never seen against PCA, recovery of occluded faces,
and learning from incomplete data (PAPERS §4).

    python -m experiments.abp_faces --data ../shared/data/faces64 --out runs/abp-faces

The faces of ``--data`` are split by their index in name order, once and for
all: the first ``--train`` (600) are learned from, the next ``--validation``
(100) choose the params kept (early stopping) and the settings (the
``--select`` stage), the last ``--test`` (100) are scored once, at the end,
by the runs of the ``test`` stage. Every run is a ``gcnjax abp train``
command with the defaults of the command line (only the size, the net, d,
the seed and, in the ``select`` stage, the flags of each configuration are
given), so the numbers are what a user of the defaults gets; ``--flags``
adds flags of ``gcnjax abp train`` to every run of the test and incomplete
stages (a configuration chosen in the select stage, scored on the test
faces: e.g. ``--flags "--sigma 0.5"``), recorded in ``summary.json``.

Stages (``--stages``, in this order):

* ``select``: one run per ``--select NAME=FLAGS`` configuration, trained on
  the training faces with early stopping on the validation faces, scored on
  the validation faces (ABP posterior mode, ABP least-squares fit, PCA at the
  same d fitted on the training faces): ``select.json``.
* ``test``: one run per ``--seeds`` seed with the defaults, on the whole
  folder with ``--holdout`` = the test faces and ``--validation``: its report
  holds the test table; then ``gcnjax abp reconstruct`` (the command's
  default inference) and ``gcnjax abp inpaint`` (occlusions, with the PCA
  completion and the mean fill beside ABP) on the test faces, and the best
  linear fill of the same occlusions (ridge regression on the training
  faces).
* ``samples``: the ``test`` stage's runs sampled, z from the prior N(0, I)
  (the paper's samples) and from the Gaussian fitted to the run's training
  latents, as many images as test faces, scored against the test faces by
  the random-feature Fréchet distance, with the training faces, their mean
  image, the runs' reconstructions of them and PCA's Gaussian of the same d
  beside them (:func:`experiments.abp_prior_samples.score_samples`).
* ``incomplete``: one run per ``--seeds`` seed learned from the training
  faces with pixels missing (``--incomplete-masks``), for the command's
  whole length, as in the paper (no early stopping: a check on new faces
  scores how the generator reconstructs faces it never saw, not how it
  fills the training faces' own missing pixels, and it kept a generator that
  filled them worse on every seed): the recovery of the missing pixels by
  ABP (pasted into the observed ones, and g(z) alone), by PCA learned from
  the same incomplete faces, and by the mean.

``summary.json`` gathers the numbers (mean and standard deviation over the
seeds of the test, samples and incomplete stages). Seeds may be run in
several invocations on the same ``--out`` (``--seeds 1``, later
``--seeds 2``): each stage's rows are gathered there by seed, and the ridge
fills of an earlier invocation on the same split, image size and masks are
read back instead of computed again.
"""

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np

from experiments.abp_prior_samples import SETS, score_samples
from gcnjax import abp, cli, metrics
from gcnjax import data as gdata


def _split(folder: Path, out: Path, sizes):
    """Folders of links to the faces of each part, by index in name order."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in gdata.IMAGE_EXTENSIONS)
    n_train, n_val, n_test = sizes
    if len(paths) < sum(sizes):
        raise SystemExit(f"{folder} has {len(paths)} images, fewer than {sum(sizes)}.")
    paths = paths[:sum(sizes)]
    parts = {"train": paths[:n_train], "validation": paths[n_train:n_train + n_val],
             "test": paths[n_train + n_val:], "train_validation": paths[:n_train + n_val], "all": paths}
    for name, members in parts.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for p in members:
            link = d / p.name
            if not link.exists():
                link.symlink_to(p.resolve())
    return {name: out / name for name in parts}, {
        name: [p.name for p in members][:: max(1, len(members) - 1)] for name, members in parts.items()}


def _refuse_another_setup(earlier, split, out: Path, flags: str = ""):
    """Stop, before anything is written, when ``out`` holds an earlier
    invocation's runs of another split (``--data``, ``--train``,
    ``--validation``, ``--test``) or learned with other ``--flags``: their
    seeds would be gathered with this invocation's, and the split's folders
    of links would mix both."""
    before = earlier.get("split")
    if before is None:
        return
    if shlex.split(earlier.get("flags", "")) != shlex.split(flags):
        raise SystemExit(f"{out} holds runs learned with --flags {earlier.get('flags', '')!r}: give another --out, "
                         f"or the same --flags as before.")
    # The data folder by where it is, however it was written (relative to the working directory).
    same_data = Path(str(before.get("data"))).resolve() == Path(split["data"]).resolve()
    if not same_data or any(before.get(key) != split[key] for key in split if key != "data"):
        shown = ", ".join(f"{key} {before.get(key)}" for key in split)
        raise SystemExit(f"{out} holds runs of another split ({shown}): give another --out, or the same --data, "
                         "--train, --validation and --test as before.")


def _check_train_flags(flags: str, what: str):
    """Stop, before anything is computed, when ``flags`` are not flags of
    ``gcnjax abp train`` (argparse names the bad one): a typo would
    otherwise surface only at the first run, after the ridge fills."""
    try:
        cli.build_parser().parse_args(["abp", "train", "--data", ".", "--out", ".", *shlex.split(flags)])
    except SystemExit as err:
        raise SystemExit(f"{what} {flags!r}: not flags of `gcnjax abp train` (its error above); fix them or "
                         "leave them out.") from err


def _cli(argv):
    print("gcnjax " + shlex.join(str(a) for a in argv), flush=True)
    t = time.perf_counter()
    if cli.main([str(a) for a in argv]) != 0:
        raise SystemExit(f"failed: gcnjax {shlex.join(str(a) for a in argv)}")
    return time.perf_counter() - t


def _numbers(result, keys):
    return {k: result[k] for k in keys if k in result}


HELD_KEYS = ("test_mse_abp", "test_mse_abp_fit", "test_mse_pca", "test_abp_better_fraction",
             "test_abp_fit_better_fraction", "test_abp_minus_pca", "test_abp_fit_minus_pca")


def _run_pca(run_dir: Path, latent_dim: int):
    """The PCA a run fitted on the very faces it learned from (its mirror
    images included where it learned from them): the baseline on equal data."""
    return (np.load(run_dir / "pca_mean.npy"), np.load(run_dir / "pca_components.npy").reshape(latent_dim, -1))


def _score(run_dir: Path, train_images, val_images, rounds=(10, 30)):
    """A run's validation table (ABP mode / fit against PCA fitted on the
    faces the run learned from), with inference of each number of
    ``rounds``."""
    config, scale, net, params, _ = abp.load_generator_run(run_dir)
    pca = _run_pca(run_dir, config.latent_dim)
    scores = {}
    for r in rounds:
        _, held, _, _ = abp.heldout_comparison(config, net, params, scale, scale.to_model(train_images),
                                               val_images, rounds=r, pca=pca)
        scores[f"rounds{r}"] = held
    validation = json.loads((run_dir / "validation.json").read_text())
    return {**scores, "kept_iteration": validation["best_iteration"],
            "validation_rows": [(row["iteration"], row["mse"]) for row in validation["rows"]]}


def _heldout_errors(run_dir: Path, train_images, test_images):
    """The held-out table's per-face errors (rows: ABP posterior mode, ABP
    least-squares fit, PCA) of a finished run, inferred with the library's
    current default rounds and the run's own PCA."""
    config, scale, net, params, _ = abp.load_generator_run(run_dir)
    pca = _run_pca(run_dir, config.latent_dim)
    _, _, _, arrays = abp.heldout_comparison(config, net, params, scale, scale.to_model(train_images),
                                             test_images, pca=pca)
    return arrays["heldout_errors"]


def _spread(values):
    """The seeds' values with their mean and standard deviation."""
    values = [float(v) for v in values]
    mean, sd = metrics.mean_sd(values)
    return {"mean": mean, "sd": sd, "values": values}


def _over_seeds(rows, key):
    """:func:`_spread` of each row's ``key`` (the first entry of a list: a difference and its standard error)."""
    return _spread(r[key][0] if isinstance(r[key], list) else r[key] for r in rows)


def _ridge_recoveries(train, test, specs):
    """The best linear fill of each occlusion of the test faces: ridge
    regression of the missing pixels on the observed ones, fitted on the
    training faces (:func:`gcnjax.abp.ridge_fill`, its ridge by leave-one-out
    there), on the masks ``gcnjax abp inpaint`` draws with its default seed
    (:func:`gcnjax.abp.recovery_masks`); mean absolute error per missing
    value, values in [0, 1]."""
    errors = {}
    for spec, mask in zip(specs, abp.recovery_masks(specs, test.shape)):
        filled, _ = abp.ridge_fill(train, test, mask)
        errors[spec] = float(metrics.recovery_error(test / 255.0, filled / 255.0, mask).mean())
    return errors


def _ridge_recoveries_kept(earlier, split, train, test, specs):
    """``(errors, computed_for)``: :func:`_ridge_recoveries`, or the errors
    of an earlier invocation's summary ``earlier`` when they were computed
    on the same ``split``, at the same image size, with the same list of
    masks (each mask's pixels depend on its place in the list): the fills
    depend on nothing else, and cost minutes per mask at 64².
    ``computed_for`` is the record of that, for the summary's
    ``test_recovery_ridge_of``."""
    computed_for = {"masks": list(specs), "image_size": list(test.shape[1:3])}
    if earlier.get("split") == split and earlier.get("test_recovery_ridge_of") == computed_for:
        return earlier["test_recovery_ridge"], computed_for
    return _ridge_recoveries(train, test, specs), computed_for


def _aggregate_test(rows):
    """The test stage's rows (one per seed) with their mean and spread."""
    out = {"seeds": rows, **{k: _over_seeds(rows, k) for k in (
        "test_mse_abp", "test_mse_abp_fit", "test_mse_pca", "test_abp_better_fraction", "reconstruct_command_mse",
        "reconstruct_command_mse_pca")}}
    # Methods scored on every seed only: seeds merged from an earlier scoring may lack a newer method.
    out["recovery"] = {m: {method: _spread(r["recovery"][m][method] for r in rows)
                           for method in rows[0]["recovery"][m] if all(method in r["recovery"][m] for r in rows)}
                       for m in rows[0]["recovery"]}
    return out


def _aggregate_samples(rows):
    """The samples stage's rows (one per seed) with their mean and spread."""
    return {"seeds": rows, "frechet": {key: _spread(r["frechet"][key] for r in rows)
                                       for key in SETS},
            "latent_norm_median": _over_seeds(rows, "latent_norm_median")}


INCOMPLETE_METHODS = ("abp_pasted", "abp_generated_alone", "pca", "mean")


def _aggregate_incomplete(rows):
    """An incomplete-data stage's rows (one per seed) with their mean and spread."""
    return {"seeds": rows, **{measure: {m: _spread(r[measure][m] for r in rows)
                                        for m in INCOMPLETE_METHODS}
                              for measure in ("missing_values_mae", "whole_image_mae")}}


def _aggregator(key):
    """How the summary's entry ``key`` gathers its seeds' rows, or None for
    an entry without seeds."""
    if key == "test":
        return _aggregate_test
    if key == "samples":
        return _aggregate_samples
    if key.startswith("incomplete_"):
        return _aggregate_incomplete
    return None


def merge_summaries(on_disk, new):
    """``new`` (what this invocation computed) merged into ``on_disk`` (the
    file as it is now: stages and seeds may run in several invocations, some
    at once): a stage's rows are gathered by seed, a seed of ``new``
    replacing the same seed of ``on_disk``, and its mean and spread
    recomputed over all of them; the ``select`` stage's configurations are
    gathered by name; every other entry of ``new`` replaces the file's."""
    merged = dict(on_disk)
    for key, value in new.items():
        aggregate = _aggregator(key)
        if aggregate is not None:
            seeds = {r["seed"]: r for r in on_disk.get(key, {}).get("seeds", []) + value["seeds"]}
            merged[key] = aggregate([seeds[k] for k in sorted(seeds)])
        elif key == "select":
            merged[key] = {**on_disk.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="a folder of face images")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--full", action="store_true", help="64×64 faces, the `face` net, d = 100")
    p.add_argument("--latent-dim", type=int, help="d (default 20, or 100 with --full)")
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--validation", type=int, default=100)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--stages", nargs="*", default=["test", "samples", "incomplete"],
                   choices=["select", "test", "samples", "incomplete"])
    p.add_argument("--select", nargs="*", default=["defaults="],
                   help="configurations of the select stage: NAME=FLAGS (flags of `gcnjax abp train` on top of "
                        "the defaults), e.g. 'sigma0.1=--sigma 0.1 --delta 0.1'")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--flags", default="",
                   help="flags of `gcnjax abp train` on top of the defaults for every run of the test and incomplete "
                        "stages, e.g. '--sigma 0.5' (default: none, the command's defaults)")
    p.add_argument("--score-only", action="store_true",
                   help="test stage: score the existing runs again with the commands' current inference defaults "
                        "(held-out table, reconstruct, inpaint), without training them again")
    p.add_argument("--incomplete-masks", nargs="*", default=["pepper:0.5"])
    p.add_argument("--recovery-masks", nargs="*", default=None,
                   help="occlusions of the test faces (default: pepper 50/70/90%%, blocks of 10 and 15 at 32², "
                        "20 and 30 at 64²)")
    args = p.parse_args()

    size = 64 if args.full else 32
    d = args.latent_dim or (100 if args.full else 20)
    common = ["--image-size", size, "--net", "face" if args.full else "face32", "--latent-dim", d, "--quiet",
              "--overwrite"]
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "summary.json"
    # What earlier invocations wrote (read, never written back: only what this one computes is saved).
    earlier = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    _check_train_flags(args.flags, "--flags")
    test_flags = shlex.split(args.flags)  # on top of the defaults, for every run of the test and incomplete stages
    for spec in args.select if "select" in args.stages else []:
        _check_train_flags(spec.partition("=")[2], f"--select {spec.partition('=')[0]}:")
    _refuse_another_setup(earlier, {"data": str(args.data), "train": args.train, "validation": args.validation,
                                    "test": args.test}, args.out, args.flags)
    folders, ends = _split(args.data, args.out / "split", (args.train, args.validation, args.test))
    summary = {"split": {"data": str(args.data), "train": args.train, "validation": args.validation,
                         "test": args.test, "first_and_last": ends}, "flags": args.flags}
    images = {name: gdata.load_images(folders[name], size=size) for name in ("train", "validation", "test")}

    def save():
        on_disk = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        summary_path.write_text(json.dumps(merge_summaries(on_disk, summary), indent=1))

    if "select" in args.stages:
        chosen = summary.setdefault("select", {})
        for spec in args.select:
            name, _, flags = spec.partition("=")
            run = args.out / "select" / name
            seconds = _cli(["abp", "train", "--data", folders["train_validation"], "--validation",
                            args.validation, *common, *shlex.split(flags), "--out", run])
            chosen[name] = {"flags": flags, "seconds": seconds,
                            **_score(run, images["train"], images["validation"])}
            print(name, json.dumps(chosen[name]), flush=True)
            save()

    if "test" in args.stages:
        masks = args.recovery_masks or ["pepper:0.5", "pepper:0.7", "pepper:0.9",
                                        *(["block:20", "block:30"] if args.full else ["block:10", "block:15"])]
        summary["test_recovery_ridge"], summary["test_recovery_ridge_of"] = _ridge_recoveries_kept(
            earlier, summary["split"], images["train"], images["test"], masks)
        rows = []
        learned_in = {r["seed"]: r.get("seconds") for r in earlier.get("test", {}).get("seeds", [])}
        for seed in args.seeds:
            run = args.out / "test" / f"seed{seed}"
            if args.score_only:
                if not (run / "params.msgpack").exists():
                    raise SystemExit(f"--score-only: {run} holds no finished run; run the test stage without it.")
                seconds = learned_in.get(seed)  # the training time measured when the run was learned
                errors = _heldout_errors(run, images["train"], images["test"])
            else:
                seconds = _cli(["abp", "train", "--data", folders["all"], "--holdout", args.test, "--validation",
                                args.validation, *common, *test_flags, "--seed", seed, "--out", run])
                # The test table of the run's report, recomputed here from its saved errors.
                errors = np.load(run / "heldout_errors.npy")
            row = {"seed": seed, "seconds": seconds, "rounds": abp.RECONSTRUCTION_ROUNDS,
                   "test_mse_abp": float(errors[0].mean()),
                   "test_mse_abp_fit": float(errors[1].mean()), "test_mse_pca": float(errors[2].mean()),
                   "test_abp_better_fraction": float(np.mean(errors[0] < errors[2])),
                   "test_abp_fit_better_fraction": float(np.mean(errors[1] < errors[2])),
                   "test_abp_minus_pca": [float((errors[0] - errors[2]).mean()),
                                          float((errors[0] - errors[2]).std(ddof=1) / np.sqrt(errors.shape[1]))],
                   "kept_iteration": json.loads((run / "validation.json").read_text())["best_iteration"]}
            _cli(["abp", "reconstruct", "--run", run, "--data", folders["test"], "--out", run / "reconstruct_test",
                  "--overwrite"])
            reconstructed = json.loads((run / "reconstruct_test" / "results.json").read_text())
            row["reconstruct_command_mse"] = reconstructed["reconstruction_mse"]
            row["reconstruct_command_mse_pca"] = reconstructed["reconstruction_mse_pca"]
            _cli(["abp", "inpaint", "--run", run, "--data", folders["test"], *sum((["--mask", m] for m in masks), []),
                  "--out", run / "inpaint_test", "--overwrite"])
            row["recovery"] = json.loads((run / "inpaint_test" / "results.json").read_text())
            rows.append(row)
            print(json.dumps(row), flush=True)
            summary["test"] = _aggregate_test(rows)
            save()

    if "samples" in args.stages:
        rows = []
        for seed in args.seeds:
            run = args.out / "test" / f"seed{seed}"
            if not (run / "latents.npy").exists():
                raise SystemExit(f"the samples stage reads the test stage's runs: {run} holds no finished run; "
                                 "run the test stage first (--stages test samples).")
            scores = score_samples(run, images["test"], images["train"], run / "samples_test", seed=seed)
            rows.append({"seed": seed, **scores})
            print("samples", json.dumps(rows[-1]), flush=True)
        summary["samples"] = _aggregate_samples(rows)
        save()

    if "incomplete" in args.stages:
        for spec in args.incomplete_masks:
            name = "incomplete_" + spec.replace(":", "_").replace(".", "p")
            rows = []
            for seed in args.seeds:
                run = args.out / name / f"seed{seed}"
                seconds = _cli(["abp", "train", "--data", folders["train"], "--mask", spec, *common,
                                *test_flags, "--seed", seed, "--out", run])
                missing, whole = np.load(run / "recovery_errors.npy"), np.load(run / "whole_image_errors.npy")
                rows.append({"seed": seed, "seconds": seconds,
                             "missing_values_mae": dict(zip(INCOMPLETE_METHODS, missing.mean(axis=1).tolist())),
                             "whole_image_mae": dict(zip(INCOMPLETE_METHODS, whole.mean(axis=1).tolist()))})
                print(name, json.dumps(rows[-1]), flush=True)
            summary[name] = _aggregate_incomplete(rows)
            save()


if __name__ == "__main__":
    main()
