"""Multi-grid modeling and sampling of generative ConvNets.

Gao, Lu, Zhou, Zhu, Wu, "Learning Generative ConvNets via Multi-grid
Modeling and Sampling" (CVPR 2018; PAPERS §5). An image ``x`` of ``S×S``
pixels is seen at a pyramid of grids ``1×1, 4×4, 16×16, 64×64``:

    downsample(x, s)[i, j] = mean of the (S/s)×(S/s) block (i, j) of x
    upsample(y, S)          = each pixel of y repeated into an (S/s)×(S/s) block

Each grid ``s`` (but the 1×1 one) has its own descriptor
``p_s(x) ∝ exp(f_s(x)) q(x)`` (own net, own optimizer). Sampling goes coarse
to fine: the 1×1 average of each observed image is up-sampled to the first
grid, moved by Langevin dynamics under that grid's model, up-sampled to the
next grid, moved under its model, and so on. Learning ("minimal contrastive
divergence") updates each grid's model with its own synthesized images
against the data down-sampled to that grid:

    Δw_s ∝ mean_data ∂f_s/∂w − mean_samples ∂f_s/∂w,

the chains starting afresh every iteration from the up-sampled coarser
samples (not persistent, not from noise, not from the data itself).

Learned for inpainting (``learn_mask``), each iteration's chains are the
inpainting chains of the batch itself: the observed pixels ``x_O`` clamped,
the missing ones ``x_M`` sampled coarse to fine from the observed mean
colour, so that the update is the gradient of the conditional
log-likelihood ``Σ log p_s(x_M | x_O)``:

    Δw_s ∝ mean_data ∂f_s/∂w(x) − mean_data ∂f_s/∂w(x_O, x̃_M),  x̃_M ~ p_s(x_M | x_O),

which vanishes on what is observed (the model is taught to fill, not to
synthesize whole images).

The Langevin moves are :mod:`gcnjax.langevin`'s; the energies are
:func:`gcnjax.descriptor.energy`. A net with batch norm
(:class:`gcnjax.nets.MultigridNet`, ``norm="batch"``) makes ``f`` of one image
depend on its batch; its chain is then ONE Langevin chain whose position is
the whole batch, with energy ``Σ_i E(x_i)`` (the authors' code takes the
gradient of the summed ``f`` over the batch in the same way). Without batch
norm the chains are independent and vmapped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax import masks
from gcnjax.langevin import LangevinConfig
from gcnjax.metrics import recovery_error
from gcnjax.nets import MULTIGRID_NORMS, MultigridNet, init_params, multigrid_layers
from gcnjax.run import Family, Outputs, Picture, Trainer, learn
from gcnjax.train import RunConfig, RunDir, write_atomic

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]

__all__ = [
    "MultigridConfig",
    "MultigridState",
    "START_KINDS",
    "downsample",
    "upsample",
    "pyramid",
    "grid_key",
    "make_nets",
    "make_optimizer",
    "init_state",
    "observed_mean_colour",
    "initial_images",
    "langevin_at_grid",
    "coarse_to_fine",
    "make_train_step",
    "make_synthesizer",
    "inpaint",
    "make_inpainter",
    "single_grid_baseline",
    "learn_multigrid",
    "load_multigrid_run",
    "inpaint_run",
]

START_KINDS = ("mean", "noise")
Size = Union[int, Tuple[int, int]]


# ---------------------------------------------------------------- pyramid


def _size(size: Size) -> Tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) < 1 or int(w) < 1:
        raise ValueError(f"grid size must be >= 1, got {size!r}.")
    return int(h), int(w)


def downsample(x: jax.Array, size: Size) -> jax.Array:
    """Average pooling of ``(N, H, W, C)`` images to a ``size`` grid:
    ``y[n, i, j, c] = mean over the (H/h)×(W/w) block (i, j) of x[n, :, :, c]``.

    ``size`` (an int for a square grid, or ``(h, w)``) must divide the image
    size; ``downsample(x, 1)`` is each image's mean colour."""
    h, w = _size(size)
    n, height, width, c = x.shape
    if height % h or width % w:
        raise ValueError(
            f"cannot average-pool {height}x{width} images to a {h}x{w} grid: the grid must divide the image "
            "size (e.g. 64 -> 16 -> 4 -> 1)."
        )
    return jnp.mean(jnp.reshape(x, (n, h, height // h, w, width // w, c)), axis=(2, 4))


def upsample(x: jax.Array, size: Size) -> jax.Array:
    """Nearest-neighbour up-sampling of ``(N, h, w, C)`` images to ``size``:
    every pixel repeated into an (H/h)×(W/w) block, so that
    ``downsample(upsample(x, S), x's size) == x``."""
    height, width = _size(size)
    n, h, w, c = x.shape
    if height % h or width % w:
        raise ValueError(f"cannot up-sample {h}x{w} images to {height}x{width}: the size must be a multiple.")
    return jnp.repeat(jnp.repeat(x, height // h, axis=1), width // w, axis=2)


def pyramid(images: jax.Array, grids: Sequence[int] = (1, 4, 16, 64)) -> Dict[int, jax.Array]:
    """``{s: downsample(images, s)}`` for each grid size ``s``."""
    return {int(s): downsample(images, int(s)) for s in grids}


def grid_key(size: int) -> str:
    """The name of a grid's entry in the state's dicts: ``"grid16"``."""
    return f"grid{int(size)}"


# ---------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class MultigridConfig:
    """Everything that defines a multi-grid run (saved with its outputs).

    Model:
      grids: the modeled grid sizes, coarse to fine (each divides the next);
        the last is the image size. ``(4, 16, 64)`` in the paper.
      width: multiplier of the filter counts of the authors' des4, des16,
        des64 nets (:func:`gcnjax.nets.multigrid_layers`); 1 is theirs.
      norm: ``"batch"`` (the authors') or ``"none"``.
      sigma: σ of the Gaussian reference ``||x||²/(2σ²)`` in the energy;
        ``None`` drops it (the authors' code).
    Sampling:
      start: ``"mean"``: chains start at the 1×1 average colour of each
        observed image (the paper); ``"noise"``: uniform noise over the
        pixel range at the first grid (the single-grid baseline).
      langevin: the Langevin settings at every grid.
      clip_to_data: clip the chains to the pixel range after each step (the
        authors' code: 0..255); the box comes from ``pixel_scale``.
      pixel_scale: ``"pixels"`` (0..255 as is, the authors' code),
        ``"minus_mean"`` or ``"unit"`` (:class:`gcnjax.data.PixelScale`).
    Learning (one Adam per grid):
      learning_rate, beta1, max_abs_grad (cap each gradient array's largest
      entry; ``None``: off), weight_decay (the authors' code declares 1e-4
      but never adds it to the loss, so 0 reproduces it).
      batch_size: observed images per iteration, one chain per image.
      learn_mask: ``None`` (the paper's learning), or a mask spec of
        :func:`gcnjax.masks.from_spec` (``"block:32"``, ``"pepper:0.5"``,
        ``"randblock:20"``): learn the conditional model of the missing
        pixels given the observed ones, every iteration's chains being the
        inpainting chains of the batch under this mask (the module's
        docstring). A random kind's masks are drawn afresh at every
        iteration from the run's key (:func:`gcnjax.masks.draw`).
    """

    grids: Tuple[int, ...] = (4, 16, 64)
    width: float = 1.0
    norm: str = "batch"
    sigma: Optional[float] = None
    start: str = "mean"
    langevin: LangevinConfig = LangevinConfig.from_delta(0.3, 90, noise=False)
    clip_to_data: bool = True
    pixel_scale: str = "pixels"
    learning_rate: float = 0.3
    beta1: float = 0.5
    max_abs_grad: Optional[float] = None
    weight_decay: float = 0.0
    batch_size: int = 100
    learn_mask: Optional[str] = None
    channels: int = 3
    n_iterations: int = 1000
    seed: int = 0
    run: RunConfig = RunConfig(log_every=10, image_every=100, checkpoint_every=100)

    def __post_init__(self):
        grids = tuple(self.grids)
        if not grids or any(not isinstance(g, (int, np.integer)) or g < 1 for g in grids):
            raise ValueError(f"MultigridConfig.grids must be positive grid sizes, coarse to fine, got {self.grids!r}.")
        for a, b in zip(grids, grids[1:]):
            if b <= a or b % a:
                raise ValueError(
                    f"MultigridConfig.grids must increase and each must divide the next (e.g. (4, 16, 64)), "
                    f"got {self.grids!r}."
                )
        if not (isinstance(self.width, (int, float)) and self.width > 0):
            raise ValueError(f"MultigridConfig.width must be a positive multiplier of the filter counts, got {self.width!r}.")
        if self.norm not in MULTIGRID_NORMS:
            raise ValueError(f"MultigridConfig.norm must be one of {MULTIGRID_NORMS}, got {self.norm!r}.")
        if self.start not in START_KINDS:
            raise ValueError(f"MultigridConfig.start must be one of {START_KINDS}, got {self.start!r}.")
        if self.pixel_scale not in ("pixels", "minus_mean", "unit"):
            raise ValueError(
                f"MultigridConfig.pixel_scale must be 'pixels', 'minus_mean' or 'unit', got {self.pixel_scale!r}."
            )
        for name, allow_none in (("sigma", True), ("learning_rate", False), ("max_abs_grad", True)):
            value = getattr(self, name)
            if value is None and allow_none:
                continue
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"MultigridConfig.{name} must be a positive number, got {value!r}.")
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"MultigridConfig.beta1 must be in [0, 1), got {self.beta1!r}.")
        if not (self.weight_decay >= 0 and np.isfinite(self.weight_decay)):
            raise ValueError(f"MultigridConfig.weight_decay must be >= 0, got {self.weight_decay!r}.")
        for name in ("batch_size", "n_iterations"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"MultigridConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.channels not in (1, 3):
            raise ValueError(f"MultigridConfig.channels must be 1 or 3, got {self.channels!r}.")
        if not isinstance(self.langevin, LangevinConfig):
            raise ValueError("MultigridConfig.langevin must be a gcnjax.langevin.LangevinConfig.")
        if self.learn_mask is not None:
            size = int(grids[-1])
            try:
                masks.from_spec(self.learn_mask, (1, size, size))
            except ValueError as err:
                raise ValueError(f"MultigridConfig.learn_mask: {err}") from None
            if self.start != "mean":
                raise ValueError("MultigridConfig.learn_mask needs start='mean': inpainting chains start at each "
                                 "image's mean observed colour.")
        if self.langevin.clip is not None:
            raise ValueError(
                "MultigridConfig.langevin.clip must be None: set clip_to_data=True to clip to the pixel range."
            )
        if self.langevin.mala and self.clip_to_data:
            raise ValueError("MultigridConfig: mala=True cannot be combined with clip_to_data=True.")
        if self.norm == "batch" and self.langevin.mala:
            raise ValueError(
                "MultigridConfig: mala=True with norm='batch' would accept or reject the whole batch at once; "
                "use norm='none' for MALA."
            )

    @property
    def image_size(self) -> int:
        return int(self.grids[-1])

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "MultigridConfig":
        d = dict(d)
        d["grids"] = tuple(d["grids"])
        if isinstance(d.get("langevin"), dict):
            d["langevin"] = LangevinConfig.from_dict(d["langevin"])
        if isinstance(d.get("run"), dict):
            d["run"] = RunConfig(**d["run"])
        return cls(**d)


class MultigridState(NamedTuple):
    """Training state of all grids (one checkpoint holds it all).

    params: ``{"grid4": params, "grid16": ..., ...}``, one net per grid.
    opt_state: the matching Optax states.
    samples: the latest synthesized images at each grid by
      :func:`grid_key`, and ``"start"``, where the chains began (1×1 mean
      colours, or noise at the first grid); kept for pictures, not reused
      (the chains are not persistent).
    key: the PRNG key of the next iteration.
    step: iterations done.
    """

    params: Dict[str, PyTree]
    opt_state: Dict[str, PyTree]
    samples: Dict[str, jax.Array]
    key: jax.Array
    step: jax.Array


# ---------------------------------------------------------------- model pieces


def make_nets(config: MultigridConfig, dtype=jnp.float32) -> Dict[int, MultigridNet]:
    """One :class:`MultigridNet` per modeled grid."""
    return {int(g): MultigridNet(layers=multigrid_layers(int(g), config.width), norm=config.norm, dtype=dtype)
            for g in config.grids}


def make_optimizer(config: MultigridConfig) -> optax.GradientTransformation:
    """The update of every grid's params: [max-abs capping] [weight decay] Adam."""
    parts = []
    if config.max_abs_grad is not None:
        parts.append(D.cap_max_abs(config.max_abs_grad))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    parts.append(optax.adam(config.learning_rate, b1=config.beta1))
    return optax.chain(*parts)


def _start_grid(config: MultigridConfig) -> int:
    return 1 if config.start == "mean" else int(config.grids[0])


def init_state(key, config: MultigridConfig, nets: Dict[int, MultigridNet],
               optimizer: optax.GradientTransformation) -> MultigridState:
    """Fresh params and optimizer states for every grid; empty samples."""
    keys = jax.random.split(key, len(config.grids) + 1)
    params, opt_state = {}, {}
    for k, g in zip(keys[1:], config.grids):
        p = init_params(nets[int(g)], k, jnp.zeros((2, g, g, config.channels), jnp.float32))
        params[grid_key(g)] = p
        opt_state[grid_key(g)] = optimizer.init(p)
    shape = lambda g: (config.batch_size, g, g, config.channels)
    samples = {"start": jnp.zeros(shape(_start_grid(config)), jnp.float32),
               **{grid_key(g): jnp.zeros(shape(g), jnp.float32) for g in config.grids}}
    return MultigridState(params, opt_state, samples, keys[0], jnp.zeros((), jnp.int32))


def observed_mean_colour(observed: jax.Array, mask: jax.Array) -> jax.Array:
    """Each image's mean colour over its observed pixels (``mask`` 1),
    ``Σ m·x / Σ m``, as ``(N, 1, 1, C)``: where inpainting chains start."""
    total = jnp.maximum(jnp.sum(mask, axis=(1, 2), keepdims=True), 1.0)
    return jnp.sum(mask * observed, axis=(1, 2), keepdims=True) / total


def initial_images(key, config: MultigridConfig, data: jax.Array, box: Tuple[float, float]) -> jax.Array:
    """Where the chains start, at the start grid: each observed image's 1×1
    mean colour (``start="mean"``), or U(box) noise at the first modeled grid."""
    if config.start == "mean":
        return downsample(data, 1)
    g = int(config.grids[0])
    return jax.random.uniform(key, (data.shape[0], g, g, data.shape[-1]), jnp.float32, box[0], box[1])


def langevin_at_grid(key, apply_fn: ApplyFn, params: PyTree, x0: jax.Array, sampler: LangevinConfig,
                     sigma: Optional[float], *, batch_coupled: bool, observed: Optional[jax.Array] = None,
                     mask: Optional[jax.Array] = None):
    """Langevin chains under one grid's model from ``x0`` (a batch).

    ``batch_coupled=False``: independent chains, one per image, vmapped by
    the sampler on ``E(x) = ||x||²/(2σ²) − f(x)``. ``batch_coupled=True``
    (batch norm): one chain whose position is the whole batch, energy
    ``Σ_i E(x_i)``. With ``observed`` and ``mask`` (1 = observed) the
    chain moves ``z`` and the images are ``x = m·observed + (1 − m)·z``:
    the observed pixels are clamped to the data at every step (they get no
    gradient and their noise never reaches x). Returns ``(x, info)``.
    """
    if mask is None and not batch_coupled:
        return D.synthesize(key, apply_fn, params, x0, sampler, sigma)

    def clamp(z):
        return z if mask is None else mask * observed + (1.0 - mask) * z

    def batch_energy(z):
        return jnp.sum(D.energy(apply_fn, params, clamp(z), sigma))

    z, info = sampler.run(key, batch_energy, x0[None])
    return clamp(z[0]), info


def coarse_to_fine(key, config: MultigridConfig, apply_fns: Dict[int, ApplyFn], params: Dict[str, PyTree],
                   start: jax.Array, box: Tuple[float, float], *, observed: Optional[jax.Array] = None,
                   mask: Optional[jax.Array] = None):
    """Up-sample ``start`` to each modeled grid in turn and run Langevin there.

    Returns ``(samples, infos)``: dicts by :func:`grid_key`, ``samples``
    holding the start too (as ``"start"``). With ``observed`` and ``mask`` (at the finest
    grid, 1 = observed), each grid clamps the coarse pixels whose whole
    block is observed to the down-sampled data (inpainting).
    """
    sampler = dataclasses.replace(config.langevin, clip=tuple(box)) if config.clip_to_data else config.langevin
    batch_coupled = config.norm == "batch"
    samples = {"start": start}
    infos = {}
    x = start
    for k, g in zip(jax.random.split(key, len(config.grids)), config.grids):
        g = int(g)
        x0 = upsample(x, g)
        obs_g = mask_g = None
        if mask is not None:
            # A coarse pixel is observed only when all the pixels it averages are.
            mask_g = (downsample(mask, g) > 1.0 - 1e-6).astype(jnp.float32)
            obs_g = downsample(observed, g)
            x0 = mask_g * obs_g + (1.0 - mask_g) * x0
        x, info = langevin_at_grid(k, apply_fns[g], params[grid_key(g)], x0, sampler, config.sigma,
                                   batch_coupled=batch_coupled, observed=obs_g, mask=mask_g)
        samples[grid_key(g)] = x
        infos[grid_key(g)] = info
    return samples, infos


def _mean_reference(x: jax.Array, sigma: Optional[float]) -> jax.Array:
    if sigma is None:
        return jnp.float32(0.0)
    return jnp.mean(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1)) / (2.0 * sigma**2)


def make_train_step(config: MultigridConfig, apply_fns: Dict[int, ApplyFn],
                    optimizer: optax.GradientTransformation, box: Tuple[float, float]):
    """The jit'd step ``(state, data) -> (state, metrics)`` of all grids.

    ``data``: a batch of observed images at the finest grid, in model scale.
    Samples are synthesized coarse to fine (:func:`coarse_to_fine`) under
    the current params (with ``config.learn_mask``, the batch inpainted:
    :func:`inpaint`); then each grid's params take one optimizer step on
    ``mean f_s(samples_s) − mean f_s(downsample(data, s))``. Metrics (device
    scalars) per grid ``s``: ``f_data_s``, ``f_samples_s``,
    ``energy_data_s``, ``energy_samples_s``, ``grad_norm_s``; and
    ``diverged``, the number of synthesized images with a non-finite pixel.
    """
    grids = tuple(int(g) for g in config.grids)

    def train_step(state: MultigridState, data: jax.Array):
        key, k_start, k_chains = jax.random.split(state.key, 3)
        if config.learn_mask is None:
            start = initial_images(k_start, config, data, box)
            samples, _ = coarse_to_fine(k_chains, config, apply_fns, state.params, start, box)
        else:
            mask = masks.draw(k_start, config.learn_mask, data.shape)  # a new draw every iteration
            samples = inpaint(k_chains, config, apply_fns, state.params, data, mask, box)
        params, opt_state, metrics = {}, {}, {}
        diverged = jnp.int32(0)
        samples_flat = jnp.float32(0)  # any grid's
        for g in grids:
            name = grid_key(g)
            data_g = downsample(data, g)
            synthesized = jax.lax.stop_gradient(samples[name])
            params[name], opt_state[name], grads, terms = D.ml_update(
                optimizer, apply_fns[g], state.params[name], state.opt_state[name], data_g, synthesized)
            f_samples, f_data = terms.f_samples, terms.f_data
            metrics[f"f_data_{g}"] = f_data
            metrics[f"f_samples_{g}"] = f_samples
            metrics[f"energy_data_{g}"] = _mean_reference(data_g, config.sigma) - f_data
            metrics[f"energy_samples_{g}"] = _mean_reference(synthesized, config.sigma) - f_samples
            metrics[f"grad_norm_{g}"] = optax.tree.norm(grads)
            samples_flat = jnp.maximum(samples_flat, D.flat_samples(terms, metrics[f"grad_norm_{g}"]))
            flat = synthesized.reshape(synthesized.shape[0], -1)
            diverged = diverged + jnp.sum(~jnp.all(jnp.isfinite(flat), axis=1))
        metrics["diverged"] = diverged
        metrics["samples_flat"] = samples_flat
        return MultigridState(params, opt_state, samples, key, state.step + 1), metrics

    return jax.jit(train_step, donate_argnums=(0,))


def make_synthesizer(config: MultigridConfig, apply_fns: Dict[int, ApplyFn], box: Tuple[float, float]):
    """jit'd ``(key, params, data) -> samples``: coarse-to-fine synthesis
    started from ``data`` (its 1×1 means, or noise), no learning."""

    def synthesize(key, params, data):
        k_start, k_chains = jax.random.split(key)
        start = initial_images(k_start, config, data, box)
        return coarse_to_fine(k_chains, config, apply_fns, params, start, box)[0]

    return jax.jit(synthesize)


def inpaint(key, config: MultigridConfig, apply_fns: Dict[int, ApplyFn], params: Dict[str, PyTree],
            observed: jax.Array, mask: jax.Array, box: Tuple[float, float],
            start: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """Fill in the missing pixels (``mask == 0``) of ``observed`` coarse to fine.

    The 1×1 start is the mean colour of each image's OBSERVED pixels,
    ``Σ m·x / Σ m``; at each grid the coarse pixels whose whole block is
    observed are clamped to the down-sampled data at every Langevin step
    (:func:`coarse_to_fine`), and at the finest grid every observed pixel
    equals the data exactly. ``start``, a batch of square images at a size
    s (e.g. another fill down-sampled), replaces the 1×1 start: only the
    grids finer than s run, refining it. Returns the images at each grid by
    :func:`grid_key`, and ``"start"``. jit it with ``config`` static (see
    :func:`inpaint_run`).
    """
    mask = jnp.broadcast_to(mask, observed.shape[:3] + (1,)).astype(jnp.float32)
    if start is None:
        start = observed_mean_colour(observed, mask)
    else:
        finer = tuple(g for g in config.grids if int(g) > start.shape[1])
        if not finer or start.shape[0] != observed.shape[0] or start.shape[1] != start.shape[2]:
            raise ValueError(f"start of shape {start.shape}: give one square image per observed image, "
                             f"coarser than the finest grid {config.image_size}.")
        config = dataclasses.replace(config, grids=finer)
    return coarse_to_fine(key, config, apply_fns, params, start, box, observed=observed, mask=mask)[0]


def make_inpainter(config: MultigridConfig, apply_fns: Dict[int, ApplyFn], box: Tuple[float, float]):
    """jit'd ``(key, params, observed, mask) -> images by grid``: :func:`inpaint`."""
    return jax.jit(lambda key, params, observed, mask: inpaint(key, config, apply_fns, params, observed, mask, box))


@functools.lru_cache(maxsize=8)
def _compiled(config: MultigridConfig, box: Tuple[float, float]):
    """Nets, optimizer, train step and inpainter of a config, made once per
    process: a resumed run, or inpainting after learning, reuses the
    compiled programs. Call it with :func:`_step_key` of the config, which
    keeps only the fields that shape the step."""
    nets = make_nets(config)
    apply_fns = {g: net.apply for g, net in nets.items()}
    optimizer = make_optimizer(config)
    return nets, optimizer, make_train_step(config, apply_fns, optimizer, box), make_inpainter(config, apply_fns, box)


def _step_key(config: MultigridConfig) -> MultigridConfig:
    return dataclasses.replace(config, n_iterations=1, seed=0, run=RunConfig())


def single_grid_baseline(config: MultigridConfig) -> MultigridConfig:
    """The same model at the finest grid only, chains from noise, with as
    many Langevin steps per iteration as all the grids of ``config`` take."""
    steps = config.langevin.n_steps * len(config.grids)
    return dataclasses.replace(
        config, grids=(config.image_size,), start="noise",
        langevin=dataclasses.replace(config.langevin, n_steps=steps),
    )


# ---------------------------------------------------------------- runs


def _check_images(images: np.ndarray, config: MultigridConfig, name: str = "images") -> np.ndarray:
    images = gdata.check_batch(images, config.channels, name)
    if images.shape[1:3] != (config.image_size, config.image_size):
        raise gdata.DataError(
            f"{name}: images of {images.shape[2]}x{images.shape[1]} do not match the finest grid "
            f"{config.image_size}x{config.image_size}; resize them (--image-size {config.image_size}) "
            "or change the grids."
        )
    return images


def _ordered(samples) -> list:
    """``"start"`` first, then the grids coarse to fine."""
    grids = sorted((k for k in samples if k != "start"), key=lambda k: int(k[4:]))
    return (["start"] if "start" in samples else []) + grids


def _label(name: str, x) -> str:
    side = np.shape(x)[1]
    return f"start ({side}×{side})" if name == "start" else f"{side}×{side}"


def _pyramid_picture(samples: Dict[str, np.ndarray], scale: gdata.PixelScale, size: int, n: int = 8):
    """Rows: up to ``n`` chains; columns: the chain at each grid, coarse to
    fine, up-sampled to ``size`` (nearest) for viewing. Pixels 0..255."""
    names = _ordered(samples)
    cols = [np.asarray(upsample(jnp.asarray(samples[k][:n]), size)) for k in names]
    tiles = np.stack(cols, axis=1).reshape((-1,) + cols[0].shape[1:])
    return scale.to_pixels(tiles), len(names)


def _pictures(samples, scale: gdata.PixelScale, size: int) -> Dict[str, Picture]:
    """The chains at each grid (up-sampled to ``size`` for viewing), and the
    pyramid picture: one row per chain, coarse to fine."""
    pictures = {name: Picture(scale.to_pixels(np.asarray(upsample(jnp.asarray(np.asarray(x)), size))))
                for name, x in samples.items()}
    tiles, n_cols = _pyramid_picture(samples, scale, size)
    pictures["pyramid"] = Picture(tiles, n_cols)
    return pictures


def _trainer(config: MultigridConfig, x: jax.Array, scale: gdata.PixelScale, images: np.ndarray,
             inputs: Dict[str, Any]) -> Trainer:
    """Multi-grid learning: one descriptor and one Adam per grid in one state,
    chains coarse to fine from each image's 1×1 mean colour."""
    nets, optimizer, step, _ = _compiled(_step_key(config), tuple(scale.range))
    size = config.image_size

    def finish(state, params):
        final = {k: np.asarray(v) for k, v in jax.device_get(state.samples).items()}
        finest = scale.to_pixels(final[grid_key(size)])
        pictures = {f"images/{name}_final": p for name, p in _pictures(final, scale, size).items()}
        report = [
            "## Samples at each grid (final iteration), coarse to fine",
            "",
            "Each row is one chain; columns go from its start up to the finest grid "
            "(coarse grids shown up-sampled by nearest neighbour).",
            "",
            "![pyramid](images/pyramid_final.png)",
            "",
            *[f"- {_label(k, final[k])}: ![{k}](images/{k}_final.png)" for k in _ordered(final)],
            "",
            "| observed | synthesized (finest grid) |",
            "|---|---|",
            "| ![observed](observed.png) | ![synthesized](synthesized.png) |",
            "",
        ]
        # Where a sampling job's chains start: the observed images' 1×1 colours.
        colours = np.asarray(downsample(jnp.asarray(images, jnp.float32), 1))
        return Outputs(pictures={"synthesized": Picture(finest[:64]), **pictures},
                       arrays={"synthesized": finest, "start_colours": colours},
                       report=report, summary={"nets": nets, "samples": {k: scale.to_pixels(v) for k, v in final.items()}})

    sampler = config.langevin
    return Trainer(
        phase_ends=[config.n_iterations],
        init=lambda phase: init_state(jax.random.key(config.seed), config, nets, optimizer),
        step=lambda phase: step,
        batches=gdata.shuffled_batches(x, config.batch_size, config.seed, always_shuffle=True),
        snapshot=lambda state, it: _pictures(jax.device_get(state.samples), scale, size),
        params=lambda state: state.params,
        finish=finish,
        describe=(f"Batch {config.batch_size}; grids {' → '.join(f'{g}×{g}' for g in config.grids)} started from "
                  + ("each image's 1×1 mean colour" if config.start == "mean" else "uniform noise")
                  + ("" if config.learn_mask is None else
                     f"; learned for inpainting: the chains fill the batch's missing pixels "
                     f"({masks.describe(config.learn_mask)}), the observed ones clamped")
                  + f"; {sampler.n_steps} Langevin steps per grid of step size {sampler.step_size:g} "
                  f"(noise {sampler.noise_scale}); σ = {config.sigma}; clipped to the pixel range: "
                  f"{config.clip_to_data}; nets des4/16/64 × width {config.width}, norm {config.norm}; "
                  f"Adam lr {config.learning_rate:g}."),
        plot_keys=tuple(f"{kind}_{g}" for g in config.grids for kind in ("energy_data", "energy_samples")),
        sharded=("samples",),
    )


def _chains(run_dir: Path, payload: Dict[str, Any], settings):
    """Multi-grid samples: coarse to fine from 1×1 starts (the observed
    images' mean colours, ``start_colours.npy``, drawn at random; the data's
    mean where a run lacks them), each grid's Langevin under its model; the
    finest grid's chain is the one traced. A run learned for inpainting
    (``learn_mask``) fitted only the missing pixels given the rest: its
    whole images are drawn all the same, with a warning and a note in the
    description."""
    from gcnjax.sampling import Chains, Draw, langevin_draw

    config, scale, nets, params = load_multigrid_run(run_dir)
    caveat = ""
    if config.learn_mask is not None:
        learned = masks.describe(config.learn_mask)
        caveat = (f" The models were learned for inpainting ({learned}): they fit the missing pixels given the "
                  "observed ones, not whole images; `gcnjax multigrid inpaint` uses them as learned.")
        print(f"warning: {str(run_dir)!r} was learned for inpainting ({learned}), not to "
              "synthesize: whole images drawn from it are outside what it learned. Fill masked images with "
              "`gcnjax multigrid inpaint`.", file=sys.stderr)
    config = dataclasses.replace(config, langevin=settings.chain(config.langevin))
    box = tuple(scale.range)
    apply_fns = {g: nets[g].apply for g in nets}
    size, channels = config.image_size, config.channels
    colours_path = Path(run_dir) / "start_colours.npy"
    colours = (jnp.asarray(scale.to_model(np.load(colours_path)), jnp.float32) if colours_path.is_file()
               else jnp.asarray(scale.to_model(np.full((1, 1, 1, channels), 127.5, np.float32))))
    finest = int(config.grids[-1])
    sampler = dataclasses.replace(config.langevin, clip=box) if config.clip_to_data else config.langevin
    coupled = config.norm == "batch"

    def draw(params, key, n):
        k_pick, k_noise, k_coarse, k_fine = jax.random.split(key, 4)
        if config.start == "mean":
            start = colours[jax.random.randint(k_pick, (n,), 0, colours.shape[0])]
        else:
            g = int(config.grids[0])
            start = jax.random.uniform(k_noise, (n, g, g, channels), jnp.float32, box[0], box[1])
        if coupled:  # batch norm: one chain over the whole block, no per-chain energy
            samples, _ = coarse_to_fine(k_coarse, config, apply_fns, params, start, box)
            return Draw(samples[grid_key(finest)])
        coarse = dataclasses.replace(config, grids=tuple(config.grids[:-1]))
        x = coarse_to_fine(k_coarse, coarse, apply_fns, params, start, box)[0] if coarse.grids else {"start": start}
        x0 = upsample(x[grid_key(int(coarse.grids[-1]))] if coarse.grids else start, finest)
        energy_fn = D.make_energy_fn(apply_fns[finest], params[grid_key(finest)], config.sigma)
        return langevin_draw(k_fine, energy_fn, x0, sampler, settings.trace_points)

    def logdensity(params, x):
        return -D.make_energy_fn(apply_fns[finest], params[grid_key(finest)], config.sigma)(x)

    return Chains(
        shape=(size, size, channels), params=params, draw=draw, to_data=scale.to_pixels, picture=Picture,
        describe=(f"coarse to fine over grids {' → '.join(f'{g}×{g}' for g in config.grids)} from "
                  + ("the observed images' 1×1 mean colours" if config.start == "mean" else "uniform noise")
                  + f", {config.langevin.n_steps} Langevin steps per grid (step {config.langevin.step_size:g}, "
                  f"noise {config.langevin.noise_scale})." + caveat),
        n_steps=sampler.n_steps, logdensity=None if coupled else logdensity,
    )


FAMILY = Family(
    name="multigrid",
    config_type=MultigridConfig,
    check=lambda config, images, inputs: _check_images(images, config),
    scale=lambda config, images, inputs: gdata.PixelScale(config.pixel_scale).fit(images),
    load_scale=gdata.PixelScale.from_dict,
    trainer=_trainer,
    memory_bound="lower --chains (the images of one iteration, one chain each)",
    chains=_chains,
)


def learn_multigrid(config: MultigridConfig, images: np.ndarray, out: Union[str, Path], *,
                    title: str = "Multi-grid descriptor", source: str = "",
                    data_spec: Optional[Dict[str, object]] = None, overwrite: bool = False, resume: bool = False,
                    quiet: bool = False, devices: Optional[int] = None) -> Dict[str, object]:
    """Learn the multi-grid models from observed ``images`` (pixels 0..255,
    ``N×S×S×C`` with ``S`` the finest grid) and write a run directory
    (:func:`gcnjax.run.learn` with :data:`FAMILY`): the samples at each grid
    from the start upwards and a pyramid picture per snapshot, the per-grid
    energies of data and samples, ``synthesized.png`` at the finest grid.
    Returns the engine's summary, with ``nets`` and ``samples`` (pixels at
    each grid)."""
    result = learn(FAMILY, config, images, out, title=title, source=source, data_spec=data_spec,
                   overwrite=overwrite, resume=resume, quiet=quiet, devices=devices)
    result["synthesized"] = result["run_dir"] / "synthesized.png"
    return result


def load_multigrid_run(run_dir: Union[str, Path]):
    """``(config, pixel_scale, nets, params)`` of a finished multi-grid run."""
    run_dir = Path(run_dir)
    cfg_path, params_path = run_dir / "config.json", run_dir / "params.msgpack"
    for p in (cfg_path, params_path):
        if not p.exists():
            raise FileNotFoundError(f"{str(p)!r} is missing: is {str(run_dir)!r} a finished multi-grid run?")
    payload = json.loads(cfg_path.read_text())
    try:
        config = MultigridConfig.from_dict(payload["config"])
    except (TypeError, KeyError) as err:
        raise ValueError(f"{str(run_dir)!r} is not a multi-grid run ({err}).") from None
    scale = gdata.PixelScale.from_dict(payload["pixel_scale"])
    nets = make_nets(config)
    template = init_state(jax.random.key(0), config, nets, make_optimizer(config)).params
    params = flax.serialization.from_bytes(template, params_path.read_bytes())
    return config, scale, nets, params


def inpaint_run(run_dir: Union[str, Path], images: np.ndarray, mask: np.ndarray, out: Union[str, Path], *,
                mask_spec: str = "", seed: int = 0, overwrite: bool = False) -> Dict[str, object]:
    """Inpaint ``images`` (pixels) where ``mask == 0`` with the models of a
    finished run, and write a run directory: the truth, the masked input,
    the recovery at each grid, the per-image recovery errors on the missing
    pixels (:func:`gcnjax.metrics.recovery_error`, in pixel units 0..255)
    against the baseline of filling with the observed mean colour, and the
    mean error of each grid's fill read at the finest grid (up-sampled:
    ``mean_recovery_error_by_grid``). The report says what the models were
    learned for; a run learned for inpainting under another mask than
    ``mask_spec`` fills all the same, with a warning."""
    config, scale, nets, params = load_multigrid_run(run_dir)
    # Compared by what they mean, not by their spelling: block:8 is block:8x8.
    learned = masks.describe(config.learn_mask) if config.learn_mask is not None else None
    asked = masks.describe(mask_spec) if mask_spec else None
    if learned is not None and asked is not None and asked != learned:
        print(f"warning: {str(run_dir)!r} was learned to fill {learned}; this mask ({asked}) asks for a "
              "conditional it was not taught.", file=sys.stderr)
    images = _check_images(images, config)
    mask = np.asarray(mask, np.float32)
    if mask.shape[:3] != images.shape[:3]:
        raise ValueError(f"mask of shape {mask.shape} does not match the images {images.shape}.")
    with RunDir(out, overwrite=overwrite) as out_run:
        return _inpaint_into(out_run, run_dir, config, scale, nets, params, images, mask, mask_spec, seed)


def _inpaint_into(out_run: RunDir, run_dir, config: MultigridConfig, scale: gdata.PixelScale, nets, params,
                  images: np.ndarray, mask: np.ndarray, mask_spec: str, seed: int) -> Dict[str, object]:
    fill = _compiled(_step_key(config), tuple(scale.range))[3]
    t0 = time.perf_counter()
    recovered = jax.device_get(fill(jax.random.key(seed), params, jnp.asarray(scale.to_model(images)),
                                    jnp.asarray(mask)))
    seconds = time.perf_counter() - t0
    recovered = {k: scale.to_pixels(np.asarray(v)) for k, v in recovered.items()}
    size = config.image_size
    finest = recovered[grid_key(size)]
    # Observed pixels are the data by construction; written from the data so
    # that pixel-scale round-off cannot touch them.
    finest = np.where(mask > 0, images, finest)
    errors = recovery_error(images, finest, mask)
    # Each grid's fill read at the finest grid (nearest up-sampling; the error
    # counts the missing pixels only): where along the pyramid it is made.
    by_grid = {k: recovery_error(images, np.asarray(upsample(jnp.asarray(v), size)), mask)
               for k, v in recovered.items()}
    baseline = by_grid["start"]
    gray = np.where(mask > 0, images, 127.5)
    gdata.save_image_grid(out_run.path / "truth.png", images)
    gdata.save_image_grid(out_run.path / "masked.png", gray)
    gdata.save_image_grid(out_run.path / "recovered.png", finest)
    for k, v in recovered.items():
        gdata.save_image_grid(out_run.images / f"{k}.png", np.asarray(upsample(jnp.asarray(v), size)))
    for i, (e, b) in enumerate(zip(errors, baseline)):
        out_run.log({"image": i, "recovery_error": float(e), "mean_colour_error": float(b)})
    summary = {"mean_recovery_error": float(errors.mean()), "mean_colour_fill_error": float(baseline.mean()),
               "mean_recovery_error_by_grid": {k: float(by_grid[k].mean()) for k in _ordered(recovered)},
               "n_images": int(len(errors)), "mask": mask_spec, "seconds": seconds, "model_run": str(run_dir)}
    write_atomic(out_run.path / "summary.json", json.dumps(summary, indent=2))
    report = f"""# Multi-grid inpainting

Model: `{run_dir}`, learned {"to synthesize whole images" if config.learn_mask is None else
                             "for inpainting (" + masks.describe(config.learn_mask) + ")"};
{len(errors)} image(s); mask: {masks.describe(mask_spec) if mask_spec else 'given'}.
Coarse to fine from each image's mean observed colour; the observed pixels are clamped to
the data at every Langevin step ({config.langevin.n_steps} per grid). {seconds:.1f} s.

Mean absolute error on the missing pixels (0..255): **{errors.mean():.2f}**
(filling with the observed mean colour: {baseline.mean():.2f}).

The fill after each grid, up-sampled to {size}×{size}: {", ".join(
        f"{k} {by_grid[k].mean():.2f}" for k in _ordered(recovered))}.

| truth | masked | recovered |
|---|---|---|
| ![truth](truth.png) | ![masked](masked.png) | ![recovered](recovered.png) |

At each grid, coarse to fine: {" ".join(f"![{k}](images/{k}.png)" for k in _ordered(recovered))}
"""
    out_run.write_report(report)
    return {"run_dir": out_run.path, "report": out_run.path / "report.md", "errors": errors,
            "baseline_errors": baseline, "recovered": finest, "seconds": seconds, **summary}
