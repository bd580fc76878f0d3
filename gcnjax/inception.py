"""Inception-v3 (Szegedy et al. 2016) in Flax Linen, for the FID and KID.

Its pool3 features (the 2048-d global average of the last block) are the
features of the FID (Heusel et al. 2017) and the KID (Bińkowski et al. 2018).
gcnjax ships no weights and downloads nothing: :func:`load_inception` reads a
local ``.npz`` whose array names are the PyTorch ``state_dict`` names
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ...,
conv weights ``(out, in, kh, kw)``). Extra arrays (``fc.*``, ``AuxLogits.*``)
are ignored.

Getting real weights (on a machine with PyTorch and network):

- the FID's own Inception (TensorFlow's 2015-12-05 graph, ported by
  pytorch-fid; the one published FIDs use): ``pip install pytorch-fid``, then
  ``from pytorch_fid.inception import fid_inception_v3; model =
  fid_inception_v3()`` downloads ``pt_inception-2015-12-05-6726825d.pth``
  from the pytorch-fid releases on GitHub. Use it with
  ``InceptionV3(fid_variant=True)`` (the default).
- torchvision's ImageNet weights: ``torchvision.models.inception_v3(weights=
  "IMAGENET1K_V1")``; use ``fid_variant=False``. Its features are not the
  FID's: numbers from them are not comparable with published FIDs.

Converting a state dict to the ``.npz`` (a few lines)::

    import numpy as np, torch
    state = model.state_dict()          # or torch.load("pt_inception-...pth")
    np.savez("inception_v3.npz", **{k: v.detach().cpu().numpy() for k, v in state.items()
                                     if not k.endswith("num_batches_tracked")})

then ``extractor = gcnjax.inception.inception_features("inception_v3.npz")``
and ``gcnjax.metrics.fid(images_a, images_b, extractor)`` for pixel images
0..255. Inputs are resized (bilinear) to 299×299 and scaled to [−1, 1] as
pytorch-fid does; the resize is JAX's, so values agree with pytorch-fid's
closely but not to the last digit.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["InceptionV3", "MIN_SIZE", "inception_variables_shapes", "load_inception", "save_inception_npz",
           "inception_features"]

#: The smallest input side the architecture allows (every stride-2 valid
#: convolution and pooling keeps at least one position).
MIN_SIZE = 75
BN_EPSILON = 1e-3

Pad = Any


class BasicConv(nn.Module):
    """Convolution without bias, batch norm (inference statistics), ReLU."""

    features: int
    kernel: Tuple[int, int]
    strides: Tuple[int, int] = (1, 1)
    padding: Pad = "VALID"

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding, use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _same(kh, kw):
    return ((kh // 2, kh // 2), (kw // 2, kw // 2))


def _avg_pool(x, include_pad: bool):
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=include_pad)


def _max_pool(x):
    return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
    pool_features: int
    include_pad: bool = True

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
        b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=_same(5, 5), name="branch5x5_2")(b5)
        b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool(x, self.include_pad))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), (2, 2), name="branch3x3")(x)
        bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), (2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int
    include_pad: bool = True

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
        b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = BasicConv(c7, (1, 7), padding=_same(1, 7), name="branch7x7_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_same(7, 1), name="branch7x7_3")(b7)
        bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, (7, 1), padding=_same(7, 1), name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, (1, 7), padding=_same(1, 7), name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, (7, 1), padding=_same(7, 1), name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, (1, 7), padding=_same(1, 7), name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool(x, self.include_pad))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), (2, 2), name="branch3x3_2")(b3)
        b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=_same(1, 7), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=_same(7, 1), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), (2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    pool: str = "avg"  # "avg" (count_include_pad), "avg_exclude_pad", or "max" (the FID graph's last block)

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
        b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=_same(1, 3), name="branch3x3_2a")(b3),
                              BasicConv(384, (3, 1), padding=_same(3, 1), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=_same(3, 3), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([BasicConv(384, (1, 3), padding=_same(1, 3), name="branch3x3dbl_3a")(bd),
                              BasicConv(384, (3, 1), padding=_same(3, 1), name="branch3x3dbl_3b")(bd)], axis=-1)
        if self.pool == "max":
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool(x, self.pool == "avg")
        bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3 up to pool3: ``(N, H, W, 3)`` in [−1, 1], ``H, W ≥ 75``
    (299 for the published FID) → ``(N, 2048)``.

    ``fid_variant=True`` is the FID's TensorFlow graph as pytorch-fid ports
    it: the average poolings inside blocks A, C and E (Mixed_7b) exclude the
    padding from their counts and the last block (Mixed_7c) max-pools its
    pool branch. ``False`` is torchvision's Inception-v3. Module names are
    torchvision's, so a state dict maps onto the parameters one to one.
    """

    fid_variant: bool = True

    @nn.compact
    def __call__(self, x):
        include_pad = not self.fid_variant
        x = BasicConv(32, (3, 3), (2, 2), name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=_same(3, 3), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x)
        x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x)
        x = InceptionA(32, include_pad, name="Mixed_5b")(x)
        x = InceptionA(64, include_pad, name="Mixed_5c")(x)
        x = InceptionA(64, include_pad, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, include_pad, name="Mixed_6b")(x)
        x = InceptionC(160, include_pad, name="Mixed_6c")(x)
        x = InceptionC(160, include_pad, name="Mixed_6d")(x)
        x = InceptionC(192, include_pad, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE("avg_exclude_pad" if self.fid_variant else "avg", name="Mixed_7b")(x)
        x = InceptionE("max" if self.fid_variant else "avg", name="Mixed_7c")(x)
        return x.mean(axis=(1, 2))


# ---------------------------------------------------------------------- weights
#
# Flax leaf → PyTorch name: <module path joined by "."> + conv.weight (kernel,
# HWIO ↔ OIHW), bn.weight (scale), bn.bias (bias), bn.running_mean (mean),
# bn.running_var (var).

_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


@functools.lru_cache(maxsize=None)
def inception_variables_shapes(fid_variant: bool = True, size: int = MIN_SIZE):
    """The Flax variable tree of :class:`InceptionV3` as shape structs
    (computed abstractly: nothing is initialised; traced once per arguments,
    as tracing the net takes seconds). Read it, do not change it: the tree is
    shared by every caller."""
    model = InceptionV3(fid_variant)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32))


def _torch_names(shapes) -> Dict[str, Tuple[Tuple[str, ...], Any]]:
    """torch name → (Flax path, shape struct) for every leaf."""
    names = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
        keys = tuple(k.key for k in path)
        collection, *modules, leaf_name = keys
        names[".".join(modules) + "." + _TORCH_LEAF[(collection, leaf_name)]] = (keys, leaf)
    return names


def _set(tree: Dict, keys: Sequence[str], value):
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def load_inception(path, fid_variant: bool = True) -> Dict[str, Any]:
    """The Flax variables (``params`` and ``batch_stats``) of
    :class:`InceptionV3` from a ``.npz`` of PyTorch-named arrays (see the
    module's docstring for how to make one). A missing array or one of the
    wrong shape raises ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Inception weights at {str(path)!r}; convert a PyTorch state dict to an .npz "
                                "as the docstring of gcnjax.inception shows.")
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {str(path)!r} as an .npz of arrays ({err}).") from None
    variables: Dict[str, Any] = {}
    with arrays:
        for name, (keys, leaf) in _torch_names(inception_variables_shapes(fid_variant)).items():
            if name not in arrays.files:
                raise ValueError(f"{str(path)!r} has no array {name!r}; is it an Inception-v3 state dict "
                                 "(torchvision or pytorch-fid names)?")
            value = np.asarray(arrays[name], np.float32)
            if keys[-1] == "kernel":
                value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value  # OIHW → HWIO
            if value.shape != leaf.shape:
                expected = (leaf.shape[3], leaf.shape[2], *leaf.shape[:2]) if keys[-1] == "kernel" else leaf.shape
                raise ValueError(f"array {name!r} in {str(path)!r} has shape {arrays[name].shape}, "
                                 f"expected {tuple(expected)}.")
            _set(variables, keys, jnp.asarray(value))
    return variables


def save_inception_npz(variables, path) -> Path:
    """Write Flax Inception variables as a PyTorch-named ``.npz`` (the format
    :func:`load_inception` reads)."""
    arrays = {}
    for name, (keys, _) in _torch_names(jax.eval_shape(lambda v: v, variables)).items():
        value = variables
        for k in keys:
            value = value[k]
        value = np.asarray(value)
        arrays[name] = value.transpose(3, 2, 0, 1) if keys[-1] == "kernel" else value
    path = Path(path)
    np.savez(path, **arrays)
    return path


def _pool3(fid_variant: bool, resize: Optional[int], variables, images):
    x = jnp.asarray(images, jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if resize is not None and x.shape[1:3] != (resize, resize):
        x = jax.image.resize(x, (x.shape[0], resize, resize, 3), "bilinear")
    if min(x.shape[1:3]) < MIN_SIZE:
        raise ValueError(f"Inception-v3 needs images of at least {MIN_SIZE}x{MIN_SIZE}, got "
                         f"{x.shape[2]}x{x.shape[1]}; pass resize=299 (the FID's size).")
    x = x / 127.5 - 1.0
    return InceptionV3(fid_variant).apply(variables, x)


_POOL3: Dict[Tuple[bool, Optional[int]], Any] = {}


def inception_features(weights, *, fid_variant: bool = True, resize: Optional[int] = 299):
    """Inception pool3 features as a :data:`gcnjax.metrics.FeatureExtractor`:
    ``(N, H, W, C)`` pixels 0..255 (gray is repeated to RGB) → ``(N, 2048)``,
    the images resized (bilinear) to ``resize`` × ``resize`` first (299 for the
    FID; None keeps the size, at least 75).

    ``weights``: a path to a PyTorch-named ``.npz`` or a variables tree."""
    variables = load_inception(weights, fid_variant) if isinstance(weights, (str, Path)) else weights
    if resize is not None and resize < MIN_SIZE:
        raise ValueError(f"resize must be at least {MIN_SIZE} (the smallest input Inception-v3 allows), got {resize}.")
    key = (fid_variant, resize)
    if key not in _POOL3:  # one function object per setting, so jit's cache is shared across loads
        _POOL3[key] = lambda v, images: _pool3(fid_variant, resize, v, images)
    return jax.tree_util.Partial(_POOL3[key], variables)
