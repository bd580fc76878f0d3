"""Metrics for synthesized images.

Texture statistics: the mean spatial power spectrum of a set of images and a
distance between two such spectra. Recovery: the error of filled-in values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["power_spectrum", "log_spectrum_distance", "recovery_error", "spatiotemporal_power_spectrum",
           "spatiotemporal_spectrum_distance"]


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
