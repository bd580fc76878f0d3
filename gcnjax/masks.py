"""Observation masks: which pixels (or frames) of an example are observed.

A mask is a float32 array that broadcasts to the data, ``1`` where a value is
observed and ``0`` where it is missing; image masks are ``(N, H, W, 1)`` so
that a pixel is observed or missing in all its channels at once. The models
use only the observed values (the generator's masked inference, the
descriptors' inpainting), and :func:`gcnjax.metrics.recovery_error` scores a
recovery on the missing ones.

Generated from a seed with NumPy: a mask is data, made once on the host.
:func:`draw` makes the same kinds inside a jit'd function from a JAX key (a
fresh mask at every step of a learning loop).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["salt_and_pepper", "block", "missing_frames", "from_spec", "draw", "describe"]

Size = Union[int, Tuple[int, int]]


def _check_shape(shape: Sequence[int], what: str) -> Tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) < 3 or min(shape) < 1:
        raise ValueError(f"{what} needs the data's shape (N, H, W[, C]) with sizes >= 1, got {shape}.")
    return shape


def salt_and_pepper(shape: Sequence[int], missing: float, *, seed: int = 0) -> np.ndarray:
    """A mask with ``round(missing · H · W)`` pixels missing in each example,
    chosen uniformly at random (independently per example) from ``seed``.

    ``shape`` is the data's ``(N, H, W, C)`` (or ``(N, H, W)``); the mask is
    ``(N, H, W, 1)``. ``missing`` is the fraction of pixels missing, in
    [0, 1) (the papers use 0.5, 0.7, 0.9).
    """
    shape = _check_shape(shape, "salt_and_pepper")
    if not 0.0 <= float(missing) < 1.0:
        raise ValueError(f"missing must be a fraction in [0, 1) of the pixels, got {missing!r}.")
    n, h, w = shape[:3]
    n_missing = int(round(float(missing) * h * w))
    rng = np.random.default_rng(seed)
    mask = np.ones((n, h * w), np.float32)
    for i in range(n):
        mask[i, rng.choice(h * w, n_missing, replace=False)] = 0.0
    return mask.reshape(n, h, w, 1)


def block(shape: Sequence[int], size: Size, *, position: Optional[Tuple[int, int]] = None,
          seed: Optional[int] = None) -> np.ndarray:
    """A mask with one ``size`` block missing in each example.

    ``position`` is the block's top-left corner (the same in every example);
    by default the block is centred, or, given a ``seed``, placed uniformly
    at random in each example. The mask is ``(N, H, W, 1)``.
    """
    shape = _check_shape(shape, "block")
    n, h, w = shape[:3]
    bh, bw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if not (1 <= bh <= h and 1 <= bw <= w):
        raise ValueError(f"block size {(bh, bw)} must be at least 1 and fit in the images ({h}x{w}).")
    mask = np.ones((n, h, w, 1), np.float32)
    rng = np.random.default_rng(seed) if seed is not None else None
    for i in range(n):
        if position is not None:
            top, left = position
            if not (0 <= top <= h - bh and 0 <= left <= w - bw):
                raise ValueError(f"a {bh}x{bw} block at {position} does not fit in {h}x{w} images.")
        elif rng is not None:
            top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        else:
            top, left = (h - bh) // 2, (w - bw) // 2
        mask[i, top:top + bh, left:left + bw] = 0.0
    return mask


def missing_frames(shape: Sequence[int], frames: Sequence[int]) -> np.ndarray:
    """A mask for videos ``(N, T, H, W, C)`` with the given frame indices
    missing: ``(N, T, 1, 1, 1)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5:
        raise ValueError(f"missing_frames needs a video batch's shape (N, T, H, W, C), got {shape}.")
    n, t = shape[:2]
    frames = np.asarray(list(frames), int)
    if frames.size and (frames.min() < 0 or frames.max() >= t):
        raise ValueError(f"frame indices {frames.tolist()} out of range for {t} frames.")
    mask = np.ones((n, t, 1, 1, 1), np.float32)
    mask[:, frames] = 0.0
    return mask


def _block_size(arg: str) -> Tuple[int, int]:
    """``"20"`` → ``(20, 20)``, ``"20x30"`` → ``(20, 30)``: a block spec's size."""
    dims = tuple(int(a) for a in arg.lower().split("x"))
    if len(dims) not in (1, 2):
        raise ValueError(f"a block's size is SIZE or HEIGHTxWIDTH, got {arg!r}.")
    return (dims[0], dims[0]) if len(dims) == 1 else dims


def from_spec(spec: str, shape: Sequence[int], *, seed: int = 0) -> np.ndarray:
    """A mask from a short text: ``"pepper:0.7"`` (70% of pixels missing at
    random), ``"block:20"`` (a centred 20×20 block), ``"block:20x30"``, or
    ``"randblock:20"`` (placed at random)."""
    kind, _, arg = str(spec).partition(":")
    try:
        if kind == "pepper":
            return salt_and_pepper(shape, float(arg), seed=seed)
        if kind in ("block", "randblock"):
            return block(shape, _block_size(arg), seed=seed if kind == "randblock" else None)
    except ValueError as err:
        raise ValueError(f"mask {spec!r}: {err}") from None
    raise ValueError(
        f"unknown mask {spec!r}; use pepper:FRACTION (e.g. pepper:0.7), block:SIZE (e.g. block:20 or "
        "block:20x30), or randblock:SIZE."
    )


def draw(key, spec: str, shape: Sequence[int]):
    """The mask of :func:`from_spec` drawn with JAX from ``key`` (traceable:
    a new draw for each key inside one compiled function), ``(N, H, W, 1)``
    float32. ``"pepper:p"``: ``round(p · H · W)`` pixels missing in each
    example, every such set equally likely; ``"randblock:S"``: the block's
    top-left corner uniform over the places where it fits, per example;
    ``"block:S"`` is centred, the same for every key. The spec is checked
    as :func:`from_spec` checks it."""
    import jax
    import jax.numpy as jnp

    fixed = from_spec(spec, shape)  # validates the spec against the shape; the centred block as is
    kind, _, arg = str(spec).partition(":")
    n, h, w = (int(s) for s in tuple(shape)[:3])
    if kind == "pepper":
        n_missing = int(round(float(arg) * h * w))
        # Ranks of i.i.d. uniforms are a uniformly random permutation: the n_missing lowest are missing.
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (n, h * w)), axis=1), axis=1)
        return (ranks >= n_missing).astype(jnp.float32).reshape(n, h, w, 1)
    if kind == "randblock":
        bh, bw = _block_size(arg)
        k_top, k_left = jax.random.split(key)
        top = jax.random.randint(k_top, (n, 1, 1), 0, h - bh + 1)
        left = jax.random.randint(k_left, (n, 1, 1), 0, w - bw + 1)
        rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
        inside = (rows >= top) & (rows < top + bh) & (cols >= left) & (cols < left + bw)
        return (~inside).astype(jnp.float32)[..., None]
    return jnp.asarray(fixed)


def describe(spec: str) -> str:
    """Words for a mask spec, for reports: ``"pepper:0.7"`` → ``"70% pixels missing"``,
    ``"block:20"`` → ``"20×20 block missing in the centre"``."""
    kind, _, arg = str(spec).partition(":")
    if kind == "pepper":
        return f"{float(arg):.0%} pixels missing"
    if kind in ("block", "randblock"):
        h, w = _block_size(arg)
        return f"{h}×{w} block missing" + (" at a random place" if kind == "randblock" else " in the centre")
    return spec
