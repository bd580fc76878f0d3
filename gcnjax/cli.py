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
    gcnjax stgconvnet --data VIDEO_OR_FOLDER_OR_WAV --out DIR [--variant st|fc_s|fc_s_large|st_small]
    gcnjax multigrid --data FOLDER --out DIR [--preset authors|paper] [--learn-mask block:32]
    gcnjax multigrid inpaint --run DIR --data FOLDER --mask block:32 --out DIR
    gcnjax coop --data FOLDER_OR_fashion-mnist --out DIR   cooperative descriptor + generator
    gcnjax sample --run DIR --chains N --out DIR   samples of any learned run, in blocks, to disk

User errors (bad paths, bad values, unreadable images, diverged chains) are
printed as one line naming the input and the fix, with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

from gcnjax.data import load_data, load_data_spec, load_generator_data, with_mirror_images

__all__ = ["main", "load_data"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


MIN_IMAGE_SIZE = 8


def _image_size(text: str) -> int:
    """An image side of at least :data:`MIN_IMAGE_SIZE` pixels: smaller images
    hold no texture or object to learn, and videos of them cannot be encoded."""
    value = _positive_int(text)
    if value < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"images of {value}×{value} pixels hold nothing to learn; give a size of at "
                                         f"least {MIN_IMAGE_SIZE}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


# Shortcut flags: argument dest -> the config field(s) it sets (options.apply_shortcuts).
_RUN_SHORTCUTS = {"checkpoint_every": ("run", "checkpoint_every"), "on_divergence": ("run", "on_divergence"),
                  "seed": ("seed",)}
DESCRIPTOR_SHORTCUTS = {"iterations": ("n_iterations",), "chains": ("n_chains",), "steps": ("langevin", "n_steps"),
                        "delta": ("langevin",), "lr": ("learning_rate",), **_RUN_SHORTCUTS}
MULTIGRID_SHORTCUTS = {**DESCRIPTOR_SHORTCUTS, "chains": ("batch_size",), "width": ("width",), "norm": ("norm",)}
COOP_SHORTCUTS = {"iterations": ("n_iterations",), "chains": [("descriptor", "n_chains"), ("descriptor", "batch_size")],
                  "steps": ("descriptor", "langevin", "n_steps"), "delta": ("descriptor", "langevin"),
                  "lr": ("descriptor", "learning_rate"), "gen_lr": ("generator", "learning_rate"),
                  "infer_steps": ("generator", "langevin", "n_steps"), "latent_dim": ("generator", "latent_dim"),
                  **_RUN_SHORTCUTS}
GENERATOR_SHORTCUTS = {"epochs": ("n_epochs",), "steps": ("langevin", "n_steps"), "delta": ("langevin",),
                       "lr": ("learning_rate",), "latent_dim": ("latent_dim",), "sigma": ("sigma",),
                       "batch_size": ("batch_size",), "log_every": ("run", "log_every"),
                       "image_every": ("run", "image_every"), **_RUN_SHORTCUTS}


STG_DATA_FLAGS = ("data", "variant", "frames", "image_size", "gray", "samples")
STG_DEFAULTS = {"variant": "st", "frames": 70, "samples": 8000}


def _with_length(config, args):
    """A new run of ``--iterations`` draws pictures about six times and
    checkpoints at least at its end."""
    n = getattr(args, "iterations", None)
    if not n or not hasattr(config, "n_iterations"):
        return config
    run = dataclasses.replace(config.run, image_every=max(1, min(config.run.image_every, n // 6 or 1)),
                              checkpoint_every=max(1, min(config.run.checkpoint_every, n)))
    return dataclasses.replace(config, run=run)


def _configure(args, config_type, new_config, shortcuts, data_flags=(), defaults=None):
    """``(config, saved)``: the config a learning command runs, by one rule
    for every command.

    A new run: ``new_config()`` (the preset, sized to the data), then every
    field flag given (``--langevin.step-size``, ...), then the shortcut flags
    (``--steps``, ``--delta``, ...); the values of the data flags
    (``data_flags``: ``--data``, ``--preset``, ..., with the command's
    ``defaults``) are kept in ``args.data_flags`` for :func:`_recorded`.
    A resumed run (``--resume``): the run's saved config with the same flags
    applied, which may change only its length (``--iterations`` /
    ``--epochs``), its logging (``--run.*``, ``--checkpoint-every``) and the
    speed-only fields; a flag equal to the saved setting is no change, any
    other (a data flag that differs from the recorded one included) is
    refused, naming the run's value. ``saved`` is its ``config.json``, the
    data spec without its record of flags."""
    from gcnjax import options

    given = {name: getattr(args, name, None) for name in data_flags}
    if not args.resume:
        config = _with_length(new_config(), args)
        # Field flags first, then the shortcuts: `--langevin.noise-scale 0.01
        # --delta 0.1` is a decoupled chain of step δ²/2.
        config = options.apply_shortcuts(options.apply_config_flags(config, args), args, shortcuts)
        args.data_flags = {name: _flag_value(given[name] if given[name] is not None else (defaults or {}).get(name))
                           for name in data_flags}
        return config, None
    if args.out is None:
        raise ValueError("--resume needs --out: the run directory to continue.")
    from gcnjax.train import RunDir

    saved = RunDir.read_config(args.out)
    try:
        saved_config = config_type.from_dict(saved["config"])
    except (TypeError, KeyError, ValueError) as err:
        kind = config_type.__name__.replace("Config", "").lower()
        raise ValueError(f"{str(args.out)!r} is not a {kind} run ({err}); cannot resume it here.") from None
    spec = dict(saved.get("data_spec") or {})
    recorded = spec.pop("flags", {})
    saved["data_spec"] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items()}
    refused = [f"--{name.replace('_', '-')} {_flag_value(value)} (the run's: {recorded.get(name, 'not recorded')})"
               for name, value in given.items()
               if value not in (None, False) and not _same_flag(name, value, recorded.get(name))]
    config = options.apply_shortcuts(options.apply_config_flags(saved_config, args), args, shortcuts)
    refused += options.resume_refusals(config, saved_config)
    if refused:
        raise ValueError(f"--resume continues a run with its own settings, and these differ from the run's: "
                         f"{'; '.join(refused)}. Drop them, or start a new run (another --out, or --overwrite).")
    if not spec:
        raise ValueError(f"{str(args.out)!r} does not record how its data was loaded, so it cannot be resumed.")
    return config, saved


def _flag_value(value):
    """A flag's value as ``config.json`` records it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_flag_value(v) for v in value]
    return value


def _same_flag(name: str, value, recorded) -> bool:
    value = _flag_value(value)
    if value == recorded:
        return True
    # The same data named by another path (relative, a link, ...).
    return (name == "data" and isinstance(recorded, str) and Path(str(value)).exists()
            and Path(str(value)).resolve() == Path(recorded).resolve())


def _recorded(spec: dict, args) -> dict:
    """A new run's data spec with the values of its data flags, which a
    resumed run is checked against."""
    return {**spec, "flags": getattr(args, "data_flags", {})}


def _add_run_flags(p: argparse.ArgumentParser,
                   resume_help: str = ("continue the run in --out from its last checkpoint, with its own settings "
                                       "(--iterations may extend it)")):
    """--out, --overwrite, --resume, --quiet, --devices: the run directory of a learning command."""
    p.add_argument("--out", type=Path, help="run directory to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write over an existing run directory")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--devices", type=_positive_int,
                   help="split the chains over the first N devices (default: all of them)")


def _add_common(p: argparse.ArgumentParser):
    _add_run_flags(p)
    p.add_argument("--iterations", type=_positive_int, help="learning iterations")
    p.add_argument("--image-size", type=_image_size, help="resize observed images to this square size")
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

    images = load_data_spec(data_spec)
    result = learn_descriptor(config, images, out, title=title, source=data_spec["spec"], data_spec=data_spec,
                              overwrite=args.overwrite, resume=args.resume, quiet=args.quiet, devices=args.devices)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"synthesized images: {result['synthesized']}")
    print(f"report:             {result['report']}")
    return 0


def _descriptor_preset(name: str, args):
    """A descriptor preset sized and coloured by ``--image-size`` and ``--gray``."""
    from gcnjax import presets

    config = presets.get(name)
    changes = {}
    if args.image_size:
        changes["image_size"] = (args.image_size, args.image_size)
    if getattr(args, "gray", False):
        changes["channels"] = 1
    if getattr(args, "filters", None):
        if name != "shortrun":
            raise ValueError("--filters sets n_f of the short-run net; use it with --preset shortrun.")
        changes["layers"] = presets.shortrun_layers(args.filters)
    return dataclasses.replace(config, **changes)


def cmd_demo(args) -> int:
    from gcnjax.descriptor import DescriptorConfig

    out = args.out = args.out or Path("runs") / f"demo-{args.texture}"
    config, saved = _configure(args, DescriptorConfig, lambda: _descriptor_preset("demo", args),
                               DESCRIPTOR_SHORTCUTS, ("texture", "image_size", "gray"))
    if saved:
        return _learn(config, saved["data_spec"], out, saved.get("title", "Descriptor"), args)
    side = config.image_size[0]
    print(f"gcnjax demo: learning a texture model from scikit-image's '{args.texture}' "
          f"({side}×{side} crop, {config.n_iterations} iterations) ...")
    # Halve the 512×512 texture, then crop: stones and bricks keep a size the
    # net's 33-pixel receptive field sees whole.
    spec = _recorded(dict(spec=f"skimage:{args.texture}", size=(2 * side, 2 * side), crop=config.image_size,
                          channels=config.channels), args)
    return _learn(config, spec, out, f"Texture synthesis: {args.texture}", args)


def cmd_descriptor(args) -> int:
    from gcnjax.descriptor import DescriptorConfig

    preset = args.preset or "texture"
    config, saved = _configure(args, DescriptorConfig, lambda: _descriptor_preset(preset, args),
                               DESCRIPTOR_SHORTCUTS, ("preset", "data", "image_size", "gray", "filters"),
                               {"preset": "texture"})
    if saved:
        return _learn(config, saved["data_spec"], args.out, saved.get("title", "Descriptor"), args)
    if args.data is None and preset == "shortrun":
        args.data = "skimage:photos"  # bundled: works with no dataset installed
    if args.out is None or args.data is None:
        raise ValueError("--data and --out are required: the images to learn from and the run directory to write.")
    spec = _recorded(dict(spec=args.data, size=config.image_size, crop=None, channels=config.channels), args)
    return _learn(config, spec, args.out, f"Descriptor ({preset}): {Path(args.data).name}", args)


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


def cmd_abp_train(args) -> int:
    from gcnjax import abp
    from gcnjax import generator as G
    from gcnjax import masks, presets

    if args.out is None or (args.data is None and not args.resume):
        raise ValueError("--data and --out are required: the examples to learn from and the run directory to write.")

    def new_config():
        return dataclasses.replace(presets.abp(), net=args.net or "face", out_channels=1 if args.gray else None)

    config, saved = _configure(args, G.GeneratorConfig, new_config, GENERATOR_SHORTCUTS,
                               ("data", "net", "image_size", "gray", "limit", "holdout", "validation", "mask",
                                "mirror"),
                               {"net": "face"})
    if saved:
        spec = saved["data_spec"]
    else:
        spec = _recorded(dict(spec=args.data, net=config.net, size=args.image_size, channels=1 if args.gray else None,
                              limit=args.limit, holdout=args.holdout, validation=args.validation, mask=args.mask,
                              mirror=args.mirror, seed=config.seed), args)
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
    source = spec["spec"]
    if spec.get("mirror"):
        # A mirror image hides the mirror of its original's missing pixels: nothing withheld is seen.
        train = with_mirror_images(train, "--mirror")
        mask = None if mask is None else with_mirror_images(mask, "--mask")
        source += " and the mirror images of its training examples"
    result = abp.learn_generator(config, train, args.out, mask=mask, mask_spec=spec["mask"],
                                 test_observations=test, validation_observations=validation,
                                 title=f"Generator ({spec['net']}): {Path(spec['spec']).name}", source=source,
                                 data_spec=spec, sample_rate=rate, overwrite=args.overwrite,
                                 resume=args.resume, quiet=args.quiet, devices=args.devices)
    print(f"learned in {result['seconds']:.0f} s; training reconstruction MSE {result['train_mse']:.5f}")
    if "test_mse_abp" in result:
        print(f"held-out reconstruction MSE: ABP {result['test_mse_abp']:.5f} (posterior mode), "
              f"{result['test_mse_abp_fit']:.5f} (least-squares fit); PCA {result['test_mse_pca']:.5f}")
    if "train_recovery_error" in result:
        print(f"recovery error of the missing values: {result['train_recovery_error']:.4f}")
    print(f"report: {result['report']}")
    return 0


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
    rounds = abp.RECONSTRUCTION_ROUNDS if args.rounds is None else args.rounds
    result = abp.recover_run(args.run, data, args.out, masks, rounds=rounds, seed=args.seed,
                             overwrite=args.overwrite)
    for name, value in result["errors"].items():
        if isinstance(value, dict):  # a mask: ABP and the baselines
            print(f"{name}: " + ", ".join(f"{method} {v:.4f}" for method, v in value.items()))
        else:
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
    from gcnjax import presets, stg
    from gcnjax.descriptor import DescriptorConfig

    if args.out is None or (args.data is None and not args.resume):
        raise ValueError("--data and --out are required: the video (file or folder of frames) or WAV to learn "
                         "from, and the run directory to write.")
    if args.resume:
        if args.recover:
            raise ValueError("--resume continues a learned dynamic texture or sound; a recovery run is started anew.")
        config, saved = _configure(args, DescriptorConfig, None, DESCRIPTOR_SHORTCUTS, STG_DATA_FLAGS, STG_DEFAULTS)
        spec = saved["data_spec"]
    else:
        spec = dict(spec=str(args.data), variant=args.variant or "st", frames=args.frames or 70,
                    image_size=args.image_size, channels=1 if args.gray else 3, samples=args.samples or 8000)
    if Path(spec["spec"]).suffix.lower() == ".wav":
        samples, rate = gdata.load_wav(spec["spec"])
        samples = samples.mean(axis=1, keepdims=True)[: spec["samples"]]  # mono
        if not args.resume:
            config, _ = _configure(args, DescriptorConfig, lambda: presets.sound(samples.shape[0]),
                                   DESCRIPTOR_SHORTCUTS, STG_DATA_FLAGS, STG_DEFAULTS)
            spec = _recorded(spec, args)
        result = stg.learn_sound(config, samples, rate, args.out, title=f"Sound: {Path(spec['spec']).name}",
                                 source=spec["spec"], data_spec=spec, overwrite=args.overwrite, resume=args.resume,
                                 quiet=args.quiet, devices=args.devices)
        print(f"learned in {result['seconds']:.0f} s")
        print(f"synthesized sounds: {', '.join(str(p) for p in result['wavs'])}")
        print(f"report:             {result['report']}")
        return 0
    size = spec["image_size"] or (224 if spec["variant"] == "fc_s_large" else 100)
    video = gdata.load_video(spec["spec"], n_frames=spec["frames"], size=(size, size), channels=spec["channels"])
    if not args.resume:
        config, _ = _configure(args, DescriptorConfig, lambda: presets.stg(
            spec["variant"], frames=video.shape[0], image_size=size, channels=spec["channels"]), DESCRIPTOR_SHORTCUTS,
            STG_DATA_FLAGS, STG_DEFAULTS)
        spec = _recorded(spec, args)
    if args.recover:
        mask = _video_mask(args.recover, (1,) + video.shape)
        result = stg.recover_video(config, video, mask, args.out, what=args.recover, fps=args.fps,
                                   overwrite=args.overwrite, quiet=args.quiet, devices=args.devices)
        print(f"mean |error| on missing values (0..255): recovered {result['recovery_error']:.2f}, "
              f"mean fill {result['mean_fill_error']:.2f}, interpolated in time "
              f"{result['temporal_interpolation_error']:.2f}")
        print(f"report: {result['report']}")
        return 0
    result = stg.learn_dynamic_texture(config, video, args.out, fps=args.fps, synth_frames=args.synth_frames,
                                       title=f"Dynamic texture ({spec['variant']}): {Path(spec['spec']).name}",
                                       source=spec["spec"], data_spec=spec, overwrite=args.overwrite,
                                       resume=args.resume, quiet=args.quiet, devices=args.devices)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"observed vs synthesized: {result['videos']['gif']}")
    print(f"report:                  {result['report']}")
    return 0


def _multigrid_preset(args):
    """The multi-grid preset with the grids of ``--grids`` / ``--image-size``
    and the channels of ``--gray``."""
    from gcnjax import presets

    config = presets.get_multigrid(args.preset or "authors")
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
    return dataclasses.replace(config, grids=grids, channels=1 if args.gray else config.channels)


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
    if not args.resume and (args.out is None or args.data is None):
        raise ValueError("--data and --out are required: the images to learn from and the run directory to write.")
    config, saved = _configure(args, MultigridConfig, lambda: _multigrid_preset(args), MULTIGRID_SHORTCUTS,
                               ("preset", "data", "limit", "grids", "image_size", "gray"), {"preset": "authors"})
    if saved:
        spec, title = dict(saved["data_spec"]), saved.get("title", "Multi-grid descriptor")
    else:
        spec = _recorded(dict(spec=args.data, size=(config.image_size, config.image_size), crop=None,
                              channels=config.channels, limit=args.limit), args)
        title = f"Multi-grid descriptor ({args.preset or 'authors'}): {Path(args.data).name}"
    images = load_data_spec(spec)
    if spec.get("limit"):
        images = images[:spec["limit"]]
    result = learn_multigrid(config, images, args.out, title=title, source=spec["spec"],
                             data_spec=spec, overwrite=args.overwrite, resume=args.resume,
                             quiet=args.quiet, devices=args.devices)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"synthesized images: {result['synthesized']}")
    print(f"report:             {result['report']}")
    return 0


def cmd_coop(args) -> int:
    from gcnjax import coop, presets
    from gcnjax.options import replace_at

    if args.out is None:
        raise ValueError("--out is required: the run directory to write.")
    if not args.resume and args.data is None:
        raise ValueError("--data is required: a folder of images, or fashion-mnist[:N].")
    fashion = bool(args.data) and args.data.startswith("fashion-mnist")
    channels = 1 if (args.gray or fashion) else 3
    nets = args.nets or "ours"
    # The authors' generator doubles a 4×4 start: Fashion-MNIST is padded to 32².
    size = args.image_size or ((32 if nets == "authors" else 28) if fashion else 64)

    def new_config():
        config = presets.coop(size, channels, nets=nets)
        if args.clip:
            config = replace_at(config, ("descriptor", "langevin", "clip"), (-1.0, 1.0))
        return config

    config, saved = _configure(args, coop.CoopConfig, new_config, COOP_SHORTCUTS,
                               ("data", "image_size", "gray", "clip", "nets"))
    spec = saved["data_spec"] if saved else _recorded(dict(spec=args.data, size=(size, size), crop=None,
                                                           channels=channels), args)
    images = load_data_spec(spec)
    result = coop.learn_coop(config, images, args.out, title=f"Cooperative training: {spec['spec']}",
                             source=spec["spec"], data_spec=spec, overwrite=args.overwrite, resume=args.resume,
                             quiet=args.quiet, devices=args.devices)
    print(f"learned in {result['seconds']:.0f} s")
    print(f"generator proposals: {result['proposals']}")
    print(f"revised samples:     {result['revised']}")
    print(f"report:              {result['report']}")
    return 0


def _add_descriptor_commands(sub) -> None:
    """demo, descriptor, stgconvnet, theory: the descriptor's commands."""
    from gcnjax.descriptor import DescriptorConfig
    from gcnjax.options import add_config_flags

    p = sub.add_parser("demo", help="learn a texture from a bundled image and synthesize new ones")
    p.add_argument("--texture", default="brick", choices=["brick", "grass", "gravel"])
    _add_common(p)
    add_config_flags(p, DescriptorConfig)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("descriptor", help="learn a descriptor (texture / object / CD) from images")
    p.add_argument("--preset", choices=["texture", "object", "cd", "demo", "shortrun"],
                   help="the authors' settings to start from (default: texture)")
    p.add_argument("--data", help="an image file, a folder of images, skimage:brick|grass|gravel, skimage:photos "
                                  "(32×32 tiles of bundled photos; the shortrun default) or fashion-mnist[:N]")
    p.add_argument("--filters", type=_positive_int, help="n_f of the short-run net (--preset shortrun; 64)")
    p.add_argument("--gray", action="store_true", help="learn from gray images (one channel)")
    _add_common(p)
    add_config_flags(p, DescriptorConfig)
    p.set_defaults(func=cmd_descriptor)

    from gcnjax.nets import STG_VARIANTS

    p = sub.add_parser("stgconvnet", help="learn a dynamic texture (video) or a sound; synthesize or recover")
    p.add_argument("--data", help="a video (AVI/MP4/GIF), a folder of frames, or a WAV file")
    p.add_argument("--variant", choices=list(STG_VARIANTS),
                   help="st: stationary in space and time; fc_s(_large): spatially fully connected; st_small: the "
                        "st net with a third of its kernels, for small frames (ours)")
    p.add_argument("--frames", type=_positive_int, help="use the first N frames (default 70)")
    p.add_argument("--synth-frames", type=_positive_int,
                   help="also synthesize videos of this many frames from noise (may exceed --frames)")
    p.add_argument("--recover", help="recover missing values instead: pepper:FRACTION or frames:A-B")
    p.add_argument("--samples", type=_positive_int, help="sounds: use the first N samples (default 8000)")
    p.add_argument("--fps", type=_positive_float, default=10.0, help="frame rate of the written GIF/MP4")
    p.add_argument("--gray", action="store_true", help="learn from gray frames")
    _add_common(p)
    add_config_flags(p, DescriptorConfig)
    p.set_defaults(func=cmd_stgconvnet)

    p = sub.add_parser("theory", help="auto-encoding check: descend E to local minima of a learned model")
    p.add_argument("--run", type=Path, required=True, help="a finished descriptor run directory")
    p.add_argument("--starts", type=_positive_int, default=6, help="number of noise starting points")
    p.add_argument("--steps", type=_positive_int, default=200, help="gradient-descent steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_theory)


def _add_generator_commands(sub) -> None:
    """abp train / reconstruct / inpaint: the generator's commands."""
    from gcnjax import presets
    from gcnjax.generator import GENERATOR_NETS, GeneratorConfig
    from gcnjax.options import add_config_flags

    default = presets.abp()  # the help states the preset's values, read from it
    abp_parser = sub.add_parser("abp", help="the generator: learn by alternating back-propagation, reconstruct, inpaint")
    abp_sub = abp_parser.add_subparsers(dest="command_abp", required=True)
    p = abp_sub.add_parser("train", help="learn a generator from a folder of images (or idx files, or WAVs)")
    p.add_argument("--data", help="a folder of images, fashion-mnist, idx:FOLDER, or (--net sound) WAVs")
    p.add_argument("--net", choices=sorted(GENERATOR_NETS),
                   help="face 64×64×3 (default), face32 32×32×3, digit 28×28×1, sound 1024 samples")
    p.add_argument("--latent-dim", type=_positive_int, help=f"dimension d of z ~ N(0, I_d) ({default.latent_dim})")
    p.add_argument("--sigma", type=_positive_float,
                   help=f"observation noise σ (images in [−1, 1]; {default.sigma:g})")
    p.add_argument("--epochs", type=_positive_int, help=f"passes over the training examples ({default.n_epochs})")
    p.add_argument("--batch-size", type=_positive_int, help=f"examples per iteration ({default.batch_size})")
    p.add_argument("--steps", type=_positive_int,
                   help=f"Langevin steps of inference per iteration ({default.langevin.n_steps})")
    p.add_argument("--delta", type=_positive_float, help=f"Langevin step δ of inference ({default.langevin.delta:g})")
    p.add_argument("--lr", type=_positive_float, help=f"Adam learning rate ({default.learning_rate:g})")
    p.add_argument("--image-size", type=_image_size, help="resize images to this square size (default: the net's)")
    p.add_argument("--gray", action="store_true", help="learn gray images (one channel)")
    p.add_argument("--limit", type=_positive_int, help="use only the first N examples")
    p.add_argument("--holdout", type=int, help="keep the last N examples out of training; report their "
                                               "reconstruction against PCA")
    p.add_argument("--validation", type=int,
                   help="early stopping: set the N examples before the held-out ones aside, measure their "
                        "reconstruction every --image-every iterations, keep the params that do best (with --mask: "
                        "the params that reconstruct new examples best, not those that fill the training "
                        "examples' missing values best)")
    p.add_argument("--mask", help="learn from incomplete data: pepper:FRACTION or block:SIZE missing per image")
    p.add_argument("--mirror", action="store_true",
                   help="learn from the training examples and their left-right mirror images (twice the examples; "
                        "the held-out and validation ones are not mirrored)")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=_positive_int, help=f"iterations between metric rows ({default.run.log_every})")
    p.add_argument("--image-every", type=_positive_int,
                   help=f"iterations between pictures and early-stopping checks ({default.run.image_every})")
    p.add_argument("--checkpoint-every", type=int,
                   help=f"iterations between checkpoints (0: none; {default.run.checkpoint_every})")
    p.add_argument("--on-divergence", choices=["stop", "retry"],
                   help="when inference diverges: stop at the last good checkpoint, or retry with a smaller step")
    _add_run_flags(p)
    add_config_flags(p, GeneratorConfig)
    p.set_defaults(func=cmd_abp_train)
    for name, text in (("reconstruct", "infer latents of new images with a trained run and regenerate them"),
                       ("inpaint", "recover occluded new images with a trained run")):
        p = abp_sub.add_parser(name, help=text)
        p.add_argument("--run", type=Path, required=True, help="a finished `gcnjax abp train` run")
        p.add_argument("--data", required=True, help="images to reconstruct (a folder, fashion-mnist, idx:FOLDER)")
        if name == "inpaint":
            p.add_argument("--mask", action="append", default=[],
                           help="pepper:FRACTION or block:SIZE (repeat for several)")
        p.add_argument("--rounds", type=_positive_int,
                       help="inference rounds, each the run's Langevin steps (default 30: "
                            "gcnjax.abp.RECONSTRUCTION_ROUNDS)")
        p.add_argument("--limit", type=_positive_int, help="use only the first N images")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path)
        p.add_argument("--overwrite", action="store_true")
        p.set_defaults(func=cmd_abp_recover)


def _add_metric_commands(sub) -> None:
    """classifier, fcd: the feature classifier and its distance."""
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
    p.add_argument("--image-size", type=_image_size,
                   help="resize the images of a folder to this square size first (e.g. 28)")
    p.add_argument("--kid", action="store_true", help="also the polynomial-kernel MMD² (KID-style) of the features")
    p.add_argument("--kid-subsets", type=_positive_int, default=100)
    p.set_defaults(func=cmd_fcd)


def _add_multigrid_command(sub) -> None:
    """multigrid [inpaint]."""
    from gcnjax.multigrid import MultigridConfig
    from gcnjax.options import add_config_flags

    p = sub.add_parser("multigrid", help="multi-grid descriptors (1x1 -> 4x4 -> 16x16 -> 64x64): learn, or inpaint")
    p.add_argument("action", nargs="?", default="learn", choices=["learn", "inpaint"],
                   help="learn models from --data (default), or inpaint --data with the models of --run")
    p.add_argument("--preset", choices=["authors", "paper"],
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
    add_config_flags(p, MultigridConfig)
    p.set_defaults(func=cmd_multigrid)


def _add_coop_command(sub) -> None:
    """coop: cooperative training."""
    from gcnjax.coop import CoopConfig
    from gcnjax.options import add_config_flags
    from gcnjax.presets import COOP_NETS

    p = sub.add_parser("coop", help="cooperative training of a descriptor and a generator (CoopNets)")
    p.add_argument("--data", help="a folder of images, or fashion-mnist[:N] (the first N training images)")
    p.add_argument("--gray", action="store_true", help="learn from gray images (one channel)")
    _add_run_flags(p)
    p.add_argument("--iterations", type=_positive_int, help="learning iterations (300)")
    p.add_argument("--image-size", type=_image_size,
                   help="square image size (64; for fashion-mnist 28, or 32 with --nets authors)")
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
    p.add_argument("--nets", choices=COOP_NETS,
                   help="the nets (gcnjax.presets.coop): the authors' (a batch-normalised generator from a 4x4 "
                        "start, a descriptor top of 100 summed units; image size 4*2^L) or ours (the default)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints (0: none)")
    p.add_argument("--on-divergence", choices=["stop", "retry"],
                   help="when the revision diverges: stop at the last good checkpoint, or retry with a smaller step")
    add_config_flags(p, CoopConfig)
    p.set_defaults(func=cmd_coop)


def cmd_sample(args) -> int:
    from gcnjax import options, sampling
    from gcnjax.langevin import LangevinConfig

    if args.out is None:
        raise ValueError("--out is required: the directory to write the samples to.")
    kinds = dict(options.config_fields(LangevinConfig, ("langevin",)))
    changes = {path[-1]: options.parse_value(text, kinds[path], options.flag_name(path))
               for path, text in options.given_config_flags(args).items()}
    if args.mala:
        changes["mala"] = True
    settings = sampling.SampleSettings(n_chains=args.chains, steps=args.steps, langevin=tuple(sorted(changes.items())),
                                       start=args.start, start_scale=args.start_scale, frames=args.frames,
                                       trace_points=args.trace_points, given=args.given, latents=args.latents)
    result = sampling.sample_run(args.run, args.out, settings, seed=args.seed, block=args.block, devices=args.devices,
                                 resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    rate = result["chains_per_second"]
    print(f"{settings.n_chains} samples in {result['seconds']:.0f} s"
          + (f" ({rate:.1f} chains/s)" if rate else "")
          + f"; peak memory {result['peak_memory_gib']:.2f} GiB")
    print(f"samples: {result['samples']}")
    print(f"report:  {result['report']}")
    return 0


def _add_sample_command(sub) -> None:
    from gcnjax.options import add_config_flags
    from gcnjax.sampling import LATENT_SOURCES, ChainChanges

    p = sub.add_parser("sample", help="draw many samples of a learned run (any family), in blocks, to disk")
    p.add_argument("--run", type=Path, required=True, help="a finished run directory of any learning command")
    p.add_argument("--chains", type=_positive_int, default=64, help="how many samples (64)")
    p.add_argument("--steps", type=int, help="Langevin steps per chain (the run's)")
    p.add_argument("--mala", action="store_true", help="Metropolis-adjusted Langevin (MALA)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--block", type=_positive_int, help="chains per compiled call (up to 256 per device)")
    p.add_argument("--start", choices=["zeros", "noise", "uniform"],
                   help="where descriptor chains start (the run's own start)")
    p.add_argument("--start-scale", type=_positive_float, help="scale of the start's noise (the run's)")
    p.add_argument("--frames", type=_positive_int, help="length of a video or sound sample (the observed one)")
    p.add_argument("--given", metavar="DATA",
                   help="generator runs: sample the posterior of z given these observations (chain i on the i-th, "
                        "cycling), Langevin on E(z | x); samples.npy then holds z")
    p.add_argument("--latents", choices=LATENT_SOURCES, default="prior",
                   help="generator runs: draw z from the model's prior N(0, I) (prior) or from the Gaussian fitted "
                        "to the run's training latents (fitted)")
    p.add_argument("--trace-points", type=int, default=10,
                   help="steps of each chain at which the energy and three projections are recorded (10; 0: none)")
    _add_run_flags(p, resume_help="continue the job in --out from its last finished block (the same settings)")
    add_config_flags(p, ChainChanges, title="the chain's settings (default: the run's)")
    p.set_defaults(func=cmd_sample)


def build_parser() -> argparse.ArgumentParser:
    """The ``gcnjax`` parser: a subcommand per job; a learning command takes
    its shortcuts and every field of its config (:mod:`gcnjax.options`)."""
    parser = argparse.ArgumentParser(prog="gcnjax", description="Generative ConvNets in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_descriptor_commands, _add_generator_commands, _add_metric_commands, _add_multigrid_command,
                _add_coop_command, _add_sample_command):
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from gcnjax.data import DataError
    from gcnjax.langevin import ChainDivergedError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, OSError, ChainDivergedError, MemoryError) as err:
        print(f"gcnjax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"gcnjax {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
