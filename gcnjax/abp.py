"""Generator runs: learn by alternating back-propagation, reconstruct, recover.

The paper experiments of PAPERS §4 as library functions (the ``gcnjax abp``
commands and the scripts in ``experiments/`` call them):

* :func:`learn_generator` learns ``x = g(z; θ) + ε`` from observed images
  (or sound clips), optionally with pixels missing (learning from incomplete
  data), and writes a run directory: config, PNG grids of samples and
  reconstructions over the iterations, a CSV of the metrics, checkpoints
  (with every example's latent, so a resumed run keeps its warm starts),
  the params, and a report; with held-out images it adds the table of
  reconstruction errors of ABP against PCA at the same latent dimension.
* :func:`reconstruct_images` infers the latents of NEW observations (all of
  them at once, vmapped) and regenerates them; with a mask it uses only the
  observed pixels, so ``g(z)`` fills in the missing ones
  (:func:`recover_images`: the recovery of occluded images).
* :func:`pca_fit` / :func:`pca_complete` / :func:`pca_reconstruct`: the
  linear baseline of the same dimension (learned from complete or
  incomplete examples; a reconstruction from all values or the completion
  of missing ones by least squares on the observed ones), and
  :func:`baseline_recoveries`, PCA's completion and the mean fill beside
  every recovery of missing values; :func:`ridge_fill`, the best linear
  prediction of the missing values from the observed ones.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import data as gdata
from gcnjax import generator as G
from gcnjax import masks as gmasks
from gcnjax.metrics import recovery_error
from gcnjax.run import Family, Outputs, Picture, Trainer, learn
from gcnjax.train import RunDir, write_atomic

__all__ = [
    "FAMILY",
    "ObservationScale",
    "learn_generator",
    "load_generator_run",
    "reconstruct_images",
    "recover_images",
    "recover_run",
    "recovery_masks",
    "pca_fit",
    "pca_complete",
    "pca_reconstruct",
    "observed_mean",
    "baseline_recoveries",
    "ridge_fill",
    "RIDGE_MULTIPLES",
    "heldout_comparison",
    "mean_squared_error",
]


@dataclasses.dataclass(frozen=True)
class ObservationScale:
    """How observations map to the values the generator makes.

    Images (pixels 0..255) use a :class:`gcnjax.data.PixelScale`; sound
    clips (already in [−1, 1]) are taken as they are (``pixels=None``).
    """

    pixels: Optional[gdata.PixelScale] = None

    @classmethod
    def for_data(cls, config: G.GeneratorConfig, observations: np.ndarray) -> "ObservationScale":
        if config.net == "sound":
            return cls(None)
        return cls(gdata.PixelScale(config.pixel_scale).fit(observations))

    def to_model(self, x):
        return np.asarray(x, np.float32) if self.pixels is None else self.pixels.to_model(np.asarray(x, np.float32))

    def to_data(self, x):
        return np.asarray(x) if self.pixels is None else self.pixels.to_pixels(x)

    @property
    def unit(self) -> float:
        """Observation units per [0, 1] of range, for errors reported in [0, 1]:
        255 for pixels, 2 for sound in [−1, 1]."""
        return 2.0 if self.pixels is None else 255.0

    def to_dict(self):
        return None if self.pixels is None else dataclasses.asdict(self.pixels)

    @classmethod
    def from_dict(cls, d) -> "ObservationScale":
        if d is None:
            return cls(None)
        return cls(gdata.PixelScale(d["kind"], None if d.get("mean") is None else tuple(d["mean"])))


def check_observations(x: np.ndarray, config: G.GeneratorConfig, name: str = "data") -> np.ndarray:
    """Observations as float32, checked against the generator's output shape."""
    if isinstance(x, (list, tuple)):
        shapes = sorted({tuple(np.shape(e)) for e in x})
        if len(shapes) > 1:
            raise gdata.DataError(
                f"{name}: examples of different shapes ({', '.join(map(str, shapes))}); resize them to one size "
                "(gcnjax.data.load_images(folder, size=...), or --image-size at the command line)."
            )
    x = np.asarray(x, np.float32)
    shape = tuple(G.make_net(config).output_shape())
    if x.ndim != len(shape) + 1 or x.shape[0] == 0:
        kind = "(N, T, 1) sound clips" if config.net == "sound" else "(N, H, W, C) images"
        raise gdata.DataError(f"{name}: expected a non-empty batch of {kind}, got shape {x.shape}.")
    if tuple(x.shape[1:]) != shape:
        hint = ("--clip-length / the sound net's length" if config.net == "sound"
                else "resize the images (--image-size) or pick the net made for their size (--net)")
        raise gdata.DataError(
            f"{name}: examples of shape {tuple(x.shape[1:])} but the '{config.net}' generator makes {shape}; {hint}."
        )
    if not np.all(np.isfinite(x)):
        raise gdata.DataError(f"{name}: contains NaN or infinite values.")
    return x


def _check_mask(mask, x: np.ndarray, name: str = "mask") -> Optional[np.ndarray]:
    if mask is None:
        return None
    mask = np.asarray(mask, np.float32)
    try:
        ok = np.broadcast_shapes(mask.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok or mask.ndim != x.ndim or mask.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"{name} of shape {mask.shape} does not fit the data of shape {x.shape}; give one mask per example, "
            f"shaped (N, H, W, 1) or like the data (1 = observed, 0 = missing)."
        )
    return np.broadcast_to(mask, (x.shape[0],) + mask.shape[1:]).astype(np.float32)


# ---------------------------------------------------------------- baselines and errors


def mean_squared_error(a, b, unit: float = 255.0) -> np.ndarray:
    """Per-example mean squared error of values in ``[0, unit]`` rescaled to
    ``[0, 1]``: ``mean((a − b)²) / unit²`` (pixels: ``unit = 255``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.mean(np.square(a - b).reshape(a.shape[0], -1), axis=1) / unit**2


def _flat_mask(mask, shape) -> np.ndarray:
    """An observation mask (1 = observed; broadcasting to ``shape``) as
    booleans ``(N, D)`` over the flattened values, all observed if ``None``."""
    if mask is None:
        return np.ones((shape[0], int(np.prod(shape[1:]))), bool)
    return np.broadcast_to(np.asarray(mask) != 0, shape).reshape(shape[0], -1)


def pca_fit(train: np.ndarray, latent_dim: int, *, mask: Optional[np.ndarray] = None,
            iterations: int = 30):
    """PCA of dimension ``latent_dim``: ``(mean, components)``, the mean
    ``μ`` (D,) and the top ``latent_dim`` principal directions ``V`` (d, D,
    orthonormal rows) of the flattened training examples.

    With a ``mask`` (1 = observed) the missing values are never used: PCA
    learned from incomplete data by alternating least squares, the linear
    analogue of learning a generator from incomplete data. Starting from the
    missing values filled with the observed mean of their position, each of
    ``iterations`` rounds fits ``(μ, V)`` to the filled examples and refills
    the missing values with the completion :func:`pca_complete`; each round
    lowers (or keeps) the observed values' error ``Σ ||m ⊙ (x − μ − Vᵀc)||²``.
    """
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
    train = np.asarray(train, np.float64)
    flat = train.reshape(train.shape[0], -1)
    if latent_dim > min(flat.shape):
        raise ValueError(f"latent_dim {latent_dim} exceeds the rank PCA can find in {flat.shape[0]} examples of "
                         f"{flat.shape[1]} values.")

    def fit(filled):
        mean = filled.mean(axis=0)
        _, _, vt = np.linalg.svd(filled - mean, full_matrices=False)
        return mean, vt[:latent_dim]

    if mask is None:
        return fit(flat)
    observed = _flat_mask(mask, train.shape)
    filled = np.where(observed, flat, observed_mean(train, mask).reshape(-1))
    for _ in range(int(iterations)):
        mean, components = fit(filled)
        filled = np.where(observed, flat, pca_complete(mean, components, flat, observed))
    return fit(filled)


def pca_complete(mean: np.ndarray, components: np.ndarray, x: np.ndarray,
                 mask: Optional[np.ndarray] = None) -> np.ndarray:
    """PCA's reconstruction of ``x`` from its observed values only:
    ``μ + Vᵀc`` with ``c = argmin_c ||m ⊙ (x − μ − Vᵀc)||²`` (least squares on
    the observed values, minimum norm when they do not determine c), so the
    missing values are completed by the linear model. Without a mask this is
    the projection ``μ + VᵀV(x − μ)``. Returns the whole reconstruction
    (observed values included, shaped like ``x``); missing values of ``x``
    never enter."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(x.shape[0], -1)
    mean, components = np.asarray(mean, np.float64).reshape(-1), np.asarray(components, np.float64)
    if mask is None:
        return (mean + (flat - mean) @ components.T @ components).reshape(x.shape)
    observed = _flat_mask(mask, x.shape)
    out = np.empty_like(flat)
    for i in range(flat.shape[0]):
        o = observed[i]
        c = np.linalg.lstsq(components[:, o].T, flat[i, o] - mean[o], rcond=None)[0]
        out[i] = mean + c @ components
    return out.reshape(x.shape)


def pca_reconstruct(train: np.ndarray, test: np.ndarray, latent_dim: int) -> np.ndarray:
    """Reconstruct ``test`` from its projection on the top ``latent_dim``
    principal components of ``train``: ``μ + V Vᵀ (x − μ)`` with ``V`` the
    leading right singular vectors of the centred training matrix (the best
    linear model of that dimension, in squared error, on the training set)."""
    return pca_complete(*pca_fit(train, latent_dim), test)


#: The ridge strengths :func:`ridge_fill` chooses among, as multiples of the
#: training examples' mean squared norm of their centred observed values.
RIDGE_MULTIPLES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def ridge_fill(train: np.ndarray, x: np.ndarray, mask: np.ndarray, ridge: Optional[float] = None):
    """The missing values of ``x`` predicted linearly from its observed ones
    by ridge regression learned on the complete ``train`` examples: the best
    linear fill, a stronger baseline than PCA's completion at a fixed d.

    For an example whose ``mask`` (1 = observed) has observed positions ``O``
    and missing ``M``, with ``X_O``, ``X_M`` the centred training values,
    ``x_M = μ_M + (x_O − μ_O) W`` with
    ``W = argmin_W ||X_M − X_O W||² + λ||W||² = (X_Oᵀ X_O + λI)⁻¹ X_Oᵀ X_M``,
    through the thin SVD of ``X_O`` (so a few hundred examples of thousands
    of pixels cost little); one fit per distinct mask (a centred block: one
    for all examples). ``λ = ridge · ||X_O||² / n``; ``ridge=None`` chooses
    it for each mask among :data:`RIDGE_MULTIPLES` by the leave-one-out
    squared error on ``train`` (closed form, exact for ridge regression with
    an unpenalised mean: example i's residual left out is
    ``r_i / (1 − H_ii)``, ``H = 11ᵀ/n + X_O (X_Oᵀ X_O + λI)⁻¹ X_Oᵀ``. The
    mean must be refitted without the example: kept, the other examples'
    centred values sum to minus its own, and a weak ridge predicts it from
    them exactly).

    Returns ``(filled, info)``: ``x`` with its missing values predicted
    (observed values kept, float64), and ``info``: ``"ridge"``, the multiple
    used, and ``"leave_one_out"``, ``{multiple: mean squared error}`` (empty
    when ``ridge`` is given); with one mask for all examples these are single
    values, otherwise lists with one entry per example.
    """
    train = np.asarray(train, np.float64)
    x = np.asarray(x, np.float64)
    flat = train.reshape(train.shape[0], -1)
    observed = _flat_mask(mask, x.shape)
    if flat.shape[1] != observed.shape[1]:
        raise ValueError(f"ridge_fill: train examples of shape {train.shape[1:]} do not match x's {x.shape[1:]}.")
    if ridge is not None and not ridge > 0:
        raise ValueError(f"ridge_fill: ridge must be a positive multiple, got {ridge!r}.")
    patterns, which = np.unique(observed, axis=0, return_inverse=True)
    which = np.asarray(which).reshape(-1)
    flat_x = x.reshape(x.shape[0], -1)
    out = flat_x.copy()
    chosen, errors = [None] * len(flat_x), [None] * len(flat_x)
    mean = flat.mean(axis=0)
    for k, o in enumerate(patterns):
        rows = np.flatnonzero(which == k)
        if o.all():
            chosen_k, loo = ridge, {}  # nothing missing: nothing to fill
        elif not o.any():
            raise ValueError("ridge_fill: a mask leaves nothing observed; there is nothing to predict from.")
        else:
            x_o, x_m = flat[:, o] - mean[o], flat[:, ~o] - mean[~o]
            # Through the thin SVD X_O = U S Vᵀ: W = V S (S² + λ)⁻¹ Uᵀ X_M, H = 11ᵀ/n + U S² (S² + λ)⁻¹ Uᵀ.
            u, sv, vt = np.linalg.svd(x_o, full_matrices=False)
            scale = np.sum(sv ** 2) / len(flat)
            projected = u.T @ x_m  # Uᵀ X_M
            loo = {}
            if ridge is None:
                for multiple in RIDGE_MULTIPLES:
                    shrink = sv ** 2 / (sv ** 2 + multiple * scale)
                    residual = x_m - u @ (projected * shrink[:, None])
                    leverage = (u ** 2) @ shrink + 1.0 / len(flat)  # + 1/n: the mean refitted without example i
                    loo[multiple] = float(np.mean((residual / (1.0 - leverage)[:, None]) ** 2))
            chosen_k = ridge if ridge is not None else min(loo, key=loo.get)
            weights = vt.T @ (projected * (sv / (sv ** 2 + chosen_k * scale))[:, None])  # W, (|O|, |M|)
            out[np.ix_(rows, ~o)] = mean[~o] + (flat_x[np.ix_(rows, o)] - mean[o]) @ weights
        for i in rows:
            chosen[i], errors[i] = chosen_k, loo
    if len(patterns) == 1:
        return out.reshape(x.shape), {"ridge": chosen[0], "leave_one_out": errors[0]}
    return out.reshape(x.shape), {"ridge": chosen, "leave_one_out": errors}


def observed_mean(x: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """The mean of each position over the examples where it is observed
    (``mask`` 1; all of them without a mask); 0 where it never is."""
    x = np.asarray(x, np.float64)
    observed = _flat_mask(mask, x.shape)
    counts = observed.sum(axis=0)
    total = np.where(observed, x.reshape(x.shape[0], -1), 0.0).sum(axis=0)
    return np.divide(total, counts, out=np.zeros_like(total), where=counts > 0).reshape(x.shape[1:])


def baseline_recoveries(pca, x: np.ndarray, mask: np.ndarray, mean: Optional[np.ndarray] = None
                        ) -> Dict[str, np.ndarray]:
    """The linear baselines of a recovery of missing values, in the units of
    ``x``: ``"pca"``, the completion :func:`pca_complete` by the PCA
    ``pca = (mean, components)``, and ``"mean"``, the missing values filled
    with ``mean`` (default: PCA's mean, the training examples' mean);
    both with the observed values kept."""
    x = np.asarray(x, np.float64)
    observed = np.broadcast_to(np.asarray(mask) != 0, x.shape)
    fill = np.broadcast_to(np.asarray(pca[0] if mean is None else mean, np.float64).reshape(x.shape[1:]), x.shape)
    return {"pca": np.where(observed, x, pca_complete(*pca, x, mask)), "mean": np.where(observed, x, fill)}


# ---------------------------------------------------------------- inference on new data

#: Rounds of inference (each the run's Langevin steps) for new observations:
#: reconstruction, recovery and the held-out table. Chosen on validation
#: faces: at 64² with the ``face`` net, 10 rounds leave the posterior mode
#: short of convergence (experiments/RESULTS.md).
RECONSTRUCTION_ROUNDS = 30

#: Rounds of inference in the early-stopping check during learning: a
#: cheaper inference that ranks the checkpoints (it runs at every snapshot).
VALIDATION_ROUNDS = 10


def reconstruct_images(key: jax.Array, config: G.GeneratorConfig, net, params, x_model: np.ndarray, *,
                       mask: Optional[np.ndarray] = None, rounds: int = RECONSTRUCTION_ROUNDS, chunk: int = 1000,
                       noise: bool = False, prior_weight: float = 1.0, z0: Optional[np.ndarray] = None):
    """Infer the latents of new observations (model values) and regenerate them.

    Every example's chain runs ``rounds`` × ``config.langevin`` (warm-started
    from one round to the next, as in training) from ``config.latent_init``
    on ``E(z | x) = ||m ⊙ (x − g(z))||²/(2σ²) + ||z||²/2``: one jit'd,
    vmapped call of :func:`gcnjax.generator.infer` per round over up to
    ``chunk`` examples at once. With ``noise=False`` (the default) the
    Langevin noise is off: gradient descent to the posterior mode, the
    reconstruction ``g(argmax p(z | x))``; ``noise=True`` returns ``g`` of a
    posterior sample. ``prior_weight=0`` drops the ``||z||²/2`` term: the
    least-squares fit ``argmin_z ||m ⊙ (x − g(z))||²``, the generator's
    analogue of a projection on principal components. Returns ``(g(z), z)``
    as NumPy arrays.
    """
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}.")
    x_model = np.asarray(x_model, np.float32)
    sampler = config.langevin if noise else dataclasses.replace(config.langevin, noise_scale=0.0)
    infer = jax.jit(G.infer, static_argnames=("apply_fn", "sampler"))
    generate = jax.jit(net.apply)
    outputs, latents = [], []
    for start in range(0, x_model.shape[0], int(chunk)):
        xs = jnp.asarray(x_model[start:start + chunk])
        ms = None if mask is None else jnp.asarray(mask[start:start + chunk])
        k_init, k_chunk = jax.random.split(jax.random.fold_in(key, start))
        if z0 is None:
            z = G.init_latents(k_init, config.latent_init, (xs.shape[0], config.latent_dim))
        else:
            z = jnp.asarray(z0[start:start + chunk], jnp.float32)
        for r in range(int(rounds)):
            z, _ = infer(jax.random.fold_in(k_chunk, r), net.apply, params, xs, z, sigma=config.sigma,
                         sampler=sampler, mask=ms, prior_weight=prior_weight)
        outputs.append(np.asarray(generate(params, z)))
        latents.append(np.asarray(z))
    return np.concatenate(outputs), np.concatenate(latents)


def recover_images(key, config, net, params, scale: ObservationScale, observations: np.ndarray,
                   mask: np.ndarray, *, rounds: int = RECONSTRUCTION_ROUNDS) -> Dict[str, np.ndarray]:
    """Recovery of occluded observations: infer z from the observed values
    only, fill the missing ones with ``g(z)``. Returns the recovered
    observations (observed values kept, missing ones from ``g(z)``), ``g(z)``
    itself, and the per-example mean absolute error on the missing values in
    [0, 1] units (:func:`gcnjax.metrics.recovery_error`)."""
    mask = _check_mask(mask, observations)
    x = scale.to_model(observations)
    generated, _ = reconstruct_images(key, config, net, params, x, mask=mask, rounds=rounds)
    generated = scale.to_data(generated)
    full = np.broadcast_to(mask, observations.shape)
    recovered = np.where(full != 0, observations, generated)
    errors = recovery_error(observations / scale.unit, recovered / scale.unit, mask)
    return {"recovered": recovered, "generated": generated, "errors": errors}


# ---------------------------------------------------------------- runs


def _save_grid(path: Path, images, scale: ObservationScale, n_cols: Optional[int] = None):
    if scale.pixels is not None:
        gdata.save_image_grid(path, np.asarray(images)[:64], n_cols=n_cols)


def _masked_view(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Missing pixels shown in black: the picture of what inference sees."""
    return np.asarray(images) * np.broadcast_to(mask, images.shape)


def _check(config: G.GeneratorConfig, observations, inputs) -> np.ndarray:
    x = check_observations(observations, config, "training data")
    for name, label in (("test_observations", "held-out data"), ("validation_observations", "validation data")):
        if inputs.get(name) is not None:
            inputs[name] = check_observations(inputs[name], config, label)
    inputs["mask"] = _check_mask(inputs.get("mask"), x)
    return x


def _observed(x_obs: np.ndarray, scale: ObservationScale, inputs) -> Dict[str, Picture]:
    if scale.pixels is None:
        return {}
    pictures = {"observed": Picture(x_obs[:64])}
    if inputs.get("mask") is not None:
        pictures["observed_masked"] = Picture(_masked_view(x_obs, inputs["mask"])[:64])
    return pictures


def _same_params(a, b) -> bool:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(leaves_a, leaves_b))


def _outputs(config: G.GeneratorConfig, net, scale: ObservationScale, x, x_obs: np.ndarray, inputs: Dict[str, Any],
             sample_z, state, params) -> Outputs:
    """A finished generator run's outputs, all drawn with ``params``: samples
    from the prior, the training reconstructions g(z) of the inferred
    latents, the recovery of missing values (against PCA's completion and
    the mean fill), the held-out table against PCA, and the run's PCA
    (``pca_mean``, ``pca_components``: the linear baseline of the same d,
    fitted on the training examples, observed values only).

    When ``params`` are not the last iteration's (early stopping kept
    others), the training latents ``state.latents`` were inferred under the
    last params: they are first refined under ``params`` by ``test_rounds``
    × the config's Langevin (noise on, as in training), starting from
    ``state.latents``, so that every output comes from one set of params."""
    mask, sample_rate, n = inputs.get("mask"), inputs.get("sample_rate"), x.shape[0]
    rounds = inputs.get("test_rounds", RECONSTRUCTION_ROUNDS)
    generate = jax.jit(net.apply)
    pixels = scale.pixels is not None
    samples = scale.to_data(generate(params, sample_z))
    latents, refined = np.asarray(state.latents), ""
    if not _same_params(params, state.params):
        _, latents = reconstruct_images(jax.random.key(config.seed + 4), config, net, params, np.asarray(x),
                                        mask=mask, rounds=rounds, noise=True, z0=latents)
        refined = (f" The params kept are not the last iteration's, so the training latents were refined under "
                   f"them first ({rounds} × {config.langevin.n_steps} Langevin steps from the last latents).")
    reconstructed = scale.to_data(generate(params, jnp.asarray(latents)))
    pictures, sounds = {}, {}
    fitted = pixels and n >= 2  # samples from the Gaussian fitted to the training latents
    if pixels:
        pictures.update(samples=Picture(samples), reconstructed=Picture(reconstructed[:64]))
        if fitted:
            z_fitted = G.gaussian_latents(G.fitted_latent_gaussian(latents), sample_z)
            pictures.update(samples_fitted=Picture(scale.to_data(generate(params, z_fitted))))
    elif sample_rate:
        sounds.update({f"sample_{i}": (samples[i], sample_rate) for i in range(min(8, samples.shape[0]))})
        sounds.update({f"observed_{i}": (x_obs[i], sample_rate) for i in range(min(4, n))})
    unit = scale.unit
    train_mse = mean_squared_error(x_obs if mask is None else x_obs * mask,
                                   reconstructed if mask is None else reconstructed * mask, unit)
    if mask is not None:  # observed values only: rescale by the observed fraction
        train_mse = train_mse / np.mean(np.broadcast_to(mask, x_obs.shape).reshape(n, -1), axis=1)
    summary = {"net": net, "train_mse": float(np.mean(train_mse))}
    lines = [
        f"Training reconstruction error g(z) of the inferred latents (mean squared error per "
        f"{'observed ' if mask is not None else ''}value, values in [0, 1]): {summary['train_mse']:.5f}.{refined}",
        "",
    ]
    if fitted:
        lines += [
            "| observed | reconstructed g(z) | samples g(z), z ~ N(0, I) | samples g(z), z ~ N(μ̂, Σ̂) of the "
            "training latents |",
            "|---|---|---|---|",
            "| ![observed](observed.png) | ![reconstructed](reconstructed.png) | ![samples](samples.png) | "
            "![samples from the fitted Gaussian](samples_fitted.png) |",
            "",
            f"The training latents' norm has median {np.median(np.linalg.norm(latents, axis=1)):.1f}, a draw of "
            f"the prior N(0, I_{config.latent_dim}) about {np.sqrt(config.latent_dim):.1f}: where they differ, "
            "g draws its images from the latents it was fitted at, N(μ̂, Σ̂) (`gcnjax sample --latents fitted`), "
            "not from the prior.",
            "",
        ]
    elif pixels:
        lines += [
            "| observed | reconstructed g(z) | samples g(z), z ~ N(0, I) |",
            "|---|---|---|",
            "| ![observed](observed.png) | ![reconstructed](reconstructed.png) | ![samples](samples.png) |",
            "",
        ]
    x_model = np.asarray(x)
    pca = pca_fit(x_model, min(config.latent_dim, *x_model.reshape(n, -1).shape), mask=mask)
    arrays = {"latents": latents, "pca_mean": pca[0].reshape(x_model.shape[1:]).astype(np.float32),
              "pca_components": pca[1].reshape((-1,) + x_model.shape[1:]).astype(np.float32)}
    if mask is not None:
        full = np.broadcast_to(mask, x_obs.shape) != 0
        recovered = np.where(full, x_obs, reconstructed)
        linear = {k: scale.to_data(v) for k, v in
                  baseline_recoveries(pca, x_model, mask, mean=observed_mean(x_model, mask)).items()}
        methods = {"ABP, g(z) pasted into the observed values": recovered, "ABP, g(z) alone": reconstructed,
                   f"PCA (d = {pca[1].shape[0]}, learned from the same incomplete data), completion": linear["pca"],
                   "mean of the observed values at each position": linear["mean"]}
        missing_err = np.stack([recovery_error(x_obs / unit, r / unit, mask) for r in methods.values()])
        whole_err = np.stack([np.mean(np.abs(x_obs - r).reshape(n, -1), axis=1) / unit for r in methods.values()])
        arrays.update(recovery_errors=missing_err, whole_image_errors=whole_err)
        summary.update(train_recovery_error=float(missing_err[0].mean()),
                       train_recovery_error_pca=float(missing_err[2].mean()),
                       train_recovery_error_mean=float(missing_err[3].mean()),
                       train_whole_error_pasted=float(whole_err[0].mean()),
                       train_whole_error_generated=float(whole_err[1].mean()))
        if pixels:
            pictures.update(recovered=Picture(recovered[:64]), generated=Picture(reconstructed[:64]),
                            recovered_pca=Picture(linear["pca"][:64]))
        lines += [
            "## Learning from incomplete data",
            "",
            "Recovery of the training images' missing values (mean absolute error, values in [0, 1]; on the "
            "missing values the pasted and the bare g(z) are the same numbers, the whole image tells them apart):",
            "",
            "| recovery | missing values | whole image |",
            "|---|---|---|",
            *[f"| {name} | {m.mean():.4f} | {w.mean():.4f} |" for name, m, w in zip(methods, missing_err, whole_err)],
            "",
        ]
        if pixels:
            lines += [
                "| observed (missing in black) | ABP: g(z) pasted | ABP: g(z) alone | PCA completion | truth |",
                "|---|---|---|---|---|",
                "| ![masked](observed_masked.png) | ![recovered](recovered.png) | ![generated](generated.png) | "
                "![pca](recovered_pca.png) | ![truth](observed.png) |",
                "",
            ]
    if inputs.get("test_observations") is not None:
        held_lines, held, held_pictures, held_arrays = heldout_comparison(
            config, net, params, scale, x_model, inputs["test_observations"], rounds=rounds,
            pca=pca if pca[1].shape[0] == config.latent_dim else None)
        summary.update(held)
        pictures.update(held_pictures)
        arrays.update(held_arrays)
        lines += held_lines
    if sounds:
        lines += ["Generated sounds: `sounds/sample_*.wav` (observed clips: `sounds/observed_*.wav`).", ""]
    return Outputs(pictures=pictures, arrays=arrays, sounds=sounds, report=lines, summary=summary)


def _trainer(config: G.GeneratorConfig, x: jax.Array, scale: ObservationScale, x_obs: np.ndarray,
             inputs: Dict[str, Any]) -> Trainer:
    """Alternating back-propagation: Langevin inference of each example's z
    (warm-started, observed values only under a mask), then one Optax step
    on θ; early stopping on validation examples where given."""
    mask = inputs.get("mask")
    validation_observations = inputs.get("validation_observations")
    rounds = inputs.get("validation_rounds", VALIDATION_ROUNDS)
    net = G.make_net(config)
    n = x.shape[0]
    step = G.make_train_step(config, net.apply, G.make_optimizer(config, n))
    generate = jax.jit(net.apply)
    sample_z = jax.random.normal(jax.random.key(config.seed + 1), (64, config.latent_dim), jnp.float32)
    pixels = scale.pixels is not None

    def validate(params):  # least-squares reconstruction error of the validation examples
        fit, _ = reconstruct_images(jax.random.key(config.seed + 3), config, net, params,
                                    scale.to_model(validation_observations), rounds=rounds, prior_weight=0.0)
        return float(mean_squared_error(validation_observations, scale.to_data(fit), scale.unit).mean())

    def snapshot(state, it):
        if not pixels:
            return {}
        return {"samples": Picture(scale.to_data(generate(state.params, sample_z))),
                "reconstructed": Picture(scale.to_data(generate(state.params, state.latents[:64])))}

    def finish(state, params):
        return _outputs(config, net, scale, x, x_obs, inputs, sample_z, state, params)

    mask_j = None if mask is None else jnp.asarray(mask)
    total = config.total_iterations(n)
    masked = ""
    if mask is not None:
        spec = inputs.get("mask_spec")
        masked = f" Learned from incomplete data: {spec or 'masked'}" + (f" ({gmasks.describe(spec)})" if spec else "") + "."
    return Trainer(
        phase_ends=[total],
        init=lambda phase: G.init_state(jax.random.key(config.seed), config, net, n, x.shape[1:]),
        step=lambda phase: step,
        batches=G.make_batches(x, config.batch_size, seed=config.seed, mask=mask_j),
        snapshot=snapshot,
        params=lambda state: state.params,
        finish=finish,
        describe=(f"Generator `{config.net}` (norm {config.net_norm}), latent dimension d = {config.latent_dim}, "
                  f"σ = {config.sigma}; inference: {config.langevin.n_steps} Langevin steps of step size "
                  f"{config.langevin.step_size:g} (noise {config.langevin.noise_scale}) per iteration, "
                  f"warm-started; {config.optimizer} lr {config.learning_rate:g}, batch {config.batch_size}, "
                  f"{config.n_epochs} epochs = {total} iterations." + masked),
        plot_keys=("loss", "mse"),
        validate=None if validation_observations is None else validate,
    )


def _chains(run_dir: Path, payload: Dict[str, Any], settings):
    """A generator's samples: ``g(z)`` for ``z ~ N(0, I)``, exact draws (no
    chain); with ``settings.given``, posterior samples of z given each of
    those observations (:func:`posterior_chains`)."""
    from gcnjax.sampling import Chains, Draw

    config, scale, net, params, _ = load_generator_run(run_dir)
    shape = tuple(payload["observed_shape"][1:])

    def picture(x):
        return Picture(gdata.sound_to_pixels(x) if scale.pixels is None else x)

    if settings.given is not None:
        spec = payload.get("data_spec") or {}
        observations, _ = gdata.load_generator_data(settings.given, config.net, size=spec.get("size"),
                                              channels=config.out_channels)
        if observations.shape[1:] != shape:
            raise ValueError(f"--given {settings.given!r} holds examples of shape {observations.shape[1:]}, the "
                             f"run's generator makes {shape}; give examples of the run's kind.")
        sampler = settings.chain(config.langevin)
        chains = posterior_chains(net.apply, params, scale.to_model(observations),
                                  latent_dim=config.latent_dim, sigma=config.sigma,
                                  sampler=sampler, trace_points=settings.trace_points)
        generate = jax.jit(net.apply)
        return chains._replace(
            picture=lambda z: picture(scale.to_data(np.asarray(generate(params, jnp.asarray(z))))),
            describe=(f"z given observation i mod {observations.shape[0]} of {settings.given!r}: "
                      f"{sampler.n_steps} {'MALA' if sampler.mala else 'Langevin'} steps of step size "
                      f"{sampler.step_size:g} (noise {sampler.noise_scale}) on E(z | x) = ||x − g(z)||²/(2σ²) + "
                      f"||z||²/2, σ = {config.sigma}, from z ~ N(0, I_{config.latent_dim}). `samples.npy` holds z; "
                      "the grid shows g(z)."))

    gaussian, source = None, f"z ~ N(0, I_{config.latent_dim})"
    if settings.latents == "fitted":
        path = run_dir / "latents.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is missing: --latents fitted needs the run's training latents "
                                    "(a finished `abp train` run writes them).")
        latents = np.load(path)
        gaussian = G.fitted_latent_gaussian(latents)
        source = (f"z ~ N(μ̂, Σ̂), the Gaussian fitted to the run's {latents.shape[0]} training latents (their "
                  f"norm's median {np.median(np.linalg.norm(latents, axis=1)):.1f}; N(0, I_{config.latent_dim})'s "
                  f"is about {np.sqrt(config.latent_dim):.1f})")

    def draw(params, key, n):
        return Draw(G.sample(key, net.apply, params, n, config.latent_dim, gaussian))

    return Chains(shape=shape, params=params, draw=draw, to_data=scale.to_data, picture=picture,
                  describe=f"g(z) for {source}: exact draws of the generator's mean, no chain.")


def posterior_chains(apply_fn, params, observations: np.ndarray, *, latent_dim: int, sigma: float, sampler,
                     trace_points: int = 10):
    """Chains on the posterior ``p(z | x) ∝ exp(−E(z | x))``,
    ``E(z | x) = ||x − g(z)||²/(2σ²) + ||z||²/2``, one observation per chain:
    chain ``i`` of a job on ``observations[i % M]`` (model units), from
    ``z ~ N(0, I)``, ``sampler`` (Langevin or MALA) on
    :func:`gcnjax.generator.latent_energy`. A :class:`gcnjax.sampling.Chains`
    whose samples are the latents z (``to_data`` is the identity; its
    picture shows each z as a strip of gray levels, a run's shows g(z))."""
    from gcnjax.sampling import Chains, langevin_draw

    observations = np.asarray(observations, np.float32)

    def draw(params, key, n, rows):
        def one(k, x, z0):  # a single chain: its energy has its own x
            energy_fn = G.make_latent_energy_fn(apply_fn, params, x, sigma=sigma)
            return langevin_draw(k, energy_fn, z0[None], sampler, trace_points)

        k_start, k_chain = jax.random.split(key)
        z0 = jax.random.normal(k_start, (n, latent_dim), jnp.float32)
        d = jax.vmap(one)(jax.random.split(k_chain, n), rows, z0)
        # vmapped one-chain draws -> the job's layout: x (n, d), traces (T, n[, P]), acceptance (n,)
        swap = lambda a: None if a is None else jnp.swapaxes(a[:, :, 0], 0, 1)
        return d._replace(x=d.x[:, 0], energy=swap(d.energy), projections=swap(d.projections),
                          acceptance=None if d.acceptance is None else d.acceptance[:, 0])

    def picture(z):  # each z as a strip of gray pixels, 128 + 40 z
        return Picture(np.clip(128 + 40 * np.asarray(z)[:, None, :, None], 0, 255))

    return Chains(shape=(latent_dim,), params=params, draw=draw, to_data=np.asarray, picture=picture,
                  describe=f"z given x: {sampler.n_steps} steps on E(z | x), σ = {sigma}.", n_steps=sampler.n_steps,
                  conditions=observations)


FAMILY = Family(
    name="generator",
    config_type=G.GeneratorConfig,
    check=_check,
    scale=lambda config, x, inputs: ObservationScale.for_data(config, x),
    load_scale=ObservationScale.from_dict,
    trainer=_trainer,
    observed=_observed,
    recorded=lambda inputs: {"mask": inputs.get("mask_spec"), "sample_rate": inputs.get("sample_rate")},
    memory_bound="lower --batch-size (the examples of one learning step)",
    chains=_chains,
)


def learn_generator(config: G.GeneratorConfig, observations: np.ndarray, out, *,
                    mask: Optional[np.ndarray] = None, mask_spec: Optional[str] = None,
                    test_observations: Optional[np.ndarray] = None, test_rounds: int = RECONSTRUCTION_ROUNDS,
                    validation_observations: Optional[np.ndarray] = None,
                    validation_rounds: int = VALIDATION_ROUNDS, title: str = "Generator (ABP)",
                    source: str = "", data_spec: Optional[Dict[str, object]] = None,
                    sample_rate: Optional[int] = None, overwrite: bool = False, resume: bool = False,
                    quiet: bool = False, devices: Optional[int] = None) -> Dict[str, object]:
    """Learn a generator by alternating back-propagation and write a run
    (:func:`gcnjax.run.learn` with :data:`FAMILY`).

    Args:
      config: the model, inference and learning settings.
      observations: training images, pixels 0..255 ``(N, H, W, C)`` (or
        sound clips ``(N, T, 1)`` in [−1, 1] for ``net="sound"``).
      out: the run directory.
      mask: optional ``(N, H, W, 1)`` (or data-shaped) observation mask,
        1 = observed: learning from incomplete data; the report gives the
        recovery error of the missing pixels by ``g`` of the learned latents
        (pasted into the observed pixels, and alone) beside PCA learned from
        the same incomplete data and the observed mean
        (``recovery_errors.npy``, ``whole_image_errors.npy``).
      mask_spec: how the mask was made (e.g. ``"pepper:0.5"``), for the report.
      test_observations: held-out examples (not trained on): their latents
        are inferred (``test_rounds`` × the config's Langevin) and the report
        compares the reconstruction error with PCA's at the same latent
        dimension fitted on the training set.
      validation_observations: examples for early stopping (neither trained
        nor tested on): at every snapshot (``config.run.image_every``) their
        least-squares reconstruction error (``validation_rounds`` × the
        config's Langevin, without noise) is logged to ``validation.json``,
        and the params with the lowest one are the run's ``params.msgpack``,
        the ones every output is drawn with (the training latents are
        refined under them first when they are not the last iteration's);
        the last iteration's params are kept as ``params_final.msgpack``.
      sample_rate: the rate of sound clips (WAVs are written).
      overwrite / resume / quiet: as :func:`gcnjax.run.learn`; a resumed run
        gives the same result as an uninterrupted one.

    Returns the engine's summary, with ``train_mse`` (and the recovery and
    held-out errors where asked).
    """
    return learn(FAMILY, config, observations, out, title=title, source=source, data_spec=data_spec,
                 overwrite=overwrite, resume=resume, quiet=quiet, devices=devices, mask=mask, mask_spec=mask_spec,
                 test_observations=test_observations, test_rounds=test_rounds,
                 validation_observations=validation_observations, validation_rounds=validation_rounds,
                 sample_rate=sample_rate)


def heldout_comparison(config: G.GeneratorConfig, net, params, scale: "ObservationScale", x_train_model: np.ndarray,
                       test_observations: np.ndarray, *, rounds: int = RECONSTRUCTION_ROUNDS, seed: int = 2,
                       pca=None):
    """Reconstruction of held-out examples by ABP against PCA at the same
    latent dimension (fitted on the training set ``x_train_model``).

    ABP, two ways (:func:`reconstruct_images`, ``rounds`` × the config's
    steps of gradient descent on z): to the posterior mode (the model's own
    inference, whose prior ``||z||²/2`` shrinks z), and to the least-squares
    fit ``argmin_z ||x − g(z)||²`` (prior weight 0), which is what PCA's
    projection is for the linear model. ``pca``: the ``(mean, components)``
    of :func:`pca_fit` on ``x_train_model`` if already computed. Returns the
    report's lines, a summary dict, the picture ``heldout`` (rows: observed,
    ABP posterior mode, ABP least-squares fit, PCA) and the array ``heldout_errors`` (rows: ABP posterior mode, ABP
    least-squares, PCA; per-example MSE in [0, 1] units).
    """
    unit = scale.unit
    x_test = scale.to_model(test_observations)
    key = jax.random.key(config.seed + seed)
    mode, _ = reconstruct_images(key, config, net, params, x_test, rounds=rounds)
    fit, _ = reconstruct_images(key, config, net, params, x_test, rounds=rounds, prior_weight=0.0)
    mode, fit = scale.to_data(mode), scale.to_data(fit)
    pca = pca_complete(*(pca or pca_fit(x_train_model, config.latent_dim)), x_test)
    pca = scale.to_data(pca)
    errors = np.stack([mean_squared_error(test_observations, r, unit) for r in (mode, fit, pca)])
    mode_err, fit_err, pca_err = errors
    n = errors.shape[1]

    def paired(e):  # mean and standard error of the per-example difference to PCA
        d = e - pca_err
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    summary = dict(test_mse_abp=float(mode_err.mean()), test_mse_abp_fit=float(fit_err.mean()),
                   test_mse_pca=float(pca_err.mean()),
                   test_abp_better_fraction=float(np.mean(mode_err < pca_err)),
                   test_abp_fit_better_fraction=float(np.mean(fit_err < pca_err)),
                   test_abp_minus_pca=paired(mode_err), test_abp_fit_minus_pca=paired(fit_err))
    k = min(16, test_observations.shape[0])
    pictures = {}
    if scale.pixels is not None:
        pictures["heldout"] = Picture(np.concatenate([test_observations[:k], mode[:k], fit[:k], pca[:k]]), n_cols=k)

    def row(name, e):
        diff, se = paired(e)
        return (f"| {name} | {config.latent_dim} | {e.mean():.5f} ± {e.std() / np.sqrt(n):.5f} | "
                f"{diff:+.5f} ± {se:.5f} | {np.mean(e < pca_err):.0%} |")

    lines = [
        "## Held-out reconstruction: ABP against PCA",
        "",
        f"{test_observations.shape[0]} examples not trained on. ABP infers each latent by "
        f"{rounds} × {config.langevin.n_steps} steps of gradient descent (the Langevin update without its "
        "noise), either on E(z | x) to the posterior mode, or on ||x − g(z)||² alone to the least-squares "
        f"fit, the analogue of PCA's projection on the top {config.latent_dim} principal components of the "
        "training set.",
        "",
        "| reconstruction | latent dim | MSE | minus PCA's, per example | better than PCA on |",
        "|---|---|---|---|---|",
        row("ABP, posterior mode", mode_err),
        row("ABP, least-squares fit", fit_err),
        f"| PCA | {config.latent_dim} | {pca_err.mean():.5f} ± {pca_err.std() / np.sqrt(n):.5f} | | |",
        "",
        "(MSE per value in [0, 1]; ± one standard error over examples; the difference to PCA is paired, "
        "per example.)",
        "",
    ]
    if scale.pixels is not None:
        lines += [f"Rows of {k}: observed, ABP (posterior mode), ABP (least-squares fit), PCA.", "",
                  "![held out](heldout.png)", ""]
    return lines, summary, pictures, {"heldout_errors": errors}


def load_generator_run(run_dir):
    """``(config, scale, net, params, payload)`` of a finished generator run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist; give a finished `gcnjax abp` run.")
    cfg_path, params_path = run_dir / "config.json", run_dir / "params.msgpack"
    for p in (cfg_path, params_path):
        if not p.exists():
            raise FileNotFoundError(f"{str(p)!r} is missing: is {str(run_dir)!r} a finished generator run?")
    payload = json.loads(cfg_path.read_text())
    try:
        config = G.GeneratorConfig.from_dict(payload["config"])
    except (TypeError, KeyError) as err:
        raise ValueError(f"{str(run_dir)!r} is not a generator run ({err}).") from None
    scale = ObservationScale.from_dict(payload.get("pixel_scale"))
    net = G.make_net(config)
    template = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, config.latent_dim), jnp.float32))
    params = flax.serialization.from_bytes(template, params_path.read_bytes())
    return config, scale, net, params, payload


def recovery_masks(mask_specs: Sequence[str], shape, seed: int = 0) -> List[np.ndarray]:
    """The masks :func:`recover_run` (``gcnjax abp inpaint --seed``) draws
    for ``mask_specs`` on images of ``shape``: the i-th spec's with seed
    ``seed + i``, so a baseline scored elsewhere meets the same pixels."""
    return [gmasks.from_spec(spec, shape, seed=seed + i) for i, spec in enumerate(mask_specs)]


def recover_run(run_dir, observations: np.ndarray, out, mask_specs: Sequence[str], *, rounds: int = RECONSTRUCTION_ROUNDS,
                seed: int = 0, overwrite: bool = False) -> Dict[str, object]:
    """Recover occluded versions of ``observations`` with a learned generator.

    For each mask spec (:func:`gcnjax.masks.from_spec`, e.g. ``pepper:0.7``,
    ``block:20``) the observations are masked, their latents inferred from
    the observed pixels only, and the missing pixels filled by ``g(z)``.
    Writes ``out/report.md`` with a table of recovery errors (mean absolute
    error per missing value, in [0, 1]) of ABP beside two baselines, PCA's
    completion (:func:`pca_complete` with the run's ``pca_mean`` /
    ``pca_components``, fitted on its training examples) and the training
    mean, and a picture per mask (rows: truth, masked, ABP, PCA);
    ``results.json`` maps each mask to ``{"abp", "pca", "mean"}`` and the
    bounds ``"abp_bound"`` / ``"pca_bound"``: the error on the same missing
    values of ``g(z)`` with z inferred from the whole image (the same
    inference, no value withheld) and of PCA's projection, what each model
    can draw at best; a fill near its bound is limited by the model, not by
    the evidence withheld. An empty
    ``mask_specs`` reconstructs instead (no pixels missing) and reports the
    mean squared error of ABP's posterior mode and of PCA's projection.
    """
    config, scale, net, params, payload = load_generator_run(run_dir)
    observations = check_observations(observations, config, "images")
    with RunDir(out, overwrite=overwrite) as run:
        return _recover_into(run, run_dir, config, scale, net, params, observations, mask_specs, rounds, seed)


def _recover_into(run: RunDir, run_dir, config: G.GeneratorConfig, scale, net, params, observations: np.ndarray,
                  mask_specs: Sequence[str], rounds: int, seed: int) -> Dict[str, object]:
    run_dir = Path(run_dir)
    pca = None
    if (run_dir / "pca_mean.npy").exists() and (run_dir / "pca_components.npy").exists():
        pca = (np.load(run_dir / "pca_mean.npy"), np.load(run_dir / "pca_components.npy").reshape(
            -1, int(np.prod(observations.shape[1:]))))
    lines = [f"# Recovery with the generator of `{run_dir}`", "",
             f"{observations.shape[0]} images; latents inferred by {rounds} × {config.langevin.n_steps} steps of "
             "gradient descent on E(z | x) (to the posterior mode) on the observed pixels only, the missing ones "
             "filled by g(z)."]
    if pca is not None:
        lines += [f"Baselines: PCA (d = {pca[1].shape[0]}, fitted on the run's training examples) completing the "
                  "missing values by least squares on the observed ones, and the training mean filling them."]
    else:
        lines += ["(The run holds no PCA of its training examples, `pca_mean.npy`: no baselines.)"]
    lines += ["The bounds: the same fills with the latents (or PCA's coefficients) inferred from the whole image, "
              "the missing values included, scored on the missing values only. A fill near its bound is limited by "
              "the model (what g(z) or PCA's subspace can draw), not by the values withheld.",
              "", "| mask | ABP | ABP's bound | PCA completion | PCA's bound | mean fill | picture |",
              "|---|---|---|---|---|---|---|"]
    results = {}
    k = min(8, observations.shape[0])
    key = jax.random.key(seed)
    unit = scale.unit
    x_model = scale.to_model(observations)
    # One inference from the whole images: the reconstruction without masks, every mask's bound with them.
    whole = {"abp": scale.to_data(reconstruct_images(key, config, net, params, x_model, rounds=rounds)[0])}
    if pca is not None:
        whole["pca"] = scale.to_data(pca_complete(*pca, x_model))
    for i, (spec, mask) in enumerate(zip(mask_specs, recovery_masks(mask_specs, observations.shape, seed))):
        out_i = recover_images(jax.random.fold_in(key, i), config, net, params, scale, observations, mask,
                               rounds=rounds)
        results[spec] = {"abp": float(out_i["errors"].mean())}
        for name, fill in whole.items():
            results[spec][name + "_bound"] = float(recovery_error(observations / unit, fill / unit, mask).mean())
        rows = [observations[:k], _masked_view(observations[:k], mask[:k]), out_i["recovered"][:k]]
        if pca is not None:
            for name, rec in baseline_recoveries(pca, x_model, mask).items():
                rec = scale.to_data(rec)
                results[spec][name] = float(recovery_error(observations / unit, rec / unit, mask).mean())
                if name == "pca":
                    rows.append(rec[:k])
        name = "recovery_" + spec.replace(":", "_").replace(".", "p") + ".png"
        _save_grid(run.path / name, np.concatenate(rows), scale, n_cols=k)
        r = results[spec]
        lines.append(f"| {gmasks.describe(spec)} | {r['abp']:.4f} | {r['abp_bound']:.4f} | "
                     f"{r.get('pca', float('nan')):.4f} | {r.get('pca_bound', float('nan')):.4f} | "
                     f"{r.get('mean', float('nan')):.4f} | ![{spec}]({name}) |")
    if mask_specs:
        lines += ["", "(Mean absolute error per missing value, values in [0, 1]. Picture rows: truth, masked "
                  "(missing in black), ABP" + (", PCA" if pca is not None else "") + ".)"]
    if not mask_specs:
        generated = whole["abp"]
        results["reconstruction_mse"] = float(mean_squared_error(observations, generated, unit).mean())
        rows = [observations[:k], generated[:k]]
        pca_line = ""
        if pca is not None and pca[1].shape[0] == config.latent_dim:
            projected = whole["pca"]
            results["reconstruction_mse_pca"] = float(mean_squared_error(observations, projected, unit).mean())
            rows.append(projected[:k])
            pca_line = (f"; PCA (d = {config.latent_dim}, fitted on the run's training examples): "
                        f"{results['reconstruction_mse_pca']:.5f}")
        _save_grid(run.path / "reconstructed.png", np.concatenate(rows), scale, n_cols=k)
        lines = lines[:3] + ["", f"Reconstruction MSE per value ([0, 1]), ABP at the posterior mode: "
                                 f"{results['reconstruction_mse']:.5f}{pca_line}", "",
                             "Rows: observed, ABP" + (", PCA" if pca_line else "") + ".", "",
                             "![reconstructed](reconstructed.png)"]
    write_atomic(run.path / "results.json", json.dumps(results, indent=2))
    run.write_report("\n".join(lines) + "\n")
    return {"run_dir": run.path, "report": run.path / "report.md", "errors": results}
