"""Object pattern synthesis from a few aligned images (Xie et al. 2016).

The paper's 7 egret images: a descriptor with a fully connected top filter,
30 Langevin steps per iteration, one persistent chain per observed image.

    python experiments/object_synthesis.py --data ../shared/data/objects/egret --out runs/egret
    python experiments/object_synthesis.py --full ...     # 224×224, the authors' size (GPU)
"""

import argparse
import dataclasses
import json
from pathlib import Path

from gcnjax import data as gdata
from gcnjax import presets
from gcnjax.train import RunConfig
from gcnjax.synthesis import learn_descriptor


def config(full: bool, iterations=None):
    # CPU size: 64×64 images and 600 iterations (30 Langevin steps for each of
    # the 7 chains make an iteration ~25× the cost of a texture iteration).
    cfg = presets.object_pattern() if full else dataclasses.replace(
        presets.object_pattern(), image_size=(64, 64), n_iterations=600,
        run=RunConfig(image_every=50, checkpoint_every=50))
    return cfg if iterations is None else dataclasses.replace(cfg, n_iterations=iterations)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of object images (the egrets)")
    parser.add_argument("--out", type=Path, default=Path("runs/egret"))
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--iterations", type=int, help="learning iterations (default: 600, or the preset's with --full)")
    args = parser.parse_args()
    cfg = config(args.full, args.iterations)
    images = gdata.load_images(args.data, size=cfg.image_size, channels=cfg.channels)
    cfg = dataclasses.replace(cfg, n_chains=len(images))
    result = learn_descriptor(cfg, images, args.out, title="Object patterns: egret", source=args.data, overwrite=True)
    last = {k: float(v[-1]) for k, v in result["history"].items() if k in ("f_data", "f_samples")}
    summary = {"images": len(images), "iterations": cfg.n_iterations, "seconds": result["seconds"], **last}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
