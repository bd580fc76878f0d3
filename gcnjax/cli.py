"""The ``gcnjax`` command line.

    gcnjax demo                         learn a texture from a bundled image
    gcnjax descriptor --preset texture --data IMAGE_OR_FOLDER --out DIR
    gcnjax descriptor --preset shortrun --out DIR   short-run EBM on bundled 32×32 photo tiles
    gcnjax theory --run DIR --out DIR   the auto-encoding check on a learned model
    gcnjax coop --data FOLDER_OR_fashion-mnist --out DIR   cooperative descriptor + generator

User errors (bad paths, bad values, unreadable images, diverged chains) are
printed as one line naming the input and the fix, with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

__all__ = ["main", "load_data"]


def load_data(spec: str, size=None, channels: int = 3, crop=None):
    """Images from ``spec``: an image file, a folder of images,
    ``skimage:NAME`` for a bundled texture (brick, grass, gravel),
    ``skimage:photos`` for tiles of ``size`` cut from scikit-image's bundled
    colour photos, or ``fashion-mnist[:N]`` (the first N training images of
    Debian's Fashion-MNIST, zero-padded or resized to ``size``); resized to
    ``size`` and then centre-cropped to ``crop`` where given."""
    from gcnjax import data as gdata

    if spec == "skimage:photos":
        return gdata.bundled_photo_tiles(size or 32, channels=channels)
    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        return _fashion_mnist(spec, size, channels)
    if spec.startswith("skimage:"):
        return gdata.bundled_texture(spec.split(":", 1)[1], size=size, channels=channels, crop=crop)
    return gdata.load_images(spec, size=size, channels=channels, crop=crop)


def _fashion_mnist(spec: str, size, channels: int):
    import numpy as np

    from gcnjax import data as gdata

    limit = None
    if ":" in spec:
        text = spec.split(":", 1)[1]
        if not text.isdigit() or int(text) < 1:
            raise gdata.DataError(f"fashion-mnist:N needs a whole number N >= 1 of images, got {spec!r}.")
        limit = int(text)
    images, _ = gdata.load_fashion_mnist(limit=limit)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        dh, dw = h - 28, w - 28
        if dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0:  # pad, as is usual for 32×32 nets
            images = np.pad(images, ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2), (0, 0)))
        elif (h, w) != (28, 28):
            images = np.stack([gdata._resize(im, (h, w)) for im in images])
    return np.repeat(images, 3, axis=-1) if channels == 3 else images


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


_MODEL_FLAGS = ("iterations", "image_size", "chains", "steps", "delta", "lr", "seed", "checkpoint_every",
                "on_divergence", "filters")


def _apply_overrides(config, args):
    from gcnjax.langevin import LangevinConfig

    changes, run = {}, {}
    if args.image_size:
        changes["image_size"] = (args.image_size, args.image_size)
    if args.iterations:
        changes["n_iterations"] = args.iterations
        run["image_every"] = max(1, min(config.run.image_every, args.iterations // 6 or 1))
        run["checkpoint_every"] = max(1, min(config.run.checkpoint_every, args.iterations))
    if args.chains:
        changes["n_chains"] = args.chains
    if args.lr:
        changes["learning_rate"] = args.lr
    if args.seed is not None:
        changes["seed"] = args.seed
    if getattr(args, "gray", False):
        changes["channels"] = 1
    if getattr(args, "filters", None):
        from gcnjax.presets import shortrun_layers

        if getattr(args, "preset", None) != "shortrun":
            raise ValueError("--filters sets n_f of the short-run net; use it with --preset shortrun.")
        changes["layers"] = shortrun_layers(args.filters)
    if args.delta:
        old = config.langevin
        changes["langevin"] = LangevinConfig.from_delta(args.delta, args.steps or old.n_steps, unroll=old.unroll)
    elif args.steps:  # keep the step and noise as they are (a decoupled chain stays decoupled)
        changes["langevin"] = dataclasses.replace(config.langevin, n_steps=args.steps)
    if args.checkpoint_every is not None:
        run["checkpoint_every"] = args.checkpoint_every
    if args.on_divergence:
        run["on_divergence"] = args.on_divergence
    if run:
        changes["run"] = dataclasses.replace(config.run, **run)
    return dataclasses.replace(config, **changes)


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("--out", type=Path, help="run directory to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write over an existing run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its own settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--iterations", type=_positive_int, help="learning iterations")
    p.add_argument("--image-size", type=_positive_int, help="resize observed images to this square size")
    p.add_argument("--chains", type=_positive_int, help="synthesized images (chains) per iteration")
    p.add_argument("--steps", type=_positive_int, help="Langevin steps per iteration")
    p.add_argument("--delta", type=_positive_float, help="Langevin step delta (x += delta²/2 (∇f − x/σ²) + delta ξ)")
    p.add_argument("--lr", type=_positive_float, help="learning rate")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints (0: none)")
    p.add_argument("--on-divergence", choices=["stop", "retry"],
                   help="when chains diverge: stop at the last good checkpoint, or retry with a smaller step")


def _learn(config, data_spec, out, title, args):
    from gcnjax.synthesis import learn_descriptor

    images = load_data(**data_spec)
    result = learn_descriptor(config, images, out, title=title, source=data_spec["spec"], data_spec=data_spec,
                              overwrite=args.overwrite, resume=args.resume, quiet=args.quiet)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"synthesized images: {result['synthesized']}")
    print(f"report:             {result['report']}")
    return 0


def _resume(args):
    """Continue the run in ``args.out`` with its own saved settings."""
    from gcnjax.descriptor import DescriptorConfig
    from gcnjax.train import RunDir

    given = [f"--{name.replace('_', '-')}" for name in _MODEL_FLAGS if getattr(args, name, None) is not None]
    if given or getattr(args, "gray", False):
        raise ValueError(
            f"--resume continues a run with its own saved settings; drop {', '.join(given) or '--gray'}."
        )
    if args.out is None:
        raise ValueError("--resume needs --out: the run directory to continue.")
    saved = RunDir(args.out, resume=True).load_config()
    if not saved.get("data_spec"):
        raise ValueError(f"{str(args.out)!r} does not record how its data was loaded, so it cannot be resumed.")
    try:
        config = DescriptorConfig.from_dict(saved["config"])
    except (TypeError, KeyError) as err:
        raise ValueError(f"{str(args.out)!r} is not a descriptor run ({err}); cannot resume it here.") from None
    spec = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved["data_spec"].items()}
    return _learn(config, spec, args.out, saved.get("title", "Descriptor"), args)


def cmd_demo(args) -> int:
    from gcnjax import presets

    if args.resume:
        args.out = args.out or Path("runs") / f"demo-{args.texture}"
        return _resume(args)
    config = _apply_overrides(presets.demo(), args)
    out = args.out or Path("runs") / f"demo-{args.texture}"
    side = config.image_size[0]
    print(f"gcnjax demo: learning a texture model from scikit-image's '{args.texture}' "
          f"({side}×{side} crop, {config.n_iterations} iterations) ...")
    # Halve the 512×512 texture, then crop: stones and bricks keep a size the
    # net's 33-pixel receptive field sees whole.
    spec = dict(spec=f"skimage:{args.texture}", size=(2 * side, 2 * side), crop=config.image_size,
                channels=config.channels)
    return _learn(config, spec, out, f"Texture synthesis: {args.texture}", args)


def cmd_descriptor(args) -> int:
    from gcnjax import presets

    if args.resume:
        return _resume(args)
    config = _apply_overrides(presets.get(args.preset), args)
    if args.data is None and args.preset == "shortrun":
        args.data = "skimage:photos"  # bundled: works with no dataset installed
    if args.out is None or args.data is None:
        raise ValueError("--data and --out are required: the images to learn from and the run directory to write.")
    spec = dict(spec=args.data, size=config.image_size, crop=None, channels=config.channels)
    return _learn(config, spec, args.out, f"Descriptor ({args.preset}): {Path(args.data).name}", args)


def cmd_theory(args) -> int:
    from gcnjax.synthesis import check_run_autoencoding

    if args.out is None:
        raise ValueError("--out is required: the run directory to write.")
    result = check_run_autoencoding(args.run, args.out, n_noise_starts=args.starts, n_steps=args.steps,
                                    seed=args.seed, overwrite=args.overwrite)
    print(f"largest residual ||x − σ²∇f(x)||/||x||: {result['max_residual']:.2e} "
          f"(median {result['median_residual']:.2e}); distinct activation patterns: "
          f"{result['distinct_patterns']} of {result['n_starts']} starts")
    print(f"report: {result['report']}")
    return 0


def cmd_coop(args) -> int:
    from gcnjax import coop
    from gcnjax.langevin import LangevinConfig
    from gcnjax.train import RunDir

    if args.out is None:
        raise ValueError("--out is required: the run directory to write.")
    if args.resume:
        given = [f"--{n.replace('_', '-')}" for n in ("data", "image_size", "gray", "iterations", "chains", "steps",
                                                       "delta", "lr", "gen_lr", "infer_steps", "latent_dim", "seed")
                 if getattr(args, n, None) not in (None, False)]
        if given:
            raise ValueError(f"--resume continues a run with its own saved settings; drop {', '.join(given)}.")
        saved = RunDir(args.out, resume=True).load_config()
        try:
            config = coop.CoopConfig.from_dict(saved["config"])
        except (TypeError, KeyError) as err:
            raise ValueError(f"{str(args.out)!r} is not a cooperative run ({err}); cannot resume it here.") from None
        spec = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved["data_spec"].items()}
    else:
        if args.data is None:
            raise ValueError("--data is required: a folder of images, or fashion-mnist[:N].")
        fashion = args.data.startswith("fashion-mnist")
        channels = 1 if (args.gray or fashion) else 3
        size = args.image_size or (28 if fashion else 64)
        config = coop.coop_config(size, channels)
        d, g, changes = config.descriptor, config.generator, {}
        if args.chains:
            d = dataclasses.replace(d, n_chains=args.chains, batch_size=args.chains)
        if args.steps or args.delta:
            old = d.langevin
            d = dataclasses.replace(d, langevin=LangevinConfig.from_delta(args.delta or old.noise_scale,
                                                                          args.steps or old.n_steps))
        if args.lr:
            d = dataclasses.replace(d, learning_rate=args.lr)
        if args.gen_lr:
            g = dataclasses.replace(g, learning_rate=args.gen_lr)
        if args.infer_steps is not None:
            g = dataclasses.replace(g, langevin=dataclasses.replace(g.langevin, n_steps=args.infer_steps))
        if args.latent_dim:
            g = dataclasses.replace(g, latent_dim=args.latent_dim)
        if args.iterations:
            run = config.run
            changes["n_iterations"] = args.iterations
            changes["run"] = dataclasses.replace(run, image_every=max(1, min(run.image_every, args.iterations // 6 or 1)),
                                                 checkpoint_every=max(1, min(run.checkpoint_every, args.iterations)))
        if args.seed is not None:
            changes["seed"] = args.seed
        config = dataclasses.replace(config, descriptor=d, generator=g, **changes)
        spec = dict(spec=args.data, size=(size, size), crop=None, channels=channels)
    images = load_data(**spec)
    result = coop.learn_coop(config, images, args.out, title=f"Cooperative training: {spec['spec']}",
                             source=spec["spec"], data_spec=spec, overwrite=args.overwrite, resume=args.resume,
                             quiet=args.quiet)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"generator proposals: {result['proposals']}")
    print(f"revised samples:     {result['revised']}")
    print(f"report:              {result['report']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gcnjax", description="Generative ConvNets in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="learn a texture from a bundled image and synthesize new ones")
    p.add_argument("--texture", default="brick", choices=["brick", "grass", "gravel"])
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("descriptor", help="learn a descriptor (texture / object / CD) from images")
    p.add_argument("--preset", default="texture", choices=["texture", "object", "cd", "demo", "shortrun"])
    p.add_argument("--data", help="an image file, a folder of images, skimage:brick|grass|gravel, skimage:photos "
                                  "(32×32 tiles of bundled photos; the shortrun default) or fashion-mnist[:N]")
    p.add_argument("--filters", type=_positive_int, help="n_f of the short-run net (--preset shortrun; 64)")
    p.add_argument("--gray", action="store_true", help="learn from gray images (one channel)")
    _add_common(p)
    p.set_defaults(func=cmd_descriptor)

    p = sub.add_parser("theory", help="auto-encoding check: descend E to local minima of a learned model")
    p.add_argument("--run", type=Path, required=True, help="a finished descriptor run directory")
    p.add_argument("--starts", type=_positive_int, default=6, help="number of noise starting points")
    p.add_argument("--steps", type=_positive_int, default=200, help="gradient-descent steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_theory)

    p = sub.add_parser("coop", help="cooperative training of a descriptor and a generator (CoopNets)")
    p.add_argument("--data", help="a folder of images, or fashion-mnist[:N] (the first N training images)")
    p.add_argument("--gray", action="store_true", help="learn from gray images (one channel)")
    p.add_argument("--out", type=Path, help="run directory to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write over an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--iterations", type=_positive_int, help="learning iterations (300)")
    p.add_argument("--image-size", type=_positive_int, help="square image size (64; 28 for fashion-mnist)")
    p.add_argument("--chains", type=_positive_int, help="proposals and observed images per iteration (64)")
    p.add_argument("--steps", type=_positive_int, help="descriptor Langevin revision steps (15)")
    p.add_argument("--delta", type=_positive_float, help="descriptor Langevin step delta (0.002)")
    p.add_argument("--lr", type=_positive_float, help="descriptor learning rate (Adam, 0.007)")
    p.add_argument("--gen-lr", type=_positive_float, help="generator learning rate (Adam, 1e-4)")
    p.add_argument("--infer-steps", type=int, help="latent inference steps of the generator from z (0)")
    p.add_argument("--latent-dim", type=_positive_int, help="dimension of z (100)")
    p.add_argument("--seed", type=int, help="random seed")
    p.set_defaults(func=cmd_coop)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from gcnjax.data import DataError
    from gcnjax.langevin import ChainDivergedError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, FileExistsError, FileNotFoundError, ChainDivergedError) as err:
        print(f"gcnjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gcnjax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
