"""Object pattern synthesis from a few aligned images (Xie et al. 2016).

The paper's 7 egret images: a descriptor with a fully connected top filter,
30 Langevin steps per iteration, one persistent chain per observed image.

    python experiments/object_synthesis.py --data ../shared/data/objects/egret --out runs/egret
    python experiments/object_synthesis.py --full ...     # 224×224, the authors' size (GPU)
"""

import argparse
import dataclasses
from pathlib import Path

from gcnjax import data as gdata
from gcnjax import presets
from gcnjax.train import RunConfig
from gcnjax.synthesis import learn_descriptor


def config(full: bool):
    if full:
        return presets.object_pattern()
    # CPU size: 64×64 images and 600 iterations (30 Langevin steps for each of
    # the 7 chains make an iteration ~25× the cost of a texture iteration).
    return dataclasses.replace(presets.object_pattern(), image_size=(64, 64), n_iterations=600,
                               run=RunConfig(image_every=50, checkpoint_every=50))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder of object images (the egrets)")
    parser.add_argument("--out", type=Path, default=Path("runs/egret"))
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    cfg = config(args.full)
    images = gdata.load_images(args.data, size=cfg.image_size, channels=cfg.channels)
    cfg = dataclasses.replace(cfg, n_chains=len(images))
    result = learn_descriptor(cfg, images, args.out, title="Object patterns: egret", source=args.data, overwrite=True)
    print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
