"""Flax Linen modules: the papers' networks, as architectures only.

A descriptor net maps ONE batch of images ``(N, H, W, C)`` (or videos
``(N, T, H, W, C)``, or sounds ``(N, T, C)``: the convolutions have as many
dimensions as the data) to one scalar ``f(x; w)`` per example. Its layers
are given as a tuple of :class:`ConvSpec`; presets reproduce the authors'
nets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcnjax import ops

__all__ = [
    "init_params",
    "ConvSpec",
    "DescriptorNet",
    "TEXTURE_LAYERS",
    "OBJECT_LAYERS",
    "receptive_field",
    "layer_output_sizes",
    "STG_VARIANTS",
    "stg_layers",
    "SOUND_LAYERS",
    "GENERATOR_NORMS",
    "BatchStatNorm",
    "normalise_by_batch",
    "Conv",
    "ConvTranspose",
    "GeneratorNet",
    "SoundGeneratorNet",
    "face_generator",
    "face32_generator",
    "digit_generator",
    "sound_generator",
    "DES4_LAYERS",
    "DES16_LAYERS",
    "DES64_LAYERS",
    "MULTIGRID_LAYERS",
    "MULTIGRID_NORMS",
    "MultigridNet",
    "multigrid_layers",
]


IntOrTuple = Union[int, Tuple[int, ...]]
PADDINGS = ("VALID", "SAME", "CIRCULAR")


def init_params(net, key: jax.Array, *example_inputs):
    """``net.init(key, *example_inputs)`` as one compiled program.

    Run eagerly, a net's init dispatches every initializer and every op of
    the forward pass that fixes its shapes on its own, and XLA compiles each
    of them for each shape it meets (dozens of small programs for one net);
    under ``jax.jit`` it is one. ``net`` is a Flax module or anything with
    ``init(key, *inputs)``. The params are ``net.init``'s to float rounding:
    the compiled program may fuse an initializer's scaling into its draw, so
    a weight can differ from the eager one in its last bit.
    """
    return jax.jit(net.init)(key, *example_inputs)


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution layer: ``features`` filters of ``kernel`` size, ``stride``.

    ``kernel`` and ``stride`` are an int (the same along every axis: a
    square, cube or segment, as the data has 2, 3 or 1 axes) or one int per
    axis, e.g. ``(t, h, w)`` for videos. Padding is ``"VALID"`` (no
    padding) as in the authors' MatConvNet code, ``"SAME"``, ``"CIRCULAR"``
    (periodic: the data wrap around), or one int per axis (that many zeros
    on both sides, as the spatial-temporal code's ``(2, 0, 0)``).
    """

    features: int
    kernel: IntOrTuple
    stride: IntOrTuple = 1
    padding: Union[str, Tuple[int, ...]] = "VALID"

    def __post_init__(self):
        # JSON gives lists back: store tuples, so that configs compare equal.
        for name in ("kernel", "stride", "padding"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if isinstance(self.padding, str) and self.padding not in PADDINGS:
            raise ValueError(f"ConvSpec.padding must be one of {PADDINGS} or one int per axis, got {self.padding!r}.")
        for name in ("kernel", "stride"):
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if not values or any(int(v) < 1 for v in values):
                raise ValueError(f"ConvSpec.{name} must be an int >= 1 or a tuple of them, got {value!r}.")
        lengths = {len(v) for v in (self.kernel, self.stride, self.padding) if isinstance(v, tuple)}
        if len(lengths) > 1:
            raise ValueError(
                f"ConvSpec kernel {self.kernel!r}, stride {self.stride!r} and padding {self.padding!r} "
                "give different numbers of axes; give one entry per axis in each."
            )

    def n_axes(self) -> Optional[int]:
        """The number of axes fixed by a tuple field, or None (any)."""
        for value in (self.kernel, self.stride, self.padding):
            if isinstance(value, tuple):
                return len(value)
        return None

    def kernel_for(self, n_axes: int) -> Tuple[int, ...]:
        return _per_axis(self.kernel, n_axes, "kernel")

    def stride_for(self, n_axes: int) -> Tuple[int, ...]:
        return _per_axis(self.stride, n_axes, "stride")

    def flax_padding(self, n_axes: int):
        """The padding as :class:`flax.linen.Conv` takes it."""
        if isinstance(self.padding, str):
            return self.padding
        return tuple((int(p), int(p)) for p in _per_axis(self.padding, n_axes, "padding"))


def _per_axis(value, n_axes: int, name: str) -> Tuple[int, ...]:
    if isinstance(value, tuple):
        if len(value) != n_axes:
            raise ValueError(
                f"ConvSpec.{name} {value!r} has {len(value)} axes but the data have {n_axes} "
                "(2 for images, 3 for videos, 1 for sounds); give one entry per axis."
            )
        return tuple(int(v) for v in value)
    return (int(value),) * n_axes


# The authors' nets of "A Theory of Generative ConvNet" (224 x 224 inputs).
OBJECT_LAYERS: Tuple[ConvSpec, ...] = (
    ConvSpec(100, 15, 3),
    ConvSpec(64, 5, 1),
    ConvSpec(30, 3, 1),
)
# The texture net pads ("SAME", as the authors' TensorFlow descriptors do):
# without padding, pixels within a receptive field of the border are seen by
# few units, and in synthesized textures they stay near the reference mean,
# a gray frame some 15 pixels wide. The `texture` preset wraps instead
# ("CIRCULAR"): zero padding still leaves a narrower frame of low contrast.
TEXTURE_LAYERS: Tuple[ConvSpec, ...] = tuple(
    dataclasses.replace(spec, padding="SAME") for spec in OBJECT_LAYERS
)


class Conv(nn.Module):
    """``flax.linen.Conv``'s parameters (``kernel`` ``(*k, in, out)``,
    ``bias``) and value ``conv(x, kernel) + bias``, the convolution computed
    by :func:`gcnjax.ops.conv` (the kernels of the backend it is traced
    for). ``padding``: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` or per-axis
    ``(before, after)`` pairs."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Any
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        return ops.conv(x, kernel, self.strides, self.padding) + bias


class DescriptorNet(nn.Module):
    """Bottom-up ConvNet ``f(x; w)`` with a scalar output per image.

    ``x → conv → act → conv → act → …``; then the top:

    * ``top="sum"`` (texture, stationary model): ``f(x) = Σ`` of all the top
      layer's responses over positions and channels.
    * ``top="dense"`` (object model): fully connected filters over the
      whole top map, with no activation, summed:
      ``f(x) = Σ_k (<W_k, h(x)> + b_k)``, k = 1 … ``top_units``.

    Summed units are one filter ``Σ_k W_k`` as a function, but not as
    params: every ``W_k`` gets the same gradient, so under Adam the summed
    filter moves ``top_units`` times as far per step, and it starts with
    ``sqrt(top_units)`` times the spread. The CoopNets authors' descriptor
    has 100 such units (a fully connected layer whose outputs the loss and
    the Langevin gradient sum).

    Attributes:
      layers: the conv layers, bottom first.
      depth: use only the first ``depth`` layers (layer-by-layer growth);
        ``None`` for all.
      top: ``"sum"`` or ``"dense"``.
      top_units: the number of summed fully connected units of the dense
        top (1: one filter).
      activation: ``"relu"`` (the theory: f piecewise linear) or
        ``"leaky_relu"`` (slope 0.2).
      init_std: standard deviation of the Gaussian initial conv weights.
      dtype: compute dtype (``jnp.bfloat16`` on accelerators); params stay
        float32 and ``f`` is returned in float32.
      activate_last: apply the activation after the last conv layer too
        (``False``: the last conv is linear, as in the short-run net whose
        last 4×4 VALID conv makes f itself).
      init_scheme: ``"normal"`` (N(0, init_std²) kernels, zero biases) or
        ``"torch"`` (PyTorch's default for Conv2d, U(±1/sqrt(fan_in)) for
        kernels and biases, as in the short-run authors' code).
    """

    layers: Sequence[ConvSpec] = TEXTURE_LAYERS
    depth: Optional[int] = None
    top: str = "sum"
    top_units: int = 1
    activation: str = "relu"
    init_std: float = 0.01
    dtype: jnp.dtype = jnp.float32
    activate_last: bool = True
    init_scheme: str = "normal"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.init_scheme not in ("normal", "torch"):
            raise ValueError(f"DescriptorNet.init_scheme must be 'normal' or 'torch', got {self.init_scheme!r}.")
        if self.top not in ("sum", "dense"):
            raise ValueError(f"DescriptorNet.top must be 'sum' or 'dense', got {self.top!r}.")
        if isinstance(self.top_units, bool) or int(self.top_units) != self.top_units or self.top_units < 1:
            raise ValueError(f"DescriptorNet.top_units must be an integer >= 1, got {self.top_units!r}.")
        act = {"relu": nn.relu, "leaky_relu": lambda h: nn.leaky_relu(h, 0.2)}.get(self.activation)
        if act is None:
            raise ValueError(
                f"DescriptorNet.activation must be 'relu' or 'leaky_relu', got {self.activation!r}."
            )
        depth = len(self.layers) if self.depth is None else self.depth
        n_axes = x.ndim - 2  # (N, axes..., C)
        h = x.astype(self.dtype)
        for i, spec in enumerate(self.layers[:depth]):
            if self.init_scheme == "torch":
                # PyTorch's Conv2d default: kaiming_uniform(a=sqrt(5)) is
                # U(±1/sqrt(fan_in)) = variance_scaling(1/3, fan_in, uniform);
                # the bias is U(±1/sqrt(fan_in)) too.
                fan_in = math.prod(spec.kernel_for(n_axes)) * h.shape[-1]
                bound = 1.0 / float(fan_in) ** 0.5
                kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
                bias_init = lambda key, shape, dtype=jnp.float32, b=bound: jax.random.uniform(
                    key, shape, dtype, -b, b)
            else:
                kernel_init, bias_init = nn.initializers.normal(self.init_std), nn.initializers.zeros
            h = Conv(
                spec.features,
                spec.kernel_for(n_axes),
                strides=spec.stride_for(n_axes),
                padding=spec.flax_padding(n_axes),
                kernel_init=kernel_init,
                bias_init=bias_init,
                dtype=self.dtype,
                name=f"conv{i + 1}",
            )(h)
            # Recorded only when applied with mutable=["intermediates"]: the
            # signs of these are the binary activation pattern of the theory.
            self.sow("intermediates", f"preactivation{i + 1}", h)
            if self.activate_last or i < depth - 1:
                h = act(h)
        h = h.astype(jnp.float32)
        if self.top == "sum":
            return jnp.sum(h, axis=tuple(range(1, h.ndim)))
        h = h.reshape(h.shape[0], -1)
        return jnp.sum(nn.Dense(
            int(self.top_units), kernel_init=nn.initializers.normal(self.init_std), name="top"
        )(h), axis=-1)


def layer_output_sizes(layers: Sequence[ConvSpec], image_size: Sequence[int]):
    """Sizes of each conv layer's output along the data axes, for an input of
    ``image_size`` (``(h, w)`` for images, ``(t, h, w)`` for videos, ``(t,)``
    for sounds): ``ceil(n / s)`` with SAME or CIRCULAR padding, ``(n + 2p −
    k) // s + 1`` otherwise (``p`` = 0 for VALID)."""
    sizes, current = [], tuple(int(n) for n in image_size)
    n_axes = len(current)
    for spec in layers:
        kernel, stride = spec.kernel_for(n_axes), spec.stride_for(n_axes)
        if isinstance(spec.padding, str) and spec.padding in ("SAME", "CIRCULAR"):
            current = tuple(-(-n // s) for n, s in zip(current, stride))
        else:
            pad = (0,) * n_axes if spec.padding == "VALID" else _per_axis(spec.padding, n_axes, "padding")
            current = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(current, pad, kernel, stride))
        sizes.append(current)
    return sizes


def receptive_field(layers: Sequence[ConvSpec], n_axes: Optional[int] = None):
    """Extent of the input window that one top unit sees (VALID convs): an
    int for layers of square kernels and strides (``n_axes`` not given), or
    one extent per axis: ``1 + Σ_l (k_l − 1) Π_{j<l} s_j``."""
    if n_axes is None:
        fixed = {spec.n_axes() for spec in layers} - {None}
        if not fixed:
            return receptive_field(layers, 1)[0]
        n_axes = max(fixed)
    size, jump = [1] * n_axes, [1] * n_axes
    for spec in layers:
        for a, (k, s) in enumerate(zip(spec.kernel_for(n_axes), spec.stride_for(n_axes))):
            size[a] += (k - 1) * jump[a]
            jump[a] *= s
    return tuple(size)


# ---------------------------------------------------------------- spatial-temporal
#
# The descriptors of "Synthesizing Dynamic Patterns by Spatial-Temporal
# Generative ConvNet" (Xie, Zhu, Wu, CVPR 2017): 3-D convolutions over
# (time, height, width), ReLU, f = the sum of the top layer's responses.

STG_VARIANTS = ("st", "fc_s", "fc_s_large", "st_small")


def stg_layers(variant: str, image_size: int = 100) -> Tuple[ConvSpec, ...]:
    """The authors' layers of one spatial-temporal variant (kernels t×h×w):

    * ``"st"`` (stationary in space and time; any size): 120 @ 15³ s7 →
      40 @ 7³ s3 → 20 @ 2×3×3 s(1,2,2), all SAME.
    * ``"fc_s"`` (stationary in time, spatially fully connected; 100×100):
      120 @ 7³ s2 SAME → 30 @ 5×50×50 s2 pad (2,0,0) → 5 @ 2×1×1 s(1,2,2)
      pad (1,0,0).
    * ``"fc_s_large"`` (224×224): 120 @ 7³ s3 SAME → 30 @ 4×75×75 s(2,1,1)
      pad (2,0,0) → 5 @ 2×1×1 pad (1,0,0).

    * ``"st_small"`` (ours, for small frames on a CPU; not the authors'):
      the ST net with a third of its kernels and strides, 120 @ 5³ s2 →
      40 @ 3³ s2 → 20 @ 2×3×3 s(1,2,2), all SAME: a top unit sees 13 frames
      of 17×17 pixels (the ST net's: 78 of 99×99, the whole of a 32² clip,
      which its samples then copy).

    In the FC variants the second layer's spatial kernel covers the whole
    first-layer map, ``ceil(image_size / s1)`` (50 at 100, 75 at 224: the
    authors' numbers); other sizes get the same fully connected layer.
    """
    if variant == "st":
        return (
            ConvSpec(120, (15, 15, 15), (7, 7, 7), "SAME"),
            ConvSpec(40, (7, 7, 7), (3, 3, 3), "SAME"),
            ConvSpec(20, (2, 3, 3), (1, 2, 2), "SAME"),
        )
    if variant == "st_small":
        return (
            ConvSpec(120, (5, 5, 5), (2, 2, 2), "SAME"),
            ConvSpec(40, (3, 3, 3), (2, 2, 2), "SAME"),
            ConvSpec(20, (2, 3, 3), (1, 2, 2), "SAME"),
        )
    if variant in ("fc_s", "fc_s_large"):
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size!r}.")
        s1 = 2 if variant == "fc_s" else 3
        side = -(-int(image_size) // s1)
        if variant == "fc_s":
            return (
                ConvSpec(120, (7, 7, 7), (2, 2, 2), "SAME"),
                ConvSpec(30, (5, side, side), (2, 2, 2), (2, 0, 0)),
                ConvSpec(5, (2, 1, 1), (1, 2, 2), (1, 0, 0)),
            )
        return (
            ConvSpec(120, (7, 7, 7), (3, 3, 3), "SAME"),
            ConvSpec(30, (4, side, side), (2, 1, 1), (2, 0, 0)),
            ConvSpec(5, (2, 1, 1), (1, 1, 1), (1, 0, 0)),
        )
    raise ValueError(f"spatial-temporal variant must be one of {STG_VARIANTS}, got {variant!r}.")


# A 1-D temporal descriptor for sound waveforms (N, T, C): the ST net's
# shape along one axis, with filters long enough to see a few periods of a
# tone, and a fourth layer whose units span 32 steps of the third's: a
# receptive field of 1 + 63 + 15·8 + 3·32 + 31·64 = 2264 samples, two
# pulses of a trill whose period is about 1000 samples, so that the net
# sees how the loudness varies; the first three layers alone (280
# samples, a quarter of a pulse) see a steady tone.
SOUND_LAYERS: Tuple[ConvSpec, ...] = (
    ConvSpec(60, 64, 8, "SAME"),
    ConvSpec(40, 16, 4, "SAME"),
    ConvSpec(20, 4, 2, "SAME"),
    ConvSpec(20, 32, 1, "SAME"),
)


# ---------------------------------------------------------------- generators
#
# The generator g(z; θ) of alternating back-propagation (PAPERS §4): a
# top-down ConvNet from a latent vector to an image (NHWC) or a waveform
# (NTC). Shared by the 2-D and 1-D nets below.

GENERATOR_NORMS = ("none", "layer", "batch")
GENERATOR_OUTPUTS = ("tanh", "linear")


class ConvTranspose(nn.Module):
    """A drop-in for ``nn.ConvTranspose(features, kernel_size, strides,
    padding="SAME")``: the same params (``kernel`` ``(*k, in, out)``,
    ``bias``), initialised alike, the same function, the transposed
    convolution computed by :func:`gcnjax.ops.conv_transpose`."""

    features: int
    kernel_size: Tuple[int, ...]
    strides: Tuple[int, ...]
    kernel_init: Callable = nn.linear.default_kernel_init
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features),
                            jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        return ops.conv_transpose(x, kernel, self.strides) + bias


class BatchStatNorm(nn.Module):
    """Batch normalisation by the statistics of the batch it is given:
    ``(h − mean) / sqrt(var + ε) + shift``, mean and variance per channel
    over the examples and positions, a learned ``shift`` and no scale (the
    CoopNets authors' generator: TensorFlow's ``batch_norm`` defaults, in
    training mode for learning and sampling alike; before a LeakyReLU a
    positive scale is absorbed by the next layer's weights).

    It keeps no running averages: ``apply`` stays a pure function of
    ``(params, z)``, but the output for one example depends on the others
    in its batch.
    """

    epsilon: float = 1e-3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        shift = self.param("shift", nn.initializers.zeros, (h.shape[-1],), jnp.float32)
        return (normalise_by_batch(h, self.epsilon) + shift).astype(self.dtype)


def normalise_by_batch(h: jax.Array, epsilon: float) -> jax.Array:
    """``(h − mean) / sqrt(var + ε)`` in float32, mean and (biased)
    variance per channel (last axis) over all other axes: the examples of
    the batch and their positions."""
    h32 = h.astype(jnp.float32)
    axes = tuple(range(h.ndim - 1))
    mean = jnp.mean(h32, axis=axes)
    var = jnp.mean(jnp.square(h32 - mean), axis=axes)
    return (h32 - mean) * jax.lax.rsqrt(var + epsilon)


def _check_generator_fields(name, channels, norm, output, kernel, stride):
    if len(channels) < 1 or any(int(c) < 1 for c in channels):
        raise ValueError(f"{name}.channels must be a non-empty list of positive channel counts, got {channels!r}.")
    if norm not in GENERATOR_NORMS:
        raise ValueError(
            f"{name}.norm must be one of {GENERATOR_NORMS}, got {norm!r}."
        )
    if output not in GENERATOR_OUTPUTS:
        raise ValueError(f"{name}.output must be one of {GENERATOR_OUTPUTS}, got {output!r}.")
    if int(kernel) < 1 or int(stride) < 1:
        raise ValueError(f"{name}.kernel and .stride must be >= 1, got kernel={kernel!r}, stride={stride!r}.")


def _top_down(z, *, start, channels, kernel, stride, norm, output, init_std, dtype):
    """``z → Dense → reshape (start…, C0) → [norm] → LeakyReLU(0.2) →
    (ConvTranspose(stride) → [norm] → LeakyReLU)* → ConvTranspose → tanh``.

    Called from a ``@nn.compact`` method: the layers it builds belong to
    that module (named ``dense``, ``deconv1``, ``deconv2``, …).
    """
    kernel_init = nn.linear.default_kernel_init if init_std is None else nn.initializers.normal(init_std)
    n_spatial = len(start)
    batch = z.shape[0]
    h = z.reshape(batch, -1).astype(dtype)
    n_positions = 1
    for size in start:
        n_positions *= int(size)
    h = nn.Dense(n_positions * channels[0], kernel_init=kernel_init, dtype=dtype, name="dense")(h)
    h = h.reshape((batch,) + tuple(start) + (channels[0],))

    def norm_act(h, i):
        if norm == "layer":
            # Per example over positions and channels: no running state, and
            # g(z) of one example never depends on the others in the batch.
            h = nn.LayerNorm(reduction_axes=tuple(range(1, h.ndim)), feature_axes=-1, dtype=dtype,
                             name=f"norm{i}")(h)
        elif norm == "batch":
            h = BatchStatNorm(dtype=dtype, name=f"norm{i}")(h)
        return nn.leaky_relu(h, 0.2)

    h = norm_act(h, 0)
    for i, features in enumerate(channels[1:], start=1):
        h = ConvTranspose(int(features), (kernel,) * n_spatial, (stride,) * n_spatial,
                          kernel_init=kernel_init, dtype=dtype, name=f"deconv{i}")(h)
        if i < len(channels) - 1:
            h = norm_act(h, i)
    h = h.astype(jnp.float32)
    return jnp.tanh(h) if output == "tanh" else h


class GeneratorNet(nn.Module):
    """Top-down ConvNet ``g(z; θ)``: latent ``(N, d)`` → images ``(N, H, W, C)``.

    ``z → Dense → (h0, w0, C0) → LeakyReLU(0.2) → ConvTranspose(C1, k×k,
    stride s, SAME) → LeakyReLU → … → ConvTranspose(C_L) → tanh``, so
    ``H = h0 · s^L``, ``W = w0 · s^L`` and ``C = C_L`` (the last entry of
    ``channels``), ``L = len(channels) − 1``.

    Attributes:
      start: ``(h0, w0)``, the spatial size of the first feature map.
      channels: ``(C0, C1, …, C_L)``: the first map's channels, then each
        transposed conv's output channels; the last is the image's.
      kernel, stride: of every transposed conv (the papers: 5, 2).
      norm: after the dense layer and each hidden transposed conv:
        ``"none"``, ``"layer"`` (LayerNorm per example over positions and
        channels) or ``"batch"`` (:class:`BatchStatNorm`, the papers'
        BatchNorm by the statistics of the batch given). ``"batch"`` makes
        ``g(z)`` of one example depend on the others in its batch: fit for
        CoopNets (whose generator maps a batch of prior draws), not for
        ABP, which infers each example's latent by its own Langevin chain
        (:class:`gcnjax.generator.GeneratorConfig` refuses it).
      output: ``"tanh"`` (images in [−1, 1]) or ``"linear"``.
      init_std: standard deviation of the Gaussian initial kernels
        (DCGAN's 0.02); ``None`` for Flax's default (LeCun normal).
      dtype: compute dtype; params and the output stay float32.
    """

    start: Tuple[int, int] = (4, 4)
    channels: Sequence[int] = (512, 256, 128, 64, 3)
    kernel: int = 5
    stride: int = 2
    norm: str = "none"
    output: str = "tanh"
    init_std: Optional[float] = 0.02
    dtype: jnp.dtype = jnp.float32

    def output_shape(self) -> Tuple[int, int, int]:
        """``(H, W, C)`` of one generated image."""
        scale = int(self.stride) ** (len(self.channels) - 1)
        return (int(self.start[0]) * scale, int(self.start[1]) * scale, int(self.channels[-1]))

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        _check_generator_fields("GeneratorNet", self.channels, self.norm, self.output, self.kernel, self.stride)
        if len(self.start) != 2:
            raise ValueError(f"GeneratorNet.start must be (height, width), got {self.start!r}.")
        return _top_down(z, start=tuple(self.start), channels=tuple(self.channels), kernel=self.kernel,
                         stride=self.stride, norm=self.norm, output=self.output, init_std=self.init_std,
                         dtype=self.dtype)


class SoundGeneratorNet(nn.Module):
    """Top-down 1-D ConvNet ``g(z; θ)``: latent ``(N, d)`` → waveforms ``(N, T, C)``.

    The 1-D twin of :class:`GeneratorNet`: ``z → Dense → (t0, C0) →
    LeakyReLU(0.2) → ConvTranspose1D(C1, kernel, stride, SAME) → … → tanh``,
    so ``T = t0 · stride^L``. Attributes as in :class:`GeneratorNet`, with
    ``start`` the length ``t0`` of the first map.
    """

    start: int = 16
    channels: Sequence[int] = (128, 64, 32, 1)
    kernel: int = 25
    stride: int = 4
    norm: str = "none"
    output: str = "tanh"
    init_std: Optional[float] = 0.02
    dtype: jnp.dtype = jnp.float32

    def output_shape(self) -> Tuple[int, int]:
        """``(T, C)`` of one generated waveform."""
        return (int(self.start) * int(self.stride) ** (len(self.channels) - 1), int(self.channels[-1]))

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        _check_generator_fields("SoundGeneratorNet", self.channels, self.norm, self.output, self.kernel,
                                self.stride)
        return _top_down(z, start=(int(self.start),), channels=tuple(self.channels), kernel=self.kernel,
                         stride=self.stride, norm=self.norm, output=self.output, init_std=self.init_std,
                         dtype=self.dtype)


def face_generator(**overrides) -> GeneratorNet:
    """The 64×64×3 face generator of PAPERS §4: ``z → 4×4×512 → 256 → 128 →
    64 → 3``, 5×5 transposed convs of stride 2, LeakyReLU 0.2, tanh out
    (LayerNorm instead of the papers' BatchNorm with ``norm="layer"``)."""
    return GeneratorNet(**{"start": (4, 4), "channels": (512, 256, 128, 64, 3), **overrides})


def face32_generator(**overrides) -> GeneratorNet:
    """A 32×32×3 face generator sized for the CPU: ``z → 4×4×128 → 64 →
    32 → 3``, 5×5 transposed convs of stride 2 (the 64×64 net at half the
    resolution and a quarter of the width: about 1/30 of its FLOPs)."""
    return GeneratorNet(**{"start": (4, 4), "channels": (128, 64, 32, 3), **overrides})


def digit_generator(**overrides) -> GeneratorNet:
    """A 28×28×1 generator (MNIST, Fashion-MNIST): ``z → 7×7×128 → 64 → 1``,
    two 5×5 transposed convs of stride 2, tanh out."""
    return GeneratorNet(**{"start": (7, 7), "channels": (128, 64, 1), **overrides})


def sound_generator(**overrides) -> SoundGeneratorNet:
    """A 1024-sample mono waveform generator: ``z → 16×128 → 64 → 32 → 1``,
    1-D transposed convs of kernel 25 and stride 4, tanh out."""
    return SoundGeneratorNet(**{"start": 16, "channels": (128, 64, 32, 1), "kernel": 25, "stride": 4,
                                **overrides})


# ---------------------------------------------------------------- multi-grid descriptors
#
# The nets of "Learning Generative ConvNets via Multi-grid Modeling and
# Sampling" (Gao et al., CVPR 2018; PAPERS §5), one per grid: every conv is
# zero-padded ("SAME") and followed by [batch norm and] LeakyReLU 0.2, and a
# fully connected layer maps the top map to f(x).

DES4_LAYERS: Tuple[ConvSpec, ...] = (
    ConvSpec(96, 5, 2, "SAME"),
    ConvSpec(128, 3, 1, "SAME"),
    ConvSpec(256, 3, 1, "SAME"),
)
DES16_LAYERS: Tuple[ConvSpec, ...] = DES4_LAYERS + (ConvSpec(512, 3, 1, "SAME"),)
DES64_LAYERS: Tuple[ConvSpec, ...] = (
    ConvSpec(64, 5, 2, "SAME"),
    ConvSpec(128, 5, 2, "SAME"),
    ConvSpec(256, 5, 2, "SAME"),
    ConvSpec(512, 5, 2, "SAME"),
)
#: The authors' net for each grid size.
MULTIGRID_LAYERS = {4: DES4_LAYERS, 16: DES16_LAYERS, 64: DES64_LAYERS}
MULTIGRID_NORMS = ("batch", "none")


def multigrid_layers(grid: int, width: float = 1.0) -> Tuple[ConvSpec, ...]:
    """The authors' net for a ``grid``×``grid`` image (des4, des16 or
    des64; another size takes the net of the next larger of these), with
    every layer's number of filters multiplied by ``width`` (at least 1)."""
    if int(grid) < 1:
        raise ValueError(f"grid size must be >= 1, got {grid!r}.")
    if not width > 0:
        raise ValueError(f"width must be a positive multiplier of the filter counts, got {width!r}.")
    base = next((MULTIGRID_LAYERS[g] for g in sorted(MULTIGRID_LAYERS) if grid <= g), DES64_LAYERS)
    return tuple(dataclasses.replace(s, features=max(1, int(round(s.features * width)))) for s in base)


class MultigridNet(nn.Module):
    """``f(x)`` of one grid of the multi-grid model:
    ``x → (conv → [BN] → LeakyReLU(0.2))* → Dense(1)``.

    Attributes:
      layers: the conv layers, bottom first (see :func:`multigrid_layers`).
      norm: ``"batch"`` or ``"none"``. Batch norm here always normalises
        by the statistics of the batch it is given (mean and variance over
        images and positions, ε = 1e-5, then a learned scale and shift),
        as the authors' code does in learning AND sampling. It keeps no
        running averages, so it has no state beyond the params: ``apply``
        stays a pure function, but ``f`` of one image depends on the others
        in its batch, and a Langevin chain must move the whole batch at
        once (:mod:`gcnjax.multigrid` does).
      init: ``"xavier"`` (Glorot uniform, the authors') for conv and dense
        kernels; biases start at zero.
      dtype: compute dtype; params and ``f`` stay float32.
    """

    layers: Sequence[ConvSpec] = DES64_LAYERS
    norm: str = "batch"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.norm not in MULTIGRID_NORMS:
            raise ValueError(f"MultigridNet.norm must be one of {MULTIGRID_NORMS}, got {self.norm!r}.")
        init = nn.initializers.glorot_uniform()
        h = x.astype(self.dtype)
        for i, spec in enumerate(self.layers):
            h = nn.Conv(spec.features, (spec.kernel, spec.kernel), strides=(spec.stride, spec.stride),
                        padding=spec.padding, kernel_init=init, dtype=self.dtype, name=f"conv{i + 1}")(h)
            if self.norm == "batch":
                scale = self.param(f"bn{i + 1}_scale", nn.initializers.ones, (spec.features,))
                shift = self.param(f"bn{i + 1}_shift", nn.initializers.zeros, (spec.features,))
                h = (normalise_by_batch(h, 1e-5) * scale + shift).astype(self.dtype)
            h = nn.leaky_relu(h, 0.2)
        h = h.astype(jnp.float32).reshape(h.shape[0], -1)
        return nn.Dense(1, kernel_init=init, name="top")(h)[:, 0]
