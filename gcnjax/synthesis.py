"""Descriptor runs: the descriptor as a family of the run engine, and the
auto-encoding check of a learned model.

:data:`FAMILY` is what :func:`gcnjax.run.learn` needs to learn a descriptor
(texture, object, CD, FRAME, short-run, spatial-temporal, layer-by-layer
growth); :func:`learn_descriptor` is that call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax.nets import layer_output_sizes, receptive_field
from gcnjax.run import Family, Outputs, Picture, Trainer, learn
from gcnjax.train import RunDir, write_atomic

__all__ = ["FAMILY", "learn_descriptor", "load_run", "autoencoding_check", "check_run_autoencoding", "check_images"]


def check_images(images: np.ndarray, config: D.DescriptorConfig, name: str = "images") -> np.ndarray:
    """Validate observed pixel images against a config; return them as float32.

    Images are ``(N, H, W, C)``; videos ``(N, T, H, W, C)`` and sounds
    ``(N, T, C)`` are checked the same way, along their own axes.
    """
    images = gdata.check_batch(images, config.channels, name, ndims=(4, 5, 3))
    n_axes = images.ndim - 2
    net_axes = {spec.n_axes() for spec in config.layers} - {None}
    kinds = {1: "sounds (N, T, C)", 2: "images (N, H, W, C)", 3: "videos (N, T, H, W, C)"}
    if net_axes and net_axes != {n_axes}:
        raise gdata.DataError(
            f"{name}: the net's convolutions are for {kinds.get(max(net_axes), f'{max(net_axes)}-axis data')} "
            f"but the data are {kinds.get(n_axes, f'{n_axes}-axis')}; choose a net for this kind of data."
        )
    sizes = images.shape[1:-1]
    # A 2-D net of padded layers only (a stationary texture net) needs images
    # that hold its receptive field: otherwise every top unit sees mostly
    # padding. A net that ends in an unpadded layer (the short-run net's
    # last conv maps 4×4 to 1×1) needs only a top map of one position.
    ends_unpadded = config.layers[-1].padding == "VALID"
    fully_valid = all(spec.padding == "VALID" for spec in config.layers)
    if n_axes == 2 and (fully_valid or not ends_unpadded):
        rf = receptive_field(config.layers, n_axes)
        if min(sizes) < min(rf):
            raise gdata.DataError(
                f"{name}: images of {images.shape[2]}x{images.shape[1]} pixels are smaller than the net's "
                f"receptive field ({rf[1]}x{rf[0]}); use larger images (--image-size) or a net with smaller filters."
            )
    else:
        # Videos, sounds and nets that end unpadded: every layer must keep at
        # least one position (padded layers see past the border, so the data
        # may be smaller than the receptive field).
        out = layer_output_sizes(config.layers, sizes)
        if any(min(o) < 1 for o in out):
            raise gdata.DataError(
                f"{name}: data of size {'x'.join(map(str, sizes))} are too small for the net (layer output sizes "
                f"{[tuple(o) for o in out]}); use more or larger frames (--frames, --image-size) or a net with "
                "smaller filters."
            )
    return images


def _stages(config: D.DescriptorConfig) -> List[Tuple[Optional[int], int]]:
    """``[(depth, end)]``: the net's depth (None: all of ``config.layers``) up
    to iteration ``end``, one entry per stage of layer-by-layer growth."""
    if not config.grow_iterations:
        return [(None, config.n_iterations)]
    stages, end = [], 0
    for depth, n in enumerate(config.grow_iterations, start=1):
        if n > 0:
            end += n
            stages.append((depth, end))
    return stages


def _trainer(config: D.DescriptorConfig, x: jax.Array, scale: gdata.PixelScale, data: np.ndarray,
             inputs: Dict[str, Any]) -> Trainer:
    """The descriptor's maximum-likelihood learning (or CD, as ``config``
    says), with layer-by-layer growth as one phase per depth."""
    given_net = inputs.get("net")
    stages = _stages(config)
    nets = [given_net if given_net is not None else D.make_net(config, depth=depth) for depth, _ in stages]
    base_key = jax.random.key(config.seed)

    def step(phase):
        # The optimizer needs the params' structure only.
        params = jax.eval_shape(nets[phase].init, base_key, jnp.zeros((1,) + tuple(x.shape[1:]), jnp.float32))
        optimizer = D.make_optimizer(config, params, image_size=x.shape[1:-1])
        return D.make_train_step(config, nets[phase].apply, optimizer)

    def init(phase):
        return D.init_state(jax.random.fold_in(base_key, phase), config, nets[phase], x)

    def enter(state, phase):
        return D.grow(jax.random.fold_in(base_key, phase), state, config, nets[phase], x)

    def finish(state, params):
        final = scale.to_pixels(np.asarray(state.chains))
        # Where the data and learning's chains sit in the learned energy: a
        # sampling job's fresh chains are set beside them (a spurious mode).
        energies = D.mean_energies(nets[-1].apply, params, config.sigma, observed=x, chains=state.chains)
        arrays, records = {"synthesized": final}, {"energies": energies}
        if getattr(nets[-1], "spec", None):  # a FRAME net's extractor, from which load_run builds it again
            records["frame_net"] = nets[-1].spec
        report = [
            "| observed | synthesized (final) |",
            "|---|---|",
            "| ![observed](observed.png) | ![synthesized](synthesized.png) |",
            "",
            f"Mean learned energy E(x) of the observed data {energies['observed']:.4g}, of the final chains "
            f"{energies['chains']:.4g} (`energies.json`; `gcnjax sample` sets fresh chains beside them).",
            "",
        ]
        # And how near the chains' first-layer statistics are to the data's,
        # beside white noise's: a sampling job's samples are set beside both.
        statistics = D.first_layer_statistics(nets[-1], params, x, seed=config.seed, chains=state.chains)
        if statistics is not None:
            arrays["first_layer_gram"], records["first_layer"] = statistics
            report += [f"Gram distance of the first layer's responses (a FRAME net's fixed features) to the "
                       f"observed data's: the final chains "
                       f"{records['first_layer']['chains']:.4g}, white noise {records['first_layer']['white_noise']:.4g} "
                       "(`first_layer.json`, `first_layer_gram.npy`).", ""]
        return Outputs(pictures={"synthesized": Picture(final)}, arrays=arrays, report=report,
                       summary={"net": nets[-1], "energies": energies, **records}, records=records)

    sampler = config.langevin
    if D.is_contrastive_divergence(config):
        chains = (f"contrastive divergence: one chain started at each observed image of the batch "
                  f"(B = {D.n_state_chains(config, x.shape[0])})")
    else:
        chains = f"{config.n_chains} chain(s)"
    return Trainer(
        phase_ends=[end for _, end in stages],
        init=init,
        enter=enter,
        step=step,
        batches=gdata.shuffled_batches(x, config.batch_size, config.seed),
        snapshot=lambda state, it: {"synthesized": Picture(scale.to_pixels(np.asarray(state.chains)))},
        params=lambda state: state.params,
        finish=finish,
        describe=(f"{chains}, {sampler.n_steps} Langevin steps of step size "
                  f"{sampler.step_size:g} (noise {sampler.noise_scale}) per iteration; σ = {config.sigma}."
                  + ("" if given_net is not None else " " + receptive_field_note(config, x.shape[1:-1]))),
        plot_keys=("f_data", "f_samples"),
        row=lambda phase: {"layers": stages[phase][0] or len(config.layers)},
        sharded=("chains",),
        desc=lambda phase: f" (layers 1-{stages[phase][0]})" if stages[phase][0] else "",
    )


def receptive_field_note(config: D.DescriptorConfig, shape: Sequence[int]) -> str:
    """One sentence: how much of a sample of ``shape`` (its data axes) one
    top unit sees; with a warning where a stationary net (``top="sum"``: a
    texture, a dynamic texture, a sound) sees all of it along every axis
    (a video's frames and their length): its "stationary" model then is
    one of the whole observed data, and its samples may copy them. (The
    FC_S net, spatially fully connected by design, is stationary in time
    only: it is warned of when it also sees every frame.)"""
    sizes = tuple(int(s) for s in shape)
    rf = receptive_field(config.layers, len(sizes))
    text = f"A top unit sees {'×'.join(map(str, rf))} of the data's {'×'.join(map(str, sizes))}."
    if config.top == "sum" and all(r >= s for r, s in zip(rf, sizes)):
        text += (" Warning: it covers the whole of the data, so the net is not stationary at this size and its "
                 "samples may copy the observed data; use larger images or more frames (--image-size, --frames), "
                 "or a net with smaller filters.")
    return text


def _check(config: D.DescriptorConfig, images, inputs) -> np.ndarray:
    if inputs.get("net") is not None and config.grow_iterations:
        raise ValueError("learn_descriptor: a given net cannot grow layer by layer; set grow_iterations=None.")
    images = check_images(images, config)
    note = receptive_field_note(config, images.shape[1:-1])
    if inputs.get("net") is None and "Warning" in note:
        gdata.note(note.replace(" Warning: it", " It"))
    return images


def _sample_shape(payload: Dict[str, Any], frames: Optional[int]) -> Tuple[int, ...]:
    """One sample's shape: the observed one, with ``frames`` time steps for
    a video ``(T, H, W, C)`` or a sound ``(T, C)``."""
    shape = tuple(payload["observed_shape"][1:])
    if frames is None:
        return shape
    if len(shape) == 3:
        raise ValueError("--frames sets the length of a video or sound sample; this run models images.")
    return (int(frames),) + shape[1:]


def descriptor_chains(config: D.DescriptorConfig, net, params, scale, shape: Sequence[int], settings,
                      note: str = "", reference: Optional[Dict[str, float]] = None,
                      first_layer: Optional[Tuple[np.ndarray, Dict[str, float]]] = None):
    """The :class:`gcnjax.sampling.Chains` of a learned descriptor ``net``
    (any Flax-like module: the papers' nets, a FRAME net): chains from the
    run's ``chain_init`` (or ``settings.start``) under ``E(x) = ||x||²/(2σ²)
    − f(x)``, the run's Langevin with ``settings``' changes. ``reference``:
    the run's energies of its data and chains (its ``energies.json``), which
    the job's report compares its samples with; ``first_layer``: the run's
    ``(Ḡ_observed, distances)`` of
    :func:`gcnjax.descriptor.first_layer_statistics` (its
    ``first_layer_gram.npy`` and ``first_layer.json``), against which the
    samples' first-layer Gram distance is set."""
    from gcnjax.sampling import Chains, langevin_draw

    sampler = settings.chain(config.langevin)
    start = settings.start or config.chain_init
    if start == "data":
        start = "zeros"
        note += (" The run's chains start at observed images, which a sampling job does not hold: these start "
                 "at zeros, the reference's mean (--start sets it).")
    init_scale = config.init_scale if settings.start_scale is None else settings.start_scale
    shape = tuple(shape)

    def draw(params, key, n):
        k_start, k_chain = jax.random.split(key)
        x0 = D.init_chains(k_start, start, (n,) + shape, scale=init_scale)
        return langevin_draw(k_chain, D.make_energy_fn(net.apply, params, config.sigma), x0, sampler,
                             settings.trace_points)

    kind = "MALA" if sampler.mala else "Langevin"
    return Chains(
        shape=shape, params=params, draw=draw, to_data=scale.to_pixels, picture=Picture,
        describe=(f"{sampler.n_steps} {kind} steps of step size {sampler.step_size:g} (noise "
                  f"{sampler.noise_scale}) from {start} (scale {init_scale:g}) under the descriptor, σ = "
                  f"{config.sigma}.{note}"),
        n_steps=sampler.n_steps,
        logdensity=lambda params, x: -D.make_energy_fn(net.apply, params, config.sigma)(x),
        reference=reference,
        statistics=None if first_layer is None else _first_layer_distance(net, params, scale, *first_layer),
    )


def _first_layer_distance(net, params, scale, gram: np.ndarray, distances: Dict[str, float]):
    """``samples (pixels) -> {"samples": d, **distances}``, ``d`` the Gram
    distance of their first-layer responses to the observed data's ``gram``."""
    from gcnjax.metrics import gram_distance_to

    features = D.first_layer_features(net, params)
    return lambda samples: {**distances, "samples": gram_distance_to(
        gram, scale.to_model(np.asarray(samples, np.float32)), features)}


def _chains(run_dir: Path, payload: Dict[str, Any], settings):
    config, scale, net, params = load_run(run_dir)
    shape = _sample_shape(payload, settings.frames)
    energies = run_dir / "energies.json"
    # A stationary net's energy grows with the sample's size: only samples
    # of the observed size compare with the run's.
    same_size = shape == tuple(payload["observed_shape"][1:])
    reference = json.loads(energies.read_text()) if energies.is_file() and same_size else None
    # The first layer's Gram matrix averages over positions: samples of any
    # size (a longer video) compare with the data's.
    first_layer = None
    if (run_dir / "first_layer.json").is_file():  # (written only for nets with a learned first layer)
        first_layer = (np.load(run_dir / "first_layer_gram.npy"), json.loads((run_dir / "first_layer.json").read_text()))
    return descriptor_chains(config, net, params, scale, shape, settings, reference=reference,
                             first_layer=first_layer)


FAMILY = Family(
    name="descriptor",
    config_type=D.DescriptorConfig,
    check=_check,
    scale=lambda config, images, inputs: gdata.PixelScale(config.pixel_scale).fit(images),
    load_scale=gdata.PixelScale.from_dict,
    trainer=_trainer,
    observed=lambda images, scale, inputs: {"observed": Picture(images)},
    chains=_chains,
)


def learn_descriptor(config: D.DescriptorConfig, images: np.ndarray, out: str | Path, *, title: str = "Descriptor",
                     source: str = "", data_spec: Optional[Dict[str, object]] = None, overwrite: bool = False,
                     resume: bool = False, quiet: bool = False, net=None,
                     devices: Optional[int] = None) -> Dict[str, object]:
    """Learn a descriptor from observed ``images`` (pixels 0..255, N×H×W×C;
    videos and sounds likewise) by maximum likelihood (or CD, as ``config``
    says) and write a run: :func:`gcnjax.run.learn` with :data:`FAMILY`.

    ``net`` (anything with Flax's ``init``/``apply``, e.g. a
    :class:`gcnjax.frame.FrameNet`) replaces the net that ``config.layers``
    describes (no layer-by-layer growth then). Returns the engine's summary,
    with ``synthesized`` (the final picture's path) and ``net``.
    """
    result = learn(FAMILY, config, images, out, title=title, source=source, data_spec=data_spec,
                   overwrite=overwrite, resume=resume, quiet=quiet, net=net, devices=devices)
    result["synthesized"] = result["run_dir"] / "synthesized.png"
    return result


def load_run(run_dir: str | Path):
    """``(config, pixel_scale, net, params)`` of a finished descriptor run
    (a FRAME run's net built again from the extractor it records in
    ``frame_net.json``, :func:`gcnjax.frame.net_from_spec`)."""
    run_dir = Path(run_dir)
    cfg_path, params_path = run_dir / "config.json", run_dir / "params.msgpack"
    for p in (cfg_path, params_path):
        if not p.exists():
            raise FileNotFoundError(f"{str(p)!r} is missing: is {str(run_dir)!r} a finished descriptor run?")
    payload = json.loads(cfg_path.read_text())
    kind = payload.get("family", "descriptor")
    if kind != "descriptor":
        raise ValueError(f"{str(run_dir)!r} is a {kind} run; give the directory of a descriptor run "
                         "(gcnjax descriptor, demo or stgconvnet).")
    try:
        config = D.DescriptorConfig.from_dict(payload["config"])
    except (TypeError, KeyError, ValueError) as err:
        raise ValueError(f"{str(run_dir)!r} is not a descriptor run ({err}).") from None
    scale = gdata.PixelScale.from_dict(payload["pixel_scale"])
    if (run_dir / "frame_net.json").is_file():
        from gcnjax import frame

        net = frame.net_from_spec(json.loads((run_dir / "frame_net.json").read_text()), config.top)
    else:
        net = D.make_net(config)
    shape = payload["observed_shape"]
    try:
        template = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, *shape[1:]), jnp.float32))
        params = flax.serialization.from_bytes(template, params_path.read_bytes())
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{str(run_dir)!r}: its params are not those of the net its config describes (a net "
                         "given in Python, or a FRAME run without frame_net.json); load that net and sample it from "
                         "Python with gcnjax.synthesis.descriptor_chains and gcnjax.sampling.sample_chains.") from None
    return config, scale, net, params


def autoencoding_check(
    net,
    params,
    sigma: float,
    starts: jax.Array,
    out: str | Path,
    *,
    scale: gdata.PixelScale,
    n_steps: int = 300,
    overwrite: bool = False,
    labels: Optional[Sequence[str]] = None,
) -> Dict[str, object]:
    """The theory check of the generative ConvNet (ReLU, Gaussian reference).

    From each start, noise-free gradient descent on E reaches a local
    minimum, where ``x = σ²∇f(x)``: the minimum is an auto-encoding fixed
    point, a reconstruction by the filters that its binary activation
    pattern selects. Reports the residual ``||x − σ²∇f(x)|| / ||x||`` at each
    end point and the number of distinct activation patterns reached.
    """
    with RunDir(out, overwrite=overwrite) as run:
        return _autoencoding_report(run, net, params, sigma, starts, scale=scale, n_steps=n_steps, labels=labels)


def _autoencoding_report(run: RunDir, net, params, sigma: float, starts: jax.Array, *, scale: gdata.PixelScale,
                         n_steps: int, labels) -> Dict[str, object]:
    x_min, residual = D.descend_to_minimum(net.apply, params, starts, sigma, n_steps=n_steps)
    residual = np.asarray(residual)
    patterns = D.activation_pattern(net, params, x_min)
    distinct = len({p.tobytes() for p in np.packbits(patterns, axis=1)})
    energies = np.asarray(D.energy(net.apply, params, x_min, sigma))
    labels = list(labels or [f"start {i}" for i in range(len(starts))])
    gdata.save_image_grid(run.path / "starts.png", scale.to_pixels(np.asarray(starts)))
    gdata.save_image_grid(run.path / "minima.png", scale.to_pixels(np.asarray(x_min)))
    for i, (lab, r, e) in enumerate(zip(labels, residual, energies)):
        run.log({"start": i, "label": lab, "residual": float(r), "energy": float(e)})
    rows = "\n".join(f"| {lab} | {r:.2e} | {e:.4g} |" for lab, r, e in zip(labels, residual, energies))
    report = f"""# Auto-encoding check of the generative ConvNet

Noise-free gradient descent on E(x) = ||x||²/(2σ²) − f(x) (σ = {sigma}), {n_steps} steps
of size σ²/2, from {len(starts)} starts. At a local minimum x = σ²∇f(x), so the
residual ||x − σ²∇f(x)|| / ||x|| is 0 there.

- largest residual: {residual.max():.2e} (median {np.median(residual):.2e})
- distinct binary activation patterns reached: {distinct} of {len(starts)} starts

| start | residual | energy |
|---|---|---|
{rows}

| starts | local minima |
|---|---|
| ![starts](starts.png) | ![minima](minima.png) |
"""
    run.write_report(report)
    summary = {"max_residual": float(residual.max()), "median_residual": float(np.median(residual)),
               "distinct_patterns": distinct, "n_starts": len(starts)}
    write_atomic(run.path / "summary.json", json.dumps(summary, indent=2))
    return {"run_dir": run.path, "report": run.path / "report.md", "residual": residual, **summary}


def check_run_autoencoding(run_dir: str | Path, out: str | Path, *, n_noise_starts: int = 6,
                           n_steps: int = 200, seed: int = 0, overwrite: bool = False) -> Dict[str, object]:
    """:func:`autoencoding_check` on a finished run's model, from noise
    images of standard deviation 1 to 100 (model units) and from the run's
    synthesized images."""
    run_dir = Path(run_dir)
    config, scale, net, params = load_run(run_dir)
    if len(config.image_size) != 2:
        raise ValueError(f"run {str(run_dir)!r} models {'videos' if len(config.image_size) == 3 else 'sounds'}; "
                         "the auto-encoding check draws images: give an image descriptor run.")
    if config.sigma is None:
        raise ValueError(f"run {str(run_dir)!r} has no Gaussian reference (sigma=None); the check needs sigma.")
    synthesized = scale.to_model(np.load(run_dir / "synthesized.npy"))
    shape = synthesized.shape[1:]
    sds = np.geomspace(1.0, 100.0, n_noise_starts)
    keys = jax.random.split(jax.random.key(seed), n_noise_starts)
    noise = np.stack([sd * np.asarray(jax.random.normal(k, shape)) for k, sd in zip(keys, sds)])
    starts = jnp.asarray(np.concatenate([noise, synthesized]), jnp.float32)
    labels = [f"noise, sd {sd:.3g}" for sd in sds] + [f"synthesized image {i}" for i in range(len(synthesized))]
    return autoencoding_check(net, params, config.sigma, starts, out, scale=scale, n_steps=n_steps,
                              overwrite=overwrite, labels=labels)
