"""The generator: a top-down ConvNet learned by alternating back-propagation.

    z ~ N(0, I_d),     x = g(z; θ) + ε,     ε ~ N(0, σ² I),
    −log p(x, z; θ) = ||x − g(z; θ)||² / (2σ²) + ||z||² / 2 + const

(Han, Lu, Zhu, Wu, "Learning Generative ConvNet with Continuous Latent
Factors by Alternating Back-Propagation", AAAI 2017; PAPERS §4). ``g`` is any
function ``apply_fn(params, z) -> x`` of a batch of latents, e.g. a Flax
:class:`gcnjax.nets.GeneratorNet`. Learning alternates two steps:

* **Inferential back-propagation** (:func:`infer`): for each observed
  ``x``, Langevin dynamics on its latent ``z`` under the posterior
  ``p(z | x; θ) ∝ exp(−E(z | x))`` with the latent energy

      E(z | x) = ||m ⊙ (x − g(z; θ))||² / (2σ²) + ||z||² / 2,

  ``m`` an optional observation mask (1 = observed, 0 = missing). The
  papers' update
  ``z ← z + (δ²/2) [(1/σ²) (∂g/∂z)ᵀ (x − g(z)) − z] + δ ξ``
  is exactly ``z ← z − (δ²/2) ∇E(z | x) + δ ξ``, i.e. the coupled Langevin
  of :mod:`gcnjax.langevin` with ``LangevinConfig.from_delta(δ, n_steps)``
  (``noise=False``: gradient descent to the posterior mode). The latents of
  the training set are warm-started: each example keeps its ``z`` from the
  previous epoch (:class:`GeneratorState` ``.latents``).
* **Learning back-propagation**: one Optax step on θ that minimises the
  mean over the batch of ``||m ⊙ (x − g(z; θ))||² / (2σ²)`` with the
  inferred ``z`` held fixed, i.e. gradient ascent on ``Σᵢ log p(xᵢ, zᵢ; θ)``.

:func:`make_train_step` builds the jit'd ``(state, batch) -> (state,
metrics)`` that :func:`gcnjax.train.fit` runs; :func:`make_batches` makes its
``batches(i)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnjax import langevin, nets
from gcnjax.train import RunConfig, check_learning_rate_decay, learning_rate_schedule

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]
Batch = Tuple[jax.Array, jax.Array, Optional[jax.Array]]

__all__ = [
    "LATENT_INITS",
    "GENERATOR_NETS",
    "make_net",
    "GeneratorConfig",
    "GeneratorState",
    "latent_energy",
    "make_latent_energy_fn",
    "reconstruction_energy",
    "learning_loss",
    "init_latents",
    "infer",
    "make_optimizer",
    "fitted_latent_gaussian",
    "gaussian_latents",
    "init_state",
    "make_train_step",
    "iterations_per_epoch",
    "make_batches",
    "reconstruct",
    "sample",
]

LATENT_INITS = ("normal", "zeros")

#: The generator nets a config can name (``GeneratorConfig.net``).
GENERATOR_NETS = {
    "face": nets.face_generator,
    "face32": nets.face32_generator,
    "digit": nets.digit_generator,
    "sound": nets.sound_generator,
}


# ---------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Everything that defines an ABP run (saved with its outputs).

    Model:
      latent_dim: d, the dimension of z ~ N(0, I_d).
      sigma: σ, the standard deviation of the observation noise ε (in the
        units of the data; images in [−1, 1] use 0.3).
    Inference:
      langevin: the Langevin settings of the inferential back-propagation
        (:class:`gcnjax.langevin.LangevinConfig`); ``from_delta(δ, n)`` is
        the papers' update, ``from_delta(δ, n, noise=False)`` gradient
        descent.
      latent_init: how latents start: ``"normal"`` (a draw from the prior
        N(0, I)) or ``"zeros"`` (the prior mode).
      warm_start: each example's chain starts from its latent of the
        previous epoch (the papers); ``False`` starts every inference afresh
        from ``latent_init``.
    Learning:
      optimizer: ``"adam"`` or ``"sgd"``; learning_rate, beta1 and beta2
        (Adam's decay rates of the gradient's first and second moments; a
        smaller beta2 lets a sudden large gradient raise the second moment,
        and so shrink its own step, sooner), momentum (SGD; 0 for plain SGD).
      learning_rate_decay, learning_rate_decay_to: the rate of iteration t
        of the run's T = :meth:`total_iterations` iterations, ``"constant"``,
        ``"cosine"`` or ``"linear"`` down to ``learning_rate_decay_to`` of
        ``learning_rate`` at the last one
        (:func:`gcnjax.train.learning_rate_schedule`); a resumed run with
        more epochs follows the schedule of its new T from where it is.
      max_grad_norm: ``None``, or the largest global norm ‖∇θ‖ of the
        gradient handed to the optimizer: a larger one is scaled down to it
        (``optax.clip_by_global_norm``) before Adam's moments see it.
      batch_size: examples per iteration (all of them if fewer).
      n_epochs: passes over the training set; an epoch is
        :func:`iterations_per_epoch` iterations
        (:meth:`total_iterations`).
      seed: of the parameter and latent initialisation and the shuffling.
    Net and data (used by :func:`make_net` and the runs of :mod:`gcnjax.abp`):
      net: the generator preset of :data:`GENERATOR_NETS`: ``"face"``
        (64×64×3), ``"face32"`` (32×32×3, a CPU-sized face net),
        ``"digit"`` (28×28×1), ``"sound"`` (1024-sample waveforms).
      net_norm: ``"none"`` or ``"layer"`` (LayerNorm; see
        :class:`gcnjax.nets.GeneratorNet`).
      out_channels: the images' channels if not the preset's (1 for gray
        faces); ``None`` keeps the preset's.
      pixel_scale: how pixels 0..255 map to the model's values
        (:class:`gcnjax.data.PixelScale`); ``"unit"`` is [−1, 1].
      run: logging, pictures, checkpoints and the divergence policy
        (:class:`gcnjax.train.RunConfig`).

    The defaults are the typical settings of PAPERS §4 (images in [−1, 1],
    σ = 0.3, δ = 0.3, 30 Langevin steps, Adam lr 3e-4 with β1 = 0.5).
    """

    latent_dim: int = 100
    sigma: float = 0.3
    langevin: langevin.LangevinConfig = langevin.LangevinConfig.from_delta(0.3, 30)
    latent_init: str = "normal"
    warm_start: bool = True
    optimizer: str = "adam"
    learning_rate: float = 3e-4
    beta1: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.0
    learning_rate_decay: str = "constant"
    learning_rate_decay_to: float = 0.0
    max_grad_norm: Optional[float] = None
    batch_size: int = 100
    n_epochs: int = 100
    seed: int = 0
    net: str = "face"
    net_norm: str = "none"
    out_channels: Optional[int] = None
    pixel_scale: str = "unit"
    run: RunConfig = RunConfig()

    def __post_init__(self):
        def positive(name, value):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value) or value <= 0:
                raise ValueError(f"GeneratorConfig.{name} must be a positive finite number, got {value!r}.")

        def count(name, value):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"GeneratorConfig.{name} must be an integer >= 1, got {value!r}.")

        count("latent_dim", self.latent_dim)
        positive("sigma", self.sigma)
        positive("learning_rate", self.learning_rate)
        if self.max_grad_norm is not None:
            positive("max_grad_norm", self.max_grad_norm)
        count("batch_size", self.batch_size)
        count("n_epochs", self.n_epochs)
        for name in ("beta1", "beta2", "momentum"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value < 1:
                raise ValueError(f"GeneratorConfig.{name} must be in [0, 1), got {value!r}.")
        check_learning_rate_decay("GeneratorConfig", self.learning_rate_decay, self.learning_rate_decay_to)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"GeneratorConfig.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}.")
        if self.latent_init not in LATENT_INITS:
            raise ValueError(
                f"GeneratorConfig.latent_init must be one of {LATENT_INITS}, got {self.latent_init!r}."
            )
        if not isinstance(self.langevin, langevin.LangevinConfig):
            raise ValueError(
                "GeneratorConfig.langevin must be a gcnjax.langevin.LangevinConfig (e.g. "
                f"LangevinConfig.from_delta(0.3, 30)), got {type(self.langevin).__name__}."
            )
        if self.net not in GENERATOR_NETS:
            raise ValueError(f"GeneratorConfig.net must be one of {tuple(GENERATOR_NETS)}, got {self.net!r}.")
        if self.net_norm not in ("none", "layer"):
            raise ValueError(
                f"GeneratorConfig.net_norm must be 'none' or 'layer', got {self.net_norm!r}; batch statistics "
                "are not offered here: each example's latent is inferred by its own chain, so g(z) must not "
                "depend on the other examples."
            )
        if self.out_channels is not None:
            count("out_channels", self.out_channels)
        if self.pixel_scale not in ("unit", "minus_mean"):
            raise ValueError(f"GeneratorConfig.pixel_scale must be 'unit' or 'minus_mean', got {self.pixel_scale!r}.")
        if not isinstance(self.run, RunConfig):
            raise ValueError(f"GeneratorConfig.run must be a gcnjax.train.RunConfig, got {type(self.run).__name__}.")

    def total_iterations(self, n_examples: int) -> int:
        """Iterations of ``n_epochs`` passes over ``n_examples`` examples."""
        return self.n_epochs * iterations_per_epoch(n_examples, self.batch_size)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "GeneratorConfig":
        """The inverse of :meth:`to_dict` (as read back from JSON)."""
        d = dict(d)
        if isinstance(d.get("langevin"), dict):
            d["langevin"] = langevin.LangevinConfig.from_dict(d["langevin"])
        if isinstance(d.get("run"), dict):
            d["run"] = RunConfig(**d["run"])
        return cls(**d)


def make_net(config: GeneratorConfig):
    """The Flax generator ``config.net`` names, with its norm and channels."""
    overrides = {"norm": config.net_norm}
    if config.out_channels is not None:
        base = GENERATOR_NETS[config.net]()
        overrides["channels"] = tuple(base.channels[:-1]) + (int(config.out_channels),)
    return GENERATOR_NETS[config.net](**overrides)


class GeneratorState(NamedTuple):
    """Training state of a generator.

    params: the generator's parameters θ.
    opt_state: the Optax optimizer's state.
    latents: ``(n_examples, latent_dim)``, the latent z of every training
      example, as last inferred (warm starts of the next epoch's chains).
    key: the PRNG key of the next iteration.
    step: iterations done.
    """

    params: PyTree
    opt_state: PyTree
    latents: jax.Array
    key: jax.Array
    step: jax.Array


# ---------------------------------------------------------------- energies


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _check_sigma(sigma) -> None:
    if _is_concrete(sigma):
        v = np.asarray(sigma)
        if v.ndim != 0 or not np.isfinite(v) or v <= 0:
            raise ValueError(f"sigma (the observation noise σ) must be a positive finite scalar, got {sigma!r}.")


def _broadcast_mask(mask, shape, what="x") -> jax.Array:
    """``mask`` as an array of ``shape`` (float), or a ValueError."""
    mask = jnp.asarray(mask)
    try:
        ok = jnp.broadcast_shapes(mask.shape, tuple(shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to {what} of shape {tuple(shape)}; give a mask "
            f"shaped like {what} (1 = observed pixel, 0 = missing), or one that broadcasts to it."
        )
    dtype = jnp.float32 if mask.dtype == jnp.bool_ or not jnp.issubdtype(mask.dtype, jnp.floating) else mask.dtype
    return jnp.broadcast_to(mask.astype(dtype), tuple(shape))


def _residual(x: jax.Array, g: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
    """``m ⊙ (x − g)``, elementwise. Missing values of x (where m = 0) are
    replaced by 0 first, so that they never enter, not even as NaN or inf:
    the result does not depend on them at all."""
    if g.shape != x.shape:
        raise ValueError(
            f"the generator makes outputs of shape {g.shape}, but the observed x has shape {x.shape}; "
            "give data of the generator's output shape, or a generator that makes it."
        )
    if mask is None:
        return x - g
    mask = _broadcast_mask(mask, x.shape)
    x_observed = jnp.where(mask != 0, x, jnp.zeros_like(x))
    return mask * (x_observed - g)


def latent_energy(apply_fn: ApplyFn, params: PyTree, z: jax.Array, x: jax.Array, *, sigma,
                  mask: Optional[jax.Array] = None, prior_weight=1.0) -> jax.Array:
    """``E(z | x) = ||m ⊙ (x − g(z))||² / (2σ²) + λ ||z||² / 2`` for ONE example.

    ``z`` is ``(d,)`` and ``x`` one observation (no batch axis); ``mask`` is
    shaped like ``x`` or broadcasts to it (1 = observed). With the prior
    weight ``λ = 1`` (the default) this is ``−log p(x, z; θ)`` up to a
    constant (with only the observed pixels of x), so ``exp(−E)`` is the
    posterior of z given x, up to a constant; ``λ = 0`` leaves the
    least-squares fit ``||m ⊙ (x − g(z))||²``, whose minimiser is the
    maximum-likelihood z (the generator's analogue of a PCA projection).
    """
    g = apply_fn(params, z[None])[0]
    r = _residual(x, g, mask)
    return jnp.sum(jnp.square(r)) / (2.0 * sigma**2) + 0.5 * prior_weight * jnp.sum(jnp.square(z))


def make_latent_energy_fn(apply_fn: ApplyFn, params: PyTree, x: jax.Array, *, sigma,
                          mask: Optional[jax.Array] = None,
                          prior_weight=1.0) -> Callable[[jax.Array], jax.Array]:
    """``z ↦ E(z | x)`` of ONE example: what :mod:`gcnjax.langevin` takes."""

    def energy_fn(z):
        return latent_energy(apply_fn, params, z, x, sigma=sigma, mask=mask, prior_weight=prior_weight)

    return energy_fn


def reconstruction_energy(apply_fn: ApplyFn, params: PyTree, z: jax.Array, x: jax.Array, *, sigma,
                          mask: Optional[jax.Array] = None) -> jax.Array:
    """``||m ⊙ (x − g(z; θ))||² / (2σ²)`` for a BATCH, one value per example."""
    r = _residual(x, apply_fn(params, z), mask)
    return jnp.sum(jnp.square(r).reshape(r.shape[0], -1), axis=1) / (2.0 * sigma**2)


def learning_loss(params: PyTree, apply_fn: ApplyFn, z: jax.Array, x: jax.Array, *, sigma,
                  mask: Optional[jax.Array] = None) -> jax.Array:
    """The learning back-propagation's loss: the batch mean of
    ``||m ⊙ (x − g(z; θ))||² / (2σ²)`` with ``z`` fixed (a stop-gradient).
    Its negative gradient in θ is the gradient of the mean
    ``log p(x, z; θ)`` at the inferred latents."""
    z = jax.lax.stop_gradient(z)
    return jnp.mean(reconstruction_energy(apply_fn, params, z, x, sigma=sigma, mask=mask))


# ---------------------------------------------------------------- inference


def init_latents(key: jax.Array, kind: str, shape: Sequence[int]) -> jax.Array:
    """Initial latents: ``"normal"`` (the prior N(0, I)) or ``"zeros"``."""
    shape = tuple(int(s) for s in shape)
    if kind == "normal":
        return jax.random.normal(key, shape, jnp.float32)
    if kind == "zeros":
        return jnp.zeros(shape, jnp.float32)
    raise ValueError(f"latent init must be one of {LATENT_INITS}, got {kind!r}.")


def infer(key: jax.Array, apply_fn: ApplyFn, params: PyTree, x: jax.Array, z0: jax.Array, *, sigma,
          sampler: langevin.LangevinConfig, mask: Optional[jax.Array] = None, prior_weight=1.0):
    """Inferential back-propagation: Langevin on z for each example of a batch.

    For every example ``i`` one chain runs ``sampler`` on the latent energy
    ``E(z | xᵢ) = ||m ⊙ (xᵢ − g(z))||² / (2σ²) + ||z||²/2`` from ``z0[i]``:

        z ← z − a ∇E(z | xᵢ) + b ξ
          = z + a [(1/σ²) (∂g/∂z)ᵀ (m² ⊙ (xᵢ − g(z))) − z] + b ξ.

    With ``sampler = LangevinConfig.from_delta(δ, n)`` (``a = δ²/2``,
    ``b = δ``) this is exactly the papers' update
    ``z ← z + (δ²/2) [(1/σ²) (∂g/∂z)ᵀ (x − g(z)) − z] + δ ξ``;
    ``from_delta(δ, n, noise=False)`` is gradient descent to the posterior
    mode; ``mala=True`` makes the chain exact for the posterior at any step.

    The chains are :func:`gcnjax.langevin.sample` vmapped over examples
    (one scan, no Python loop over examples), so this is one jit-able call
    for any batch size: ``jax.jit(infer, static_argnames=("apply_fn",
    "sampler"))``.

    Args:
      key: a PRNG key (example ``i`` uses ``split(key, B)[i]``).
      apply_fn: ``g``, ``apply_fn(params, z) -> x`` on a batch.
      params: θ.
      x: observations ``(B, …)``; missing values (mask 0) may be anything,
        NaN included: they never enter.
      z0: initial latents ``(B, d)``.
      sigma: σ.
      sampler: the Langevin settings.
      mask: optional ``(B, …)`` or broadcastable to x; 1 = observed.
      prior_weight: λ of :func:`latent_energy`: 1 (the default) is the
        posterior; 0 with the noise off descends to the least-squares fit.

    Returns:
      ``(z, info)``: the latents after the last step ``(B, d)``, and a
      :class:`gcnjax.langevin.LangevinInfo` whose fields have shape
      ``(n_steps, B)`` (``info.is_finite`` flags diverged chains).
    """
    if not isinstance(sampler, langevin.LangevinConfig):
        raise ValueError(
            "sampler must be a gcnjax.langevin.LangevinConfig, e.g. LangevinConfig.from_delta(0.3, 30); "
            f"got {type(sampler).__name__}."
        )
    _check_sigma(sigma)
    x = jnp.asarray(x)
    z0 = jnp.asarray(z0)
    if x.ndim < 2 or z0.ndim != 2 or z0.shape[0] != x.shape[0]:
        raise ValueError(
            f"infer takes a batch: x of shape (B, ...) and z0 of shape (B, latent_dim) with the same B; got "
            f"x {x.shape} and z0 {z0.shape}. For one example use x[None] and z0[None]."
        )
    if mask is not None:
        mask = _broadcast_mask(mask, x.shape)
    keys = jax.random.split(key, x.shape[0])

    def one_example(k, xi, zi, mi):
        energy_fn = make_latent_energy_fn(apply_fn, params, xi, sigma=sigma, mask=mi, prior_weight=prior_weight)
        z, info = sampler.run(k, energy_fn, zi[None])  # one chain
        return z[0], info

    if mask is None:
        z, info = jax.vmap(lambda k, xi, zi: one_example(k, xi, zi, None))(keys, x, z0)
    else:
        z, info = jax.vmap(one_example)(keys, x, z0, mask)
    # (B, n_steps, 1 chain) -> (n_steps, B), as langevin.sample returns for B chains.
    info = jax.tree_util.tree_map(lambda a: jnp.swapaxes(a[..., 0], 0, 1), info)
    return z, info


# ---------------------------------------------------------------- learning


def make_optimizer(config: GeneratorConfig, n_examples: Optional[int] = None) -> optax.GradientTransformation:
    """Adam (``b1 = beta1``, ``b2 = beta2``) or SGD (with ``momentum``) at
    the rate of ``learning_rate`` and its decay, after the gradient is
    scaled to a global norm of at most ``max_grad_norm`` where one is set:
    g ← g · min(1, c / ‖g‖). A decaying rate needs ``n_examples``, the
    training set's size, for the run's length."""
    rate = config.learning_rate
    if config.learning_rate_decay != "constant":
        if n_examples is None:
            raise ValueError("GeneratorConfig.learning_rate_decay decays over the run's iterations: pass "
                             "make_optimizer the number of training examples (n_examples).")
        rate = learning_rate_schedule(rate, config.learning_rate_decay, config.learning_rate_decay_to,
                                      config.total_iterations(n_examples))
    if config.optimizer == "adam":
        update = optax.adam(rate, b1=config.beta1, b2=config.beta2)
    else:
        update = optax.sgd(rate, momentum=config.momentum or None)
    if config.max_grad_norm is None:
        return update  # the optimizer state of runs written before the clip existed
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), update)


def init_state(key: jax.Array, config: GeneratorConfig, net, n_examples: int,
               x_shape: Sequence[int]) -> GeneratorState:
    """Fresh params, optimizer state and latents for a training set of
    ``n_examples`` observations of shape ``x_shape`` (one example's shape).

    ``net`` is a Flax module (or anything with ``init(key, z)`` and
    ``apply(params, z)``) mapping ``(N, latent_dim)`` to ``(N, *x_shape)``.
    """
    if isinstance(n_examples, bool) or not isinstance(n_examples, (int, np.integer)) or n_examples < 1:
        raise ValueError(f"n_examples must be an integer >= 1 (the training set's size), got {n_examples!r}.")
    x_shape = tuple(int(s) for s in x_shape)
    k_params, k_latents, k_next = jax.random.split(key, 3)
    z = jnp.zeros((1, config.latent_dim), jnp.float32)
    params = nets.init_params(net, k_params, z)
    out = jax.eval_shape(net.apply, params, z)
    if tuple(out.shape[1:]) != x_shape:
        raise ValueError(
            f"the generator makes outputs of shape {tuple(out.shape[1:])} but the data's examples have shape "
            f"{x_shape}; resize the data or choose a generator (start size, channels) that makes {x_shape}."
        )
    opt_state = make_optimizer(config, n_examples).init(params)
    latents = init_latents(k_latents, config.latent_init, (n_examples, config.latent_dim))
    return GeneratorState(params, opt_state, latents, k_next, jnp.zeros((), jnp.int32))


def _unpack(batch) -> Batch:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(
            "a generator batch is (indices, x) or (indices, x, mask): the indices of the examples in the "
            f"training set, their observations, and their mask or None; got {type(batch).__name__}."
        )
    indices, x = batch[0], batch[1]
    mask = batch[2] if len(batch) == 3 else None
    if jnp.ndim(indices) != 1 or jnp.shape(indices)[0] != jnp.shape(x)[0]:
        raise ValueError(
            f"batch indices must be one index per example of x: got indices of shape {jnp.shape(indices)} "
            f"for x of shape {jnp.shape(x)}."
        )
    if not jnp.issubdtype(jnp.result_type(indices), jnp.integer):
        raise ValueError(f"batch indices must be integers, got dtype {jnp.result_type(indices)}.")
    return indices, x, mask


def make_train_step(config: GeneratorConfig, apply_fn: ApplyFn, optimizer: optax.GradientTransformation):
    """The jit'd ABP step ``(state, (indices, x, mask)) -> (state, metrics)``.

    One iteration on a batch of training examples ``indices`` (unique within
    the batch) with observations ``x`` and ``mask`` (or None, all observed):

    1. inferential back-propagation: the chains start at
       ``state.latents[indices]`` (``warm_start``; else afresh from
       ``latent_init``) and run ``config.langevin`` on ``E(z | x)``
       (:func:`infer`); the inferred z are written back into
       ``state.latents[indices]``;
    2. learning back-propagation: one ``optimizer`` step on θ for
       :func:`learning_loss` at the inferred z.

    Metrics are device scalars (no host sync), computed at the inferred z
    with θ before the update: ``loss`` (mean ``||m ⊙ (x − g(z))||²/(2σ²)``),
    ``mse`` (mean squared error over observed pixels), ``latent_sq_norm``
    (mean ``||z||²``), ``latent_energy`` (mean ``E(z | x)``), ``grad_norm``
    (of the learning gradient), ``chain_grad_norm`` (mean ``||∇E||`` after
    the last Langevin step), ``acceptance`` (mean MALA acceptance rate, 1
    unadjusted), ``diverged`` (number of chains that became non-finite). The
    step is traced once per shape of the batch; the state is donated.
    """
    sampler = config.langevin
    sigma = config.sigma

    def train_step(state: GeneratorState, batch):
        indices, x, mask = _unpack(batch)
        key, k_init, k_infer = jax.random.split(state.key, 3)
        if config.warm_start:
            z0 = state.latents[indices]
        else:
            z0 = init_latents(k_init, config.latent_init, (x.shape[0], config.latent_dim))
        z, info = infer(k_infer, apply_fn, state.params, x, z0, sigma=sigma, sampler=sampler, mask=mask)
        z = jax.lax.stop_gradient(z)

        def loss_fn(params):
            r = _residual(x, apply_fn(params, z), mask)
            per_example = jnp.sum(jnp.square(r).reshape(r.shape[0], -1), axis=1) / (2.0 * sigma**2)
            return jnp.mean(per_example), r  # = learning_loss

        (loss, r), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        latents = state.latents.at[indices].set(z)

        n_observed = jnp.float32(r.size) if mask is None else jnp.sum(_broadcast_mask(mask, x.shape) != 0)
        latent_sq_norm = jnp.mean(jnp.sum(jnp.square(z), axis=1))
        if sampler.n_steps:
            finite_chains = jnp.all(info.is_finite, axis=0)
        else:
            finite_chains = jnp.all(jnp.isfinite(z), axis=1)
        metrics = {
            "loss": loss,
            "mse": jnp.sum(jnp.square(r)) / jnp.maximum(n_observed, 1),
            "latent_sq_norm": latent_sq_norm,
            "latent_energy": loss + 0.5 * latent_sq_norm,
            "grad_norm": optax.tree.norm(grads),
            "chain_grad_norm": jnp.mean(info.grad_norm[-1]) if sampler.n_steps else jnp.float32(0),
            "acceptance": jnp.mean(info.acceptance_rate) if sampler.n_steps else jnp.float32(1),
            "diverged": jnp.sum(~finite_chains),
            # A learning gradient of exactly zero (a saturated tanh output,
            # every unit dead): learning cannot go on.
            "dead_units": (optax.tree.norm(grads) == 0).astype(jnp.float32),
        }
        return GeneratorState(params, opt_state, latents, key, state.step + 1), metrics

    return jax.jit(train_step, donate_argnums=(0,))


def iterations_per_epoch(n_examples: int, batch_size: int) -> int:
    """``ceil(n_examples / batch_size)``: iterations that visit every example once."""
    if n_examples < 1 or batch_size < 1:
        raise ValueError(f"n_examples and batch_size must be >= 1, got {n_examples!r} and {batch_size!r}.")
    return math.ceil(n_examples / min(batch_size, n_examples))


def make_batches(x, batch_size: int, *, seed: int = 0, mask=None) -> Callable[[int], Batch]:
    """``batches(i) -> (indices, x[indices], mask[indices] or None)`` for
    :func:`gcnjax.train.fit`.

    Each epoch visits every example in a fresh random order (a function of
    ``seed`` and the epoch, so a resumed run sees the same batches). Every
    batch has ``min(batch_size, n)`` distinct examples, so the step is traced
    once; when ``batch_size`` does not divide ``n`` the last batch of an epoch
    is the last ``batch_size`` of the order (overlapping the one before).
    ``mask`` is per example ``(n, …)``, or one mask that broadcasts to every
    example (passed unchanged).
    """
    n = int(np.shape(x)[0])
    if n < 1:
        raise ValueError("the training set is empty: make_batches needs at least one example.")
    size = min(int(batch_size), n)
    per_epoch = iterations_per_epoch(n, size)
    per_example_mask = mask is not None and np.ndim(mask) == np.ndim(x) and np.shape(mask)[0] == n

    def batches(i: int) -> Batch:
        epoch, j = divmod(int(i), per_epoch)
        order = np.random.default_rng([int(seed), epoch]).permutation(n)
        start = min(j * size, n - size)
        indices = np.sort(order[start:start + size]).astype(np.int32)
        m = None if mask is None else (mask[indices] if per_example_mask else mask)
        return jnp.asarray(indices), x[indices], m

    return batches


# ---------------------------------------------------------------- use


def reconstruct(key: jax.Array, apply_fn: ApplyFn, params: PyTree, x: jax.Array, *, config: GeneratorConfig,
                mask: Optional[jax.Array] = None, z0: Optional[jax.Array] = None):
    """Infer the latents of NEW observations and regenerate them.

    Runs :func:`infer` with ``config.langevin`` and ``config.sigma`` from
    ``z0`` (default: ``config.latent_init``); with a ``mask`` only the
    observed pixels are used, so ``g(z)`` fills in the missing ones (the
    papers' recovery of occluded images). Returns ``(g(z), z)``.
    """
    x = jnp.asarray(x)
    k_init, k_infer = jax.random.split(key)
    if z0 is None:
        z0 = init_latents(k_init, config.latent_init, (x.shape[0], config.latent_dim))
    z, _ = infer(k_infer, apply_fn, params, x, z0, sigma=config.sigma, sampler=config.langevin, mask=mask)
    return apply_fn(params, z), z


def sample(key: jax.Array, apply_fn: ApplyFn, params: PyTree, n: int, latent_dim: int,
           latent_gaussian: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> jax.Array:
    """``g(z)`` for ``n`` fresh latents ``z ~ N(0, I_latent_dim)`` (the mean
    of x given z; add ``σ ξ`` for a draw of x itself); with
    ``latent_gaussian = (μ, L)`` (:func:`fitted_latent_gaussian`),
    ``z = μ + L ε``, ``ε ~ N(0, I)``: a draw of N(μ, L Lᵀ)."""
    if int(n) < 1 or int(latent_dim) < 1:
        raise ValueError(f"n and latent_dim must be >= 1, got n={n!r}, latent_dim={latent_dim!r}.")
    z = jax.random.normal(key, (int(n), int(latent_dim)), jnp.float32)
    return apply_fn(params, z if latent_gaussian is None else gaussian_latents(latent_gaussian, z))


def gaussian_latents(latent_gaussian: Tuple[np.ndarray, np.ndarray], noise) -> jax.Array:
    """``z = μ + L ε`` for each row ε of ``noise`` ``(n, d)``, with
    ``latent_gaussian = (μ, L)`` (:func:`fitted_latent_gaussian`): standard
    normal rows become draws of N(μ, L Lᵀ)."""
    mean, factor = (jnp.asarray(a, jnp.float32) for a in latent_gaussian)
    d = noise.shape[-1]
    if mean.shape != (d,) or factor.shape != (d, d):
        raise ValueError(f"latent_gaussian must be a mean ({d},) and a factor ({d}, {d}), got {mean.shape} and "
                         f"{factor.shape}.")
    return mean + jnp.asarray(noise, jnp.float32) @ factor.T


def fitted_latent_gaussian(latents) -> Tuple[np.ndarray, np.ndarray]:
    """The Gaussian N(μ̂, Σ̂) fitted to inferred latents ``(N, d)`` (the
    sample mean and the covariance with 1/(N − 1)), as ``(μ̂, L)`` with
    L Lᵀ = Σ̂: L = U √Λ from Σ̂'s eigendecomposition (rounding's negative
    eigenvalues set to 0; Σ̂ is singular when N ≤ d).

    The prior N(0, I) is what the model assumes; the latents a learned
    generator was fitted at can sit elsewhere (with a small σ the prior's
    pull ||z||²/2 is weak against ||x − g(z)||²/(2σ²)), and g then draws its
    best images from this fitted Gaussian, not from N(0, I)."""
    z = np.asarray(latents, np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or not np.isfinite(z).all():
        raise ValueError(f"latents must be a finite (N, d) array with N >= 2 rows, got shape {z.shape}.")
    values, vectors = np.linalg.eigh(np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1]))
    return z.mean(axis=0), vectors * np.sqrt(np.clip(values, 0.0, None))
