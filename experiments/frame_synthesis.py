"""FRAME with fixed filters (Lu, Zhu, Wu; PAPERS §2): texture and object synthesis.

Only the top weights on a frozen Gabor/DoG filter bank are learned
(gcnjax.frame); sampling and learning are the descriptor's.

    python experiments/frame_synthesis.py --data skimage:brick --kind texture --gray --out runs/frame/brick
    python experiments/frame_synthesis.py --data ../shared/data/textures/ivy.jpg --kind texture --out runs/frame/ivy
    python experiments/frame_synthesis.py --data ../shared/data/textures/ivy.jpg --thresholds 0 0.5 0.8 0.95 \
        --colour opponent --out runs/frame/ivy-potentials
    python experiments/frame_synthesis.py --data ../shared/data/objects/egret --kind object --out runs/frame/egret
"""

import argparse
import time
from pathlib import Path

from gcnjax import frame, presets
from gcnjax.cli import load_data
from gcnjax.data import PixelScale


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="image, folder, or skimage:brick|grass|gravel")
    parser.add_argument("--kind", choices=["texture", "object"], default="texture")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--load-size", type=int, help="resize to this before the centre crop (textures)")
    parser.add_argument("--gray", action="store_true")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--chains", type=int, help="synthesized images (default: 4 texture, 7 object)")
    parser.add_argument("--steps", type=int, help="Langevin steps per iteration (default: 10 texture, 30 object)")
    parser.add_argument("--top", choices=["dense", "sum"], help="default: sum (texture), dense (object)")
    parser.add_argument("--nonlinearity", choices=frame.NONLINEARITIES, default="abs")
    parser.add_argument("--orientations", type=int, default=6)
    parser.add_argument("--sizes", type=int, nargs="+", default=[7, 11, 15])
    parser.add_argument("--thresholds", type=float, nargs="+", metavar="Q",
                        help="threshold each response at these quantiles of the observed responses (e.g. 0 0.5 0.8 "
                             "0.95): a piecewise-linear potential per filter instead of one weight")
    parser.add_argument("--colour", choices=frame.COLOURS, default="rgb",
                        help="filter R, G, B, or the opponent channels (luminance, red-green, yellow-blue)")
    args = parser.parse_args()

    channels = 1 if args.gray else 3
    side = args.image_size
    if args.kind == "texture":
        load = dict(size=(args.load_size,) * 2 if args.load_size else None, crop=(side, side))
    else:
        load = dict(size=(side, side))
    images = load_data(args.data, channels=channels, **load)
    overrides = dict(channels=channels, image_size=(side, side), n_iterations=args.iterations)
    if args.lr:
        overrides["learning_rate"] = args.lr
    if args.chains:
        overrides["n_chains"] = args.chains
    if args.steps:
        from gcnjax.langevin import LangevinConfig

        overrides["langevin"] = LangevinConfig.from_delta(0.3, args.steps)
    config = presets.frame(args.kind, **overrides)
    model_scale = PixelScale(config.pixel_scale).fit(images).to_model(images)
    net = frame.filter_bank_net(args.top or config.top, sizes=tuple(args.sizes), n_orientations=args.orientations,
                                nonlinearity=args.nonlinearity, colour=args.colour,
                                threshold_quantiles=args.thresholds, images=model_scale)
    t0 = time.perf_counter()
    result = frame.learn_frame(config, net, images, args.out, title=f"FRAME {args.kind}: {args.data}",
                               source=args.data, overwrite=True)
    print(f"{time.perf_counter() - t0:.0f} s; report: {result['report']}")


if __name__ == "__main__":
    main()
