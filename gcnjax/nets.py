"""Flax Linen modules: the papers' networks, as architectures only.

A descriptor net maps ONE batch of images ``(N, H, W, C)`` (or videos
``(N, T, H, W, C)``, or sounds ``(N, T, C)``: the convolutions have as many
dimensions as the data) to one scalar ``f(x; w)`` per example. Its layers
are given as a tuple of :class:`ConvSpec`; presets reproduce the authors'
nets.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
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
    "GENERATOR_DECONVS",
    "conv_transpose",
    "cpu_conv",
    "conv_transpose_subpixel",
    "conv_transpose_unfold",
    "conv_unfold",
    "SubpixelConvTranspose",
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
# a gray frame some 15 pixels wide.
TEXTURE_LAYERS: Tuple[ConvSpec, ...] = tuple(
    dataclasses.replace(spec, padding="SAME") for spec in OBJECT_LAYERS
)


class DescriptorNet(nn.Module):
    """Bottom-up ConvNet ``f(x; w)`` with a scalar output per image.

    ``x → conv → act → conv → act → …``; then the top:

    * ``top="sum"`` (texture, stationary model): ``f(x) = Σ`` of all the top
      layer's responses over positions and channels.
    * ``top="dense"`` (object model): one fully connected filter over the
      whole top map, ``f(x) = <W, h(x)> + b``, with no activation.

    Attributes:
      layers: the conv layers, bottom first.
      depth: use only the first ``depth`` layers (layer-by-layer growth);
        ``None`` for all.
      top: ``"sum"`` or ``"dense"``.
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
      conv: how the conv layers are computed (:data:`CONV_IMPLS`, see
        :class:`Conv`): the same f, a faster gradient in x on XLA:CPU for
        some nets.
    """

    layers: Sequence[ConvSpec] = TEXTURE_LAYERS
    depth: Optional[int] = None
    top: str = "sum"
    activation: str = "relu"
    init_std: float = 0.01
    dtype: jnp.dtype = jnp.float32
    activate_last: bool = True
    init_scheme: str = "normal"
    conv: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.init_scheme not in ("normal", "torch"):
            raise ValueError(f"DescriptorNet.init_scheme must be 'normal' or 'torch', got {self.init_scheme!r}.")
        if self.top not in ("sum", "dense"):
            raise ValueError(f"DescriptorNet.top must be 'sum' or 'dense', got {self.top!r}.")
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
                impl=self.conv,
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
        return nn.Dense(
            1, kernel_init=nn.initializers.normal(self.init_std), name="top"
        )(h)[:, 0]


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

STG_VARIANTS = ("st", "fc_s", "fc_s_large")


def stg_layers(variant: str, image_size: int = 100) -> Tuple[ConvSpec, ...]:
    """The authors' layers of one spatial-temporal variant (kernels t×h×w):

    * ``"st"`` (stationary in space and time; any size): 120 @ 15³ s7 →
      40 @ 7³ s3 → 20 @ 2×3×3 s(1,2,2), all SAME.
    * ``"fc_s"`` (stationary in time, spatially fully connected; 100×100):
      120 @ 7³ s2 SAME → 30 @ 5×50×50 s2 pad (2,0,0) → 5 @ 2×1×1 s(1,2,2)
      pad (1,0,0).
    * ``"fc_s_large"`` (224×224): 120 @ 7³ s3 SAME → 30 @ 4×75×75 s(2,1,1)
      pad (2,0,0) → 5 @ 2×1×1 pad (1,0,0).

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
# tone at 8-16 kHz.
SOUND_LAYERS: Tuple[ConvSpec, ...] = (
    ConvSpec(60, 64, 8, "SAME"),
    ConvSpec(40, 16, 4, "SAME"),
    ConvSpec(20, 4, 2, "SAME"),
)


# ---------------------------------------------------------------- generators
#
# The generator g(z; θ) of alternating back-propagation (PAPERS §4): a
# top-down ConvNet from a latent vector to an image (NHWC) or a waveform
# (NTC). Shared by the 2-D and 1-D nets below.

GENERATOR_NORMS = ("none", "layer")
GENERATOR_OUTPUTS = ("tanh", "linear")
GENERATOR_DECONVS = ("subpixel", "xla")


def _same_transpose_padding(kernel: int, stride: int) -> Tuple[int, int]:
    """The padding (before, after) that ``lax.conv_transpose(..., "SAME")``
    puts around the stride-dilated input."""
    pad_len = kernel + stride - 2
    before = kernel - 1 if stride > kernel - 1 else -(-pad_len // 2)
    return before, pad_len - before


def _resolve_padding(padding, in_sizes, kernel, strides):
    """Per-axis ``(before, after)`` pads of a ``"SAME"``, ``"VALID"`` or
    ``"CIRCULAR"`` conv (as Flax's ``Conv``: CIRCULAR wraps
    ``((k − 1) // 2, k // 2)`` values whatever the stride), or the explicit
    pairs as given."""
    if isinstance(padding, str):
        if padding == "VALID":
            return tuple((0, 0) for _ in in_sizes)
        if padding == "CIRCULAR":
            return tuple(((k - 1) // 2, k // 2) for k in kernel)
        pads = []
        for n, k, s in zip(in_sizes, kernel, strides):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def conv_space_to_depth(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A strided convolution (channels last, kernel ``(*k, in, out)``, as
    Flax's ``Conv``) computed as a stride-1 convolution of the
    space-to-depth rearranged input.

    With ``k' = ceil(k / s)`` taps per axis,
    ``y[o] = Σ_{j<k} x[s·o + j] K[j] = Σ_{q<k'} Σ_{r<s} x[s·(o + q) + r] K[s·q + r]``:
    the ``s`` phases ``r`` of the padded input become channels and the
    kernel, zero-padded to ``s·k'`` taps, is rearranged the same way. The
    value is the strided convolution's, to rounding; what changes is the
    gradient with respect to ``x``: it is a stride-1 convolution too,
    instead of a convolution of the input-dilated output gradient, which
    XLA:CPU runs on a slow generic path for 3-D kernels (the FC_S net's
    7³ stride-2 layer: 12.5 s against 0.04 s for the forward pass;
    experiments/benchmarks/RESULTS.md).

    ``padding``: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` or per-axis
    ``(before, after)`` pairs.
    """
    n_spatial = kernel.ndim - 2
    strides = tuple(int(s) for s in strides)
    spatial = "DHW"[-n_spatial:] if 1 <= n_spatial <= 3 else None
    if spatial is None or x.ndim != n_spatial + 2 or len(strides) != n_spatial:
        raise ValueError(f"conv_space_to_depth takes (N, *spatial, C) inputs with 1 to 3 spatial axes and a "
                         f"(*kernel, in, out) kernel; got x {x.shape}, kernel {kernel.shape}, strides {strides}.")
    in_sizes, ksizes = x.shape[1:-1], kernel.shape[:n_spatial]
    pads = _resolve_padding(padding, in_sizes, ksizes, strides)
    if padding == "CIRCULAR":
        x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
        pads, in_sizes = tuple((0, 0) for _ in pads), x.shape[1:-1]
    taps = [-(-k // s) for k, s in zip(ksizes, strides)]
    out = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(in_sizes, pads, ksizes, strides)]
    if min(out) < 1:
        raise ValueError(f"the input {tuple(in_sizes)} is smaller than the kernel {tuple(ksizes)} after padding.")
    # Pad (or crop) each axis to s·(out − 1 + k') values: the phases then hold
    # out − 1 + k' positions each, and the stride-1 VALID conv gives `out`.
    config = [(0, 0, 0)]
    for n, (lo, hi), s, t, o in zip(in_sizes, pads, strides, taps, out):
        config.append((lo, s * (o - 1 + t) - n - lo, 0))
    config.append((0, 0, 0))
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    kernel = jnp.pad(kernel, tuple((0, s * t - k) for k, s, t in zip(ksizes, strides, taps)) + ((0, 0), (0, 0)))

    def to_depth(a, lengths, lead):
        # (lead, q_1·s_1, …, q_n·s_n, C) -> (lead, q_1, …, q_n, s_1, …, s_n, C) -> (lead, q…, s…·C)
        shape = a.shape[:lead]
        for q, s in zip(lengths, strides):
            shape += (q, s)
        a = a.reshape(shape + a.shape[lead + n_spatial:])
        order = list(range(lead)) + [lead + 2 * i for i in range(n_spatial)] + \
            [lead + 2 * i + 1 for i in range(n_spatial)] + list(range(lead + 2 * n_spatial, a.ndim))
        a = a.transpose(order)
        return a.reshape(a.shape[:lead + n_spatial] + (-1,) + a.shape[lead + 2 * n_spatial + 1:])

    lengths = [o - 1 + t for o, t in zip(out, taps)]
    xs = to_depth(x, lengths, 1)  # (N, q…, s…·C)
    ks = to_depth(kernel, taps, 0)  # (k'…, s…·C_in, C_out)
    numbers = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    return jax.lax.conv_general_dilated(xs, ks, (1,) * n_spatial, "VALID", dimension_numbers=numbers)


def conv_fold_time(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A 3-D convolution (``x`` ``(N, T, H, W, C)``, kernel
    ``(kt, kh, kw, C, O)`` as Flax's ``Conv``) computed as ONE 2-D
    convolution, with the temporal taps folded into the channels.

    ``y[n, t] = Σ_{d<kt} conv2d(x[n, s_t·t + d], K[d]) = conv2d(X[n, t], K')``
    where ``X[n, t] = concat_d x[n, s_t·t + d]`` (``kt·C`` channels) and
    ``K' = concat_d K[d]`` along its input channels; the ``N·T'`` output
    frames are the 2-D conv's batch. The value is the 3-D conv's, to
    rounding; the work is the same, but XLA:CPU runs 2-D convolutions and
    their gradients on its fast path and some 3-D ones (the FC_S video
    net's: a 7³ stride-2 layer, then a kernel spanning the whole frame) on
    a slow generic one: its gradient in x is 5–7× faster this way than
    with :func:`conv_space_to_depth` (experiments/benchmarks/RESULTS.md).
    The input is held ``kt / s_t`` times over.

    ``padding``: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` or per-axis
    ``(before, after)`` pairs.
    """
    strides = tuple(int(s) for s in strides)
    if x.ndim != 5 or kernel.ndim != 5 or len(strides) != 3:
        raise ValueError(f"conv_fold_time takes (N, T, H, W, C) videos and a (kt, kh, kw, in, out) kernel; got x "
                         f"{x.shape}, kernel {kernel.shape}, strides {strides}.")
    kt, kh, kw, c_in, c_out = kernel.shape
    pads = _resolve_padding(padding, x.shape[1:-1], kernel.shape[:3], strides)
    if padding == "CIRCULAR":
        x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
        pads = ((0, 0),) * 3
    (t_lo, t_hi), h_pad, w_pad = pads
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (t_lo, t_hi, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0)])
    s_t = strides[0]
    t_out = (x.shape[1] - kt) // s_t + 1
    if t_out < 1:
        raise ValueError(f"the input's {x.shape[1]} frames (after padding) are fewer than the kernel's {kt}.")
    taps = [jax.lax.slice_in_dim(x, d, d + s_t * (t_out - 1) + 1, s_t, axis=1) for d in range(kt)]
    folded = jnp.concatenate(taps, axis=-1)  # (N, T', H, W, kt·C), tap-major channels
    n = folded.shape[0]
    folded = folded.reshape((n * t_out,) + folded.shape[2:])
    kernel2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * c_in, c_out)
    y = jax.lax.conv_general_dilated(folded, kernel2d, strides[1:], (h_pad, w_pad),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape((n, t_out) + y.shape[1:])


def _unfold_axis(x: jax.Array, axis: int, kernel: int, stride: int, n_out: int) -> jax.Array:
    """``x`` (padded) with ``axis`` replaced by ``(n_out, kernel)`` axes
    holding ``P[o, j] = x[s·o + j]``. With ``j = s·q + r``,
    ``x[s·o + j] = X[o + q, r]`` where ``X`` is ``x`` reshaped to
    ``(n_out + q_max − 1, s)``: the patches are ``ceil(k / s)`` shifted
    slices of ``X``, so neither they nor their transpose (pads and adds)
    gather or scatter."""
    n_taps = -(-kernel // stride)
    rows = n_out + n_taps - 1
    length, need = x.shape[axis], stride * rows
    if length < need:
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (0, need - length, 0)
        x = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
    x = jax.lax.slice_in_dim(x, 0, need, axis=axis)
    x = x.reshape(x.shape[:axis] + (rows, stride) + x.shape[axis + 1:])
    patches = jnp.stack([jax.lax.slice_in_dim(x, q, q + n_out, axis=axis) for q in range(n_taps)], axis=axis + 1)
    patches = patches.reshape(patches.shape[:axis] + (n_out, n_taps * stride) + patches.shape[axis + 3:])
    return jax.lax.slice_in_dim(patches, 0, kernel, axis=axis + 1)


def conv_unfold(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A convolution (channels last, kernel ``(*k, in, out)``, as Flax's
    ``Conv``; 1 to 3 spatial axes) computed as the input's patches times
    the kernel: ``y[n, o] = Σ_{j, c} P[n, o, j, c] K[j, c, :]`` with
    ``P[n, o, j] = x[n, s·o + j]`` (``o``, ``j``, ``s`` per axis), one
    matmul of ``(N·Π o) × (Π k · C)`` by ``(Π k · C) × O``.

    The patches are cut axis by axis as ``ceil(k / s)`` shifted slices of
    the reshaped axis (no gather), so the gradients that autodiff derives
    are a matmul and pads and adds. Worth it where the kernel is large and
    the stride long, as in the ST video net's first two layers (15³
    stride 7, 7³ stride 3): there XLA:CPU's own 3-D conv computes the
    gradients 2–3× slower, and gains nothing from a batch of videos
    (experiments/benchmarks/RESULTS.md). The patches take ``Π k / Π s``
    times the input's memory.

    ``padding``: ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` or per-axis
    ``(before, after)`` pairs.
    """
    n_spatial = kernel.ndim - 2
    strides = tuple(int(s) for s in strides)
    if not 1 <= n_spatial <= 3 or x.ndim != n_spatial + 2 or len(strides) != n_spatial:
        raise ValueError(f"conv_unfold takes (N, *spatial, C) inputs with 1 to 3 spatial axes and a "
                         f"(*kernel, in, out) kernel; got x {x.shape}, kernel {kernel.shape}, strides {strides}.")
    ksizes = kernel.shape[:n_spatial]
    pads = _resolve_padding(padding, x.shape[1:-1], ksizes, strides)
    mode = "wrap" if padding == "CIRCULAR" else "constant"
    x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode=mode)
    out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], ksizes, strides)]
    if min(out) < 1:
        raise ValueError(f"the input {x.shape[1:-1]} (after padding) is smaller than the kernel {tuple(ksizes)}.")
    for axis, (k, s, o) in enumerate(zip(ksizes, strides, out)):
        x = _unfold_axis(x, 1 + 2 * axis, k, s, o)
    # (N, o_1, k_1, …, o_n, k_n, C) -> (N, o_1, …, o_n, k_1, …, k_n, C): one
    # 2-D matmul (faster on XLA:CPU than the same contraction left to einsum).
    order = (0,) + tuple(range(1, 2 * n_spatial, 2)) + tuple(range(2, 2 * n_spatial + 1, 2)) + (x.ndim - 1,)
    x = jnp.transpose(x, order)
    lead = x.shape[:1 + n_spatial]
    y = jnp.dot(x.reshape(math.prod(lead), -1), kernel.reshape(-1, kernel.shape[-1]))
    return y.reshape(lead + (kernel.shape[-1],))


def _xla_conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    spatial = "DHW"[-(kernel.ndim - 2):]
    return jax.lax.conv_general_dilated(x, kernel, tuple(strides), padding,
                                        dimension_numbers=("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))


def _conv_with_gradients(value_fn, input_gradient_fn, kernel_gradient_fn=None):
    """A convolution ``(x, kernel, strides, padding) -> y`` (a custom VJP;
    ``strides`` and ``padding`` static) whose value is ``value_fn``'s, whose
    gradient in ``x`` is ``input_gradient_fn(cotangent, x, kernel, strides,
    padding)`` and whose gradient in the kernel is
    ``kernel_gradient_fn``'s (same arguments; XLA's by default). A linear
    map's gradients do not depend on how its value was computed, so each
    direction can take its faster path."""
    kernel_gradient_fn = kernel_gradient_fn or _xla_kernel_gradient

    @functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
    def conv(x, kernel, strides, padding):
        return value_fn(x, kernel, strides, padding)

    def forward(x, kernel, strides, padding):
        return value_fn(x, kernel, strides, padding), (x, kernel)

    def backward(strides, padding, residuals, cotangent):
        x, kernel = residuals
        dx = input_gradient_fn(cotangent, x, kernel, strides, padding)
        dk = kernel_gradient_fn(cotangent, x, kernel, strides, padding)
        return dx.astype(x.dtype), dk.astype(kernel.dtype)

    conv.defvjp(forward, backward)
    return conv


def _input_gradient(conv_fn):
    def gradient(cotangent, x, kernel, strides, padding):
        (dx,) = jax.vjp(lambda x: conv_fn(x, kernel, strides, padding), x)[1](cotangent)
        return dx
    return gradient


def _kernel_gradient(conv_fn):
    def gradient(cotangent, x, kernel, strides, padding):
        (dk,) = jax.vjp(lambda k: conv_fn(x, k, strides, padding), kernel)[1](cotangent)
        return dk
    return gradient


_xla_input_gradient = _input_gradient(_xla_conv)
_xla_kernel_gradient = _kernel_gradient(_xla_conv)


def _subpixel_input_gradient_shift(in_sizes, kernel_sizes, strides, pads, out_sizes):
    """δ per axis such that the input gradient of a strided conv is
    ``z[δ : δ + n]`` with ``z = conv_transpose(g, flip(K)ᵀ, s, "SAME")``
    (see :func:`conv_subpixel_grad`), or None where that window leaves z."""
    shifts = []
    for n, k, s, (lo, _), o in zip(in_sizes, kernel_sizes, strides, pads, out_sizes):
        delta = lo + _same_transpose_padding(k, s)[0] - (k - 1)
        if delta < 0 or delta + n > s * o:
            return None
        shifts.append(delta)
    return tuple(shifts)


def _subpixel_input_gradient(cotangent, x, kernel, strides, padding):
    n_spatial = kernel.ndim - 2
    in_sizes, kernel_sizes = x.shape[1:-1], kernel.shape[:n_spatial]
    pads = _resolve_padding(padding, in_sizes, kernel_sizes, strides)
    shifts = _subpixel_input_gradient_shift(in_sizes, kernel_sizes, strides, pads, cotangent.shape[1:-1])
    if shifts is None:
        return _xla_input_gradient(cotangent, x, kernel, strides, padding)
    flipped = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(n_spatial))), -1, -2)
    z = conv_transpose(cotangent, flipped, strides)
    return z[(slice(None),) + tuple(slice(d, d + n) for d, n in zip(shifts, in_sizes))]


_fold_time_value = _conv_with_gradients(conv_fold_time, _xla_input_gradient)
_fold_time_value_unfold_gradients = _conv_with_gradients(conv_fold_time, _input_gradient(conv_unfold),
                                                         _kernel_gradient(conv_unfold))
_subpixel_gradient = _conv_with_gradients(_xla_conv, _subpixel_input_gradient)


def conv_fold_time_forward(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A 3-D convolution whose value is computed by :func:`conv_fold_time`
    and whose gradients (in ``x`` and in the kernel) by XLA's own 3-D
    convolution. On XLA:CPU the ST net's first layer (15³ kernel, stride 7,
    3 channels) runs forward in 0.9 ms time-folded against 3.0 ms, while
    its input gradient is 8.1 ms time-folded against 6.0 ms
    (experiments/benchmarks/RESULTS.md).

    ``padding``: ``"SAME"``, ``"VALID"`` or a tuple of ``(before, after)``
    pairs (hashable: it is static)."""
    return _fold_time_value(x, kernel, tuple(int(s) for s in strides), padding)


def conv_subpixel_grad(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A 1-D or 2-D convolution (XLA's, as Flax's ``Conv``) whose
    gradient in ``x`` is computed by :func:`conv_transpose` (sub-pixel, or
    unfolded where the layer has few input channels; the ``Conv`` layer
    takes it for strided layers and for stride-1 layers with fewer than
    :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS` input channels).

    The input gradient of ``y[o] = Σ_j x[s·o + j − lo] K[j]`` is
    ``dx[i] = Σ_{s·o + j − lo = i} g[o] K[j]ᵀ``, which is
    ``z[i + δ]`` with ``z = conv_transpose(g, K', s, "SAME")``,
    ``K'[j] = K[k − 1 − j]ᵀ`` and ``δ = lo + p − (k − 1)`` (``p`` the
    transposed conv's SAME padding before the dilated input). XLA:CPU
    computes that gradient as a conv of the zero-dilated ``g``; the
    sub-pixel form skips the zeros: the short-run net's stride-2 layers,
    16 chains, 4.0 → 2.9, 3.0 → 2.5 and 5.0 → 2.9 ms
    (experiments/benchmarks/RESULTS.md). A stride-1 layer with few input
    channels, the short-run net's first (3 → 64, 3×3), gets its input
    gradient unfolded: 16 chains, 2.9–3.4 → 0.7–1.4 ms. The kernel's
    gradient is XLA's.
    Where the window ``z[δ : δ + n]`` leaves ``z`` (some VALID convs whose
    kernel is longer than the stride) the input gradient is XLA's too.

    ``padding``: ``"SAME"``, ``"VALID"`` or a tuple of ``(before, after)``
    pairs (hashable: it is static)."""
    return _subpixel_gradient(x, kernel, tuple(int(s) for s in strides), padding)


# How a Conv layer computes its convolution: XLA's own conv, the stride-1
# conv of the space-to-depth input, (3-D) one 2-D conv with the temporal
# taps folded into channels, (3-D, few input channels) the time-folded
# value with XLA's gradients, (1-D/2-D, strided or with few input
# channels) XLA's conv with the sub-pixel or unfolded input gradient, or
# the unfolded patches times the kernel.
CONV_IMPLS = ("xla", "space_to_depth", "fold_time", "fold_time_forward", "subpixel_grad", "unfold")
# "fold_time_forward", and "unfold" for its value, time-fold 3-D layers with
# fewer input channels than this (a video net's first layer); the ST net's
# deeper layers (40 and 120 channels) were 10-15% slower that way.
FOLD_TIME_FORWARD_BELOW_CHANNELS = 8


def cpu_conv(impl: str) -> str:
    """``impl`` (a ``Conv`` implementation chosen by measurement on
    XLA:CPU, where XLA's own gradients of strided convs are slow) on the
    CPU, XLA's own convs (cuDNN's on a GPU) elsewhere. The CPU choices also
    hold more memory: the texture chain at 64² needs 3.6 GB of temporaries
    for 1000 chains with ``"subpixel_grad"`` against 1.3 GB with ``"xla"``
    (experiments/benchmarks/RESULTS.md)."""
    return impl if jax.default_backend() == "cpu" else "xla"


class Conv(nn.Module):
    """``flax.linen.Conv``'s parameters (``kernel`` ``(*k, in, out)``,
    ``bias``) and value, computed by ``impl`` (:data:`CONV_IMPLS`):
    ``"xla"`` (``lax.conv_general_dilated``), ``"space_to_depth"``
    (strided layers as :func:`conv_space_to_depth`), ``"fold_time"``
    (3-D layers as :func:`conv_fold_time`), ``"fold_time_forward"`` (3-D
    layers with fewer than :data:`FOLD_TIME_FORWARD_BELOW_CHANNELS` input
    channels as :func:`conv_fold_time_forward`), ``"subpixel_grad"``
    (1-D and 2-D layers, strided or with fewer than
    :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS` input channels, as
    :func:`conv_subpixel_grad`) or
    ``"unfold"`` (every layer as :func:`conv_unfold`, except the value of
    3-D layers with fewer than :data:`FOLD_TIME_FORWARD_BELOW_CHANNELS`
    input channels, which is :func:`conv_fold_time`'s); the layers an
    implementation does not cover as ``"xla"``. The same function and
    gradients either way; the choice is made per net by measurement,
    because the gradient in x, which Langevin dynamics takes at every step,
    runs on slow XLA:CPU paths for some convolutions."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Any
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    dtype: jnp.dtype = jnp.float32
    impl: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl not in CONV_IMPLS:
            raise ValueError(f"Conv.impl must be one of {CONV_IMPLS}, got {self.impl!r}.")
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        n_spatial = len(self.kernel_size)
        if self.impl == "space_to_depth" and any(int(s) > 1 for s in self.strides):
            return conv_space_to_depth(x, kernel, self.strides, self.padding) + bias
        if self.impl == "fold_time" and n_spatial == 3:
            return conv_fold_time(x, kernel, self.strides, self.padding) + bias
        padding = self.padding
        if padding == "CIRCULAR":
            pads = _resolve_padding(padding, x.shape[1:-1], self.kernel_size, self.strides)
            x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
            padding = "VALID"
        strides = tuple(int(s) for s in self.strides)
        static = padding if isinstance(padding, str) else tuple((int(lo), int(hi)) for lo, hi in padding)
        if (self.impl == "fold_time_forward" and n_spatial == 3
                and x.shape[-1] < FOLD_TIME_FORWARD_BELOW_CHANNELS):
            return conv_fold_time_forward(x, kernel, strides, static) + bias
        if self.impl == "unfold":
            if n_spatial == 3 and x.shape[-1] < FOLD_TIME_FORWARD_BELOW_CHANNELS:
                return _fold_time_value_unfold_gradients(x, kernel, strides, static) + bias
            return conv_unfold(x, kernel, strides, static) + bias
        if self.impl == "subpixel_grad" and n_spatial <= 2 and (
                max(strides) > 1 or x.shape[-1] < UNFOLD_TRANSPOSE_BELOW_CHANNELS):
            return conv_subpixel_grad(x, kernel, strides, static) + bias
        return _xla_conv(x, kernel, strides, padding) + bias


# Below this many output channels conv_transpose takes conv_transpose_unfold:
# on XLA:CPU the face nets' RGB layer (64 -> 3 channels) ran 1.4-6x faster
# that way (value and both gradients) than as sub-pixel phases, and the
# texture net's first-layer input gradient (100 -> 3) 5-6x; the 64-channel
# and wider layers were slower (experiments/benchmarks/RESULTS.md).
UNFOLD_TRANSPOSE_BELOW_CHANNELS = 16


def _phase_taps(kernel_size: int, stride: int):
    """Per output phase ``r`` of one axis: ``(c_r, j₀, L_r)`` (see
    :func:`conv_transpose_subpixel`)."""
    before, _ = _same_transpose_padding(kernel_size, stride)
    phases = []
    for r in range(stride):
        j0 = (before - r) % stride
        phases.append(((r + j0 - before) // stride, j0, len(range(j0, kernel_size, stride))))
    return phases


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, "SAME")`` (channels last,
    kernel ``(*k, in, out)`` applied unflipped, as Flax's ConvTranspose) as
    ordinary stride-1 convolutions, one per output phase, interleaved.

    Output position ``o = s·q + r`` (phase ``r``) only meets the kernel taps
    ``j ≡ p − r (mod s)`` (``p`` the SAME padding before the dilated
    input), so ``y[s·q + r] = Σ_t K[j₀ + s·t] · x[q + c_r + t]`` with
    ``j₀ = (p − r) mod s`` and ``c_r = (r + j₀ − p) / s``: a VALID conv of
    ``x`` padded by ``(−c_r, c_r + L_r − 1)`` with the sub-kernel
    ``K[j₀::s]`` of ``L_r`` taps. No multiply-add touches the zeros of the
    dilated input; on XLA:CPU the face32 generator's latent gradient ran 4.5×
    faster than with ``lax.conv_transpose`` (experiments/benchmarks/RESULTS.md).
    """
    n_spatial = kernel.ndim - 2
    strides = tuple(int(s) for s in strides)
    spatial = "DHW"[-n_spatial:] if n_spatial <= 3 else None
    if spatial is None or x.ndim != n_spatial + 2 or len(strides) != n_spatial:
        raise ValueError(f"conv_transpose_subpixel takes (N, *spatial, C) inputs with 1 to 3 spatial axes and a "
                         f"(*kernel, in, out) kernel; got x {x.shape}, kernel {kernel.shape}, strides {strides}.")
    numbers = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    in_sizes = x.shape[1:-1]
    c_out = kernel.shape[-1]
    axes = [_phase_taps(kernel.shape[axis], strides[axis]) for axis in range(n_spatial)]
    phases = []
    for phase in itertools.product(*(range(s) for s in strides)):
        taps = tuple(axes[axis][r] for axis, r in enumerate(phase))
        sub = kernel[tuple(slice(j0, None, s) for (_, j0, _), s in zip(taps, strides))]
        if 0 in sub.shape[:n_spatial]:  # a kernel shorter than the stride misses this phase
            phases.append(jnp.zeros((x.shape[0],) + tuple(in_sizes) + (c_out,), jnp.result_type(x, kernel)))
        else:
            pads = [(-c, c + n - 1) for c, _, n in taps]
            phases.append(jax.lax.conv_general_dilated(x, sub, (1,) * n_spatial, pads, dimension_numbers=numbers))
    y = jnp.stack(phases).reshape(strides + phases[0].shape)
    # (s_1, …, s_n, N, q_1, …, q_n, C) -> (N, q_1, s_1, …, q_n, s_n, C) -> (N, q_1·s_1, …, C)
    order = [n_spatial]
    for axis in range(n_spatial):
        order += [n_spatial + 1 + axis, axis]
    order.append(2 * n_spatial + 1)
    y = jnp.transpose(y, order)
    return y.reshape((x.shape[0],) + tuple(int(n) * s for n, s in zip(in_sizes, strides)) + (c_out,))


def conv_transpose_unfold(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, "SAME")`` (channels last,
    kernel ``(*k, in, out)`` applied unflipped, as Flax's ConvTranspose) as
    the transpose of :func:`conv_unfold`: one matmul of ``x``
    ``(N·Π n) × C_in`` by the kernel ``C_in × (Π k · C_out)``, then the
    overlap-add of those patches (pads and adds).

    A SAME transposed conv is the input gradient of the strided conv
    ``y[o] = Σ_j u[s·o + j − lo] K'[j]`` of a ``u`` of ``s·n`` positions,
    with ``K'[j] = K[k − 1 − j]ᵀ`` and ``lo = k − 1 − p`` (``p`` the
    transposed conv's padding before the dilated input): its transpose.
    Every multiply-add is one of the kernel's (the sub-pixel phases pad
    the kernel to ``s·ceil(k / s)`` taps per axis); on XLA:CPU the face
    generators' RGB layer (64 → 3 channels, 5×5, stride 2) ran its value
    and gradients 1.4–6× faster this way (experiments/benchmarks/RESULTS.md).
    """
    n_spatial = kernel.ndim - 2
    strides = tuple(int(s) for s in strides)
    if not 1 <= n_spatial <= 3 or x.ndim != n_spatial + 2 or len(strides) != n_spatial:
        raise ValueError(f"conv_transpose_unfold takes (N, *spatial, C) inputs with 1 to 3 spatial axes and a "
                         f"(*kernel, in, out) kernel; got x {x.shape}, kernel {kernel.shape}, strides {strides}.")
    pads = []
    for k, s in zip(kernel.shape[:n_spatial], strides):
        lo = k - 1 - _same_transpose_padding(k, s)[0]
        pads.append((lo, max(0, k - s - lo)))  # any hi in [k − s − lo, k − 1 − lo] gives n outputs
    adjoint = jnp.swapaxes(jnp.flip(kernel, tuple(range(n_spatial))), -1, -2)
    out_shape = (x.shape[0],) + tuple(n * s for n, s in zip(x.shape[1:-1], strides)) + (kernel.shape[-1],)
    conv = functools.partial(conv_unfold, kernel=adjoint, strides=strides, padding=tuple(pads))
    (y,) = jax.linear_transpose(conv, jax.ShapeDtypeStruct(out_shape, jnp.result_type(x, kernel)))(x)
    return y


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, "SAME")`` (kernel
    ``(*k, in, out)`` applied unflipped, as Flax's ConvTranspose), computed
    by :func:`conv_transpose_unfold` below
    :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS` output channels and by
    :func:`conv_transpose_subpixel` otherwise."""
    if kernel.shape[-1] < UNFOLD_TRANSPOSE_BELOW_CHANNELS:
        return conv_transpose_unfold(x, kernel, strides)
    return conv_transpose_subpixel(x, kernel, strides)


class SubpixelConvTranspose(nn.Module):
    """A drop-in for ``nn.ConvTranspose(features, kernel_size, strides,
    padding="SAME")``: the same params (``kernel`` ``(*k, in, out)``,
    ``bias``), initialised alike, the same function, computed by
    :func:`conv_transpose`."""

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
        return conv_transpose(x, kernel, self.strides) + bias



def _check_generator_fields(name, channels, norm, output, kernel, stride, deconv="subpixel"):
    if deconv not in GENERATOR_DECONVS:
        raise ValueError(f"{name}.deconv must be one of {GENERATOR_DECONVS}, got {deconv!r}.")
    if len(channels) < 1 or any(int(c) < 1 for c in channels):
        raise ValueError(f"{name}.channels must be a non-empty list of positive channel counts, got {channels!r}.")
    if norm not in GENERATOR_NORMS:
        raise ValueError(
            f"{name}.norm must be one of {GENERATOR_NORMS}, got {norm!r}. BatchNorm is not offered: "
            "inference runs each example's latent chain on its own, so batch statistics would be wrong."
        )
    if output not in GENERATOR_OUTPUTS:
        raise ValueError(f"{name}.output must be one of {GENERATOR_OUTPUTS}, got {output!r}.")
    if int(kernel) < 1 or int(stride) < 1:
        raise ValueError(f"{name}.kernel and .stride must be >= 1, got kernel={kernel!r}, stride={stride!r}.")


def _top_down(z, *, start, channels, kernel, stride, norm, output, init_std, dtype, deconv="subpixel"):
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
        return nn.leaky_relu(h, 0.2)

    h = norm_act(h, 0)
    for i, features in enumerate(channels[1:], start=1):
        if deconv == "subpixel":
            h = SubpixelConvTranspose(int(features), (kernel,) * n_spatial, (stride,) * n_spatial,
                                      kernel_init=kernel_init, dtype=dtype, name=f"deconv{i}")(h)
        else:
            h = nn.ConvTranspose(
                int(features), (kernel,) * n_spatial, strides=(stride,) * n_spatial, padding="SAME",
                kernel_init=kernel_init, dtype=dtype, name=f"deconv{i}",
            )(h)
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
      norm: ``"none"`` or ``"layer"`` (LayerNorm per example over positions
        and channels, after the dense layer and each hidden transposed
        conv). The papers' nets use BatchNorm; it is left out on purpose:
        ABP infers each example's latent by its own Langevin chain (one
        example at a time under ``vmap``), where batch statistics would
        make ``g(z)`` depend on the other examples and need a mutable
        ``batch_stats`` collection. LayerNorm has neither problem.
      output: ``"tanh"`` (images in [−1, 1]) or ``"linear"``.
      init_std: standard deviation of the Gaussian initial kernels
        (DCGAN's 0.02); ``None`` for Flax's default (LeCun normal).
      dtype: compute dtype; params and the output stay float32.
      deconv: how the transposed convs are computed: ``"subpixel"``
        (:func:`conv_transpose`, the default: faster on XLA:CPU)
        or ``"xla"`` (``flax.linen.ConvTranspose``). The same params and,
        to float32 rounding, the same function either way.
    """

    start: Tuple[int, int] = (4, 4)
    channels: Sequence[int] = (512, 256, 128, 64, 3)
    kernel: int = 5
    stride: int = 2
    norm: str = "none"
    output: str = "tanh"
    init_std: Optional[float] = 0.02
    dtype: jnp.dtype = jnp.float32
    deconv: str = "subpixel"

    def output_shape(self) -> Tuple[int, int, int]:
        """``(H, W, C)`` of one generated image."""
        scale = int(self.stride) ** (len(self.channels) - 1)
        return (int(self.start[0]) * scale, int(self.start[1]) * scale, int(self.channels[-1]))

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        _check_generator_fields("GeneratorNet", self.channels, self.norm, self.output, self.kernel, self.stride,
                                self.deconv)
        if len(self.start) != 2:
            raise ValueError(f"GeneratorNet.start must be (height, width), got {self.start!r}.")
        return _top_down(z, start=tuple(self.start), channels=tuple(self.channels), kernel=self.kernel,
                         stride=self.stride, norm=self.norm, output=self.output, init_std=self.init_std,
                         dtype=self.dtype, deconv=self.deconv)


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
    deconv: str = "subpixel"

    def output_shape(self) -> Tuple[int, int]:
        """``(T, C)`` of one generated waveform."""
        return (int(self.start) * int(self.stride) ** (len(self.channels) - 1), int(self.channels[-1]))

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        _check_generator_fields("SoundGeneratorNet", self.channels, self.norm, self.output, self.kernel,
                                self.stride, self.deconv)
        return _top_down(z, start=(int(self.start),), channels=tuple(self.channels), kernel=self.kernel,
                         stride=self.stride, norm=self.norm, output=self.output, init_std=self.init_std,
                         dtype=self.dtype, deconv=self.deconv)


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
                h32 = h.astype(jnp.float32)
                mean = jnp.mean(h32, axis=(0, 1, 2))
                var = jnp.mean(jnp.square(h32 - mean), axis=(0, 1, 2))
                scale = self.param(f"bn{i + 1}_scale", nn.initializers.ones, (spec.features,))
                shift = self.param(f"bn{i + 1}_shift", nn.initializers.zeros, (spec.features,))
                h = ((h32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + shift).astype(self.dtype)
            h = nn.leaky_relu(h, 0.2)
        h = h.astype(jnp.float32).reshape(h.shape[0], -1)
        return nn.Dense(1, kernel_init=init, name="top")(h)[:, 0]
