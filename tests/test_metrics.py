"""Texture metrics against direct computations."""

import numpy as np
import pytest

from gcnjax import metrics


def test_power_spectrum_parseval_and_sinusoid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16, 12, 2))
    p = metrics.power_spectrum(x)
    centred = x - x.mean(axis=(1, 2), keepdims=True)
    assert p.sum() == pytest.approx(16 * 12 * np.mean(np.sum(centred**2, axis=(1, 2))), rel=1e-10)
    # a pure horizontal sinusoid of 3 cycles puts all its power at (0, ±3)
    cols = np.cos(2 * np.pi * 3 * np.arange(12) / 12)
    wave = np.tile(cols, (16, 1))[None, ..., None]
    pw = metrics.power_spectrum(wave)
    assert pw[0, 3] == pytest.approx(pw[0, 9]) and pw[0, 3] == pytest.approx((16 * 12 / 2) ** 2)
    assert pw.sum() == pytest.approx(2 * pw[0, 3])


def test_log_spectrum_distance():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 16, 16, 1))
    assert metrics.log_spectrum_distance(a, a) == 0.0
    smooth = (a + np.roll(a, 1, axis=1) + np.roll(a, 1, axis=2)) / 3
    other = rng.normal(size=(4, 16, 16, 1))
    # white noise against white noise is closer than white noise against smoothed noise
    assert metrics.log_spectrum_distance(a, other) < metrics.log_spectrum_distance(a, smooth)
    with pytest.raises(ValueError, match="different sizes"):
        metrics.log_spectrum_distance(a, a[:, :8])
