"""Convolution kernels: how a conv layer's value and gradients are computed.

Every function here computes one of two linear maps, channels last, to
float32 rounding:

* the convolution ``y[n, o] = Σ_{j, c} x[n, s·o + j − lo, c] K[j, c, :]``
  of ``lax.conv_general_dilated`` (Flax's ``Conv``; kernel
  ``(*k, in, out)``), and
* the SAME transposed convolution of ``lax.conv_transpose(x, K, s,
  "SAME")`` (Flax's ``ConvTranspose``; kernel ``(*k, in, out)`` applied
  unflipped),

and its gradients in ``x`` and in the kernel. They differ only in which XLA
operations do the work. :func:`conv` and :func:`conv_transpose` pick one per
layer when they are traced, from the backend they are traced for
(:func:`choose_conv_impl`); :func:`conv_impl` overrides the choice within a
block, for benchmarks and tests. The choice is never part of a model or of a
saved configuration: a run learned on one backend resumes on another with
that backend's kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
from typing import Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

__all__ = [
    "CONV_IMPLS",
    "CPU_RULE",
    "UNFOLD_TRANSPOSE_BELOW_CHANNELS",
    "FOLD_TIME_VALUE_BELOW_CHANNELS",
    "UNFOLD_MAX_PATCH_GROWTH",
    "choose_conv_impl",
    "conv_impl",
    "conv",
    "conv_transpose",
    "conv_fold_time",
    "conv_unfold",
    "conv_subpixel_grad",
    "conv_transpose_subpixel",
    "conv_transpose_unfold",
]


#: How :func:`conv` may compute a layer: XLA's own conv; (3-D) one 2-D conv
#: with the temporal taps folded into channels (:func:`conv_fold_time`);
#: (1-D/2-D, strided or with few input channels) XLA's conv with a
#: transposed conv that skips zeros as its input gradient
#: (:func:`conv_subpixel_grad`); the unfolded patches times the kernel
#: (:func:`conv_unfold`; the value of 3-D layers with fewer than
#: :data:`FOLD_TIME_VALUE_BELOW_CHANNELS` input channels time-folded).
CONV_IMPLS = ("xla", "fold_time", "subpixel_grad", "unfold")
#: :func:`conv_impl` of this applies the CPU's rule on any backend.
CPU_RULE = "cpu"
#: Below this many output channels a transposed conv is unfolded, not split
#: into sub-pixel phases; ``"subpixel_grad"`` also covers stride-1 layers with
#: fewer input channels than this (their input gradient is then unfolded).
#: Wider layers were faster as phases (measured: experiments/benchmarks/RESULTS.md).
UNFOLD_TRANSPOSE_BELOW_CHANNELS = 16
#: ``"unfold"`` computes the value of 3-D layers with fewer input channels
#: than this (a video net's first layer) time-folded, its gradients unfolded.
FOLD_TIME_VALUE_BELOW_CHANNELS = 8
#: On the CPU a 3-D layer is unfolded only where its patches hold at most this
#: many times the input's values (``Π k / Π s``), and time-folded otherwise:
#: the ST net's layers hold at most 12.7, the FC_S net's 7³ stride-2 layer 43
#: (measured: experiments/benchmarks/RESULTS.md, "Kernel choices").
UNFOLD_MAX_PATCH_GROWTH = 16


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


def conv_fold_time(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A 3-D convolution (``x`` ``(N, T, H, W, C)``, kernel
    ``(kt, kh, kw, C, O)`` as Flax's ``Conv``) computed as ONE 2-D
    convolution, with the temporal taps folded into the channels.

    ``y[n, t] = Σ_{d<kt} conv2d(x[n, s_t·t + d], K[d]) = conv2d(X[n, t], K')``
    where ``X[n, t] = concat_d x[n, s_t·t + d]`` (``kt·C`` channels) and
    ``K' = concat_d K[d]`` along its input channels; the ``N·T'`` output
    frames are the 2-D conv's batch. The value is the 3-D conv's, to
    rounding, and so are the gradients autodiff derives (2-D convs). The
    multiply-adds are the same; the input is held ``kt / s_t`` times over.
    Why: XLA:CPU runs some strided 3-D convs and their input gradients on
    a slow generic path, 2-D ones on its fast path (measured:
    experiments/benchmarks/RESULTS.md).

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
    are a matmul and pads and adds. The patches take ``Π k / Π s`` times
    the input's memory. Why: where the kernel is large and the stride long
    (the ST video net's 15³ stride-7 and 7³ stride-3 layers) one matmul
    beats XLA:CPU's 3-D conv and its gradients, and gains from a batch of
    videos (measured: experiments/benchmarks/RESULTS.md).

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
    """``(δ, extension)`` per axis such that the input gradient of a strided
    conv is ``z[δ : δ + n]`` with ``z = conv_transpose(g', flip(K)ᵀ, s,
    "SAME")`` (see :func:`conv_subpixel_grad`), ``g'`` the cotangent ``g``
    with ``extension = (e_lo, e_hi)`` zero outputs added before and after:
    ``(0, 0)`` where the window lies inside the ``z`` of ``g`` itself. The
    zero outputs add nothing; they only lengthen ``z``, each by ``s``
    values (``δ`` grows by ``s · e_lo``), to hold the window."""
    shifts, extensions = [], []
    for n, k, s, (lo, _), o in zip(in_sizes, kernel_sizes, strides, pads, out_sizes):
        delta = lo + _same_transpose_padding(k, s)[0] - (k - 1)
        e_lo = -(-max(0, -delta) // s)
        e_hi = -(-max(0, delta + n - s * o) // s)
        shifts.append(delta + s * e_lo)
        extensions.append((e_lo, e_hi))
    return tuple(shifts), tuple(extensions)


def _subpixel_input_gradient(cotangent, x, kernel, strides, padding):
    n_spatial = kernel.ndim - 2
    in_sizes, kernel_sizes = x.shape[1:-1], kernel.shape[:n_spatial]
    pads = _resolve_padding(padding, in_sizes, kernel_sizes, strides)
    shifts, extensions = _subpixel_input_gradient_shift(in_sizes, kernel_sizes, strides, pads,
                                                        cotangent.shape[1:-1])
    if any(e_lo or e_hi for e_lo, e_hi in extensions):
        cotangent = jnp.pad(cotangent, ((0, 0),) + extensions + ((0, 0),))
    flipped = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(n_spatial))), -1, -2)
    z = _conv_transpose_skipping_zeros(cotangent, flipped, strides)
    return z[(slice(None),) + tuple(slice(d, d + n) for d, n in zip(shifts, in_sizes))]


_fold_time_value_unfold_gradients = _conv_with_gradients(conv_fold_time, _input_gradient(conv_unfold),
                                                         _kernel_gradient(conv_unfold))
_subpixel_gradient = _conv_with_gradients(_xla_conv, _subpixel_input_gradient)


def conv_subpixel_grad(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """A 1-D or 2-D convolution (XLA's, as Flax's ``Conv``) whose
    gradient in ``x`` is a transposed conv that skips the zeros of the
    dilated cotangent (:func:`conv_transpose_subpixel`, or
    :func:`conv_transpose_unfold` below
    :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS` output channels, i.e. where the
    layer has few input channels).

    The input gradient of ``y[o] = Σ_j x[s·o + j − lo] K[j]`` is
    ``dx[i] = Σ_{s·o + j − lo = i} g[o] K[j]ᵀ``, which is
    ``z[i + δ]`` with ``z = conv_transpose(g, K', s, "SAME")``,
    ``K'[j] = K[k − 1 − j]ᵀ`` and ``δ = lo + p − (k − 1)`` (``p`` the
    transposed conv's SAME padding before the dilated input). The kernel's
    gradient is XLA's. Where the window ``z[δ : δ + n]`` would leave ``z``
    (VALID convs whose kernel is longer than the stride, and so the
    CIRCULAR ones, VALID convs of the wrapped input), ``g`` is first
    extended by zero outputs. Why: XLA:CPU computes that gradient as a conv
    of the zero-dilated ``g``, multiplying the zeros too (measured:
    experiments/benchmarks/RESULTS.md).

    ``padding``: ``"SAME"``, ``"VALID"`` or a tuple of ``(before, after)``
    pairs (hashable: it is static)."""
    return _subpixel_gradient(x, kernel, tuple(int(s) for s in strides), padding)


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
    dilated input, which XLA:CPU's ``lax.conv_transpose`` multiplies too
    (measured: experiments/benchmarks/RESULTS.md).
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
    the kernel to ``s·ceil(k / s)`` taps per axis); one matmul suits
    layers with few output channels, where the phases' convs are thin
    (measured: experiments/benchmarks/RESULTS.md).
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


def _conv_transpose_skipping_zeros(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, "SAME")`` (kernel
    ``(*k, in, out)`` applied unflipped, as Flax's ConvTranspose), computed
    by :func:`conv_transpose_unfold` below
    :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS` output channels and by
    :func:`conv_transpose_subpixel` otherwise: neither multiplies the zeros
    of the dilated input."""
    if kernel.shape[-1] < UNFOLD_TRANSPOSE_BELOW_CHANNELS:
        return conv_transpose_unfold(x, kernel, strides)
    return conv_transpose_subpixel(x, kernel, strides)


def _xla_conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    spatial = "DHW"[-(kernel.ndim - 2):]
    return jax.lax.conv_transpose(x, kernel, tuple(int(s) for s in strides), "SAME",
                                  dimension_numbers=("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))


# ---------------------------------------------------------------- which kernel runs

_forced_impl: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("gcnjax_conv_impl", default=None)


@contextlib.contextmanager
def conv_impl(impl: str) -> Iterator[None]:
    """Within the block, the convs traced compute every layer by ``impl``
    (one of :data:`CONV_IMPLS`; a layer it does not cover by XLA's conv),
    or by the CPU's rule on any backend with :data:`CPU_RULE`; transposed
    convs by ``lax.conv_transpose`` under ``"xla"``, without the zeros
    (sub-pixel or unfolded) under any other.

    It applies when a function is traced: a function jit-compiled before
    the block keeps its kernels inside it (jit caches its trace), and one
    traced inside keeps them after."""
    if impl not in CONV_IMPLS + (CPU_RULE,):
        raise ValueError(f"conv_impl takes one of {CONV_IMPLS + (CPU_RULE,)}, got {impl!r}.")
    token = _forced_impl.set(impl)
    try:
        yield
    finally:
        _forced_impl.reset(token)


def _subpixel_grad_covers(strides: Sequence[int], in_channels: int) -> bool:
    return max(strides) > 1 or in_channels < UNFOLD_TRANSPOSE_BELOW_CHANNELS


def _unfold_suits(kernel_size: Sequence[int], strides: Sequence[int]) -> bool:
    return (all(k >= s for k, s in zip(kernel_size, strides))
            and math.prod(kernel_size) <= UNFOLD_MAX_PATCH_GROWTH * math.prod(strides))


def choose_conv_impl(backend: str, kernel_size: Sequence[int], strides: Sequence[int], in_channels: int) -> str:
    """The implementation (:data:`CONV_IMPLS`) :func:`conv` takes for a layer
    of ``kernel_size`` and ``strides`` (one entry per spatial axis) with
    ``in_channels`` input channels, on ``backend`` (``jax.default_backend()``
    names):

    * off the CPU: ``"xla"`` (XLA's own convs; cuDNN's on a GPU);
    * on the CPU, 1-D and 2-D layers: ``"subpixel_grad"`` where the layer is
      strided or has fewer than :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS`
      input channels, ``"xla"`` otherwise;
    * on the CPU, 3-D layers: ``"unfold"`` where every kernel axis is at
      least its stride and ``Π k ≤`` :data:`UNFOLD_MAX_PATCH_GROWTH` ``· Π s``
      (the patches then hold at most that many times the input),
      ``"fold_time"`` otherwise.

    Each gives the same function and gradients; the CPU rule is what was
    fastest there for the papers' nets (measured:
    experiments/benchmarks/RESULTS.md, "Kernel choices")."""
    if backend != "cpu":
        return "xla"
    if len(kernel_size) == 3:
        return "unfold" if _unfold_suits(kernel_size, strides) else "fold_time"
    return "subpixel_grad" if _subpixel_grad_covers(strides, in_channels) else "xla"


def _conv_by(impl: str, x: jax.Array, kernel: jax.Array, strides: Tuple[int, ...], padding) -> jax.Array:
    n_spatial = len(strides)
    if impl == "fold_time" and n_spatial == 3:
        return conv_fold_time(x, kernel, strides, padding)
    if padding == "CIRCULAR":
        pads = _resolve_padding(padding, x.shape[1:-1], kernel.shape[:n_spatial], strides)
        x = jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap")
        padding = "VALID"
    static = padding if isinstance(padding, str) else tuple((int(lo), int(hi)) for lo, hi in padding)
    if impl == "unfold":
        if n_spatial == 3 and x.shape[-1] < FOLD_TIME_VALUE_BELOW_CHANNELS:
            return _fold_time_value_unfold_gradients(x, kernel, strides, static)
        return conv_unfold(x, kernel, strides, static)
    if impl == "subpixel_grad" and n_spatial <= 2 and _subpixel_grad_covers(strides, x.shape[-1]):
        return conv_subpixel_grad(x, kernel, strides, static)
    return _xla_conv(x, kernel, strides, static)


def conv(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, strides, padding)``, channels
    last, kernel ``(*k, in, out)`` as Flax's ``Conv``, 1 to 3 spatial axes;
    ``padding`` ``"SAME"``, ``"VALID"``, ``"CIRCULAR"`` (periodic, as
    Flax's) or per-axis ``(before, after)`` pairs. Computed by the
    implementation :func:`choose_conv_impl` picks for this layer on the
    backend it is traced for, or the one :func:`conv_impl` forces."""
    strides = tuple(int(s) for s in strides)
    impl = _forced_impl.get()
    if impl is None or impl == CPU_RULE:
        # The default backend, read at trace time: one traced path (platform_dependent would trace every branch).
        backend = "cpu" if impl == CPU_RULE else jax.default_backend()
        impl = choose_conv_impl(backend, kernel.shape[:-2], strides, x.shape[-1])
    return _conv_by(impl, x, kernel, strides, padding)


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, "SAME")``, channels last,
    kernel ``(*k, in, out)`` applied unflipped as Flax's ConvTranspose, 1 to
    3 spatial axes. On the CPU (and under :func:`conv_impl` of anything but
    ``"xla"``) computed without the zeros of the dilated input:
    :func:`conv_transpose_unfold` below
    :data:`UNFOLD_TRANSPOSE_BELOW_CHANNELS` output channels,
    :func:`conv_transpose_subpixel` otherwise; by ``lax.conv_transpose``
    on other backends."""
    impl = _forced_impl.get()
    # As in conv: the default backend, read at trace time.
    on_cpu = jax.default_backend() == "cpu" if impl is None else impl != "xla"
    if on_cpu:
        return _conv_transpose_skipping_zeros(x, kernel, strides)
    return _xla_conv_transpose(x, kernel, strides)
