"""Metrics for synthesized images and for the chains that make them.

- Texture statistics: the mean spatial power spectrum of a set of images and
  a distance between two such spectra; Gram matrices of filter responses.
- Recovery and reconstruction: the error of filled-in values, MSE, PSNR.
- Sample quality through a feature extractor: the Fréchet distance (FID with
  Inception-v3 features, FCD with gcnjax's Fashion-MNIST classifier) and the
  kernel MMD (KID).
- MCMC diagnostics: effective sample size and split R̂ of chains' traces.
- A number over seeds: its mean and sample standard deviation.
"""

from __future__ import annotations

import functools
import weakref
from typing import Callable, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcnjax.nets import init_params

__all__ = [
    "power_spectrum", "log_spectrum_distance", "recovery_error",
    "feature_statistics", "frechet_distance", "frechet_distance_from_features", "random_feature_frechet",
    "KERNELS", "median_bandwidth", "mmd2", "kernel_distance",
    "FeatureExtractor", "extract_features", "fid", "kid", "classifier_features", "fcd",
    "filter_responses", "gram_matrices", "mean_gram", "gram_distance", "gram_distance_to", "white_noise", "shuffled_patches",
    "PYRAMID_LEVELS", "random_zero_mean_filters", "pyramid_grams", "pyramid_gram_distances",
    "texture_scores", "mse", "psnr",
    "effective_sample_size", "rhat",
    "spatiotemporal_power_spectrum", "spatiotemporal_spectrum_distance", "loudness_envelope",
    "envelope_modulation_spectrum",
    "modulation_spectrum_distance", "mean_sd", "format_mean_sd",
]


def power_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean spatial power spectrum ``|FFT2(x − mean x)|²`` of ``(N, H, W, C)``
    images, averaged over images and channels: an ``(H, W)`` array.

    By Parseval, its sum is ``H·W`` times the mean over images and channels
    of ``Σ (x − mean x)²``.
    """
    images = np.asarray(images, np.float64)
    if images.ndim != 4:
        raise ValueError(f"power_spectrum needs images (N, H, W, C), got shape {images.shape}.")
    centred = images - images.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred, axes=(1, 2))) ** 2
    return power.mean(axis=(0, 3))


def log_spectrum_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of ``log(1 + P)`` between the power spectra of
    two image sets of one size: 0 for identical second-order statistics."""
    pa, pb = power_spectrum(a), power_spectrum(b)
    if pa.shape != pb.shape:
        raise ValueError(f"image sets of different sizes: {pa.shape} vs {pb.shape}.")
    return float(np.mean(np.abs(np.log1p(pa) - np.log1p(pb))))


def recovery_error(truth, recovered, mask) -> np.ndarray:
    """Per-example mean absolute error on the MISSING values (mask 0):

        err_i = Σ (1 − m_i) |x_i − x̂_i| / Σ (1 − m_i)

    over all positions and channels (``mask`` broadcasts to the data, 1 =
    observed), in the units of the data.
    """
    truth = np.asarray(truth, np.float64)
    recovered = np.asarray(recovered, np.float64)
    if truth.shape != recovered.shape:
        raise ValueError(f"truth {truth.shape} and recovered {recovered.shape} differ in shape.")
    missing = 1.0 - np.broadcast_to(np.asarray(mask, np.float64), truth.shape)
    axes = tuple(range(1, truth.ndim))
    count = missing.sum(axis=axes)
    if np.any(count == 0):
        raise ValueError("an example has no missing values; recovery error is defined on missing values only.")
    return (missing * np.abs(truth - recovered)).sum(axis=axes) / count


# ====================================================================== sample quality
#
# Distances between two sets of images through the features of a fixed net
# (Fréchet distance, kernel MMD), texture statistics (Gram matrices), and
# reconstruction errors. The statistics are computed in float64 numpy: the
# feature covariances of a few thousand 2048-d vectors lose digits in float32.


def feature_statistics(features) -> tuple:
    """``(mean, cov)`` of ``(N, D)`` features: the sample mean ``μ`` and the
    unbiased covariance ``C = Σ (f_i − μ)(f_i − μ)ᵀ / (N − 1)``, float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be a (N, D) array, got shape {f.shape}.")
    if f.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {f.shape[0]}.")
    mean = f.mean(axis=0)
    centred = f - mean
    return mean, centred.T @ centred / (f.shape[0] - 1)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """``A^½`` of a symmetric positive semi-definite matrix by its
    eigen-decomposition ``A = V diag(λ) Vᵀ → V diag(√max(λ, 0)) Vᵀ``; round-off
    negative eigenvalues are clipped to 0."""
    sym = 0.5 * (matrix + matrix.T)
    eigenvalues, vectors = np.linalg.eigh(sym)
    return (vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ vectors.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein) distance between the Gaussians ``N(μ1, C1)``
    and ``N(μ2, C2)``:

        d² = ‖μ1 − μ2‖² + tr(C1 + C2 − 2 (C1^½ C2 C1^½)^½)

    ``tr (C1 C2)^½ = tr (C1^½ C2 C1^½)^½``, and ``C1^½ C2 C1^½`` is symmetric
    positive semi-definite, so both roots are taken by symmetric
    eigen-decompositions in float64: no complex round-off, stable for singular
    or ill-conditioned covariances (fewer samples than dimensions). The FID
    of Heusel et al. (2017) is this distance between Inception pool3 feature
    statistics.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).ravel(), np.asarray(mu2, np.float64).ravel()
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    for name, value in (("mu2", mu2), ("cov1", cov1), ("cov2", cov2)):
        expected = (d,) if name == "mu2" else (d, d)
        if value.shape != expected:
            raise ValueError(f"frechet_distance: {name} has shape {value.shape}, expected {expected} "
                             f"to match mu1 of dimension {d}.")
    root1 = _symmetric_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    eigenvalues = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt
    # Round-off can leave a tiny negative value for identical statistics.
    return float(max(distance, 0.0))


def frechet_distance_from_features(features1, features2) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two ``(N, D)``
    feature sets by :func:`feature_statistics`."""
    f1, f2 = np.asarray(features1), np.asarray(features2)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with one D, got shapes {f1.shape} and {f2.shape}.")
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


class _RandomFeatures(nn.Module):
    """The random conv net of :func:`random_feature_frechet`."""

    @nn.compact
    def __call__(self, x):
        for features in (16, 32, 32):
            x = nn.relu(nn.Conv(features, (5, 5), strides=(2, 2), padding="SAME")(x))
        return jnp.mean(x, axis=(1, 2))


@functools.lru_cache(maxsize=16)
def _random_feature_params(seed: int, image_shape: Tuple[int, ...]):
    """The random net's weights for ``seed`` and one image shape (made once:
    a scoring loop calls :func:`random_feature_frechet` again and again)."""
    return init_params(_RandomFeatures(), jax.random.key(seed), jnp.zeros((1,) + tuple(image_shape)))


_random_features = jax.jit(_RandomFeatures().apply)


def random_feature_frechet(images_a, images_b, seed: int = 0) -> float:
    """Fréchet distance between Gaussians fitted to the features of a FIXED
    RANDOM conv net (seeded, never trained: 3 conv layers 5×5 stride 2 of
    16, 32, 32 channels, ReLU, global average pooling: 32 features) of two
    image sets ``(N, H, W, C)`` in pixels 0..255 (scaled to [−1, 1] first).

    A sample-quality statistic for data no trained extractor here knows
    (faces): it compares low-level statistics (colour, contrast, edges at
    a few scales), not semantics. Compare values at equal N; the reference
    is the distance of held-out real images to the same set.
    """
    a, b = (np.asarray(x, np.float32) for x in (images_a, images_b))
    if a.ndim != 4 or b.ndim != 4 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"image sets must be (N, H, W, C) of one image shape, got {a.shape} and {b.shape}.")
    params = _random_feature_params(int(seed), a.shape[1:])
    feats = [np.asarray(_random_features(params, jnp.asarray(x / 127.5 - 1.0)), np.float64) for x in (a, b)]
    return frechet_distance_from_features(feats[0], feats[1])


# ---------------------------------------------------------------------- kernel MMD

KERNELS = ("polynomial", "rbf")


def _pairwise_sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.clip(sq, 0.0, None)


def median_bandwidth(features1, features2) -> float:
    """The median heuristic: the median Euclidean distance between distinct
    points of the pooled sample ``f1 ∪ f2``."""
    pooled = np.concatenate([np.asarray(features1, np.float64), np.asarray(features2, np.float64)])
    sq = _pairwise_sq_distances(pooled, pooled)
    upper = sq[np.triu_indices(pooled.shape[0], k=1)]
    bandwidth = float(np.sqrt(np.median(upper)))
    if not bandwidth > 0:
        raise ValueError("the median distance between the features is 0 (most points coincide); "
                         "give an explicit bandwidth.")
    return bandwidth


def _gram(x, y, kernel, bandwidth, d):
    if kernel == "polynomial":
        return (x @ y.T / d + 1.0) ** 3
    return np.exp(-_pairwise_sq_distances(x, y) / (2.0 * bandwidth**2))


def mmd2(features1, features2, kernel: str = "polynomial", bandwidth: Optional[float] = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j)
                 − 2/(mn) Σ_{i,j} k(x_i, y_j)

    between ``(m, D)`` and ``(n, D)`` feature sets (Gretton et al. 2012). It
    is 0 in expectation for one distribution, so it can be negative.

    kernel:
      ``"polynomial"``: ``k(x, y) = (xᵀy / D + 1)³``, the kernel of the
        kernel inception distance (KID, Bińkowski et al. 2018).
      ``"rbf"``: ``k(x, y) = exp(−‖x − y‖² / (2 h²))`` with ``h =
        bandwidth``, by default the median heuristic
        (:func:`median_bandwidth`).
    """
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with one D, got shapes {x.shape} and {y.shape}.")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 points per set, got {x.shape[0]} and {y.shape[0]}.")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}.")
    if kernel == "rbf" and bandwidth is None:
        bandwidth = median_bandwidth(x, y)
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth!r}.")
    m, n, d = x.shape[0], y.shape[0], x.shape[1]
    kxx, kyy, kxy = _gram(x, x, kernel, bandwidth, d), _gram(y, y, kernel, bandwidth, d), _gram(x, y, kernel, bandwidth, d)
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def kernel_distance(features1, features2, *, n_subsets: int = 100, subset_size: int = 1000,
                    kernel: str = "polynomial", bandwidth: Optional[float] = None, seed: int = 0) -> tuple:
    """``(mean, std)`` of :func:`mmd2` over ``n_subsets`` random subsets of
    ``subset_size`` points drawn without replacement from each set (capped at
    the smaller set's size), as the KID is reported: with the default
    polynomial kernel this is the KID of the features. For ``"rbf"`` one
    bandwidth serves every subset: the given one, or the median heuristic on
    the first 1,000 points of each set."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if n_subsets < 1 or subset_size < 2:
        raise ValueError(f"need n_subsets >= 1 and subset_size >= 2, got {n_subsets} and {subset_size}.")
    if kernel == "rbf" and bandwidth is None:
        # One bandwidth for all subsets, so they estimate one quantity.
        bandwidth = median_bandwidth(f1[:1000], f2[:1000])
    size = min(subset_size, f1.shape[0], f2.shape[0])
    rng = np.random.default_rng(seed)
    values = np.array([
        mmd2(f1[rng.choice(f1.shape[0], size, replace=False)], f2[rng.choice(f2.shape[0], size, replace=False)],
             kernel=kernel, bandwidth=bandwidth)
        for _ in range(n_subsets)
    ])
    return float(values.mean()), float(values.std())


# ---------------------------------------------------------------------- feature extractors

#: A feature extractor maps a batch of images ``(N, H, W, C)``, in the scale
#: the extractor documents (gcnjax's own: pixels 0..255), to features
#: ``(N, D)``. It must be a JAX-traceable function; a
#: ``jax.tree_util.Partial(fn, params)`` passes its params to the compiled
#: function as arguments instead of baking them in as constants.
FeatureExtractor = Callable[[jax.Array], jax.Array]


# One compiled function per plain-callable extractor (compiled once per shape
# across calls); dropped with the extractor.
_JITTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@jax.jit
def _apply_partial(extractor, batch):
    return extractor(batch)


def extract_features(images, extractor: FeatureExtractor, batch_size: int = 250) -> np.ndarray:
    """``extractor`` applied to ``images`` in batches under ``jax.jit``:
    ``(N, D)`` float64 features.

    Every batch has the same shape (the last one is padded and the padding's
    features dropped), so the extractor is compiled once per image shape.
    """
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to extract features from.")
    batch_size = max(1, min(int(batch_size), n))
    if isinstance(extractor, jax.tree_util.Partial):
        run = lambda batch: _apply_partial(extractor, batch)
    else:
        try:
            run = _JITTED[extractor]
        except (KeyError, TypeError):
            run = jax.jit(extractor)
            try:
                _JITTED[extractor] = run
            except TypeError:  # not weak-referenceable: compiled anew per call
                pass
    out = []
    for start in range(0, n, batch_size):
        batch = images[start:start + batch_size]
        count = batch.shape[0]
        if count < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, axis=0)])
        features = np.asarray(run(jnp.asarray(batch)), np.float64)
        out.append(features.reshape(batch_size, -1)[:count])
    return np.concatenate(out)


def fid(images_a, images_b, extractor: FeatureExtractor, batch_size: int = 250) -> float:
    """Fréchet distance between the Gaussians fitted to the ``extractor``
    features of two image sets. With Inception-v3 pool3 features
    (:mod:`gcnjax.inception`) it is the FID; with another extractor it is the
    Fréchet distance in that feature space (:func:`fcd` for gcnjax's
    Fashion-MNIST classifier), and not comparable with published FIDs."""
    fa = extract_features(images_a, extractor, batch_size)
    fb = extract_features(images_b, extractor, batch_size)
    return frechet_distance_from_features(fa, fb)


def kid(images_a, images_b, extractor: FeatureExtractor, *, batch_size: int = 250, n_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> tuple:
    """``(mean, std)`` of the polynomial-kernel MMD² (:func:`kernel_distance`)
    between the ``extractor`` features of two image sets: the KID with
    Inception features."""
    fa = extract_features(images_a, extractor, batch_size)
    fb = extract_features(images_b, extractor, batch_size)
    return kernel_distance(fa, fb, n_subsets=n_subsets, subset_size=subset_size, seed=seed)


def classifier_features(path=None) -> FeatureExtractor:
    """The default extractor: penultimate-layer features of gcnjax's small
    Fashion-MNIST classifier, loaded from its cached weights (see
    :func:`gcnjax.classifier.classifier_features`)."""
    from gcnjax import classifier

    return classifier.classifier_features(path)


def fcd(images_a, images_b, *, path=None, batch_size: int = 250) -> float:
    """Fréchet classifier distance: :func:`fid` with the features of gcnjax's
    Fashion-MNIST classifier (:func:`classifier_features`), for 28×28 gray
    images in pixels 0..255. Lower is closer; it is not an FID."""
    return fid(images_a, images_b, classifier_features(path), batch_size)


# ---------------------------------------------------------------------- texture statistics


def filter_responses(images, filters) -> jax.Array:
    """Responses of ``(N, H, W, Cin)`` images to fixed filters: for a
    ``(k, k, Cin, Cout)`` array the 'valid' cross-correlation

        F[n, i, j, c] = Σ_{a,b,d} x[n, i+a, j+b, d] · w[a, b, d, c],

    or ``filters(images)`` for a callable (any feature extractor with output
    ``(N, positions..., C)``: images, videos or sounds, as it takes them)."""
    images = jnp.asarray(images, jnp.float32)
    if callable(filters):
        return filters(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}.")
    w = jnp.asarray(filters, jnp.float32)
    if w.ndim != 4 or w.shape[2] != images.shape[3]:
        raise ValueError(f"filters must be a (k, k, Cin, Cout) array with Cin = {images.shape[3]} (the images' "
                         f"channels), got shape {w.shape}.")
    if w.shape[0] > images.shape[1] or w.shape[1] > images.shape[2]:
        raise ValueError(f"filters {w.shape[:2]} are larger than the images {images.shape[1:3]}.")
    return jax.lax.conv_general_dilated(images, w, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def gram_matrices(images, filters) -> np.ndarray:
    """Per-image Gram matrices of filter responses (Gatys et al. 2015):

        G[n, c, c'] = 1/P Σ_p F[n, p, c] F[n, p, c']

    over the ``P`` spatial positions of :func:`filter_responses`; ``(N, C, C)``
    float64."""
    responses = np.asarray(filter_responses(images, filters), np.float64)
    n, c = responses.shape[0], responses.shape[-1]
    flat = responses.reshape(n, -1, c)
    return np.einsum("npc,npd->ncd", flat, flat) / flat.shape[1]


def mean_gram(images, filters, batch: Optional[int] = None) -> np.ndarray:
    """``Ḡ = 1/N Σ_n G[n]``, the mean of :func:`gram_matrices` over a set,
    computed ``batch`` images at a time (default ``min(64, N)``), the last
    chunk padded: a jit'd ``filters`` compiles once for all the sets given
    one ``batch``. ``(C, C)`` float64."""
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    if n < 1:
        raise ValueError("mean_gram needs at least one image, got none.")
    chunk = min(64, n) if batch is None else int(batch)
    total = 0.0
    for i in range(0, n, chunk):
        part = images[i:i + chunk]
        m = part.shape[0]
        if m < chunk:
            part = np.concatenate([part, np.zeros((chunk - m,) + part.shape[1:], part.dtype)])
        total = total + gram_matrices(part, filters)[:m].sum(axis=0)
    return total / n


def gram_distance(images_a, images_b, filters) -> float:
    """Mean squared difference between the mean Gram matrices of two image
    sets: ``‖Ḡ_a − Ḡ_b‖²_F / C²``; 0 for sets with the same second-order
    filter statistics."""
    return gram_distance_to(mean_gram(images_b, filters), images_a, filters)


def gram_distance_to(gram: np.ndarray, images, filters, batch: Optional[int] = None) -> float:
    """:func:`gram_distance` of ``images`` to a set whose mean Gram matrix
    ``gram`` (``(C, C)``, :func:`mean_gram`) is already known:
    ``‖Ḡ_images − gram‖²_F / C²``."""
    return float(np.mean((mean_gram(images, filters, batch) - np.asarray(gram, np.float64)) ** 2))


# Levels of :func:`pyramid_gram_distances`: the image, then averaged over
# 2×2 and 4×4 blocks (its 5×5 filters then span 5, 10 and 20 pixels).
PYRAMID_LEVELS = (1, 2, 4)


def random_zero_mean_filters(channels: int, size: int = 5, n_filters: int = 32, seed: int = 0) -> np.ndarray:
    """A fixed random filter bank ``(size, size, channels, n_filters)`` of
    N(0, 1/(size² · channels)) weights, each filter's mean taken out (its
    response measures structure, not the local brightness), drawn from
    ``numpy.random.default_rng(seed)``; float32."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((size, size, channels, n_filters)) / np.sqrt(size * size * channels)
    return (w - w.mean(axis=(0, 1, 2), keepdims=True)).astype(np.float32)


def _block_mean(x, factor: int) -> jax.Array:
    """``(N, H, W, C)`` images averaged over ``factor × factor`` blocks."""
    from gcnjax.multigrid import downsample  # here, not above: gcnjax.multigrid imports this module

    h, w = x.shape[1] // factor, x.shape[2] // factor
    return downsample(x[:, :h * factor, :w * factor], (h, w))


@functools.partial(jax.jit, static_argnums=2)
def _rectified_pyramid_responses(x, w, factor: int) -> jax.Array:
    """``max(0, w ⋆ x)`` at one pyramid level (compiled once per shape and level)."""
    return jax.nn.relu(filter_responses(_block_mean(x, factor), w))


def pyramid_grams(images, levels: Sequence[int] = PYRAMID_LEVELS, filter_size: int = 5, n_filters: int = 32,
                  seed: int = 0) -> Dict[int, np.ndarray]:
    """The statistics of :func:`pyramid_gram_distances` for one image set
    ``(N, H, W, C)`` (pixels 0..255): ``{f: Ḡ_f}``, at each level ``f`` the
    mean Gram matrix of the rectified responses of the fixed random bank to
    the images scaled to [−1, 1] and averaged over ``f × f`` blocks."""
    x = np.asarray(images, np.float32) / 127.5 - 1.0
    if x.ndim != 4:
        raise ValueError(f"image sets must be (N, H, W, C), got shape {x.shape}.")
    w = jnp.asarray(random_zero_mean_filters(x.shape[-1], filter_size, n_filters, seed))
    grams = {}
    for f in levels:
        if min(x.shape[1:3]) // int(f) < filter_size:
            raise ValueError(f"at pyramid level {f} the images ({x.shape[1:3]}) are smaller than the "
                             f"{filter_size}×{filter_size} filters: pass fewer levels or a smaller filter_size.")
        grams[int(f)] = mean_gram(x, lambda y, f=int(f): _rectified_pyramid_responses(y, w, f))
    return grams


def _relative_distances(grams_a: Dict[int, np.ndarray], grams_b: Dict[int, np.ndarray]) -> Dict[int, float]:
    return {f: float(np.sum((grams_a[f] - grams_b[f]) ** 2) / np.sum(grams_b[f] ** 2)) for f in grams_b}


def pyramid_gram_distances(images_a, images_b, levels: Sequence[int] = PYRAMID_LEVELS, filter_size: int = 5,
                           n_filters: int = 32, seed: int = 0) -> Dict[int, float]:
    """A texture statistic at several scales: at each level ``f`` of an
    image pyramid (the images averaged over ``f × f`` blocks,
    :func:`gcnjax.multigrid.downsample`, the rows and columns past a multiple
    of ``f`` dropped; pixels 0..255 scaled to [−1, 1] first), the mean Gram
    matrix (:func:`mean_gram`) of the rectified responses
    ``max(0, w_c ⋆ x)`` of one fixed random bank
    (:func:`random_zero_mean_filters`) for two image sets ``(N, H, W, C)``
    (:func:`pyramid_grams`), and their relative distance

        d_f = ‖Ḡ_a − Ḡ_b‖²_F / ‖Ḡ_b‖²_F.

    The first level sees the grain; the coarser ones see shapes that span
    ``f · filter_size`` pixels (a grass blade, a brick): a set that matches
    ``images_b`` at level 1 but not at level 4 has the grain without the
    shapes. ``{f: d_f}``; ``images_b`` is the reference."""
    a, b = np.shape(images_a), np.shape(images_b)
    if len(a) != 4 or len(b) != 4 or a[-1] != b[-1]:
        raise ValueError(f"image sets must be (N, H, W, C) with one channel count, got {a} and {b}.")
    options = dict(levels=levels, filter_size=filter_size, n_filters=n_filters, seed=seed)
    return _relative_distances(pyramid_grams(images_a, **options), pyramid_grams(images_b, **options))


def shuffled_patches(image, patch: int, rng: np.random.Generator) -> np.ndarray:
    """A baseline texture: ``image`` ``(H, W, C)`` cut into the
    ``(H // patch) · (W // patch)`` non-overlapping ``patch × patch`` tiles
    of its top-left ``H' × W'`` window (``H' = patch · (H // patch)``), the
    tiles put back in an order drawn by ``rng`` (a uniform permutation).

    Every tile is a piece of the observed image, so the result has exactly
    the pixel values of that window (the same histogram), and within a tile
    every statistic; only structure across the seams is broken. A synthesis
    that matches the observed texture's statistics better than this has
    learned more than its pieces up to ``patch`` pixels. ``(H', W', C)``."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"shuffled_patches needs one image (H, W, C), got shape {image.shape}.")
    rows, cols = image.shape[0] // patch, image.shape[1] // patch
    if patch < 1 or rows < 1 or cols < 1:
        raise ValueError(f"patch must be an integer from 1 to the image's side {min(image.shape[:2])}, got {patch!r}.")
    tiles = image[:rows * patch, :cols * patch].reshape(rows, patch, cols, patch, -1).swapaxes(1, 2)
    tiles = tiles.reshape(rows * cols, patch, patch, -1)[rng.permutation(rows * cols)]
    return tiles.reshape(rows, cols, patch, patch, -1).swapaxes(1, 2).reshape(rows * patch, cols * patch, -1)


def white_noise(reference, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise of ``shape`` with the per-channel mean and
    standard deviation of ``reference`` (channels last, over all its other
    axes): the baseline that has the data's first two moments and no
    structure. float64."""
    channels = np.asarray(reference, np.float64).reshape(-1, np.shape(reference)[-1])
    return channels.mean(axis=0) + channels.std(axis=0) * rng.standard_normal(tuple(shape))


def shuffled_frames(video, rng: np.random.Generator) -> np.ndarray:
    """A baseline dynamic texture: ``video`` ``(T, ...)`` with its frames in
    an order drawn by ``rng`` (a uniform permutation of the first axis).

    Every frame is an observed frame, so every spatial statistic is the
    observed video's; only the order in time is lost. A synthesis nearer the
    observed spatial-temporal statistics than this has learned the motion,
    not just the look of a frame. The video's dtype and shape."""
    video = np.asarray(video)
    if video.ndim < 2 or video.shape[0] < 2:
        raise ValueError(f"shuffled_frames needs a video (T, ...) of at least 2 frames, got shape {video.shape}.")
    return video[rng.permutation(video.shape[0])]


def spectrally_matched_noise(signal, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` baseline sounds with exactly the power spectrum of ``signal``
    ``(T, C)`` and random phases (a phase-randomised surrogate): per channel,
    ``s' = irfft(|X_k| e^{i(arg X_k + φ_k)})`` with ``φ_k`` uniform on
    ``[0, 2π)`` for the frequencies between 0 and Nyquist (those two, being
    real, keep their phase), so the mean and every ``|X_k|²`` are the
    signal's. A stationary Gaussian-like sound with the signal's timbre and
    none of its temporal structure beyond what the spectrum implies: the
    bar for a statistic of the waveform's course in time (its loudness
    envelope). ``(n, T, C)``, float64."""
    x = np.asarray(signal, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"spectrally_matched_noise needs one signal (T, C) of at least 2 samples, got shape {x.shape}.")
    spectrum = np.fft.rfft(x, axis=0)
    phases = rng.uniform(0.0, 2 * np.pi, (n,) + spectrum.shape)
    phases[:, 0] = 0.0
    if x.shape[0] % 2 == 0:
        phases[:, -1] = 0.0
    return np.fft.irfft(spectrum[None] * np.exp(1j * phases), n=x.shape[0], axis=1)


def texture_scores(synthesized, reference, observed, filters, *, patch: int, seed: int = 0,
                   to_model: Optional[Callable] = None, with_observed: bool = False,
                   pyramid_levels: Optional[Sequence[int]] = None) -> dict:
    """How near a synthesized texture is to ``reference`` (images, pixels),
    beside two baselines made from the ``observed`` image (``(H, W, C)``,
    what the model learned from): Gaussian white noise of its per-channel
    mean and standard deviation, and its :func:`shuffled_patches` of side
    ``patch``, as many images of each as ``synthesized`` holds, drawn from
    ``numpy.random.default_rng(seed)``. With ``with_observed`` the observed
    image itself is scored too (against held-out ``reference`` tiles: the
    floor, up to the spread between tiles).

    Returns ``{set: {"spectrum": d_s, "gram": d_g}}`` for the sets
    ``"synthesized"``, ``"white_noise"``, ``"shuffled_patches"`` (and
    ``"observed"``): ``d_s`` the :func:`log_spectrum_distance` to
    ``reference``, ``d_g`` the :func:`gram_distance` with ``filters``, both
    sets first mapped by ``to_model`` (e.g. the model's pixel scale, the one
    its filters work on; default: pixels as they are). With
    ``pyramid_levels`` each set's scores also hold ``"pyramid"``: its
    :func:`pyramid_gram_distances` to ``reference`` at those levels (on the
    pixels)."""
    rng = np.random.default_rng(seed)
    synthesized = np.asarray(synthesized, np.float64)
    observed = np.asarray(observed, np.float64)
    if observed.ndim != 3:
        raise ValueError(f"texture_scores: observed must be one image (H, W, C), got shape {observed.shape}.")
    n = synthesized.shape[0]
    sets = {
        "synthesized": synthesized,
        "white_noise": white_noise(observed, (n,) + observed.shape, rng),
        "shuffled_patches": np.stack([shuffled_patches(observed, patch, rng) for _ in range(n)]),
    }
    if with_observed:
        sets["observed"] = observed[None]
    to_model = to_model or (lambda x: x)
    reference_model = to_model(np.asarray(reference, np.float64))
    scores = {name: {"spectrum": log_spectrum_distance(images, reference),
                     "gram": gram_distance(to_model(images), reference_model, filters)}
              for name, images in sets.items()}
    if pyramid_levels:
        reference_grams = pyramid_grams(reference, levels=pyramid_levels)  # once for the three sets
        for name, images in sets.items():
            scores[name]["pyramid"] = _relative_distances(pyramid_grams(images, levels=pyramid_levels),
                                                          reference_grams)
    return scores


# ---------------------------------------------------------------------- reconstruction


def mse(x, y, per_example: bool = False):
    """Mean squared error ``mean (x − y)²``, over everything or per example
    (leading axis)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"mse: shapes differ, {x.shape} vs {y.shape}.")
    sq = (x - y) ** 2
    if per_example:
        return sq.reshape(sq.shape[0], -1).mean(axis=1)
    return float(sq.mean())


def psnr(x, y, data_range: float, per_example: bool = False):
    """Peak signal-to-noise ratio in dB: ``10 log10(R² / mse(x, y))`` with
    ``R = data_range`` (255 for pixels 0..255, 2 for [−1, 1]); ``inf`` for
    identical inputs."""
    if not data_range > 0:
        raise ValueError(f"data_range must be positive (e.g. 255 for pixels 0..255), got {data_range!r}.")
    error = mse(x, y, per_example)
    with np.errstate(divide="ignore"):
        value = 10.0 * np.log10(data_range**2 / np.asarray(error, np.float64))
    return value if per_example else float(value)


# ====================================================================== MCMC diagnostics


def _as_traces(traces) -> np.ndarray:
    traces = np.asarray(traces, np.float64)
    if traces.ndim == 1:
        traces = traces[None]
    if traces.ndim != 2:
        raise ValueError(f"traces must be (n_chains, n_draws), got shape {traces.shape}.")
    if traces.shape[1] < 4:
        raise ValueError(f"traces need at least 4 draws per chain, got {traces.shape[1]}.")
    if not np.all(np.isfinite(traces)):
        raise ValueError("traces hold non-finite values; diagnose the diverged chains first.")
    return traces


def _split_chains(traces: np.ndarray) -> np.ndarray:
    """Each chain's first and second halves as two chains (the middle draw of
    an odd length is dropped)."""
    half = traces.shape[1] // 2
    return np.concatenate([traces[:, :half], traces[:, -half:]], axis=0)


@functools.lru_cache(maxsize=None)
def _blackjax_diagnostics():
    """BlackJAX's ESS and R̂, jitted once: one compiled program per trace
    shape (run eagerly, each of their ops compiles on its own)."""
    from blackjax.diagnostics import effective_sample_size, potential_scale_reduction

    return jax.jit(effective_sample_size), jax.jit(potential_scale_reduction)


def effective_sample_size(traces, split: bool = True) -> float:
    """Effective sample size of ``(n_chains, n_draws)`` traces of one scalar,
    by BlackJAX (:func:`blackjax.diagnostics.effective_sample_size`, Stan's
    estimator), each chain split in two halves by default.

    With ``M`` chains of ``N`` draws the combined autocorrelation (Gelman et
    al., BDA3 §11.5) is ``ρ_t = 1 − (W − mean_m γ_{m,t}) / var⁺``, ``var⁺ =
    (N−1)/N · W + B/N`` (``W`` the mean within-chain variance, ``B/N`` the
    variance of the chain means); Geyer's initial monotone sequence sums it
    to ``τ`` and ``ESS = M N / τ``. Independent draws give ESS ≈ M N; an
    AR(1) chain with coefficient ρ gives ``M N (1 − ρ)/(1 + ρ)``
    (tests/test_metrics.py checks both, and the agreement with a direct
    float64 computation of these formulas).
    """
    traces = _as_traces(traces)
    if split:
        traces = _split_chains(traces)
    if not traces.var() > 0:
        raise ValueError("the traces are constant; their effective sample size is undefined.")
    return float(_blackjax_diagnostics()[0](jnp.asarray(traces, jnp.float32)))


def rhat(traces, split: bool = True) -> float:
    """Potential scale reduction R̂ of ``(n_chains, n_draws)`` traces, by
    BlackJAX (:func:`blackjax.diagnostics.potential_scale_reduction`; split
    R̂ by default: each chain's halves count as two chains, so a drift
    within a chain shows too):

        R̂ = sqrt(var⁺ / W),   var⁺ = (N−1)/N · W + B/N,

    ``W`` the mean within-chain variance, ``B/N`` the variance of the chain
    means. Near 1 when all chains sample one distribution; above ~1.01 they
    have not mixed.
    """
    traces = _as_traces(traces)
    if split:
        traces = _split_chains(traces)
    if traces.shape[0] < 2:
        raise ValueError("R-hat needs at least 2 chains (or split=True with one chain).")
    if not traces.var(axis=1, ddof=1).mean() > 0:
        raise ValueError("the traces are constant within chains; R-hat is undefined.")
    return float(_blackjax_diagnostics()[1](jnp.asarray(traces, jnp.float32)))


# ---------------------------------------------------------------- videos and sounds


def spatiotemporal_power_spectrum(videos: np.ndarray) -> np.ndarray:
    """Mean spatial-temporal power spectrum ``|FFT3(x − mean x)|²`` of videos
    ``(N, T, H, W, C)`` (or of sounds ``(N, T, C)``: the temporal power
    spectrum), averaged over videos and channels: a ``(T, H, W)`` (or
    ``(T,)``) array, frequency 0 first (``numpy.fft`` order).

    By Parseval its sum is ``T·H·W`` times the mean over videos and channels
    of ``Σ (x − mean x)²``. A travelling wave ``cos(2π(k·r − ν t))`` puts its
    power at ``(−ν, k)`` and ``(ν, −k)``.
    """
    x = np.asarray(videos, np.float64)
    if x.ndim not in (3, 5):
        raise ValueError(
            f"spatiotemporal_power_spectrum needs videos (N, T, H, W, C) or sounds (N, T, C), got shape {x.shape}."
        )
    axes = tuple(range(1, x.ndim - 1))
    centred = x - x.mean(axis=axes, keepdims=True)
    power = np.abs(np.fft.fftn(centred, axes=axes)) ** 2
    return power.mean(axis=(0, x.ndim - 1))


def spatiotemporal_spectrum_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of ``log(1 + P)`` between the spatial-temporal
    power spectra (:func:`spatiotemporal_power_spectrum`) of two sets of
    videos (or sounds) of one size: 0 for identical second-order statistics."""
    pa, pb = spatiotemporal_power_spectrum(a), spatiotemporal_power_spectrum(b)
    if pa.shape != pb.shape:
        raise ValueError(f"video sets of different sizes: {pa.shape} vs {pb.shape}.")
    return float(np.mean(np.abs(np.log1p(pa) - np.log1p(pb))))


def loudness_envelope(sounds: np.ndarray, window: int) -> np.ndarray:
    """Each sound's amplitude envelope: the root mean square over
    consecutive windows of ``window`` samples, ``e_j = sqrt(mean_{t in
    window j} s_t²)``, of sounds ``(N, T)`` or ``(N, T, C)`` (channels
    averaged first); a trailing part window is dropped. Returns ``(N, T //
    window)``."""
    x = np.asarray(sounds, np.float64)
    if x.ndim == 3:
        x = x.mean(axis=2)
    if x.ndim != 2:
        raise ValueError(f"loudness_envelope needs sounds (N, T) or (N, T, C), got shape {x.shape}.")
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be at least one sample, got {window}.")
    n_windows = x.shape[1] // window
    return np.sqrt(np.mean(x[:, :n_windows * window].reshape(x.shape[0], n_windows, window) ** 2, axis=2))


def envelope_modulation_spectrum(sounds: np.ndarray, window: int) -> np.ndarray:
    """The modulation spectrum of each sound's amplitude envelope: how its
    loudness varies in time (a trill, a pulse train), which the power
    spectrum of the samples does not show.

    With ``e`` the :func:`loudness_envelope` of ``J`` windows, the
    modulation spectrum is ``P(ν) = |DFT(e − mean e)|²`` at the ``J // 2``
    frequencies ``ν_k = k / (J·window)`` cycles per sample, k = 1..J//2,
    normalised to sum 1: the share of the envelope's variance at each
    modulation frequency (all zeros for a constant envelope, to rounding).
    Returns ``(N, J // 2)``; multiply k by ``rate / (J·window)`` for Hz.
    """
    envelope = loudness_envelope(sounds, window)
    n_windows = envelope.shape[1]
    if n_windows < 4:
        raise ValueError(f"window={window} leaves {n_windows} envelope values of sounds of "
                         f"{np.shape(sounds)[1]} samples; use a window of at most a quarter of the sound.")
    power = np.abs(np.fft.rfft(envelope - envelope.mean(axis=1, keepdims=True), axis=1)[:, 1:n_windows // 2 + 1]) ** 2
    total = power.sum(axis=1, keepdims=True)
    # An envelope constant up to rounding (variance below 1e-20 of its mean
    # square) counts as constant: its rounding errors have no rate.
    steady = total <= 1e-20 * (n_windows * envelope.mean(axis=1, keepdims=True)) ** 2
    return np.divide(power, total, out=np.zeros_like(power), where=~steady)


def modulation_spectrum_distance(a: np.ndarray, b: np.ndarray, window: int) -> float:
    """Total-variation distance ``½ Σ_ν |P_a(ν) − P_b(ν)|`` between the mean
    envelope modulation spectra (:func:`envelope_modulation_spectrum`) of
    two sets of sounds of one length: 0 when their loudness varies at the
    same rates in the same shares, 1 when the shares lie at disjoint rates."""
    pa = envelope_modulation_spectrum(a, window).mean(axis=0)
    pb = envelope_modulation_spectrum(b, window).mean(axis=0)
    if pa.shape != pb.shape:
        raise ValueError(f"sounds of different lengths: {np.shape(a)} vs {np.shape(b)}.")
    return float(0.5 * np.abs(pa - pb).sum())


# ---------------------------------------------------------------------- over seeds


def mean_sd(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """``(mean, sd)`` of one number's values over seeds (or draws): the
    sample standard deviation ``sqrt(Σ (v − mean)² / (n − 1))``, None for a
    single value."""
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_sd needs at least one value.")
    return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)


def format_mean_sd(values: Sequence[float], mean_format: str = ".4g", sd_format: Optional[str] = None) -> str:
    """``"mean ± sd"`` of :func:`mean_sd` (``sd_format`` defaults to
    ``mean_format``); the mean alone for a single value."""
    mean, sd = mean_sd(values)
    sd_format = mean_format if sd_format is None else sd_format
    return f"{mean:{mean_format}}" + ("" if sd is None else f" ± {sd:{sd_format}}")
