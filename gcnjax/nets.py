"""Flax Linen modules: the papers' networks, as architectures only.

A descriptor net maps ONE batch of images ``(N, H, W, C)`` to one scalar
``f(x; w)`` per image. Its layers are given as a tuple of
:class:`ConvSpec`; presets reproduce the authors' nets.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

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
]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One convolution layer: ``features`` filters of ``kernel`` size, ``stride``.

    Padding is ``"VALID"`` (no padding) as in the authors' MatConvNet code,
    unless ``padding="SAME"``.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: str = "VALID"


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
    """

    layers: Sequence[ConvSpec] = TEXTURE_LAYERS
    depth: Optional[int] = None
    top: str = "sum"
    activation: str = "relu"
    init_std: float = 0.01
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.top not in ("sum", "dense"):
            raise ValueError(f"DescriptorNet.top must be 'sum' or 'dense', got {self.top!r}.")
        act = {"relu": nn.relu, "leaky_relu": lambda h: nn.leaky_relu(h, 0.2)}.get(self.activation)
        if act is None:
            raise ValueError(
                f"DescriptorNet.activation must be 'relu' or 'leaky_relu', got {self.activation!r}."
            )
        depth = len(self.layers) if self.depth is None else self.depth
        h = x.astype(self.dtype)
        for i, spec in enumerate(self.layers[:depth]):
            h = nn.Conv(
                spec.features,
                (spec.kernel, spec.kernel),
                strides=(spec.stride, spec.stride),
                padding=spec.padding,
                kernel_init=nn.initializers.normal(self.init_std),
                dtype=self.dtype,
                name=f"conv{i + 1}",
            )(h)
            # Recorded only when applied with mutable=["intermediates"]: the
            # signs of these are the binary activation pattern of the theory.
            self.sow("intermediates", f"preactivation{i + 1}", h)
            h = act(h)
        h = h.astype(jnp.float32)
        if self.top == "sum":
            return jnp.sum(h, axis=tuple(range(1, h.ndim)))
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(
            1, kernel_init=nn.initializers.normal(self.init_std), name="top"
        )(h)[:, 0]


def layer_output_sizes(layers: Sequence[ConvSpec], image_size: Tuple[int, int]):
    """Spatial sizes ``(h, w)`` of each conv layer's output for an input size."""
    h, w = image_size
    sizes = []
    for spec in layers:
        if spec.padding == "SAME":
            h, w = -(-h // spec.stride), -(-w // spec.stride)
        else:
            h = (h - spec.kernel) // spec.stride + 1
            w = (w - spec.kernel) // spec.stride + 1
        sizes.append((h, w))
    return sizes


def receptive_field(layers: Sequence[ConvSpec]) -> int:
    """Side of the input window that one top unit sees (VALID convs)."""
    size, jump = 1, 1
    for spec in layers:
        size += (spec.kernel - 1) * jump
        jump *= spec.stride
    return size
