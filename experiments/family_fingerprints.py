"""Small runs of every family through the run engine, and the numbers they end at.

Run it on two commits and compare the JSON: a refactoring that should not
change what is computed must print the same numbers.

    python experiments/family_fingerprints.py --data ../shared/data/faces64 --out runs/fingerprints
"""

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from gcnjax import abp, coop, presets
from gcnjax import generator as G
from gcnjax import multigrid as M
from gcnjax.data import load_data
from gcnjax.langevin import LangevinConfig
from gcnjax.synthesis import learn_descriptor
from gcnjax.train import RunConfig


def fingerprints(faces: np.ndarray, out: Path) -> dict:
    run = RunConfig(log_every=1, image_every=5, checkpoint_every=5)
    res = {}
    cfg = G.GeneratorConfig(net="face32", latent_dim=8, langevin=LangevinConfig.from_delta(0.3, 5), batch_size=10,
                            n_epochs=2, run=run)
    r = abp.learn_generator(cfg, faces[:30], out / "abp", test_observations=faces[30:40], test_rounds=2, quiet=True,
                            overwrite=True)
    res["abp"] = {k: r[k] for k in ("train_mse", "test_mse_abp", "test_mse_pca")}
    res["abp_params"] = float(sum(np.abs(np.asarray(l)).sum() for l in jax.tree_util.tree_leaves(r["state"].params)))
    mcfg = dataclasses.replace(presets.get_multigrid("authors"), grids=(4, 16, 32), width=0.25, batch_size=8,
                               n_iterations=4, langevin=LangevinConfig.from_delta(0.3, 5, noise=False), run=run)
    M.learn_multigrid(mcfg, faces[:16], out / "mg", quiet=True, overwrite=True)
    res["multigrid"] = float(np.abs(np.load(out / "mg" / "synthesized.npy")).sum())
    ccfg = presets.coop(32, 3, width=8, n_iterations=3)
    ccfg = dataclasses.replace(ccfg, run=run, descriptor=dataclasses.replace(
        ccfg.descriptor, n_chains=8, batch_size=8, langevin=dataclasses.replace(ccfg.descriptor.langevin, n_steps=3)))
    h = coop.learn_coop(ccfg, faces[:16], out / "coop", quiet=True, overwrite=True, n_pictures=4)["history"]
    res["coop"] = [float(h["energy_revised"][-1]), float(h["gen_mse"][-1])]
    tcfg = dataclasses.replace(presets.demo(), image_size=(48, 48), n_iterations=4, run=run)
    brick = load_data("skimage:brick", size=(96, 96), channels=1, crop=(48, 48))
    learn_descriptor(tcfg, brick, out / "texture", quiet=True, overwrite=True)
    res["texture"] = float(np.abs(np.load(out / "texture" / "synthesized.npy")).sum())
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a folder of face images (the papers' faces64)")
    p.add_argument("--out", type=Path, default=Path("runs/fingerprints"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    res = fingerprints(load_data(args.data, size=(32, 32), channels=3)[:40], args.out)
    (args.out / "fingerprints.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
