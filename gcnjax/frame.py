"""FRAME with ConvNet filters: a descriptor on FIXED features.

    p(x; w) = exp(f(x; w)) q(x) / Z(w),     q(x) = N(0, σ² I),
    E(x; w) = ||x||² / (2σ²) − f(x; w),     f(x; w) = <w, φ(x)>

(Lu, Zhu, Wu, "Exploring Generative Perspective of ConvNets by Learning
Random Field Models"; PAPERS §2). ``φ`` is a frozen feature extractor, a
bank of filters followed by a fixed nonlinearity; only the top weights
``w`` are learned:

* ``top="dense"``: one weight per filter per position,
  ``f(x) = Σ_k Σ_positions w_{k,pos} φ_k(x)_pos`` (object patterns);
* ``top="sum"`` (stationary, the texture model): one weight per filter,
  ``f(x) = Σ_k w_k Σ_positions φ_k(x)_pos``; on :func:`thresholded`
  features, ``f(x) = Σ_k Σ_positions λ_k(φ_k(x)_pos)`` with a learned
  piecewise-linear potential ``λ_k`` per filter (the original FRAME's
  potentials, matching each filter's response histogram);
* ``top="pairwise"``: the sum top plus ``(1/K) Σ_positions φᵀPφ``, which
  also matches the features' co-occurrence (their Gram matrix).

FRAME is the descriptor of :mod:`gcnjax.descriptor` with a particular net:
:class:`FrameNet` looks like a Flax module to the descriptor code
(``init(key, x)``, ``apply(params, x)``), but its ``params`` are the top
weights only. The extractor's params are held inside the FrameNet, outside
the optimized pytree, so no optimizer ever sees them: they stay
bit-identical, and checkpoints hold only ``w``. Sampling
(:func:`gcnjax.descriptor.synthesize`, Langevin by :mod:`gcnjax.langevin`)
and learning (:func:`gcnjax.descriptor.make_train_step`, the ML gradient
``E_data[φ(x)] − E_model[φ(x)]`` for ``w``) are the descriptor's own.

Extractors (all a Flax module plus its params, frozen by :func:`frozen`):

* :class:`FilterBank`: Gabor filters at several scales and orientations in
  cos and sin phase, and differences of Gaussians, generated in code
  (:func:`filter_bank_kernels`), all of zero mean, followed by ``abs``,
  ``relu`` or nothing;
* any user Flax module with given params;
* :class:`VGG16Features`: VGG-16 up to ``conv3_1`` (the paper's features),
  with weights read from a local file by :func:`load_vgg16_params`.
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import descriptor as D
from gcnjax.data import DataError
from gcnjax.nets import init_params

PyTree = Any

__all__ = [
    "NONLINEARITIES",
    "COLOURS",
    "OPPONENT",
    "gabor_kernel",
    "dog_kernel",
    "filter_bank_kernels",
    "FilterBank",
    "frozen",
    "thresholded",
    "response_quantiles",
    "FrameTop",
    "TOPS",
    "FrameNet",
    "filter_bank_net",
    "net_from_spec",
    "VGG16_LAYERS",
    "VGG16Features",
    "load_vgg16_params",
    "vgg16_net",
    "learn_frame",
]

NONLINEARITIES = ("abs", "relu", "identity")
COLOURS = ("rgb", "opponent")
TOPS = ("dense", "sum", "pairwise")
# Rows: luminance, red−green, yellow−blue; orthonormal.
OPPONENT = np.array([[1, 1, 1], [1, -1, 0], [1, 1, -2]], np.float64)
OPPONENT = (OPPONENT / np.linalg.norm(OPPONENT, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------- filter bank


def _grid(size: int):
    if int(size) < 1 or int(size) % 2 == 0:
        raise ValueError(f"filter size must be an odd integer >= 1 (a centre pixel), got {size!r}.")
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    return np.meshgrid(r, r, indexing="ij")  # (row = y, column = x)


def gabor_kernel(size: int, wavelength: float, theta: float, phase: str = "cos",
                 envelope_sigma: Optional[float] = None) -> np.ndarray:
    """A ``size × size`` Gabor filter of zero mean and unit L2 norm.

    ``G(x, y) = exp(−(x² + y²) / (2s²)) · cos(2π u / λ − φ)``,
    ``u = x cos θ + y sin θ`` (x to the right, y down the rows), with
    ``φ = 0`` (``"cos"``, even) or ``π/2`` (``"sin"``, odd). It responds most
    to a grating ``cos(2π u / λ)`` of orientation θ (its wave vector points
    along θ) and wavelength λ. The even filter's mean (its response to a
    constant image) is removed by subtracting a multiple of the envelope
    (as in Morlet wavelets); the odd filter has zero mean by symmetry.
    ``s`` defaults to ``size / 5``.
    """
    if phase not in ("cos", "sin"):
        raise ValueError(f"Gabor phase must be 'cos' or 'sin', got {phase!r}.")
    y, x = _grid(size)
    s = size / 5.0 if envelope_sigma is None else float(envelope_sigma)
    envelope = np.exp(-(x * x + y * y) / (2.0 * s * s))
    u = x * math.cos(theta) + y * math.sin(theta)
    carrier = np.cos(2 * np.pi * u / wavelength) if phase == "cos" else np.sin(2 * np.pi * u / wavelength)
    kernel = envelope * carrier
    kernel = kernel - envelope * (kernel.sum() / envelope.sum())
    if phase == "sin":
        kernel = 0.5 * (kernel - kernel[::-1, ::-1])  # exactly odd: zero mean to rounding
    return (kernel / np.linalg.norm(kernel)).astype(np.float32)


def dog_kernel(size: int, sigma: Optional[float] = None, ratio: float = 1.6) -> np.ndarray:
    """A difference of Gaussians ``G_s − G_{ratio·s}`` (a centre-surround
    filter), each Gaussian normalised to sum 1 on the grid, so the filter
    sums to zero; unit L2 norm. ``s`` defaults to ``size / 8``."""
    y, x = _grid(size)
    s = size / 8.0 if sigma is None else float(sigma)

    def gaussian(sd):
        g = np.exp(-(x * x + y * y) / (2.0 * sd * sd))
        return g / g.sum()

    kernel = gaussian(s) - gaussian(ratio * s)
    kernel = kernel - kernel.mean()  # rounding
    return (kernel / np.linalg.norm(kernel)).astype(np.float32)


def _pad_to(kernel: np.ndarray, size: int) -> np.ndarray:
    p = (size - kernel.shape[0]) // 2
    return np.pad(kernel, p)


def filter_bank_kernels(sizes: Sequence[int] = (7, 11, 15), n_orientations: int = 6,
                        dog: bool = True) -> Tuple[np.ndarray, Tuple[str, ...]]:
    """The kernels of :class:`FilterBank`: ``(k, k, 1, K)`` float32 and a name
    per filter.

    For each size ``s`` (odd): a Gabor pair (cos, sin phase) at each of
    ``n_orientations`` orientations ``θ = jπ/n`` with envelope sd ``s/5``
    and wavelength ``λ = 2·s/5`` (about one period per envelope sd, so the
    scales are an octave-like ladder), and, with ``dog``, a difference of
    Gaussians of sd ``s/8``. Smaller filters are zero-padded to the largest
    size (centred), so the bank is one convolution.
    """
    sizes = tuple(int(s) for s in sizes)
    if not sizes or int(n_orientations) < 1:
        raise ValueError(f"a filter bank needs at least one size and one orientation, got sizes={sizes!r}, "
                         f"n_orientations={n_orientations!r}.")
    k = max(sizes)
    kernels, names = [], []
    for s in sizes:
        wavelength = 2.0 * s / 5.0
        for j in range(int(n_orientations)):
            theta = j * np.pi / n_orientations
            for phase in ("cos", "sin"):
                kernels.append(_pad_to(gabor_kernel(s, wavelength, theta, phase), k))
                names.append(f"gabor{s}_{round(np.degrees(theta))}deg_{phase}")
        if dog:
            kernels.append(_pad_to(dog_kernel(s), k))
            names.append(f"dog{s}")
    return np.stack(kernels, axis=-1)[:, :, None, :].astype(np.float32), tuple(names)


class FilterBank(nn.Module):
    """A fixed filter bank as one conv layer, then a fixed nonlinearity.

    Each filter of :func:`filter_bank_kernels` is applied to each input
    channel on its own (a depthwise convolution: K filters × C channels
    features), ``padding`` ``"SAME"`` (zero padding) or ``"VALID"``, then
    ``nonlinearity``: ``"abs"`` (|response|, the classic FRAME features),
    ``"relu"`` or ``"identity"``. The kernels are the module's one param
    ``kernel``, initialised to the bank (no randomness); freeze it with
    :func:`frozen`.

    ``colour="opponent"`` filters RGB images in the opponent colour space
    ``(R+G+B)/√3, (R−G)/√2, (R+G−2B)/√6`` (:data:`OPPONENT`, an orthogonal
    map, so the isotropic Gaussian reference is unchanged) instead of R, G
    and B: the filters are still applied to each channel on its own, but
    colour channels that are independent in the model are the luminance and
    two colour contrasts, whose statistics in natural images are nearly
    independent, rather than R, G and B, which are strongly correlated.
    """

    sizes: Sequence[int] = (7, 11, 15)
    n_orientations: int = 6
    dog: bool = True
    nonlinearity: str = "abs"
    padding: str = "SAME"
    stride: int = 1
    colour: str = "rgb"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"FilterBank.nonlinearity must be one of {NONLINEARITIES}, got {self.nonlinearity!r}.")
        if self.colour not in COLOURS:
            raise ValueError(f"FilterBank.colour must be one of {COLOURS}, got {self.colour!r}.")
        bank, _ = filter_bank_kernels(self.sizes, self.n_orientations, self.dog)
        kernel = self.param("kernel", lambda key, shape: jnp.asarray(bank), bank.shape)
        if self.colour == "opponent":
            if x.shape[-1] != 3:
                raise ValueError(f"colour='opponent' needs RGB images (3 channels), got {x.shape[-1]}; "
                                 "use colour='rgb' for gray images.")
            x = x.astype(jnp.float32) @ jnp.asarray(OPPONENT.T)
        n, height, width, channels = x.shape
        k = bank.shape[0]
        per_size = 2 * int(self.n_orientations) + (1 if self.dog else 0)
        # Each channel on its own (depthwise), by folding the channels into
        # the batch: a plain convolution is much faster on XLA:CPU than a
        # grouped one (feature_group_count).
        planes = jnp.moveaxis(x.astype(jnp.float32), -1, 1).reshape(n * channels, height, width, 1)
        groups = []
        # One convolution per filter size, each kernel cropped to its own
        # support: the bank's zero padding would cost (k/s)² more work.
        for g, s in enumerate(int(v) for v in self.sizes):
            lo = (k - s) // 2
            sub = kernel[lo:lo + s, lo:lo + s, :, g * per_size:(g + 1) * per_size]
            h = jax.lax.conv_general_dilated(planes, sub, (self.stride, self.stride), self.padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            if self.padding == "VALID" and s < k:  # the positions the largest filter has
                crop = lo // self.stride
                h = h[:, crop:h.shape[1] - crop, crop:h.shape[2] - crop, :]
            groups.append(h)
        h = jnp.concatenate(groups, axis=-1)  # (n·C, h, w, K)
        # Features channel-major, then in the bank's filter order.
        h = jnp.moveaxis(h.reshape((n, channels) + h.shape[1:]), 1, -2)  # (n, h, w, C, K)
        return _nonlinearity(self.nonlinearity, h.reshape(h.shape[:3] + (-1,)))


def _nonlinearity(name: str, h: jax.Array) -> jax.Array:
    if name == "abs":
        return jnp.abs(h)
    if name == "relu":
        return nn.relu(h)
    return h


# ---------------------------------------------------------------- the net


def frozen(module: nn.Module, params: PyTree) -> Callable[[jax.Array], jax.Array]:
    """``x ↦ module.apply(params, x)`` with ``params`` fixed.

    The params are closed over (constants of every traced function that
    uses them) and wrapped in ``stop_gradient``: no gradient is ever taken
    with respect to them, and they are not part of any optimized pytree.
    """
    params = jax.tree_util.tree_map(jnp.asarray, params)

    def extract(x):
        return module.apply(jax.lax.stop_gradient(params), x)

    return extract


def thresholded(extract: Callable[[jax.Array], jax.Array], thresholds) -> Callable[[jax.Array], jax.Array]:
    """Features ``max(φ_k(x) − b_{t,k}, 0)`` for every threshold row ``t``.

    ``thresholds``: ``(T, K)`` for the ``K`` features of ``extract`` (or
    ``(T,)``, the same for every feature). The result has ``T·K`` feature
    maps, threshold-major. On these features FRAME's stationary energy is

        f(x) = Σ_k Σ_positions λ_k(φ_k(x)_pos),
        λ_k(r) = Σ_t w_{t,k} max(r − b_{t,k}, 0),

    a continuous piecewise-linear potential per filter with knots at the
    thresholds: the potential functions of the original FRAME model, where a
    single weight per filter gives only a linear λ_k. Its maximum-likelihood
    gradient matches ``E[max(φ_k − b, 0)]`` at every knot, the tail
    integrals that pin down the marginal distribution (histogram) of each
    filter's response, not just its mean. Choose the thresholds from the
    observed responses with :func:`response_quantiles`.
    """
    b = np.asarray(thresholds, np.float32)
    if b.ndim == 1:
        b = b[:, None]
    if b.ndim != 2 or b.shape[0] < 1:
        raise ValueError(f"thresholds must be (T,) or (T, K) with T >= 1, got shape {b.shape}.")
    b = jnp.asarray(b)

    def extract_thresholded(x):
        h = extract(x)
        if b.shape[1] not in (1, h.shape[-1]):
            raise ValueError(f"thresholds have {b.shape[1]} columns but the extractor gives {h.shape[-1]} "
                             "features; compute them with response_quantiles on the same extractor.")
        t = nn.relu(h[..., None, :] - b)  # (..., T, K)
        return t.reshape(h.shape[:-1] + (-1,))

    return extract_thresholded


def response_quantiles(extract: Callable[[jax.Array], jax.Array], images, quantiles: Sequence[float]) -> np.ndarray:
    """``(T, K)``: the ``quantiles`` (in [0, 1]) of each feature of
    ``extract`` over all positions of ``images`` (in the model's scale), the
    thresholds of :func:`thresholded`."""
    q = np.asarray(quantiles, np.float64)
    if q.ndim != 1 or q.size < 1 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"quantiles must be numbers in [0, 1], got {quantiles!r}.")
    h = np.asarray(jax.jit(extract)(jnp.asarray(images, jnp.float32)))
    return np.quantile(h.reshape(-1, h.shape[-1]), q, axis=0).astype(np.float32)


class FrameTop(nn.Module):
    """The learned top of FRAME on features ``φ`` of shape ``(N, H, W, K)``.

    * ``top="dense"``: ``f = Σ_{h,w,k} W[h,w,k] φ[h,w,k]``;
    * ``top="sum"``: ``f = Σ_k w[k] Σ_{h,w} φ[h,w,k]`` (stationary);
    * ``top="pairwise"``: the sum top plus the features' co-occurrence at
      each position,

          f = Σ_k w[k] Σ_{h,w} φ[h,w,k] + (1/K) Σ_{h,w} φ[h,w]ᵀ P φ[h,w],

      whose maximum-likelihood gradient for ``P`` matches the features'
      second moments ``E[Σ_{h,w} φ φᵀ]`` (the Gram matrix of the features,
      as in the texture statistics of Portilla and Simoncelli) besides
      their means. ``P`` is used through ``φᵀPφ``, so only its symmetric
      part counts; from a symmetric start it stays symmetric. The 1/K
      scales an optimizer step on ``P`` to move ``f`` about as much as one
      on ``w``. With positively 1-homogeneous features (|·|, ReLU) the pair
      term is quadratic in ``x``, like the reference's ``||x||²/2σ²``: a
      ``P`` large enough makes ``exp(f) q`` improper. Matching the second
      moments keeps it proper, but only while the chains follow the model
      and learning answers them: a learning rate too high for the Langevin
      steps lets ``P`` outrun the chains, and one decayed to 0 cannot push
      ``P`` back when a chain finds a direction in which the pair term
      outgrows the reference; either way the chains run away.

    No bias (it cancels in the likelihood). The weights start at
    ``init_std · N(0, 1)`` (0: at zero, where the model is the reference q).
    """

    top: str = "dense"
    init_std: float = 0.0

    @nn.compact
    def __call__(self, features: jax.Array) -> jax.Array:
        if self.top not in TOPS:
            raise ValueError(f"FrameTop.top must be one of {TOPS}, got {self.top!r}.")
        init = nn.initializers.zeros if not self.init_std else nn.initializers.normal(self.init_std)
        features = features.astype(jnp.float32)
        if self.top == "dense":
            w = self.param("w", init, features.shape[1:])
            return jnp.sum(features * w, axis=tuple(range(1, features.ndim)))
        w = self.param("w", init, features.shape[-1:])
        pooled = jnp.sum(features, axis=tuple(range(1, features.ndim - 1)))
        f = pooled @ w
        if self.top == "pairwise":
            k = features.shape[-1]
            pair = self.param("pair", init, (k, k))
            flat = features.reshape(features.shape[0], -1, k)
            f = f + jnp.einsum("npk,kl,npl->n", flat, pair, flat) / k
        return f


@dataclasses.dataclass(frozen=True, eq=False)
class FrameNet:
    """``f(x; w) = FrameTop(φ(x))`` with a frozen extractor ``φ``.

    ``extract`` maps a batch ``(N, H, W, C)`` to features ``(N, H', W', K)``
    (e.g. :func:`frozen` of a module and its params). :meth:`init` and
    :meth:`apply` have the signatures of a Flax module's, with the top
    weights as the only params, so a FrameNet can be given to
    :func:`gcnjax.descriptor.init_state`, :func:`~gcnjax.descriptor.make_train_step`
    and :func:`gcnjax.synthesis.learn_descriptor` in place of a net.

    ``spec``: a JSON description of the extractor from which
    :func:`net_from_spec` builds the same net again (set by
    :func:`filter_bank_net` and :func:`vgg16_net`; None for an extractor
    given in Python). A run records it in its ``frame_net.json``, so that a
    learned FRAME run can be loaded and sampled like any descriptor run.
    """

    extract: Callable[[jax.Array], jax.Array]
    top: str = "dense"
    init_std: float = 0.0
    spec: Optional[Dict[str, Any]] = None

    @property
    def _top(self) -> FrameTop:
        return FrameTop(top=self.top, init_std=self.init_std)

    def features(self, x: jax.Array) -> jax.Array:
        return self.extract(x)

    def init(self, key, x: jax.Array) -> PyTree:
        shape = jax.eval_shape(self.extract, jnp.asarray(x))
        return self._top.init(key, jnp.zeros(shape.shape, jnp.float32))

    def apply(self, params: PyTree, x: jax.Array) -> jax.Array:
        return self._top.apply(params, self.extract(x))


def filter_bank_net(top: str = "dense", *, sizes=(7, 11, 15), n_orientations: int = 6, dog: bool = True,
                    nonlinearity: str = "abs", padding: str = "SAME", stride: int = 1, colour: str = "rgb",
                    threshold_quantiles: Optional[Sequence[float]] = None, images=None,
                    thresholds=None) -> FrameNet:
    """FRAME on a :class:`FilterBank` (its kernels frozen).

    With ``threshold_quantiles`` (e.g. ``(0, 0.5, 0.8, 0.95)``) the features
    are :func:`thresholded` at those quantiles of the bank's responses to
    ``images`` (the observed images in the model's scale, e.g. 0..255 minus
    the mean): piecewise-linear potentials instead of one weight per filter.
    ``thresholds`` gives the ``(T, K)`` thresholds themselves instead (as a
    run's recorded spec does).
    """
    if threshold_quantiles is not None and thresholds is not None:
        raise ValueError("give threshold_quantiles (with images) or thresholds, not both.")
    bank = FilterBank(sizes=tuple(sizes), n_orientations=n_orientations, dog=dog, nonlinearity=nonlinearity,
                      padding=padding, stride=stride, colour=colour)
    channels = 3 if colour == "opponent" else 1
    params = init_params(bank, jax.random.key(0), jnp.zeros((1, max(sizes), max(sizes), channels), jnp.float32))
    extract = frozen(bank, params)
    if threshold_quantiles is not None:
        if images is None:
            raise ValueError("threshold_quantiles needs images: the observed images whose response quantiles "
                             "become the thresholds.")
        thresholds = response_quantiles(extract, images, threshold_quantiles)
    spec = {"extractor": "filter_bank", "sizes": [int(s) for s in sizes], "n_orientations": int(n_orientations),
            "dog": bool(dog), "nonlinearity": str(nonlinearity), "padding": str(padding), "stride": int(stride),
            "colour": str(colour),
            "thresholds": None if thresholds is None else np.asarray(thresholds, np.float32).tolist()}
    if thresholds is not None:
        extract = thresholded(extract, np.asarray(thresholds, np.float32))
    return FrameNet(extract, top=top, spec=spec)


def net_from_spec(spec: Dict[str, Any], top: str) -> FrameNet:
    """The FrameNet that ``spec`` (:attr:`FrameNet.spec`, as a run's
    ``frame_net.json`` records it) describes, with top ``top``: the same
    extractor, bit for bit (a filter bank is generated in code and its
    thresholds are recorded; VGG-16's weights are read again from the
    recorded file)."""
    kind = spec.get("extractor") if isinstance(spec, dict) else None
    if kind == "filter_bank":
        keys = ("sizes", "n_orientations", "dog", "nonlinearity", "padding", "stride", "colour", "thresholds")
        return filter_bank_net(top, **{k: spec[k] for k in keys if k in spec})
    if kind == "vgg16":
        return vgg16_net(spec["weights"], top, last=spec["last"], pixel_offset=spec["pixel_offset"])
    raise ValueError(f"a FRAME net's spec names its extractor ('filter_bank' or 'vgg16'), got {spec!r}.")


# ---------------------------------------------------------------- VGG-16

# (name, torchvision index in ``features``, output channels) up to conv3_1;
# "pool" is a 2×2 max pool of stride 2.
VGG16_LAYERS = (
    ("conv1_1", 0, 64), ("conv1_2", 2, 64), ("pool", None, None),
    ("conv2_1", 5, 128), ("conv2_2", 7, 128), ("pool", None, None),
    ("conv3_1", 10, 256),
)
_VGG16_CONVS = tuple(name for name, _, _ in VGG16_LAYERS if name != "pool")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """VGG-16's convolutional layers up to ``last`` (``conv3_1`` by
    default: the features of the FRAME paper), each 3×3 conv (SAME) followed
    by ReLU, 2×2 max pools after ``conv1_2`` and ``conv2_2``.

    Input: RGB images in the model scale ``x``; the net sees
    ``((x + pixel_offset) / 255 − imagenet_mean) / imagenet_std``, the
    normalisation torchvision's weights were trained with
    (``pixel_offset`` = the per-channel mean the data's
    :class:`gcnjax.data.PixelScale` subtracted, so that ``x + offset`` is
    pixels 0..255).
    """

    last: str = "conv3_1"
    pixel_offset: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.last not in _VGG16_CONVS:
            raise ValueError(f"VGG16Features.last must be one of {_VGG16_CONVS}, got {self.last!r}.")
        if x.shape[-1] != 3:
            raise ValueError(f"VGG-16 takes RGB images (3 channels), got {x.shape[-1]}; load the data in colour.")
        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        h = ((x.astype(jnp.float32) + jnp.asarray(self.pixel_offset, jnp.float32)) / 255.0 - mean) / std
        for name, _, features in VGG16_LAYERS:
            if name == "pool":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
                continue
            h = nn.relu(nn.Conv(features, (3, 3), padding="SAME", name=name)(h))
            if name == self.last:
                break
        return h


def _read_torch_state_dict(path: Path) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise DataError(
            f"{str(path)!r} is a PyTorch file and torch is not installed. Convert it once where torch is: "
            "python -c \"import torch, numpy as np; sd = torch.load('vgg16.pth', map_location='cpu'); "
            "np.savez('vgg16.npz', **{k: v.numpy() for k, v in sd.items()})\" and pass the .npz."
        ) from None
    state = torch.load(str(path), map_location="cpu")
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def load_vgg16_params(path, last: str = "conv3_1") -> PyTree:
    """Params of :class:`VGG16Features` from a local weights file.

    ``path``: a ``.npz`` whose keys are torchvision's VGG-16 state-dict
    names (``features.0.weight`` ``(64, 3, 3, 3)``, ``features.0.bias``,
    …, ``features.10.*`` for conv3_1), or a PyTorch ``.pth`` state dict
    when torch is installed. Torch's ``(out, in, kh, kw)`` kernels become
    Flax's ``(kh, kw, in, out)``. Real weights: torchvision's
    ``vgg16-397923af.pth`` (from ``torchvision.models.vgg16(weights=
    "IMAGENET1K_V1")``, cached in ``~/.cache/torch/hub/checkpoints``);
    convert it to ``.npz`` where torch is installed::

        import torch, numpy as np
        sd = torch.load("vgg16-397923af.pth", map_location="cpu")
        np.savez("vgg16.npz", **{k: v.numpy() for k, v in sd.items()})
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"VGG-16 weights file {str(path)!r} does not exist; give a local .npz or .pth file "
                        "(see gcnjax.frame.load_vgg16_params for where to get one).")
    if last not in _VGG16_CONVS:
        raise ValueError(f"last must be one of {_VGG16_CONVS}, got {last!r}.")
    if path.suffix == ".npz":
        try:
            with np.load(path) as f:
                state = {k: f[k] for k in f.files}
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            raise DataError(f"cannot read {str(path)!r} as a .npz of arrays ({err}).") from None
    elif path.suffix in (".pth", ".pt"):
        state = _read_torch_state_dict(path)
    else:
        raise DataError(f"VGG-16 weights must be a .npz or .pth file, got {str(path)!r}.")
    params, in_channels = {}, 3
    for name, index, features in VGG16_LAYERS:
        if name == "pool":
            continue
        w_key, b_key = f"features.{index}.weight", f"features.{index}.bias"
        for key in (w_key, b_key):
            if key not in state:
                raise DataError(
                    f"{str(path)!r} has no {key!r} (the {name} layer); expected torchvision's VGG-16 "
                    f"state-dict names, got e.g. {sorted(state)[:4]}."
                )
        w, b = np.asarray(state[w_key], np.float32), np.asarray(state[b_key], np.float32)
        if w.shape != (features, in_channels, 3, 3) or b.shape != (features,):
            raise DataError(
                f"{str(path)!r}: {w_key} has shape {w.shape} and {b_key} {b.shape}; VGG-16's {name} needs "
                f"({features}, {in_channels}, 3, 3) and ({features},)."
            )
        params[name] = {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}
        in_channels = features
        if name == last:
            break
    return {"params": params}


def vgg16_net(weights, top: str = "dense", *, last: str = "conv3_1",
              pixel_offset=(0.0, 0.0, 0.0)) -> FrameNet:
    """FRAME on VGG-16 features up to ``last``, weights from a local file."""
    module = VGG16Features(last=last, pixel_offset=tuple(float(v) for v in pixel_offset))
    spec = {"extractor": "vgg16", "weights": str(Path(weights).resolve()), "last": last,
            "pixel_offset": [float(v) for v in pixel_offset]}
    return FrameNet(frozen(module, load_vgg16_params(weights, last)), top=top, spec=spec)


# ---------------------------------------------------------------- runs


def learn_frame(config: D.DescriptorConfig, net: FrameNet, images: np.ndarray, out, *, title: str = "FRAME",
                source: str = "", overwrite: bool = False, resume: bool = False, quiet: bool = False):
    """Learn FRAME's top weights from ``images`` (pixels 0..255) and write a
    run directory: :func:`gcnjax.synthesis.learn_descriptor` with ``net``."""
    from gcnjax.synthesis import learn_descriptor

    if config.top != net.top:
        config = dataclasses.replace(config, top=net.top)
    return learn_descriptor(config, images, out, title=title, source=source, overwrite=overwrite,
                            resume=resume, quiet=quiet, net=net)
