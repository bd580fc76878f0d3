"""Fresh chains against learning's: does a learned descriptor have modes its
persistent chains never visited?

For each finished descriptor run (which records the mean learned energy of
its observed data and of its final chains, ``energies.json``), samples
``--chains`` fresh chains with ``gcnjax sample`` (:func:`gcnjax.sampling.sample_run`)
from two starts (``--starts``), the run's own (``chain_init``) and N(0, s²) noise with
``s = --start-scale`` in model units (default 50: about the standard
deviation of a photograph's pixels, 0..255 minus the mean; a start far from
the reference's mean), each for as many Langevin steps as one of the run's
persistent chains took over its whole learning (``n_iterations × n_steps``,
at most ``--max-steps``), and tabulates the three mean energies with
:func:`gcnjax.sampling.spurious_mode`'s verdict and, for runs that recorded
them, the first-layer Gram distances (:func:`gcnjax.sampling.unlike_data`);
with ``--texture`` also
the samples' spectrum and Gram distances and their baselines
(``experiments/texture_synthesis.py``, the run's observed image reloaded
from its ``data_spec``). Writes ``OUT/FOLDER-NAME-START/``
(each sampling job) and ``OUT/summary.json``.

    python -m experiments.fresh_chains --runs runs/textures/ivy runs/egret --out runs/fresh-chains
    python -m experiments.fresh_chains --texture --runs runs/textures/ivy --out runs/fresh-chains-ivy
"""

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.texture_synthesis import scores
from gcnjax.data import load_data_spec
from gcnjax.sampling import SampleSettings, sample_run, spurious_mode, unlike_data
from gcnjax.synthesis import load_run
from gcnjax.train import RunDir, write_atomic


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished descriptor runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--start-scale", type=float, default=50.0)
    parser.add_argument("--starts", nargs="+", choices=["own", "noise"], default=["own", "noise"],
                        help="the run's own start, noise of --start-scale, or both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--texture", action="store_true",
                        help="also score the samples as textures (experiments/texture_synthesis.py's distances)")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        if not (run / "energies.json").is_file():
            raise SystemExit(f"{str(run)!r} has no energies.json: learn it again with this version of gcnjax.")
        config = load_run(run)[0]
        steps = min(args.max_steps, config.total_iterations * config.langevin.n_steps)
        own = config.chain_init if config.chain_init != "data" else "zeros"  # a job holds no observed images
        starts = {"own": (own, None), "noise": ("noise", args.start_scale)}
        for start, start_scale in (starts[s] for s in args.starts):
            name = f"{run.parent.name}-{run.name}-{start}"  # runs of one name in different folders
            settings = SampleSettings(n_chains=args.chains, steps=steps, start=start, start_scale=start_scale)
            result = sample_run(run, args.out / name, settings, seed=args.seed, overwrite=True, quiet=True)
            e = result["energies"]
            rows.append({"run": str(run), "start": start, "start_scale": start_scale,
                         "steps": steps, **e, "spurious_mode": spurious_mode(e)})
            print(f"{name}: observed {e['observed']:.4g}, learning's chains {e['chains']:.4g}, fresh chains "
                  f"{e['samples']:.4g}{' (spurious mode)' if rows[-1]['spurious_mode'] else ''}", flush=True)
            if result.get("first_layer"):
                g = rows[-1]["first_layer"] = result["first_layer"]
                print(f"{name}: first-layer Gram distance to the data's: fresh chains {g['samples']:.4g}, learning's "
                      f"chains {g['chains']:.4g}, white noise {g['white_noise']:.4g}"
                      f"{' (unlike the data)' if unlike_data(g) else ''}", flush=True)
            if args.texture:
                images = load_data_spec(RunDir.read_config(run)["data_spec"])
                rows[-1]["texture_scores"] = scores(images, run, args.seed, np.load(result["samples"]))
                print(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows[-1]["texture_scores"].items()))
    write_atomic(args.out / "summary.json", json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
