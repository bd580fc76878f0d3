"""The descriptor: the generative ConvNet, an energy-based model.

    p(x; w) = exp(f(x; w)) q(x) / Z(w),     q(x) = N(0, σ² I),
    E(x; w) = ||x||² / (2σ²) − f(x; w)

(Xie, Lu, Zhu, Wu, "A Theory of Generative ConvNet", ICML 2016). ``f`` is a
bottom-up ConvNet with a scalar output (any Flax module's ``apply``).

* Sampling is Langevin dynamics on E, by :mod:`gcnjax.langevin`.
* Learning is maximum likelihood: the gradient of the mean log-likelihood is
  ``E_data[∂f/∂w] − E_model[∂f/∂w]``, the model expectation estimated with
  synthesized samples. :func:`make_train_step` builds the jit'd step that
  minimises ``mean f(samples) − mean f(data)`` with an Optax optimizer.
* Chains start from zero (the reference mean), noise, the data (contrastive
  divergence, CD-k: one chain at each observed image of the batch) or are
  persistent (carried across iterations).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnjax import langevin
from gcnjax.nets import ConvSpec, DescriptorNet, init_params, layer_output_sizes
from gcnjax.train import LEARNING_RATE_DECAYS, RunConfig, check_learning_rate_decay
from gcnjax.train import learning_rate_schedule as train_schedule

PyTree = Any
ApplyFn = Callable[[PyTree, jax.Array], jax.Array]

__all__ = [
    "CHAIN_INITS",
    "LEARNING_RATE_DECAYS",
    "DescriptorConfig",
    "DescriptorState",
    "energy",
    "mean_energies",
    "first_layer_features",
    "first_layer_statistics",
    "make_energy_fn",
    "virial_ratio",
    "init_chains",
    "is_contrastive_divergence",
    "n_state_chains",
    "synthesize",
    "ml_loss",
    "MLTerms",
    "ml_update",
    "add_data_noise",
    "make_optimizer",
    "learning_rate_schedule",
    "scale_by_tree",
    "cap_max_abs",
    "spatial_position_scales",
    "make_net",
    "init_state",
    "make_train_step",
    "flat_samples",
    "grow",
    "descend_to_minimum",
    "activation_pattern",
]

CHAIN_INITS = ("zeros", "noise", "uniform", "data")


@dataclasses.dataclass(frozen=True)
class DescriptorConfig:
    """Everything that defines a descriptor run (saved with its outputs).

    Model:
      layers, top, top_units, activation, init_std: the net
        (:class:`DescriptorNet`; ``top_units`` summed fully connected units
        of a dense top).
      activate_last, init_scheme: see :class:`gcnjax.nets.DescriptorNet` (the
        short-run net: a linear last conv, PyTorch's default init).
      sigma: σ of the Gaussian reference; ``None`` drops the ``||x||²/2σ²``
        term (short-run and multi-grid code do).
    Sampling:
      langevin: step settings (:class:`gcnjax.langevin.LangevinConfig`).
      n_chains: synthesized images per iteration; ignored by contrastive
        divergence (below), whose chains are the batch's images.
      chain_init: ``"zeros"`` (reference mean), ``"noise"`` (N(0, init_scale²)),
        ``"uniform"`` (U(−init_scale, init_scale)) or ``"data"``. With
        ``"data"`` and ``persistent=False`` the learning is contrastive
        divergence (CD-k): every iteration starts ONE chain at EACH observed
        image ``x_i`` of its batch of ``B = min(batch_size, N)`` images
        and runs k = ``langevin.n_steps`` steps to ``x̃_i``; the update
        descends ``(1/B) Σ_i f(x̃_i) − (1/B) Σ_i f(x_i)``, the same B images
        in both terms (with ``data_noise`` both use the noisy ``x_i``).
        ``n_chains`` plays no part then.
      persistent: carry the chains over iterations (they start from
        ``chain_init`` once: with ``"data"``, persistent contrastive
        divergence, ``n_chains`` chains at the observed images, cycled).
      restart_fraction: persistent chains only: before each iteration's
        Langevin run every chain starts again from ``chain_init`` with this
        probability, independently (0: never; the replay buffer of Du and
        Mordatch, 2019, restarts 5%). A restarted chain explores from its
        start and can fall into a mode of the model that chains carried
        over never visit; its samples then push that mode's energy up.
    Learning:
      optimizer: ``"sgd"`` or ``"adam"``; learning_rate, momentum (SGD),
        beta1 (Adam), weight_decay (added to the gradient, as in SGD with
        weight decay).
      learning_rate_decay: the learning rate of iteration t of T =
        ``n_iterations``, with a = ``learning_rate_decay_to``:
        ``"constant"`` lr; ``"cosine"`` lr·(a + (1 − a)(1 + cos(πt/T))/2);
        ``"linear"`` lr·(a + (1 − a)(1 − t/T)); both end at a·lr at the
        last iteration, so that the chains catch up with a model that moves
        ever more slowly (a > 0 keeps learning able to answer the chains,
        which a model unbounded below needs: :class:`gcnjax.frame.FrameTop`).
        A resumed run with a new
        ``n_iterations`` follows the schedule of the new T from where it is.
        Not with ``grow_iterations`` (each stage starts a fresh optimizer).
      divide_by_positions: divide each conv layer's gradient by the number
        of spatial positions of its output (the authors' code).
      max_abs_grad: rescale each parameter array's gradient so that its
        largest absolute entry is at most this (the authors' code: 20 for
        ML, 1 for CD); ``None`` for off.
      grow_iterations: layer-by-layer training: iterations spent with 1, 2,
        …, L layers (``None``: all layers from the start).
    Data and run:
      image_size: (height, width) the observed images are resized to;
        ``(frames, height, width)`` for videos, ``(samples,)`` for sounds.
      channels: 1 (gray) or 3.
      pixel_scale: ``"minus_mean"`` (0..255 minus the mean), ``"standard"`` (minus the
        mean, divided by the sd: unit variance) or ``"unit"`` (:class:`gcnjax.data.PixelScale`).
      batch_size: observed images per iteration (all of them if fewer).
      data_noise: standard deviation of Gaussian noise added to the observed
        batch at every iteration (the short-run code's 0.03 on [−1, 1]
        images); 0 for none.
      n_iterations, seed.
      run: logging, pictures, checkpoints and the divergence policy
        (:class:`gcnjax.train.RunConfig`).
    """

    layers: Tuple[ConvSpec, ...] = (ConvSpec(100, 15, 3), ConvSpec(64, 5, 1), ConvSpec(30, 3, 1))
    top: str = "sum"
    top_units: int = 1
    activation: str = "relu"
    init_std: float = 0.01
    sigma: Optional[float] = 1.0
    langevin: langevin.LangevinConfig = langevin.LangevinConfig.from_delta(0.3, 10)
    n_chains: int = 1
    chain_init: str = "zeros"
    init_scale: float = 1.0
    persistent: bool = True
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.5
    beta1: float = 0.5
    weight_decay: float = 1e-4
    learning_rate_decay: str = "constant"
    learning_rate_decay_to: float = 0.0
    divide_by_positions: bool = True
    max_abs_grad: Optional[float] = 20.0
    grow_iterations: Optional[Tuple[int, ...]] = None
    image_size: Tuple[int, int] = (224, 224)
    channels: int = 3
    pixel_scale: str = "minus_mean"
    batch_size: int = 32
    n_iterations: int = 1000
    seed: int = 0
    run: RunConfig = RunConfig()
    activate_last: bool = True
    init_scheme: str = "normal"
    data_noise: float = 0.0
    restart_fraction: float = 0.0

    # Saved by older runs; how the convs are computed is now chosen when they
    # are traced (gcnjax.ops), from the backend, and is no part of a run.
    DROPPED_FIELDS = ("conv", "space_to_depth")

    def __post_init__(self):
        def positive(name, value, allow_none=False):
            if value is None and allow_none:
                return
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"DescriptorConfig.{name} must be a positive number, got {value!r}.")

        positive("sigma", self.sigma, allow_none=True)
        positive("learning_rate", self.learning_rate)
        positive("init_std", self.init_std)
        positive("max_abs_grad", self.max_abs_grad, allow_none=True)
        for name in ("n_chains", "batch_size", "n_iterations", "top_units"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"DescriptorConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.weight_decay < 0 or not np.isfinite(self.weight_decay):
            raise ValueError(f"DescriptorConfig.weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.chain_init not in CHAIN_INITS:
            raise ValueError(
                f"DescriptorConfig.chain_init must be one of {CHAIN_INITS}, got {self.chain_init!r}."
            )
        check_learning_rate_decay("DescriptorConfig", self.learning_rate_decay, self.learning_rate_decay_to)
        if self.learning_rate_decay != "constant" and self.grow_iterations is not None:
            raise ValueError("DescriptorConfig.learning_rate_decay decays over the whole run, but layer-by-layer "
                             "growth (grow_iterations) starts a fresh optimizer at each stage: set "
                             "learning_rate_decay='constant' or grow_iterations=None.")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"DescriptorConfig.optimizer must be 'sgd' or 'adam', got {self.optimizer!r}.")
        if not self.layers:
            raise ValueError("DescriptorConfig.layers is empty; give at least one ConvSpec.")
        if self.grow_iterations is not None:
            if len(self.grow_iterations) != len(self.layers) or min(self.grow_iterations) < 0:
                raise ValueError(
                    "DescriptorConfig.grow_iterations needs one non-negative iteration count per "
                    f"layer ({len(self.layers)}), got {self.grow_iterations!r}."
                )
        if self.channels not in (1, 3):
            raise ValueError(f"DescriptorConfig.channels must be 1 or 3, got {self.channels!r}.")
        if self.init_scheme not in ("normal", "torch"):
            raise ValueError(f"DescriptorConfig.init_scheme must be 'normal' or 'torch', got {self.init_scheme!r}.")
        if not isinstance(self.data_noise, (int, float)) or not np.isfinite(self.data_noise) or self.data_noise < 0:
            raise ValueError(f"DescriptorConfig.data_noise must be a number >= 0 (0: none), got {self.data_noise!r}.")
        if (isinstance(self.restart_fraction, bool) or not isinstance(self.restart_fraction, (int, float))
                or not 0 <= self.restart_fraction <= 1):
            raise ValueError("DescriptorConfig.restart_fraction must be a probability in [0, 1] (0: never), got "
                             f"{self.restart_fraction!r}.")
        if self.restart_fraction and not self.persistent:
            raise ValueError("DescriptorConfig.restart_fraction restarts persistent chains; these chains start afresh "
                             "every iteration (persistent=False): set persistent=True or restart_fraction=0.")

    @property
    def total_iterations(self) -> int:
        if self.grow_iterations is not None:
            return int(sum(self.grow_iterations))
        return self.n_iterations

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "DescriptorConfig":
        d = {key: value for key, value in d.items() if key not in cls.DROPPED_FIELDS}
        d["layers"] = tuple(ConvSpec(**l) if isinstance(l, dict) else l for l in d["layers"])
        if isinstance(d["langevin"], dict):
            d["langevin"] = langevin.LangevinConfig.from_dict(d["langevin"])
        if isinstance(d.get("run"), dict):
            d["run"] = RunConfig(**d["run"])
        for key in ("image_size", "grow_iterations"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


class DescriptorState(NamedTuple):
    """Training state of a descriptor.

    params: the net's parameters.
    opt_state: the Optax optimizer's state.
    chains: the persistent chains ``(n_chains, H, W, C)`` (videos
      ``(n_chains, T, H, W, C)``, sounds ``(n_chains, T, C)``) (the latest
      synthesized images when chains are not persistent; contrastive
      divergence has one per image of the batch, ``(B, H, W, C)``, see
      :func:`n_state_chains`).
    key: the PRNG key of the next iteration.
    step: iterations done.
    """

    params: PyTree
    opt_state: PyTree
    chains: jax.Array
    key: jax.Array
    step: jax.Array


def energy(apply_fn: ApplyFn, params: PyTree, x: jax.Array, sigma: Optional[float]) -> jax.Array:
    """``E(x) = ||x||²/(2σ²) − f(x)`` for a BATCH ``x``, one value per image."""
    f = apply_fn(params, x)
    if sigma is None:
        return -f
    reference = jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))) / (2.0 * sigma**2)
    return reference - f


def mean_energies(apply_fn: ApplyFn, params: PyTree, sigma: Optional[float], *, batch: int = 64,
                  **sets) -> Dict[str, float]:
    """``{name: mean of E over the samples of sets[name]}`` (each a batch in
    model units, all of one sample shape): :func:`energy` evaluated in
    chunks of ``min(batch, largest set)`` samples, the last one padded, so
    one compilation serves every set."""
    arrays = {name: jnp.asarray(x, jnp.float32) for name, x in sets.items()}
    chunk = min(int(batch), max(x.shape[0] for x in arrays.values()))
    fn = jax.jit(lambda p, x: energy(apply_fn, p, x, sigma))
    means = {}
    for name, x in arrays.items():
        total = 0.0
        for i in range(0, x.shape[0], chunk):
            part = x[i:i + chunk]
            m = part.shape[0]
            if m < chunk:
                part = jnp.concatenate([part, jnp.zeros((chunk - m,) + part.shape[1:], part.dtype)])
            total += float(jnp.sum(fn(params, part)[:m]))
        means[name] = total / x.shape[0]
    return means


def first_layer_features(net, params: PyTree) -> Optional[Callable[[jax.Array], jax.Array]]:
    """``x ↦ w₁ ⋆ x + b₁``: the responses of a :class:`DescriptorNet`'s first
    conv layer (before its activation, with its stride and padding),
    ``(N, positions..., C₁)`` for a batch of images, videos or sounds in
    model units; jit'd. For a FRAME net (:class:`gcnjax.frame.FrameNet`),
    its fixed features ``φ(x)``, whose statistics its top weights are
    learned to match. None for another net."""
    if not isinstance(net, DescriptorNet):
        features = getattr(net, "features", None)
        return None if features is None else jax.jit(lambda x: features(x).astype(jnp.float32))
    first = net.clone(depth=1, top="sum")
    conv1 = {"params": {"conv1": params["params"]["conv1"]}}

    @jax.jit
    def features(x):
        _, state = first.apply(conv1, x, mutable=["intermediates"])
        return state["intermediates"]["preactivation1"][0].astype(jnp.float32)

    return features


def first_layer_statistics(net, params: PyTree, observed, *, seed: int = 0,
                           **sets) -> Optional[Tuple[np.ndarray, Dict[str, float]]]:
    """``(Ḡ_observed, {name: d})``: the mean Gram matrix of the observed
    data's :func:`first_layer_features` (:func:`gcnjax.metrics.mean_gram`),
    and the Gram distance ``d = ‖Ḡ − Ḡ_observed‖²_F / C₁²`` to it of each
    set of ``sets`` and of ``"white_noise"``: Gaussian noise with the
    observed per-channel mean and standard deviation
    (:func:`gcnjax.metrics.white_noise`, ``min(64, max(4, N))`` samples of
    the observed shape, drawn from ``numpy.random.default_rng(seed)``); all
    in model units. Samples of a good model sit far nearer the data than
    the noise; ones farther than it do not look like the data. None where
    the net has no first layer to read (:func:`first_layer_features`)."""
    from gcnjax import metrics

    features = first_layer_features(net, params)
    if features is None:
        return None
    observed = np.asarray(observed, np.float32)
    n_noise = min(64, max(4, observed.shape[0]))
    noise = metrics.white_noise(observed, (n_noise,) + observed.shape[1:], np.random.default_rng(seed))
    sets = {**sets, "white_noise": noise}
    batch = min(64, max(len(x) for x in (observed, *sets.values())))  # one compilation for all
    gram = metrics.mean_gram(observed, features, batch)
    distances = {name: metrics.gram_distance_to(gram, x, features, batch) for name, x in sets.items()}
    return gram, distances


def make_energy_fn(apply_fn: ApplyFn, params: PyTree, sigma: Optional[float]):
    """E of ONE image (no batch axis): what :mod:`gcnjax.langevin` takes."""

    def energy_fn(x):
        return energy(apply_fn, params, x[None], sigma)[0]

    return energy_fn


def virial_ratio(apply_fn: ApplyFn, params: PyTree, x: jax.Array, sigma: Optional[float]) -> jax.Array:
    """``x·∇E(x) / d`` per image of a batch ``x`` (``d`` values each): an
    equilibrium check of samples that needs no reference samples.

    For any density ``p ∝ exp(−E)`` on ``R^d`` that decays fast enough,
    integration by parts gives the virial identity ``E_p[x·∇E(x)] = d``, so
    the ratio averages to 1 over exact samples. A chain still climbing
    towards the model's typical set reads below 1, and a local minimum of
    ``E`` (noise-free Langevin's end, ``x = σ²∇f(x)``) reads exactly 0. For
    the descriptor ``x·∇E = ||x||²/σ² − x·∇f(x)``, and when ``f`` is
    positively 1-homogeneous (ReLU or |·| features with a linear top, no
    biases) ``x·∇f = f``.
    """
    grad = jax.grad(lambda z: jnp.sum(energy(apply_fn, params, z, sigma)))(jnp.asarray(x, jnp.float32))
    axes = tuple(range(1, x.ndim))
    return jnp.sum(x * grad, axis=axes) / np.prod(x.shape[1:])


def is_contrastive_divergence(config: DescriptorConfig) -> bool:
    """Whether ``config`` learns by CD-k: fresh chains, every iteration, at
    the observed images of the batch (``chain_init="data"``, not persistent)."""
    return config.chain_init == "data" and not config.persistent


def n_state_chains(config: DescriptorConfig, n_data: int) -> int:
    """The number of chains a state holds for ``n_data`` observed images:
    ``B = min(batch_size, n_data)`` (every batch's size, see
    :func:`gcnjax.data.shuffled_batches`) for contrastive divergence, one
    chain per image of the batch; ``n_chains`` otherwise."""
    if is_contrastive_divergence(config):
        return min(config.batch_size, int(n_data))
    return config.n_chains


def init_chains(key, kind: str, shape: Sequence[int], *, scale: float = 1.0, data=None) -> jax.Array:
    """Initial positions of ``shape[0]`` chains.

    kind: ``"zeros"``; ``"noise"`` N(0, scale²); ``"uniform"`` U(−scale, scale);
    ``"data"``: the first ``shape[0]`` rows of ``data`` (cycled if fewer):
    the start of persistent chains from the data (PCD) and a CD state's
    chains (``shape[0] = B``). CD's train step starts its chains at each
    batch itself (:func:`make_train_step`), not here.
    """
    shape = tuple(shape)
    if kind == "zeros":
        return jnp.zeros(shape, jnp.float32)
    if kind == "noise":
        return scale * jax.random.normal(key, shape, jnp.float32)
    if kind == "uniform":
        return jax.random.uniform(key, shape, jnp.float32, -scale, scale)
    if kind == "data":
        if data is None:
            raise ValueError("chain_init='data' (contrastive divergence) needs the observed data.")
        idx = jnp.arange(shape[0]) % data.shape[0]
        return jnp.asarray(data)[idx]
    raise ValueError(f"chain init must be one of {CHAIN_INITS}, got {kind!r}.")


def synthesize(key, apply_fn: ApplyFn, params: PyTree, x0: jax.Array, sampler: langevin.LangevinConfig,
               sigma: Optional[float]):
    """Langevin chains under the descriptor from ``x0``: ``(samples, info)``."""
    return sampler.run(key, make_energy_fn(apply_fn, params, sigma), x0)


def _mean_f(params: PyTree, apply_fn: ApplyFn, x: jax.Array) -> jax.Array:
    return jnp.mean(apply_fn(params, x))


def ml_loss(params: PyTree, apply_fn: ApplyFn, data: jax.Array, samples: jax.Array) -> jax.Array:
    """``mean f(samples) − mean f(data)``: its gradient is the negative of the
    log-likelihood gradient ``E_data[∂f/∂w] − E_model[∂f/∂w]`` (the
    reference term does not depend on w)."""
    return _mean_f(params, apply_fn, samples) - _mean_f(params, apply_fn, data)


class MLTerms(NamedTuple):
    """The two halves of one maximum-likelihood gradient, at the old params:
    ``f_samples``, ``f_data`` (mean f) and ``samples_grad_norm``, the norm of
    ``E_model[∂f/∂w]`` alone, less the params whose gradient is the same
    on samples and data (one equal on every input, such as that of a bias
    added to f, says nothing about where the samples are). It is
    exactly zero when f is flat on every sample (e.g. every ReLU under the
    top off on the chains): learning then only raises f on the data,
    without bound."""

    f_samples: jax.Array
    f_data: jax.Array
    samples_grad_norm: jax.Array


def ml_update(optimizer: optax.GradientTransformation, apply_fn: ApplyFn, params: PyTree, opt_state,
              data: jax.Array, samples: jax.Array):
    """One maximum-likelihood update: the optimizer's step on :func:`ml_loss`
    (``samples`` taken as constants). Returns ``(params, opt_state, grads,
    terms)``, ``grads = E_model[∂f/∂w] − E_data[∂f/∂w]`` and ``terms`` the
    :class:`MLTerms` at the old params."""
    # The halves separately cost what their difference does (one forward and
    # backward pass over each batch) and show when the samples' half vanishes.
    f_samples, grads_samples = jax.value_and_grad(_mean_f)(params, apply_fn, jax.lax.stop_gradient(samples))
    f_data, grads_data = jax.value_and_grad(_mean_f)(params, apply_fn, data)
    grads = jax.tree_util.tree_map(jnp.subtract, grads_samples, grads_data)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    informative = jax.tree_util.tree_map(lambda s, d: jnp.where(jnp.all(s == d), 0.0, s), grads_samples, grads_data)
    terms = MLTerms(f_samples, f_data, optax.tree.norm(informative))
    return optax.apply_updates(params, updates), opt_state, grads, terms


def flat_samples(terms: MLTerms, grad_norm: jax.Array) -> jax.Array:
    """1.0 when the samples' half of the learning gradient is exactly zero
    while the whole is not: f is flat on every sample, so the update only
    raises f on the data. A run whose chains keep landing there has collapsed
    (:func:`gcnjax.train.fit` stops it); 0.0 otherwise."""
    return ((terms.samples_grad_norm == 0) & (grad_norm > 0)).astype(jnp.float32)


def add_data_noise(key: jax.Array, data: jax.Array, sd: float) -> jax.Array:
    """``data + sd · ξ`` (``sd = 0``: the data as they are), with ``ξ`` drawn
    from a key folded off ``key``, so that runs without data noise keep their
    random streams unchanged."""
    if not sd:
        return data
    return data + sd * jax.random.normal(jax.random.fold_in(key, 0x6E6F), data.shape, data.dtype)


# ---------------------------------------------------------------- optimizer


def scale_by_tree(scales: PyTree) -> optax.GradientTransformation:
    """Multiply each gradient leaf by the matching leaf of ``scales``."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda g, s: g * s, updates, scales), state

    return optax.GradientTransformation(init_fn, update_fn)


def cap_max_abs(max_abs: float) -> optax.GradientTransformation:
    """Rescale each gradient array ``g`` to ``g · min(1, c / max|g|)``, so that
    its largest absolute entry is at most ``c`` (direction kept)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params

        def cap(g):
            m = jnp.max(jnp.abs(g))
            return g * jnp.minimum(1.0, max_abs / jnp.maximum(m, 1e-30))

        return jax.tree_util.tree_map(cap, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def spatial_position_scales(params: PyTree, layers: Sequence[ConvSpec], image_size: Sequence[int]) -> PyTree:
    """``1 / (number of output positions)`` for each conv layer's params, 1 elsewhere.

    ``image_size`` is the size along the data axes: ``(H, W)`` for images,
    ``(T, H, W)`` for videos, ``(T,)`` for sounds; a layer's positions are
    the product of its output sizes.
    """
    sizes = layer_output_sizes(layers, image_size)

    def scale(path, leaf):
        names = [getattr(p, "key", None) for p in path]
        for name in names:
            if isinstance(name, str) and name.startswith("conv"):
                positions = int(np.prod(sizes[int(name[4:]) - 1]))
                return jnp.asarray(1.0 / positions, jnp.float32)
        return jnp.asarray(1.0, jnp.float32)

    return jax.tree_util.tree_map_with_path(scale, params)


def make_optimizer(config: DescriptorConfig, params: PyTree, image_size=None) -> optax.GradientTransformation:
    """The authors' update: per-layer division by positions, max-abs capping,
    weight decay, then SGD with momentum (or Adam) at the rate of
    :func:`learning_rate_schedule`.

    ``image_size`` (height, width) of the observed images (``(T, H, W)`` of
    videos, ``(T,)`` of sounds) sets the number of positions per layer;
    ``config.image_size`` by default.
    """
    parts = []
    if config.divide_by_positions:
        size = tuple(config.image_size if image_size is None else image_size)
        parts.append(scale_by_tree(spatial_position_scales(params, config.layers, size)))
    if config.max_abs_grad is not None:
        parts.append(cap_max_abs(config.max_abs_grad))
    if config.weight_decay:
        parts.append(optax.add_decayed_weights(config.weight_decay))
    rate = learning_rate_schedule(config)
    if config.optimizer == "sgd":
        parts.append(optax.sgd(rate, momentum=config.momentum or None))
    else:
        parts.append(optax.adam(rate, b1=config.beta1))
    return optax.chain(*parts)


def learning_rate_schedule(config: DescriptorConfig):
    """The learning rate of each iteration (``config.learning_rate_decay``
    over ``T = config.n_iterations`` to ``config.learning_rate_decay_to``
    of the rate; :func:`gcnjax.train.learning_rate_schedule`)."""
    return train_schedule(config.learning_rate, config.learning_rate_decay, config.learning_rate_decay_to,
                          config.n_iterations)


# ---------------------------------------------------------------- training


def make_net(config: DescriptorConfig, depth: Optional[int] = None, dtype=jnp.float32) -> DescriptorNet:
    return DescriptorNet(
        layers=tuple(config.layers),
        depth=depth,
        top=config.top,
        top_units=config.top_units,
        activation=config.activation,
        init_std=config.init_std,
        dtype=dtype,
        activate_last=config.activate_last,
        init_scheme=config.init_scheme,
    )


def init_state(key, config: DescriptorConfig, net: nn.Module, data: jax.Array) -> DescriptorState:
    """Fresh params, optimizer state and chains for observed ``data`` (model scale).

    The chains are :func:`n_state_chains` of them: ``n_chains``, or for
    contrastive divergence ``B = min(batch_size, len(data))``, the size of
    every batch, so that the train step sees one state shape."""
    k_params, k_chains, k_next = jax.random.split(key, 3)
    shape = (n_state_chains(config, data.shape[0]),) + tuple(data.shape[1:])
    params = init_params(net, k_params, jnp.zeros((1,) + tuple(data.shape[1:]), jnp.float32))
    opt_state = make_optimizer(config, params, data.shape[1:-1]).init(params)
    chains = init_chains(k_chains, config.chain_init, shape, scale=config.init_scale, data=data)
    return DescriptorState(params, opt_state, chains, k_next, jnp.zeros((), jnp.int32))


def grow(key, state: DescriptorState, config: DescriptorConfig, net: nn.Module, data: jax.Array) -> DescriptorState:
    """Layer-by-layer growth: params of ``net`` (one layer deeper) whose
    existing layers keep their learned values; a fresh optimizer state."""
    fresh = init_params(net, key, jnp.zeros((1,) + tuple(data.shape[1:]), jnp.float32))
    old = state.params["params"]
    merged = {"params": {name: old.get(name, value) if name.startswith("conv") else value
                         for name, value in fresh["params"].items()}}
    opt_state = make_optimizer(config, merged, data.shape[1:-1]).init(merged)
    return state._replace(params=merged, opt_state=opt_state)


def make_train_step(config: DescriptorConfig, apply_fn: ApplyFn, optimizer: optax.GradientTransformation):
    """The jit'd maximum-likelihood step ``(state, data) -> (state, metrics)``.

    One iteration: chains (persistent, each restarted from
    ``config.chain_init`` with probability ``config.restart_fraction``, or
    fresh from ``config.chain_init``) run ``config.langevin`` under the
    current model; the params take one
    optimizer step on ``mean f(samples) − mean f(data)``. ``data`` is a batch
    of observed images in model scale. Contrastive divergence
    (:func:`is_contrastive_divergence`) starts one chain at each image of
    ``data``, ``x0 = data``: B images give B samples, and both means are
    over those B (``n_chains`` is not used; the state's chains, of
    :func:`init_state`, have the batch's shape). Metrics are device scalars
    (no host sync): ``f_data``, ``f_samples`` (mean f), ``energy_data``,
    ``energy_samples`` (mean E), ``grad_norm`` (of the learning gradient),
    ``chain_grad_norm`` (last Langevin step), ``acceptance``, ``diverged``
    (number of chains that became non-finite), ``dead_units`` (1 when every
    unit is inactive and learning cannot recover), ``samples_flat`` (1 when
    f is flat on every sample but not on the data: :func:`flat_samples`). With
    ``config.data_noise > 0`` the data are ``data + data_noise · ξ``, fresh
    noise every iteration; CD's chains start at those noisy images, the ones
    the data term averages over.
    """
    sampler = config.langevin
    sigma = config.sigma

    def train_step(state: DescriptorState, data: jax.Array):
        data = add_data_noise(state.key, data, config.data_noise)
        key, k_init, k_langevin = jax.random.split(state.key, 3)
        if config.persistent and config.restart_fraction:
            k_init, k_restart = jax.random.split(k_init)
            restart = jax.random.bernoulli(k_restart, config.restart_fraction, (state.chains.shape[0],))
            fresh = init_chains(k_init, config.chain_init, state.chains.shape, scale=config.init_scale, data=data)
            x0 = jnp.where(restart.reshape((-1,) + (1,) * (state.chains.ndim - 1)), fresh, state.chains)
        elif config.persistent:
            x0 = state.chains
        elif is_contrastive_divergence(config):
            # CD-k: a chain at every observed image of the batch, paired with
            # the data term's images (not init_chains' first n_chains rows).
            x0 = data
        else:
            x0 = init_chains(k_init, config.chain_init, state.chains.shape, scale=config.init_scale, data=data)
        samples, info = synthesize(k_langevin, apply_fn, state.params, x0, sampler, sigma)
        samples = jax.lax.stop_gradient(samples)

        params, opt_state, grads, terms = ml_update(optimizer, apply_fn, state.params, state.opt_state,
                                                    data, samples)
        f_samples, f_data = terms.f_samples, terms.f_data
        def reference(x):
            if sigma is None:
                return 0.0
            return jnp.mean(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1)) / (2 * sigma**2)

        grad_norm = optax.tree.norm(grads)
        finite_chains = jnp.all(info.is_finite, axis=0) if sampler.n_steps else jnp.isfinite(samples.sum())
        metrics = {
            "f_data": f_data,
            "f_samples": f_samples,
            "energy_data": reference(data) - f_data,
            "energy_samples": reference(samples) - f_samples,
            "grad_norm": grad_norm,
            "chain_grad_norm": jnp.mean(info.grad_norm[-1]) if sampler.n_steps else jnp.float32(0),
            "acceptance": jnp.mean(info.acceptance_rate) if sampler.n_steps else jnp.float32(1),
            "diverged": jnp.sum(~finite_chains),
            # Every ReLU off on data and samples: f is constant, the gradient
            # exactly zero, though the samples differ from the data.
            "dead_units": ((grad_norm == 0) & (f_data == f_samples)
                           & (jnp.mean(samples) != jnp.mean(data))).astype(jnp.float32),
            "samples_flat": flat_samples(terms, grad_norm),
        }
        new_state = DescriptorState(params, opt_state, samples, key, state.step + 1)
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,))


# ---------------------------------------------------------------- theory


def descend_to_minimum(apply_fn: ApplyFn, params: PyTree, x0: jax.Array, sigma: float, *,
                       n_steps: int = 200, step_size: Optional[float] = None, chunk: int = 10):
    """Noise-free gradient descent on E from each row of ``x0``.

    Returns ``(x_min, residual)``, with the auto-encoding residual
    ``||x − σ²∇f(x)|| / ||x||`` at the end point: zero at a local minimum of
    E, where ``x = σ² ∇f(x)`` (within one linear piece of a ReLU net E is
    quadratic with Hessian I/σ², so a step of σ² jumps to the piece's
    minimum; the default step is σ²/2).

    The descent is :func:`gcnjax.langevin.sample` with no noise, in a loop
    over unrolled blocks of ``chunk`` steps.
    """
    step_size = 0.5 * sigma**2 if step_size is None else step_size
    energy_fn = make_energy_fn(apply_fn, params, sigma)
    descend = jax.jit(lambda x: langevin.sample(jax.random.key(0), energy_fn, x, n_steps=n_steps,
                                                step_size=step_size, noise_scale=0.0, unroll=True, chunk=chunk)[0])
    x = descend(jnp.asarray(x0))
    grad_f = jax.vmap(jax.grad(lambda xi: apply_fn(params, xi[None])[0]))(x)
    flat = lambda a: a.reshape(a.shape[0], -1)
    norm = jnp.maximum(jnp.linalg.norm(flat(x), axis=1), jnp.finfo(x.dtype).tiny)
    residual = jnp.linalg.norm(flat(x - sigma**2 * grad_f), axis=1) / norm
    return x, residual


def activation_pattern(net: nn.Module, params: PyTree, x: jax.Array) -> np.ndarray:
    """The binary activation pattern (which ReLUs are on) of each image in
    ``x``, as one boolean row per image."""
    _, state = net.apply(params, x, mutable=["intermediates"])
    leaves = jax.tree_util.tree_leaves(state["intermediates"])
    return np.concatenate([np.asarray(l > 0).reshape(x.shape[0], -1) for l in leaves], axis=1)
