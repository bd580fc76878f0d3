"""The ``gcnjax`` command line.

    gcnjax demo                         learn a texture from a bundled image
    gcnjax descriptor --preset texture --data IMAGE_OR_FOLDER --out DIR
    gcnjax descriptor --preset shortrun --out DIR   short-run EBM on bundled 32×32 photo tiles
    gcnjax theory --run DIR --out DIR   the auto-encoding check on a learned model
    gcnjax abp train --data FOLDER --out DIR     learn a generator by alternating back-propagation
    gcnjax abp reconstruct --run DIR --data FOLDER --out DIR
    gcnjax abp inpaint --run DIR --data FOLDER --mask pepper:0.7 --out DIR
    gcnjax classifier --data IDX_FOLDER train and cache the FCD feature classifier
    gcnjax fcd --a IMAGES --b IMAGES    Fréchet classifier distance of two image sets
    gcnjax stgconvnet --data VIDEO_OR_FOLDER_OR_WAV --out DIR [--variant st|fc_s|fc_s_large]
    gcnjax multigrid --data FOLDER --out DIR [--preset authors|paper]
    gcnjax multigrid inpaint --run DIR --data FOLDER --mask block:32 --out DIR
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
    colour photos, ``fashion-mnist[:N]`` (the first N training images of
    Debian's Fashion-MNIST, zero-padded or resized to ``size``) or
    ``idx:FOLDER`` (the training images of any folder of MNIST-format idx
    files, likewise); resized to ``size`` and then centre-cropped to
    ``crop`` where given."""
    from gcnjax import data as gdata

    if spec == "skimage:photos":
        return gdata.bundled_photo_tiles(size or 32, channels=channels)
    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        return _fashion_mnist(spec, size, channels)
    if spec.startswith("idx:"):
        return _fashion_mnist("fashion-mnist", size, channels, root=spec.split(":", 1)[1])
    if spec.startswith("skimage:"):
        return gdata.bundled_texture(spec.split(":", 1)[1], size=size, channels=channels, crop=crop)
    return gdata.load_images(spec, size=size, channels=channels, crop=crop)


def _fashion_mnist(spec: str, size, channels: int, root=None):
    import numpy as np

    from gcnjax import data as gdata

    limit = None
    if ":" in spec:
        text = spec.split(":", 1)[1]
        if not text.isdigit() or int(text) < 1:
            raise gdata.DataError(f"fashion-mnist:N needs a whole number N >= 1 of images, got {spec!r}.")
        limit = int(text)
    images, _ = gdata.load_fashion_mnist(root or gdata.FASHION_MNIST_DIR, limit=limit)
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


def _add_run_flags(p: argparse.ArgumentParser):
    """--out, --overwrite, --resume, --quiet: the run directory of a learning command."""
    p.add_argument("--out", type=Path, help="run directory to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write over an existing run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, with its own settings "
                        "(--iterations may extend it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_common(p: argparse.ArgumentParser):
    _add_run_flags(p)
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


def _extended(config, args):
    """``config`` run to ``--iterations`` when given: a resumed run may be
    extended (or cut short), nothing else about it may change."""
    if getattr(args, "iterations", None):
        return dataclasses.replace(config, n_iterations=args.iterations)
    return config


def _resume(args):
    """Continue the run in ``args.out`` with its own saved settings."""
    from gcnjax.descriptor import DescriptorConfig

    given = [f"--{name.replace('_', '-')}" for name in _MODEL_FLAGS
             if name != "iterations" and getattr(args, name, None) is not None]
    if given or getattr(args, "gray", False):
        raise ValueError(
            f"--resume continues a run with its own saved settings; drop {', '.join(given) or '--gray'}."
        )
    if args.out is None:
        raise ValueError("--resume needs --out: the run directory to continue.")
    saved = _saved_run(args.out)
    try:
        config = DescriptorConfig.from_dict(saved["config"])
    except (TypeError, KeyError) as err:
        raise ValueError(f"{str(args.out)!r} is not a descriptor run ({err}); cannot resume it here.") from None
    config = _extended(config, args)
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


def load_generator_data(spec: str, net: str, *, size=None, channels=None, limit=None):
    """Observations for a generator: ``(array, rate or None, data_spec)``.

    ``spec`` is what :func:`load_data` reads (a folder of images,
    ``fashion-mnist``, ``idx:FOLDER``, ...), resized to the net's size, or,
    for ``net == "sound"``, a WAV file or folder (cut into clips of the
    sound net's length)."""
    from gcnjax import data as gdata
    from gcnjax import generator as G

    base = G.GENERATOR_NETS[net]()
    shape = base.output_shape()
    if net == "sound":
        clips, rate = gdata.load_sound_clips(spec, shape[0])
        return clips[:limit], rate
    images = load_data(spec, size=size or shape[:2], channels=channels or shape[-1])
    return images[:limit], None


def cmd_abp_train(args) -> int:
    from gcnjax import abp
    from gcnjax import generator as G
    from gcnjax import masks
    from gcnjax.langevin import LangevinConfig
    from gcnjax.train import RunConfig

    if args.out is None or (args.data is None and not args.resume):
        raise ValueError("--data and --out are required: the examples to learn from and the run directory to write.")
    if args.resume:
        saved = _saved_run(args.out)
        spec = saved["data_spec"]
        config = G.GeneratorConfig.from_dict(saved["config"])
    else:
        spec = dict(spec=args.data, net=args.net, size=args.image_size, channels=1 if args.gray else None,
                    limit=args.limit, holdout=args.holdout, validation=args.validation, mask=args.mask,
                    seed=args.seed or 0)
        n_steps, delta = args.steps or 30, args.delta or 0.3
        every = max(1, args.log_every)
        config = G.GeneratorConfig(
            net=args.net, latent_dim=args.latent_dim, sigma=args.sigma,
            langevin=LangevinConfig.from_delta(delta, n_steps), learning_rate=args.lr or 3e-4,
            batch_size=args.batch_size, n_epochs=args.epochs, seed=args.seed or 0,
            out_channels=1 if args.gray else None,
            run=RunConfig(log_every=every, image_every=max(every, args.image_every),
                          checkpoint_every=args.checkpoint_every if args.checkpoint_every is not None else 200))
    data, rate = load_generator_data(spec["spec"], spec["net"], size=spec["size"], channels=spec["channels"],
                                     limit=spec["limit"])
    holdout = spec["holdout"] or 0
    for flag, value in (("--holdout", holdout), ("--validation", spec.get("validation") or 0)):
        if value < 0:
            raise ValueError(f"{flag} must be a number of examples >= 0, got {value}.")
    if holdout >= data.shape[0]:
        raise ValueError(f"--holdout {holdout} leaves no training examples of the {data.shape[0]} loaded; "
                         "hold out fewer.")
    train, test = (data[:-holdout], data[-holdout:]) if holdout else (data, None)
    n_validation = spec.get("validation") or 0
    if n_validation >= train.shape[0]:
        raise ValueError(f"--validation {n_validation} leaves no training examples of the {train.shape[0]} "
                         "left after --holdout; set aside fewer.")
    train, validation = (train[:-n_validation], train[-n_validation:]) if n_validation else (train, None)
    mask = None if not spec["mask"] else masks.from_spec(spec["mask"], train.shape, seed=spec["seed"])
    result = abp.learn_generator(config, train, args.out, mask=mask, mask_spec=spec["mask"],
                                 test_observations=test, validation_observations=validation,
                                 title=f"Generator ({spec['net']}): {Path(spec['spec']).name}",
                                 source=spec["spec"], data_spec=spec, sample_rate=rate, overwrite=args.overwrite,
                                 resume=args.resume, quiet=args.quiet)
    print(f"learned in {result['seconds']:.0f} s; training reconstruction MSE {result['train_mse']:.5f}")
    if "test_mse_abp" in result:
        print(f"held-out reconstruction MSE: ABP {result['test_mse_abp']:.5f} (posterior mode), "
              f"{result['test_mse_abp_fit']:.5f} (least-squares fit); PCA {result['test_mse_pca']:.5f}")
    if "train_recovery_error" in result:
        print(f"recovery error of the missing values: {result['train_recovery_error']:.4f}")
    print(f"report: {result['report']}")
    return 0


def _saved_run(out):
    from gcnjax.train import RunDir

    saved = RunDir(out, resume=True).load_config()
    if not saved.get("data_spec"):
        raise ValueError(f"{str(out)!r} does not record how its data was loaded, so it cannot be resumed.")
    return saved


def cmd_abp_recover(args) -> int:
    from gcnjax import abp

    if args.out is None:
        raise ValueError("--out is required: the directory to write.")
    config, _, _, _, payload = abp.load_generator_run(args.run)
    spec = payload.get("data_spec") or {}
    data, _ = load_generator_data(args.data, config.net, size=spec.get("size"), channels=config.out_channels,
                                  limit=args.limit)
    masks = args.mask if args.command_abp == "inpaint" else []
    if args.command_abp == "inpaint" and not masks:
        raise ValueError("inpaint needs at least one --mask, e.g. --mask pepper:0.7 or --mask block:20.")
    result = abp.recover_run(args.run, data, args.out, masks, rounds=args.rounds, seed=args.seed,
                             overwrite=args.overwrite)
    for name, value in result["errors"].items():
        print(f"{name}: {value:.5f}")
    print(f"report: {result['report']}")
    return 0


def cmd_classifier(args) -> int:
    import dataclasses as dc

    from gcnjax import classifier
    from gcnjax import data as gdata

    config = classifier.ClassifierConfig()
    changes = {k: getattr(args, k) for k in ("epochs", "batch_size", "seed") if getattr(args, k) is not None}
    if args.lr is not None:
        changes["learning_rate"] = args.lr
    config = dc.replace(config, **changes)
    train_x, train_y = gdata.load_fashion_mnist(args.data, "train", limit=args.limit)
    test_x, test_y = gdata.load_fashion_mnist(args.data, "test")
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    config = dc.replace(config, n_classes=max(n_classes, 2))
    print(f"gcnjax classifier: training on {train_x.shape[0]} images of {args.data} "
          f"({config.epochs} epochs) ...")
    params, info = classifier.train_classifier(train_x, train_y, config, quiet=args.quiet)
    test_accuracy = classifier.accuracy(params, config, test_x, test_y)
    path = classifier.save_classifier(params, config, args.out, test_accuracy=test_accuracy,
                                      data=str(args.data), **info)
    print(f"trained in {info['seconds']:.0f} s; train accuracy {info['train_accuracy']:.4f}, "
          f"test accuracy {test_accuracy:.4f} ({test_x.shape[0]} test images)")
    print(f"weights: {path}")
    return 0


def _metric_images(spec: str, size=None):
    """Pixel images (N, H, W, C) 0..255 from a folder/file of images, an .npy
    array of pixels, or a run directory (its synthesized.npy)."""
    import numpy as np

    from gcnjax.data import DataError

    path = Path(spec)
    if path.is_dir() and (path / "synthesized.npy").is_file():
        path = path / "synthesized.npy"
    if path.suffix == ".npy":
        if not path.is_file():
            raise DataError(f"{spec!r} does not exist; check the path.")
        images = np.load(path)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise DataError(f"{spec!r} holds an array of shape {images.shape}; expected (N, H, W, C) pixels.")
        return images.astype(np.float32)
    return load_data(spec, size=size, channels=1)


def cmd_fcd(args) -> int:
    from gcnjax import metrics

    size = (args.image_size, args.image_size) if args.image_size else None
    a, b = _metric_images(args.a, size), _metric_images(args.b, size)
    for name, images in (("--a", a), ("--b", b)):
        if images.shape[0] < 2:
            raise ValueError(f"{name} holds {images.shape[0]} image; the distance needs at least 2 per set.")
    extractor = metrics.classifier_features(args.weights)
    fa, fb = metrics.extract_features(a, extractor), metrics.extract_features(b, extractor)
    print(f"FCD (Fréchet classifier distance): {metrics.frechet_distance_from_features(fa, fb):.4f} "
          f"({fa.shape[0]} vs {fb.shape[0]} images)")
    if args.kid:
        mean, std = metrics.kernel_distance(fa, fb, n_subsets=args.kid_subsets,
                                            subset_size=min(1000, fa.shape[0], fb.shape[0]))
        print(f"KCD (polynomial-kernel MMD², classifier features): {mean:.5f} ± {std:.5f}")
    return 0


def _video_mask(spec: str, shape):
    """A recovery mask from ``pepper:FRACTION`` (that fraction of each frame's
    pixels missing at random) or ``frames:A-B`` / ``frames:I,J,K`` (whole
    frames missing; indices from 0)."""
    from gcnjax import masks

    kind, _, arg = spec.partition(":")
    try:
        if kind == "pepper":
            return masks.salt_and_pepper(shape[1:], float(arg), seed=0)[None]
        if kind == "frames":
            frames = []
            for part in arg.split(","):
                lo, _, hi = part.partition("-")
                frames += list(range(int(lo), int(hi or lo) + 1))
            return masks.missing_frames(shape, frames)
    except ValueError as err:
        raise ValueError(f"--recover {spec!r}: {err}") from None
    raise ValueError(f"unknown --recover {spec!r}; use pepper:FRACTION (e.g. pepper:0.5) or frames:A-B "
                     "(e.g. frames:10-19) or frames:I,J,K.")


def cmd_stgconvnet(args) -> int:
    from gcnjax import data as gdata
    from gcnjax import stg

    if args.out is None or args.data is None:
        raise ValueError("--data and --out are required: the video (file or folder of frames) or WAV to learn "
                         "from, and the run directory to write.")
    size = args.image_size
    overrides = argparse.Namespace(**{**vars(args), "image_size": None})
    if Path(args.data).suffix.lower() == ".wav":
        samples, rate = gdata.load_wav(args.data)
        samples = samples.mean(axis=1, keepdims=True)[: args.samples]  # mono
        config = _apply_overrides(stg.sound_config(samples.shape[0]), overrides)
        result = stg.learn_sound(config, samples, rate, args.out, title=f"Sound: {Path(args.data).name}",
                                 source=str(args.data), overwrite=args.overwrite, quiet=args.quiet)
        print(f"learned in {result['seconds']:.0f} s")
        print(f"synthesized sounds: {', '.join(str(p) for p in result['wavs'])}")
        print(f"report:             {result['report']}")
        return 0
    size = size or (224 if args.variant == "fc_s_large" else 100)
    channels = 1 if args.gray else 3
    video = gdata.load_video(args.data, n_frames=args.frames, size=(size, size), channels=channels)
    config = _apply_overrides(stg.stg_config(args.variant, frames=video.shape[0], image_size=size,
                                             channels=channels), overrides)
    if args.recover:
        mask = _video_mask(args.recover, (1,) + video.shape)
        result = stg.recover_video(config, video, mask, args.out, what=args.recover, fps=args.fps,
                                   overwrite=args.overwrite, quiet=args.quiet)
        print(f"mean |error| on missing values (0..255): recovered {result['recovery_error']:.2f}, "
              f"mean fill {result['mean_fill_error']:.2f}")
        print(f"report: {result['run_dir'] / 'report.md'}")
        return 0
    result = stg.learn_dynamic_texture(config, video, args.out, fps=args.fps, synth_frames=args.synth_frames,
                                       title=f"Dynamic texture ({args.variant}): {Path(args.data).name}",
                                       source=str(args.data), overwrite=args.overwrite, resume=args.resume,
                                       quiet=args.quiet)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"observed vs synthesized: {result['videos']['gif']}")
    print(f"report:                  {result['report']}")
    return 0


def _multigrid_config(args):
    """The preset with the command line's changes (``gcnjax multigrid``)."""
    from gcnjax import presets
    from gcnjax.langevin import LangevinConfig

    config = presets.get_multigrid(args.preset)
    changes, run = {}, {}
    grids = tuple(config.grids)
    if args.grids:
        try:
            grids = tuple(int(g) for g in args.grids.split(","))
        except ValueError:
            raise ValueError(f"--grids must be grid sizes separated by commas (e.g. 4,16,64), got {args.grids!r}.") from None
    if args.image_size:
        if args.grids and grids[-1] != args.image_size:
            raise ValueError(f"--image-size {args.image_size} must equal the last of --grids {args.grids}.")
        # The preset's coarser grids that divide the new size, then the size.
        grids = tuple(g for g in grids if g < args.image_size and args.image_size % g == 0) + (args.image_size,)
    changes["grids"] = grids
    if args.iterations:
        changes["n_iterations"] = args.iterations
        run["image_every"] = max(1, min(config.run.image_every, args.iterations // 4 or 1))
        run["checkpoint_every"] = max(1, min(config.run.checkpoint_every, args.iterations))
    if args.chains:
        changes["batch_size"] = args.chains
    if args.lr:
        changes["learning_rate"] = args.lr
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.width:
        changes["width"] = args.width
    if args.norm:
        changes["norm"] = args.norm
    if getattr(args, "gray", False):
        changes["channels"] = 1
    if args.delta or args.steps:
        old = config.langevin
        delta = args.delta or (2.0 * old.step_size) ** 0.5
        steps = args.steps or old.n_steps
        changes["langevin"] = LangevinConfig.from_delta(delta, steps, noise=old.noise_scale != 0, unroll=old.unroll)
    if args.checkpoint_every is not None:
        run["checkpoint_every"] = args.checkpoint_every
    if args.on_divergence == "retry":
        raise ValueError("--on-divergence retry is not offered for multi-grid runs; a diverged run stops "
                         "at its last good checkpoint (lower --delta or --lr and start again).")
    if run:
        changes["run"] = dataclasses.replace(config.run, **run)
    return dataclasses.replace(config, **changes)


def cmd_multigrid(args) -> int:
    from gcnjax import masks
    from gcnjax.multigrid import MultigridConfig, inpaint_run, learn_multigrid

    if args.action == "inpaint":
        if args.run is None or args.data is None or args.out is None:
            raise ValueError("multigrid inpaint needs --run (a finished multi-grid run), --data and --out.")
        from gcnjax.multigrid import load_multigrid_run

        config = load_multigrid_run(args.run)[0]
        images = load_data(args.data, size=config.image_size, channels=config.channels)
        if args.limit:
            images = images[:args.limit]
        mask = masks.from_spec(args.mask, images.shape, seed=args.seed or 0)
        result = inpaint_run(args.run, images, mask, args.out, mask_spec=args.mask, seed=args.seed or 0,
                             overwrite=args.overwrite)
        print(f"mean recovery error on the missing pixels (0..255): {result['mean_recovery_error']:.2f} "
              f"(mean-colour fill: {result['mean_colour_fill_error']:.2f})")
        print(f"report: {result['report']}")
        return 0
    if args.resume:
        from gcnjax.train import RunDir

        given = [f"--{n.replace('_', '-')}" for n in _MODEL_FLAGS + ("width", "norm", "grids")
                 if n != "iterations" and getattr(args, n, None) is not None]
        if given:
            raise ValueError(f"--resume continues a run with its own saved settings; drop {', '.join(given)}.")
        if args.out is None:
            raise ValueError("--resume needs --out: the run directory to continue.")
        saved = RunDir(args.out, resume=True).load_config()
        try:
            config = MultigridConfig.from_dict(saved["config"])
        except (TypeError, KeyError) as err:
            raise ValueError(f"{str(args.out)!r} is not a multi-grid run ({err}); cannot resume it here.") from None
        config = _extended(config, args)
        spec = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.get("data_spec", {}).items()}
        if not spec:
            raise ValueError(f"{str(args.out)!r} does not record how its data was loaded, so it cannot be resumed.")
        title = saved.get("title", "Multi-grid descriptor")
    else:
        if args.out is None or args.data is None:
            raise ValueError("--data and --out are required: the images to learn from and the run directory to write.")
        config = _multigrid_config(args)
        spec = dict(spec=args.data, size=(config.image_size, config.image_size), crop=None,
                    channels=config.channels, limit=args.limit)
        title = f"Multi-grid descriptor ({args.preset}): {Path(args.data).name}"
    limit = spec.pop("limit", None)
    images = load_data(**spec)
    if limit:
        images = images[:limit]
    result = learn_multigrid(config, images, args.out, title=title, source=spec["spec"],
                             data_spec={**spec, "limit": limit}, overwrite=args.overwrite, resume=args.resume,
                             quiet=args.quiet)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"synthesized images: {result['synthesized']}")
    print(f"report:             {result['report']}")
    return 0


def cmd_coop(args) -> int:
    from gcnjax import coop
    from gcnjax.langevin import LangevinConfig
    from gcnjax.train import RunDir

    if args.out is None:
        raise ValueError("--out is required: the run directory to write.")
    if args.resume:
        given = [f"--{n.replace('_', '-')}" for n in ("data", "image_size", "gray", "chains", "steps",
                                                       "delta", "lr", "gen_lr", "infer_steps", "latent_dim", "seed",
                                                       "clip")
                 if getattr(args, n, None) not in (None, False)]
        if given:
            raise ValueError(f"--resume continues a run with its own saved settings; drop {', '.join(given)}.")
        saved = RunDir(args.out, resume=True).load_config()
        try:
            config = coop.CoopConfig.from_dict(saved["config"])
        except (TypeError, KeyError) as err:
            raise ValueError(f"{str(args.out)!r} is not a cooperative run ({err}); cannot resume it here.") from None
        config = _extended(config, args)
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
        if args.clip:
            d = dataclasses.replace(d, langevin=dataclasses.replace(d.langevin, clip=(-1.0, 1.0)))
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

    p = sub.add_parser("stgconvnet", help="learn a dynamic texture (video) or a sound; synthesize or recover")
    p.add_argument("--data", help="a video (AVI/MP4/GIF), a folder of frames, or a WAV file")
    p.add_argument("--variant", default="st", choices=["st", "fc_s", "fc_s_large"],
                   help="st: stationary in space and time; fc_s(_large): spatially fully connected")
    p.add_argument("--frames", type=_positive_int, default=70, help="use the first N frames (default 70)")
    p.add_argument("--synth-frames", type=_positive_int,
                   help="also synthesize videos of this many frames from noise (may exceed --frames)")
    p.add_argument("--recover", help="recover missing values instead: pepper:FRACTION or frames:A-B")
    p.add_argument("--samples", type=_positive_int, default=8000, help="sounds: use the first N samples")
    p.add_argument("--fps", type=_positive_float, default=10.0, help="frame rate of the written GIF/MP4")
    p.add_argument("--gray", action="store_true", help="learn from gray frames")
    _add_common(p)
    p.set_defaults(func=cmd_stgconvnet)

    p = sub.add_parser("theory", help="auto-encoding check: descend E to local minima of a learned model")
    p.add_argument("--run", type=Path, required=True, help="a finished descriptor run directory")
    p.add_argument("--starts", type=_positive_int, default=6, help="number of noise starting points")
    p.add_argument("--steps", type=_positive_int, default=200, help="gradient-descent steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_theory)

    from gcnjax.generator import GENERATOR_NETS

    abp_parser = sub.add_parser("abp", help="the generator: learn by alternating back-propagation, reconstruct, inpaint")
    abp_sub = abp_parser.add_subparsers(dest="command_abp", required=True)
    p = abp_sub.add_parser("train", help="learn a generator from a folder of images (or idx files, or WAVs)")
    p.add_argument("--data", help="a folder of images, fashion-mnist, idx:FOLDER, or (--net sound) WAVs")
    p.add_argument("--net", default="face", choices=sorted(GENERATOR_NETS),
                   help="face 64×64×3, face32 32×32×3, digit 28×28×1, sound 1024 samples")
    p.add_argument("--latent-dim", type=_positive_int, default=100, help="dimension d of z ~ N(0, I_d)")
    p.add_argument("--sigma", type=_positive_float, default=0.3, help="observation noise σ (images in [−1, 1])")
    p.add_argument("--epochs", type=_positive_int, default=100)
    p.add_argument("--batch-size", type=_positive_int, default=100)
    p.add_argument("--steps", type=_positive_int, help="Langevin steps of inference per iteration (30)")
    p.add_argument("--delta", type=_positive_float, help="Langevin step δ of inference (0.3)")
    p.add_argument("--lr", type=_positive_float, help="Adam learning rate (3e-4)")
    p.add_argument("--image-size", type=_positive_int, help="resize images to this square size (default: the net's)")
    p.add_argument("--gray", action="store_true", help="learn gray images (one channel)")
    p.add_argument("--limit", type=_positive_int, help="use only the first N examples")
    p.add_argument("--holdout", type=int, default=0,
                   help="keep the last N examples out of training; report their reconstruction against PCA")
    p.add_argument("--validation", type=int, default=0,
                   help="early stopping: set the N examples before the held-out ones aside, measure their "
                        "reconstruction every --image-every iterations, keep the params that do best")
    p.add_argument("--mask", help="learn from incomplete data: pepper:FRACTION or block:SIZE missing per image")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--image-every", type=int, default=200)
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints (0: none)")
    _add_run_flags(p)
    p.set_defaults(func=cmd_abp_train)
    for name, text in (("reconstruct", "infer latents of new images with a trained run and regenerate them"),
                       ("inpaint", "recover occluded new images with a trained run")):
        p = abp_sub.add_parser(name, help=text)
        p.add_argument("--run", type=Path, required=True, help="a finished `gcnjax abp train` run")
        p.add_argument("--data", required=True, help="images to reconstruct (a folder, fashion-mnist, idx:FOLDER)")
        if name == "inpaint":
            p.add_argument("--mask", action="append", default=[],
                           help="pepper:FRACTION or block:SIZE (repeat for several)")
        p.add_argument("--rounds", type=_positive_int, default=10,
                       help="inference rounds, each the run's Langevin steps")
        p.add_argument("--limit", type=_positive_int, help="use only the first N images")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path)
        p.add_argument("--overwrite", action="store_true")
        p.set_defaults(func=cmd_abp_recover)

    p = sub.add_parser("classifier", help="train and cache the Fashion-MNIST classifier of the FCD metric")
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
                   help="a folder of idx files (Fashion-MNIST or MNIST: train-/t10k-images-idx3-ubyte[.gz])")
    p.add_argument("--out", type=Path, help="weights file to write (default: the cache, see GCNJAX_CACHE)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=_positive_float)
    p.add_argument("--limit", type=_positive_int, help="train on the first LIMIT training images only")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_classifier)

    p = sub.add_parser("fcd", help="Fréchet classifier distance between two image sets")
    p.add_argument("--a", required=True, help="a folder of images, an .npy of pixels, or a run directory")
    p.add_argument("--b", required=True, help="a folder of images, an .npy of pixels, or a run directory")
    p.add_argument("--weights", type=Path, help="classifier weights (default: the cached ones)")
    p.add_argument("--image-size", type=_positive_int,
                   help="resize the images of a folder to this square size first (e.g. 28)")
    p.add_argument("--kid", action="store_true", help="also the polynomial-kernel MMD² (KID-style) of the features")
    p.add_argument("--kid-subsets", type=_positive_int, default=100)
    p.set_defaults(func=cmd_fcd)
    p = sub.add_parser("multigrid", help="multi-grid descriptors (1x1 -> 4x4 -> 16x16 -> 64x64): learn, or inpaint")
    p.add_argument("action", nargs="?", default="learn", choices=["learn", "inpaint"],
                   help="learn models from --data (default), or inpaint --data with the models of --run")
    p.add_argument("--preset", default="authors", choices=["authors", "paper"],
                   help="authors: their code's Langevin (no noise, no reference, 0..255, clipped); "
                        "paper: with noise and the Gaussian reference")
    p.add_argument("--data", help="a folder of images (or one image)")
    p.add_argument("--limit", type=_positive_int, help="use only the first N images (sorted by name)")
    p.add_argument("--grids", help="modeled grid sizes, coarse to fine, e.g. 4,16,64 (the last is the image size)")
    p.add_argument("--width", type=_positive_float, help="multiplier of the nets' filter counts (1: the authors')")
    p.add_argument("--norm", choices=["batch", "none"], help="batch norm in the nets, or none")
    p.add_argument("--gray", action="store_true", help="learn from gray images (one channel)")
    p.add_argument("--run", type=Path, help="inpaint: a finished multi-grid run directory")
    p.add_argument("--mask", default="block:32", help="inpaint: block:SIZE, randblock:SIZE or pepper:FRACTION")
    _add_common(p)
    p.set_defaults(func=cmd_multigrid)
    p = sub.add_parser("coop", help="cooperative training of a descriptor and a generator (CoopNets)")
    p.add_argument("--data", help="a folder of images, or fashion-mnist[:N] (the first N training images)")
    p.add_argument("--gray", action="store_true", help="learn from gray images (one channel)")
    _add_run_flags(p)
    p.add_argument("--iterations", type=_positive_int, help="learning iterations (300)")
    p.add_argument("--image-size", type=_positive_int, help="square image size (64; 28 for fashion-mnist)")
    p.add_argument("--chains", type=_positive_int, help="proposals and observed images per iteration (64)")
    p.add_argument("--steps", type=_positive_int, help="descriptor Langevin revision steps (15)")
    p.add_argument("--delta", type=_positive_float, help="descriptor Langevin step delta (0.002)")
    p.add_argument("--lr", type=_positive_float, help="descriptor learning rate (Adam, 0.007)")
    p.add_argument("--gen-lr", type=_positive_float, help="generator learning rate (Adam, 1e-4)")
    p.add_argument("--infer-steps", type=int, help="latent inference steps of the generator from z (0)")
    p.add_argument("--clip", action="store_true",
                   help="clip the revised images to the data range [-1, 1] at every Langevin step; keeps the "
                        "descriptor's f from running away at the authors' learning rate on short CPU runs")
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
