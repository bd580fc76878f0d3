"""A small image classifier whose penultimate layer is gcnjax's default
feature extractor for sample-quality metrics.

The Fréchet distance between two image sets in this classifier's feature
space is the **Fréchet classifier distance** (FCD, :func:`gcnjax.metrics.fcd`).
It plays the role of the FID for 28×28 gray images (Fashion-MNIST, MNIST)
without any download, but it is not the FID and is not comparable with
published FIDs.

Train it once and cache it (about a minute or two on a CPU)::

    gcnjax classifier --data /usr/share/datasets/fashion-mnist

The weights go to :func:`cache_dir` (``$GCNJAX_CACHE``, else
``$XDG_CACHE_HOME/gcnjax``, else ``~/.cache/gcnjax``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnjax.nets import init_params

__all__ = [
    "ClassifierConfig",
    "FeatureClassifier",
    "WEIGHTS_NAME",
    "TRAIN_COMMAND",
    "cache_dir",
    "default_weights_path",
    "train_classifier",
    "accuracy",
    "save_classifier",
    "load_classifier",
    "classifier_features",
]

#: File name of the cached Fashion-MNIST classifier.
WEIGHTS_NAME = "fashion_mnist_classifier.msgpack"
#: The command that makes the cached classifier.
TRAIN_COMMAND = "gcnjax classifier --data /usr/share/datasets/fashion-mnist"


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The classifier and its training.

    channels: conv widths; each conv (3×3, ReLU) is followed by 2×2 average
      pooling.
    features: width of the penultimate dense layer (the feature dimension).
    n_classes: number of classes.
    image_size: (height, width) the net sees; other sizes are resized.
    in_channels: image channels the net sees (1: colour images are averaged).
    epochs, batch_size, learning_rate (Adam), seed: training.
    """

    channels: Tuple[int, ...] = (16, 32)
    features: int = 128
    n_classes: int = 10
    image_size: Tuple[int, int] = (28, 28)
    in_channels: int = 1
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"ClassifierConfig.channels must be positive widths, got {self.channels!r}.")
        for name in ("features", "n_classes", "in_channels", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ClassifierConfig.{name} must be >= 1, got {getattr(self, name)!r}.")
        if self.n_classes < 2:
            raise ValueError(f"ClassifierConfig.n_classes must be >= 2, got {self.n_classes}.")
        if len(self.image_size) != 2 or min(self.image_size) < 2 ** len(self.channels):
            raise ValueError(f"ClassifierConfig.image_size {self.image_size} is too small for "
                             f"{len(self.channels)} poolings; give at least {2 ** len(self.channels)} pixels a side.")
        if not self.learning_rate > 0:
            raise ValueError(f"ClassifierConfig.learning_rate must be positive, got {self.learning_rate!r}.")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ClassifierConfig":
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


class FeatureClassifier(nn.Module):
    """conv 3×3 + ReLU + 2×2 average pool per width in ``channels``, then a
    dense ReLU layer of ``features`` units (the features), then the logits.

    Input: ``(N, H, W, C)`` pixels 0..255, scaled to [0, 1] inside.
    ``__call__`` returns ``(logits, features)``.
    """

    channels: Tuple[int, ...] = (16, 32)
    features: int = 128
    n_classes: int = 10

    @nn.compact
    def __call__(self, pixels: jax.Array) -> Tuple[jax.Array, jax.Array]:
        h = pixels / 255.0
        for width in self.channels:
            h = nn.relu(nn.Conv(width, (3, 3))(h))
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape(h.shape[0], -1)
        features = nn.relu(nn.Dense(self.features)(h))
        return nn.Dense(self.n_classes)(features), features


def _net(config: ClassifierConfig) -> FeatureClassifier:
    return FeatureClassifier(config.channels, config.features, config.n_classes)


def _prepare(images, config: ClassifierConfig) -> jax.Array:
    """Images as the net sees them: ``config.in_channels`` channels (colour
    averaged to gray), resized (bilinear) to ``config.image_size``."""
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) pixels 0..255, got shape {images.shape}.")
    if images.shape[-1] != config.in_channels:
        if config.in_channels == 1:
            images = images.mean(axis=-1, keepdims=True)
        elif images.shape[-1] == 1:
            images = jnp.repeat(images, config.in_channels, axis=-1)
        else:
            raise ValueError(f"the classifier takes {config.in_channels}-channel images, got {images.shape[-1]}.")
    if images.shape[1:3] != config.image_size:
        images = jax.image.resize(images, (images.shape[0], *config.image_size, images.shape[-1]), "bilinear")
    return images


# ---------------------------------------------------------------------- training


def accuracy(params, config: ClassifierConfig, images, labels, batch_size: int = 1000) -> float:
    """Fraction of ``images`` (pixels 0..255) whose arg-max logit is their label."""
    net = _net(config)
    predict = jax.jit(lambda p, x: jnp.argmax(net.apply(p, _prepare(x, config))[0], axis=-1))
    images, labels = np.asarray(images, np.float32), np.asarray(labels)
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        correct += int(np.sum(np.asarray(predict(params, batch)) == labels[start:start + batch_size]))
    return correct / images.shape[0]


def train_classifier(images, labels, config: ClassifierConfig = ClassifierConfig(), *,
                     quiet: bool = True) -> Tuple[Any, Dict[str, Any]]:
    """Train :class:`FeatureClassifier` on ``(N, H, W, C)`` pixel images and
    integer labels by Adam on the softmax cross-entropy, with
    :func:`gcnjax.train.fit` (one jit'd step; a fresh shuffle each epoch).

    Returns ``(params, info)``; ``info`` holds the training accuracy, the
    last loss, the number of steps and the seconds taken.
    """
    from gcnjax.train import RunConfig, fit

    images = np.asarray(_prepare(images, config))
    labels = np.asarray(labels, np.int32)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels; give one label per image.")
    if labels.min() < 0 or labels.max() >= config.n_classes:
        raise ValueError(f"labels must lie in 0..{config.n_classes - 1} (ClassifierConfig.n_classes), "
                         f"got {labels.min()}..{labels.max()}.")
    batch_size = min(config.batch_size, images.shape[0])
    steps_per_epoch = images.shape[0] // batch_size
    n_steps = steps_per_epoch * config.epochs
    net = _net(config)
    key = jax.random.key(config.seed)
    params = init_params(net, key, jnp.zeros((1, *images.shape[1:]), jnp.float32))
    optimizer = optax.adam(config.learning_rate)

    @jax.jit
    def step(state, batch):
        params, opt_state = state
        x, y = batch

        def loss_fn(p):
            logits, _ = net.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state), {"loss": loss, "batch_accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

    rng = np.random.default_rng(config.seed)
    orders = {}

    def batches(i):
        epoch, k = divmod(i, steps_per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = rng.permutation(images.shape[0])
        idx = orders[epoch][k * batch_size:(k + 1) * batch_size]
        return jnp.asarray(images[idx]), jnp.asarray(labels[idx])

    t0 = time.perf_counter()
    (params, _), history = fit(step, (params, optimizer.init(params)), batches, end=n_steps,
                               run=RunConfig(log_every=max(1, steps_per_epoch // 4), checkpoint_every=0),
                               quiet=quiet, desc="classifier")
    seconds = time.perf_counter() - t0
    info = {"steps": n_steps, "seconds": round(seconds, 1), "loss": history[-1]["loss"],
            "train_accuracy": accuracy(params, config, images, labels)}
    return params, info


# ---------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where gcnjax caches weights: ``$GCNJAX_CACHE`` if set, else
    ``$XDG_CACHE_HOME/gcnjax``, else ``~/.cache/gcnjax``."""
    if os.environ.get("GCNJAX_CACHE"):
        return Path(os.environ["GCNJAX_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "gcnjax"


def default_weights_path() -> Path:
    """The cached Fashion-MNIST classifier: ``cache_dir() / WEIGHTS_NAME``."""
    return cache_dir() / WEIGHTS_NAME


def save_classifier(params, config: ClassifierConfig, path=None, **info) -> Path:
    """Write the classifier (its config, ``info`` such as the test accuracy,
    and its params) to one msgpack file, atomically."""
    from flax import serialization

    from gcnjax.train import write_atomic

    path = Path(path) if path is not None else default_weights_path()
    if path.is_dir():
        path = path / WEIGHTS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": json.dumps({"config": config.to_dict(), "info": info}),
               "params": jax.device_get(params)}
    write_atomic(path, serialization.msgpack_serialize(payload))
    return path


def load_classifier(path=None) -> Tuple[Any, ClassifierConfig, Dict[str, Any]]:
    """``(params, config, info)`` of a saved classifier (by default the cached
    one); a missing file raises FileNotFoundError naming the command that
    makes it."""
    from flax import serialization

    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"no classifier weights at {str(path)!r}; train and cache them once with: {TRAIN_COMMAND}"
            + (f" --out {path}" if path != default_weights_path() else "")
            + " (a minute or two on a CPU; set GCNJAX_CACHE to choose the cache folder)."
        )
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        meta = json.loads(payload["meta"])
        config = ClassifierConfig.from_dict(meta["config"])
        params = jax.tree_util.tree_map(jnp.asarray, payload["params"])
    except Exception as err:  # a truncated or foreign file
        raise ValueError(f"{str(path)!r} is not a gcnjax classifier file ({type(err).__name__}: {err}); "
                         f"delete it and run: {TRAIN_COMMAND}") from None
    return params, config, meta.get("info", {})


def _features(params, config: ClassifierConfig, images):
    return _net(config).apply(params, _prepare(images, config))[1]


def classifier_features(path=None):
    """The classifier's penultimate-layer features as a
    :data:`gcnjax.metrics.FeatureExtractor`: ``(N, H, W, C)`` pixels 0..255
    → ``(N, features)``. Colour images are averaged to gray and other sizes
    resized to the classifier's (28×28) first.

    Loads the cached weights (or ``path``); if there are none, raises
    FileNotFoundError naming the command to run.
    """
    params, config, _ = load_classifier(path)
    return jax.tree_util.Partial(_bound_features(config), params)


_BOUND: Dict[ClassifierConfig, Any] = {}


def _bound_features(config: ClassifierConfig):
    # One function object per config, so jit's cache is hit across loads.
    if config not in _BOUND:
        _BOUND[config] = lambda params, images: _features(params, config, images)
    return _BOUND[config]
