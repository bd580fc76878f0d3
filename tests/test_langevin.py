"""Tests of :mod:`gcnjax.langevin` against closed forms.

Statistical tests run many independent chains (vmapped) and look at the
final position of each chain, so the samples are i.i.d. and their standard
errors (SE) are exact textbook ones. Every statistical assertion is
``|estimate - truth| <= Z * SE`` with ``Z = 5`` and the SE computed from the
TRUE distribution and the number of samples, never from the sample at hand.
Where the chain has a known, deterministic deviation from the target (the
discretisation bias of unadjusted Langevin, a finite number of steps), a
"design" assertion computes that deviation in closed form (or on a fine grid)
and checks that it is below 1 SE before the statistical check, so that a
failure really means the sampler is wrong. Keys are fixed, so the tests are
deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from scipy.special import ndtr

from gcnjax import langevin as L
from gcnjax.langevin import (
    ChainDivergedError,
    LangevinConfig,
    LangevinInfo,
    LangevinState,
    coupled_from_delta,
    raise_if_diverged,
    sample,
    temperature,
)

Z = 5.0  # tolerance, in standard errors

# One compiled program per (energy, n_steps, mala, shapes); step_size and
# noise_scale are traced arguments, so sweeping them does not recompile.
SAMPLE_STATIC = ("energy_fn", "n_steps", "mala", "unroll", "clip")
jsample = jax.jit(sample, static_argnames=SAMPLE_STATIC)


@pytest.fixture(scope="module")
def long_jsample(run_optimised_jit):
    """``jsample`` compiled optimised: for the statistical tests, whose
    thousands of chains over hundreds of steps cost more to run than to
    compile (the same numbers either way)."""
    return run_optimised_jit(sample, static_argnames=SAMPLE_STATIC)


# ----------------------------------------------------------------------------
# statistics helpers (float64, on the host)
# ----------------------------------------------------------------------------


def _f64(x):
    return np.asarray(jax.device_get(x), dtype=np.float64)


def _assert_within(est, truth, se, z=Z, what=""):
    est, truth, se = (np.asarray(v, dtype=np.float64) for v in (est, truth, se))
    zs = np.abs(est - truth) / se
    assert np.all(zs <= z), (
        f"{what}: estimate {est} vs truth {truth}; |diff|/SE = {zs} exceeds {z}"
    )


def _mean_se(cov, n):
    """SE of the sample mean of n i.i.d. draws with covariance ``cov``."""
    return np.sqrt(np.diag(cov) / n)


def _cov_se(cov, n):
    """SE of each entry of the sample covariance of n Gaussian draws:
    Var(S_ij) = (C_ij^2 + C_ii C_jj) / (n - 1)."""
    d = np.diag(cov)
    return np.sqrt((cov**2 + np.outer(d, d)) / (n - 1))


# ----------------------------------------------------------------------------
# a clearly correlated 2-D Gaussian: sd 1 and 1.5, correlation 0.8
# ----------------------------------------------------------------------------

SIGMA = np.array([[1.0, 0.8 * 1.0 * 1.5], [0.8 * 1.0 * 1.5, 1.5**2]])
MU = np.array([1.0, -2.0])
PREC = np.linalg.inv(SIGMA)  # A in E = 1/2 (x - mu)^T A (x - mu)
_MU_J = jnp.asarray(MU, jnp.float32)
_PREC_J = jnp.asarray(PREC, jnp.float32)


def gauss_energy(x):
    d = x - _MU_J
    return 0.5 * d @ _PREC_J @ d


def _ula_law_from_point(A, mu, x0, a, b, n):
    """Exact law of the ULA chain x' = x - a A (x - mu) + b xi after n steps
    from the point x0: Gaussian with mean mu + M^n (x0 - mu) and covariance
    C_inf - M^n C_inf M^n^T, M = I - aA, C_inf the stationary covariance."""
    M = np.eye(len(mu)) - a * A
    Mn = np.linalg.matrix_power(M, n)
    C_inf = _ula_stationary_cov(A, a, b)
    return mu + Mn @ (x0 - mu), C_inf - Mn @ C_inf @ Mn.T


def _ula_stationary_cov(A, a, b):
    """Solve the discrete Lyapunov equation C = M C M^T + b^2 I, M = I - aA."""
    d = A.shape[0]
    M = np.eye(d) - a * A
    vecC = np.linalg.solve(np.eye(d * d) - np.kron(M, M), b * b * np.eye(d).ravel())
    return vecC.reshape(d, d)


def _ula_stationary_cov_eig(A, a):
    """Coupled noise b^2 = 2a, in the eigenbasis of A:
    2a / (1 - (1 - a lam)^2) = 1 / (lam (1 - a lam / 2))."""
    lam, V = np.linalg.eigh(A)
    return V @ np.diag(1.0 / (lam * (1.0 - a * lam / 2.0))) @ V.T


@pytest.mark.slow
def test_ula_small_step_matches_correlated_gaussian(long_jsample):
    n_chains, n_steps, a = 10_000, 2500, 0.01
    x0 = np.zeros(2)  # a point mass away from mu: the chains have to mix
    # design: after n_steps at step a, ULA's exact law is within 1 SE of the
    # target (discretisation bias ~ a*lambda_max/2 on the stiff direction, and
    # the memory of x0 decays like (1 - a*lambda_min)^n).
    m_n, C_n = _ula_law_from_point(PREC, MU, x0, a, math.sqrt(2 * a), n_steps)
    se_m, se_C = _mean_se(SIGMA, n_chains), _cov_se(SIGMA, n_chains)
    assert np.all(np.abs(m_n - MU) < se_m) and np.all(np.abs(C_n - SIGMA) < se_C)

    x, info = long_jsample(
        jax.random.key(0), gauss_energy, jnp.zeros((n_chains, 2)), n_steps=n_steps, step_size=a
    )
    x = _f64(x)
    assert bool(jnp.all(info.is_finite))
    _assert_within(x.mean(0), MU, se_m, what="ULA mean")
    _assert_within(np.cov(x.T), SIGMA, se_C, what="ULA covariance")


def test_mala_corrects_ula_bias_at_large_step(long_jsample):
    n_chains, a = 10_000, 0.3  # a * lambda_max(A) ~ 1.1: far from the small-step regime
    # ULA's stationary covariance, by the Lyapunov equation and by the
    # eigenbasis formula 1 / (lam (1 - a lam / 2)).
    C_ula = _ula_stationary_cov(PREC, a, math.sqrt(2 * a))
    np.testing.assert_allclose(C_ula, _ula_stationary_cov_eig(PREC, a), rtol=1e-10)
    se_target = _cov_se(SIGMA, n_chains)
    # design: at this step ULA's bias is large compared with the SE
    assert np.max(np.abs(C_ula - SIGMA) / se_target) > 20

    x0 = jnp.zeros((n_chains, 2))
    key = jax.random.key(1)
    # ULA memory of x0 decays like (1 - a lambda_min)^n = 0.9^200 ~ 1e-9.
    x_ula, info_ula = long_jsample(key, gauss_energy, x0, n_steps=200, step_size=a)
    x_ula = _f64(x_ula)
    assert bool(jnp.all(info_ula.is_finite))
    _assert_within(x_ula.mean(0), MU, _mean_se(C_ula, n_chains), what="ULA mean (large step)")
    cov_ula = np.cov(x_ula.T)
    _assert_within(cov_ula, C_ula, _cov_se(C_ula, n_chains), what="ULA covariance vs closed form")
    assert np.max(np.abs(cov_ula - SIGMA) / se_target) > 10, "ULA should be visibly biased"

    x_mala, info_mala = long_jsample(key, gauss_energy, x0, n_steps=300, step_size=a, mala=True)
    x_mala = _f64(x_mala)
    acc = float(info_mala.acceptance_rate.mean())
    assert 0.3 < acc < 0.95  # the correction is active but the chain moves
    assert bool(jnp.all(info_mala.is_finite))
    _assert_within(x_mala.mean(0), MU, _mean_se(SIGMA, n_chains), what="MALA mean")
    _assert_within(np.cov(x_mala.T), SIGMA, se_target, what="MALA covariance")


# ----------------------------------------------------------------------------
# 1-D mixture of two Gaussians
# ----------------------------------------------------------------------------


def _mixture_energy(w, m, s):
    logw = jnp.log(jnp.asarray(w, jnp.float32))
    mj = jnp.asarray(m, jnp.float32)

    def energy(x):  # x has shape (1,)
        return -logsumexp(logw - 0.5 * ((x[0] - mj) / s) ** 2)

    return energy


def _mixture_grad_np(x, w, m, s):
    lc = np.log(w) - 0.5 * ((x[:, None] - m) / s) ** 2
    r = np.exp(lc - lc.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return (r * (x[:, None] - m) / s**2).sum(1)


def _mixture_truth(w, m, s, mid):
    """P(x < mid), mean, variance and 4th central moment of the mixture."""
    w, m = np.asarray(w), np.asarray(m)
    p_left = float(np.sum(w * ndtr((mid - m) / s)))
    mean = float(np.sum(w * m))
    var = float(np.sum(w * (s * s + m * m)) - mean**2)
    d = m - mean
    mu4 = float(np.sum(w * (d**4 + 6 * d**2 * s**2 + 3 * s**4)))
    return p_left, mean, var, mu4


def _mixture_se(truth, n):
    p, _, var, mu4 = truth
    return np.array([math.sqrt(p * (1 - p) / n), math.sqrt(var / n), math.sqrt((mu4 - var**2) / n)])


def _ula_stationary_stats_1d(grad_np, a, mid, lo, hi, h=0.01):
    """P(x < mid), mean, variance of ULA's stationary law, from the transition
    kernel N(x'; x - a E'(x), 2a) discretised on a fine grid (the kernel's sd
    spans many grid cells, so the quadrature error is negligible)."""
    x = np.arange(lo, hi + h / 2, h)
    b = math.sqrt(2 * a)
    K = np.exp(-0.5 * ((x[None, :] - (x - a * grad_np(x))[:, None]) / b) ** 2)
    K /= K.sum(1, keepdims=True)
    n = len(x)
    lhs = K.T - np.eye(n)
    lhs[-1, :] = 1.0  # replace one (redundant) balance equation by sum(p) = 1
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    p = np.linalg.solve(lhs, rhs)
    mean = float(p @ x)
    return np.array([p @ (x < mid), mean, p @ (x - mean) ** 2])


def _mixture_stats(x, mid):
    x = _f64(x).ravel()
    return np.array([np.mean(x < mid), x.mean(), x.var(ddof=1)])


# Global mixing: the chains start from a broad uniform on [-5, 5] (half of
# them on each side of the midpoint, with the wrong shape), so reaching the
# 0.3 / 0.7 split requires the sampler to carry the right amount of mass across
# the barrier; a chain that does not target the mixture ends elsewhere.
# With sd 0.5 and means +-2 the barrier is ~8 nats and the slowest relaxation
# time of the Langevin diffusion (1 / spectral gap of its generator) is ~370
# time units, out of reach here; with sd 0.8 the modes are still well
# separated (P(x < 0) = 0.3025 vs weight 0.3) and the relaxation time is ~13,
# so both runs below last >= 6 relaxation times and the initial excess of 0.2
# on the left decays below 1e-3, well under the SE of 0.0046.
MIX_W, MIX_M, MIX_S = np.array([0.3, 0.7]), np.array([-2.0, 2.0]), 0.8
mixture_energy = _mixture_energy(MIX_W, MIX_M, MIX_S)


@pytest.mark.parametrize(
    "mala, step_size, n_steps",
    [
        pytest.param(False, 0.04, 2000, marks=pytest.mark.slow),  # ULA, a / sd^2 = 0.06: 80 time units
        (True, 0.3, 500),  # MALA, a / sd^2 = 0.47: ~140 time units (acceptance ~0.93)
    ],
    ids=["ula_small_step", "mala_large_step"],
)
def test_mixture_weights_and_moments(mala, step_size, n_steps, long_jsample):
    n_chains, mid = 10_000, 0.0
    truth = _mixture_truth(MIX_W, MIX_M, MIX_S, mid)
    se = _mixture_se(truth, n_chains)
    if not mala:
        # design: ULA's own stationary law at this step is within 1 SE of the truth
        ula = _ula_stationary_stats_1d(
            lambda x: _mixture_grad_np(x, MIX_W, MIX_M, MIX_S), step_size, mid, -8.0, 8.0
        )
        assert np.all(np.abs(ula - np.array(truth[:3])) < se), ula

    x0 = jax.random.uniform(jax.random.key(10), (n_chains, 1), minval=-5.0, maxval=5.0)
    x, info = long_jsample(
        jax.random.key(11), mixture_energy, x0, n_steps=n_steps, step_size=step_size, mala=mala
    )
    assert bool(jnp.all(info.is_finite))
    _assert_within(
        _mixture_stats(x, mid), truth[:3], se, what="[P(x<0), mean, var] of the mixture"
    )


# Stationarity at a high barrier (sd 0.5, means +-2, barrier ~8 nats): the
# chains start from an exact draw of the mixture. Crossings are then too rare
# to matter, so this checks that the exact distribution is preserved (a wrong
# stationary law, e.g. a wrong noise scale, changes the within-mode spread in
# a few steps) AND that the chains did move (the within-mode deviation from
# the mode forgets its initial value; a chain that stands still would keep a
# correlation of 1 and would trivially "preserve" the distribution).
SEP_W, SEP_M, SEP_S = np.array([0.3, 0.7]), np.array([-2.0, 2.0]), 0.5
separated_energy = _mixture_energy(SEP_W, SEP_M, SEP_S)


@pytest.mark.parametrize(
    "mala, step_size, n_steps",
    [(False, 0.01, 200), (True, 0.1, 100)],  # 8 resp. 40 within-mode relaxation times
    ids=["ula_small_step", "mala_large_step"],
)
def test_mixture_high_barrier_preserved(mala, step_size, n_steps, long_jsample):
    n_chains, mid = 10_000, 0.0
    truth = _mixture_truth(SEP_W, SEP_M, SEP_S, mid)
    se = _mixture_se(truth, n_chains)
    if not mala:
        ula = _ula_stationary_stats_1d(
            lambda x: _mixture_grad_np(x, SEP_W, SEP_M, SEP_S), step_size, mid, -5.0, 5.0
        )
        assert np.all(np.abs(ula - np.array(truth[:3])) < se), ula

    rng = np.random.default_rng(12)
    comp = rng.random(n_chains) < SEP_W[1]
    x0 = np.where(comp, SEP_M[1], SEP_M[0]) + SEP_S * rng.standard_normal(n_chains)
    x, info = long_jsample(
        jax.random.key(13),
        separated_energy,
        jnp.asarray(x0[:, None], jnp.float32),
        n_steps=n_steps,
        step_size=step_size,
        mala=mala,
    )
    assert bool(jnp.all(info.is_finite))
    _assert_within(_mixture_stats(x, mid), truth[:3], se, what="[P(x<0), mean, var]")

    x = _f64(x).ravel()
    mode = np.where(comp, SEP_M[1], SEP_M[0])
    stay = (x > mid) == comp
    assert stay.mean() > 0.99  # crossings are rare at this barrier
    r = np.corrcoef(x0[stay] - mode[stay], x[stay] - mode[stay])[0, 1]
    # for ULA the within-mode autocorrelation after n steps is ~ (1 - a/sd^2)^n ~ 3e-4
    assert abs(r) < Z / math.sqrt(stay.sum()), f"chains did not move: corr {r}"


# ----------------------------------------------------------------------------
# MALA acceptance
# ----------------------------------------------------------------------------


def test_mala_acceptance_decreases_with_step_size():
    n_chains, n_steps = 2000, 50
    steps = jnp.array([0.01, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8])
    # start in stationarity (an exact draw of the target) so every step's
    # acceptance is the stationary one
    rng = np.random.default_rng(20)
    x0 = jnp.asarray(rng.multivariate_normal(MU, SIGMA, size=n_chains), jnp.float32)

    @jax.jit
    def run(a):
        _, info = sample(jax.random.key(21), gauss_energy, x0, n_steps=n_steps, step_size=a, mala=True)
        return info.acceptance_rate, info.is_accepted

    rate, accepted = jax.vmap(run)(steps)
    rate, accepted = _f64(rate), _f64(accepted)
    assert np.all((rate >= 0) & (rate <= 1))
    mean_rate = rate.mean(axis=(1, 2))
    assert np.all(np.diff(mean_rate) < 0), mean_rate
    assert mean_rate[0] > 0.99 and mean_rate[-1] < 0.5, mean_rate
    # is_accepted is Bernoulli(acceptance_rate) given the past, so the mean of
    # the difference has SE sqrt(mean(p (1 - p)) / K)
    k = n_chains * n_steps
    se = np.sqrt(np.maximum((rate * (1 - rate)).mean(axis=(1, 2)), 1e-12) / k)
    _assert_within(accepted.mean(axis=(1, 2)), mean_rate, np.maximum(se, 1.0 / k),
                   what="accept frequency vs acceptance_rate")


# ----------------------------------------------------------------------------
# keys, gradient descent, conventions
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("mala", [False, True])
def test_same_key_same_samples_different_key_different_samples(mala):
    x0 = jnp.zeros((64, 2))
    kw = dict(n_steps=20, step_size=0.1, mala=mala)
    x1, info1 = jsample(jax.random.key(3), gauss_energy, x0, **kw)
    x2, info2 = jsample(jax.random.key(3), gauss_energy, x0, **kw)
    x3, _ = jsample(jax.random.key(4), gauss_energy, x0, **kw)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    for f1, f2 in zip(info1, info2):
        np.testing.assert_array_equal(np.asarray(f1), np.asarray(f2))
    assert np.all(np.asarray(x1) != np.asarray(x3))
    # chains started at the same point get different noise
    assert len(np.unique(np.asarray(x1)[:, 0])) == x0.shape[0]


def test_zero_noise_is_gradient_descent():
    n_steps, a = 30, 0.2
    rng = np.random.default_rng(30)
    x0 = rng.normal(0.0, 3.0, size=(8, 2))
    x, info = jsample(
        jax.random.key(0), gauss_energy, jnp.asarray(x0, jnp.float32),
        n_steps=n_steps, step_size=a, noise_scale=0.0,
    )
    M = np.eye(2) - a * PREC
    # closed-form iterates mu + (I - aA)^k (x0 - mu), k = 0..K, and their energies
    iterates = np.stack([MU + (x0 - MU) @ np.linalg.matrix_power(M, k).T for k in range(0, n_steps + 1)])
    energies = 0.5 * np.einsum("kni,ij,knj->kn", iterates - MU, PREC, iterates - MU)
    np.testing.assert_allclose(_f64(x), iterates[-1], rtol=1e-4, atol=1e-5)
    # unadjusted: info describes the position each step starts from, x_0 .. x_{K-1}
    np.testing.assert_allclose(_f64(info.energy), energies[:-1], rtol=1e-4, atol=1e-6)
    grad_norm = np.linalg.norm((iterates[:-1] - MU) @ PREC, axis=-1)
    np.testing.assert_allclose(_f64(info.grad_norm), grad_norm, rtol=1e-4, atol=1e-6)
    assert np.all(np.diff(_f64(info.energy), axis=0) < 0)  # a < 1/lambda_max: monotone
    assert bool(jnp.all(info.is_accepted)) and bool(jnp.all(info.acceptance_rate == 1))
    # the papers' form without noise: step delta^2 / 2
    cfg = LangevinConfig.from_delta(math.sqrt(2 * a), n_steps, noise=False)
    assert cfg.noise_scale == 0.0
    assert cfg.step_size == pytest.approx(a, rel=1e-12) and cfg.n_steps == n_steps
    x_cfg, _ = jsample(
        jax.random.key(5), gauss_energy, jnp.asarray(x0, jnp.float32),
        n_steps=cfg.n_steps, step_size=cfg.step_size, noise_scale=cfg.noise_scale,
    )
    np.testing.assert_allclose(_f64(x_cfg), iterates[-1], rtol=1e-4, atol=1e-5)


def test_init_and_single_step():
    x = jnp.asarray([0.5, 0.25])
    state = L.init(x, gauss_energy)
    assert isinstance(state, LangevinState)
    d = np.array([0.5, 0.25]) - MU
    np.testing.assert_allclose(float(state.energy), 0.5 * d @ PREC @ d, rtol=1e-6)
    np.testing.assert_allclose(_f64(state.grad), PREC @ d, rtol=1e-6)
    # noise_scale = 0: one deterministic gradient step, state consistent at the new point
    new, info = L.step(jax.random.key(0), state, gauss_energy, 0.1, 0.0)
    assert isinstance(info, LangevinInfo)
    expect = np.array([0.5, 0.25]) - 0.1 * PREC @ d
    np.testing.assert_allclose(_f64(new.position), expect, rtol=1e-6)
    ref = L.init(new.position, gauss_energy)
    np.testing.assert_allclose(float(new.energy), float(ref.energy), rtol=1e-6)
    np.testing.assert_allclose(_f64(new.grad), _f64(ref.grad), rtol=1e-6)
    np.testing.assert_allclose(float(info.grad_norm), np.linalg.norm(_f64(ref.grad)), rtol=1e-6)


def quadratic_energy(x):
    return 0.5 * jnp.sum(x**2)


@pytest.mark.parametrize(
    "a, b, small_step",
    [
        (0.01, 0.1, True),  # T = 0.5: stationary variance 0.5025 ~ T
        (0.5, 0.1, False),  # T = 0.01, stationary variance 0.01333
        (1.5, 1.0, False),  # oscillating regime 1 - a < 0: variance 4/3, T = 1/3
    ],
)
def test_decoupled_stationary_variance(a, b, small_step, long_jsample):
    n_chains, dim, n_steps = 2000, 10, 800  # (1 - a)^(2 n) < 1e-6 for all a above
    k = n_chains * dim  # E = |x|^2 / 2: every coordinate is an independent sample
    var_exact = b**2 / (1.0 - (1.0 - a) ** 2)
    T = temperature(a, b)
    assert T == pytest.approx(b**2 / (2 * a), rel=1e-12)
    se = var_exact * math.sqrt(2.0 / (k - 1))
    x, info = long_jsample(
        jax.random.key(40), quadratic_energy, jnp.zeros((n_chains, dim)),
        n_steps=n_steps, step_size=a, noise_scale=b,
    )
    x = _f64(x).ravel()
    assert bool(jnp.all(info.is_finite))
    _assert_within(x.mean(), 0.0, math.sqrt(var_exact / k), what="mean")
    _assert_within(x.var(ddof=1), var_exact, se, what="variance vs b^2/(1-(1-a)^2)")
    if small_step:
        assert abs(var_exact - T) < se  # design: temperature is the small-step limit
        _assert_within(x.var(ddof=1), T, se, what="variance vs temperature")
    else:
        assert abs(x.var(ddof=1) - T) > 10 * se  # T is only the small-step limit


def test_coupled_default_noise_variance_high_precision(long_jsample):
    # noise_scale=None must be exactly sqrt(2a): on E = |x|^2 / 2 the
    # stationary variance is 2a / (1 - (1 - a)^2) = 1 / (1 - a/2). With 1e5
    # samples the SE is 0.45%, so a noise variance off by a few percent
    # (e.g. 1.9a instead of 2a) is detected.
    n_chains, dim, n_steps, a = 2000, 50, 150, 0.1  # (1 - a)^(2n) ~ 2e-14
    k = n_chains * dim
    var_exact = 1.0 / (1.0 - a / 2.0)
    x, _ = long_jsample(jax.random.key(41), quadratic_energy, jnp.zeros((n_chains, dim)), n_steps=n_steps, step_size=a)
    x = _f64(x).ravel()
    _assert_within(x.var(ddof=1), var_exact, var_exact * math.sqrt(2.0 / (k - 1)), what="variance")


def test_temperature_and_coupled_from_delta():
    assert coupled_from_delta(0.3) == (0.045, 0.3)
    for delta in (0.01, 0.3, 2.0):
        a, b = coupled_from_delta(delta)
        assert a == pytest.approx(delta**2 / 2) and b == delta
        assert temperature(a, b) == pytest.approx(1.0)  # coupled noise: T = 1
    assert temperature(0.1, None) == 1.0
    assert temperature(0.1, math.sqrt(0.2)) == pytest.approx(1.0)
    assert temperature(0.5, 0.1) == pytest.approx(0.01)


@pytest.mark.parametrize("delta", [0.0, -0.3, float("nan"), float("inf")])
def test_coupled_from_delta_rejects_invalid(delta):
    with pytest.raises(ValueError):
        coupled_from_delta(delta)


# ----------------------------------------------------------------------------
# pytree positions
# ----------------------------------------------------------------------------

TREE_MU = {"a": np.array([1.0, -1.0]), "b": np.array([0.5, 0.0, -3.0])}
TREE_SD = {"a": np.array([0.5, 2.0]), "b": np.array([1.0, 0.7, 1.5])}


def tree_energy(pos):
    return sum(
        0.5 * jnp.sum(((pos[k] - TREE_MU[k].astype(np.float32)) / TREE_SD[k].astype(np.float32)) ** 2)
        for k in ("a", "b")
    )


@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_pytree_position_separable_gaussian(mala, long_jsample):
    n_chains, n_steps, a = 10_000, 300, 0.1
    x0 = {"a": jnp.zeros((n_chains, 2)), "b": jnp.zeros((n_chains, 3))}
    x, info = long_jsample(jax.random.key(50), tree_energy, x0, n_steps=n_steps, step_size=a, mala=mala)
    assert set(x) == {"a", "b"} and x["a"].shape == (n_chains, 2) and x["b"].shape == (n_chains, 3)
    assert all(field.shape == (n_steps, n_chains) for field in info)
    assert bool(jnp.all(info.is_finite))
    mu = np.concatenate([TREE_MU["a"], TREE_MU["b"]])
    lam = 1.0 / np.concatenate([TREE_SD["a"], TREE_SD["b"]]) ** 2
    var_target = 1.0 / lam
    # design: the memory of x0 = 0, (1 - a lam)^n |mu| (at most 0.975^300 ~ 5e-4),
    # is far below the SE of each mean
    assert np.all((1 - a * lam) ** n_steps * np.abs(mu) < 0.1 * np.sqrt(var_target / n_chains))
    # MALA targets the Gaussian; ULA has the exact per-coordinate variance
    # 1 / (lam (1 - a lam / 2)) (25% above the target on coordinate a[0])
    var = 1.0 / lam if mala else 1.0 / (lam * (1.0 - a * lam / 2.0))
    xs = np.concatenate([_f64(x["a"]), _f64(x["b"])], axis=1)
    _assert_within(xs.mean(0), mu, np.sqrt(var / n_chains), what="pytree means")
    cov = np.cov(xs.T)
    _assert_within(np.diag(cov), var, var * math.sqrt(2.0 / (n_chains - 1)), what="pytree variances")
    # the noise of different leaves and coordinates is independent
    corr = np.corrcoef(xs.T)[np.triu_indices(5, 1)]
    _assert_within(corr, 0.0, 1.0 / math.sqrt(n_chains), what="cross-correlations")


# ----------------------------------------------------------------------------
# divergence and invalid settings
# ----------------------------------------------------------------------------


def test_divergence_is_reported():
    n_chains, n_steps, a = 16, 100, 10.0  # |1 - a| = 9: the chain blows up
    x0 = jnp.ones((n_chains, 2))
    _, info = jsample(jax.random.key(60), quadratic_energy, x0, n_steps=n_steps, step_size=a)
    finite = np.asarray(info.is_finite)
    assert finite.shape == (n_steps, n_chains)
    assert finite[0].all() and not finite[-1].any()
    with pytest.raises(ChainDivergedError, match=r"step_size=10\.0") as err:
        raise_if_diverged(info, step_size=a)
    assert isinstance(err.value, FloatingPointError)
    assert f"{n_chains} chain(s)" in str(err.value)

    # noise-free: the first non-finite step is that of the float32 recursion;
    # unadjusted, step k checks E(x_k) where it starts and the position x_{k+1}
    _, info_gd = jsample(jax.random.key(0), quadratic_energy, x0, n_steps=n_steps, step_size=a, noise_scale=0.0)
    x, first = np.float32(1.0), None
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(n_steps):
            e = np.float32(0.5) * (x * x + x * x)  # energy of two equal coordinates
            x = np.float32(x - np.float32(a) * x)
            if not (np.isfinite(x) and np.isfinite(e)):
                first = k
                break
    assert first is not None
    np.testing.assert_array_equal(np.asarray(info_gd.is_finite).all(axis=1), np.arange(n_steps) < first)
    with pytest.raises(ChainDivergedError, match=rf"first at step {first}\b"):
        raise_if_diverged(info_gd, step_size=a)

    # finite runs do not raise
    _, ok = jsample(jax.random.key(0), quadratic_energy, x0, n_steps=n_steps, step_size=0.1)
    assert raise_if_diverged(ok, step_size=0.1) is None


def test_mala_stays_finite_at_huge_step():
    x0 = jnp.ones((16, 2))
    x, info = jsample(jax.random.key(61), quadratic_energy, x0, n_steps=100, step_size=10.0, mala=True)
    assert bool(jnp.all(info.is_finite)) and bool(jnp.all(jnp.isfinite(x)))
    assert float(info.acceptance_rate.mean()) < 0.1
    raise_if_diverged(info, step_size=10.0)


def barrier_energy(x):
    # density (1 - x^2) on (-1, 1); NaN energy outside
    return -jnp.sum(jnp.log1p(-(x**2)))


def test_mala_rejects_nonfinite_proposals(long_jsample):
    n_chains, n_steps, a = 4000, 200, 0.05
    x0 = jnp.zeros((n_chains, 1))
    key = jax.random.key(62)
    # the same move without the correction leaves the domain: proposals do go non-finite
    _, info_ula = long_jsample(key, barrier_energy, x0, n_steps=n_steps, step_size=a)
    assert not bool(jnp.all(info_ula.is_finite))
    x, info = long_jsample(key, barrier_energy, x0, n_steps=n_steps, step_size=a, mala=True)
    assert bool(jnp.all(info.is_finite))
    rate = _f64(info.acceptance_rate)
    assert np.all((rate >= 0) & (rate <= 1)), "acceptance_rate must be a probability"
    assert not bool(jnp.all(info.is_accepted))
    x = _f64(x).ravel()
    assert np.all(np.abs(x) < 1)
    # and samples the target: Var = (2/3 - 2/5) / (4/3) = 1/5, E x^4 = 3/35
    var, m4 = 0.2, 3.0 / 35.0
    _assert_within(x.mean(), 0.0, math.sqrt(var / n_chains), what="mean")
    _assert_within(x.var(ddof=1), var, math.sqrt((m4 - var**2) / n_chains), what="variance")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(step_size=0.0),
        dict(step_size=-0.1),
        dict(step_size=float("nan")),
        dict(step_size=float("inf")),
        dict(step_size=0.1, noise_scale=-0.1),
        dict(step_size=0.1, noise_scale=float("nan")),
        dict(step_size=0.1, noise_scale=0.0, mala=True),
        dict(step_size=0.1, mala=True, clip=(-1.0, 1.0)),
        dict(step_size=0.1, n_steps=-1),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_invalid_settings_raise(kwargs):
    kwargs = dict(dict(n_steps=3), **kwargs)
    with pytest.raises(ValueError):
        sample(jax.random.key(0), quadratic_energy, jnp.zeros((4, 2)), **kwargs)
    if "clip" not in kwargs:
        with pytest.raises(ValueError):
            LangevinConfig(**kwargs)


@pytest.mark.parametrize(
    "x0",
    [
        jnp.zeros(()),  # one scalar chain without its chain axis
        {"a": jnp.zeros(2), "b": jnp.zeros(3)},  # one pytree chain without its chain axis
        {"a": jnp.zeros((4, 2)), "b": jnp.zeros((5, 3))},  # chain axes disagree
    ],
    ids=["scalar", "pytree_one_chain", "pytree_mismatch"],
)
def test_x0_without_chain_axis_raises(x0):
    with pytest.raises(ValueError, match="chain axis"):
        sample(jax.random.key(0), tree_energy, x0, n_steps=3, step_size=0.1)


def test_config_rejects_bad_clip():
    with pytest.raises(ValueError):
        LangevinConfig(clip=(1.0, -1.0))


# ----------------------------------------------------------------------------
# info shapes and LangevinConfig
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("mala", [False, True])
def test_info_shapes_and_values(mala):
    # (same settings as the key test, so the compiled program is reused)
    n_chains, n_steps = 64, 20
    x, info = jsample(
        jax.random.key(70), gauss_energy, jnp.zeros((n_chains, 2)),
        n_steps=n_steps, step_size=0.1, mala=mala,
    )
    assert isinstance(info, LangevinInfo)
    for name, field in zip(info._fields, info):
        assert field.shape == (n_steps, n_chains), name
    assert info.is_accepted.dtype == jnp.bool_ and info.is_finite.dtype == jnp.bool_
    # with MALA, energy and grad_norm are those of the returned positions;
    # unadjusted, of the positions the steps started from (the first: x0 = 0;
    # all of them: test_zero_noise_is_gradient_descent)
    d = _f64(x) - MU if mala else np.broadcast_to(-MU, (n_chains, 2))
    row = -1 if mala else 0
    np.testing.assert_allclose(
        _f64(info.energy[row]), 0.5 * np.einsum("ni,ij,nj->n", d, PREC, d), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        _f64(info.grad_norm[row]), np.linalg.norm(d @ PREC, axis=1), rtol=1e-5, atol=1e-6
    )
    if mala:
        assert 0 < float(info.is_accepted.mean()) < 1
    else:
        assert bool(jnp.all(info.is_accepted)) and bool(jnp.all(info.acceptance_rate == 1))


def test_zero_steps():
    x0 = {"a": jnp.zeros((3, 2)), "b": jnp.ones((3, 3))}
    x, info = jsample(jax.random.key(71), tree_energy, x0, n_steps=0, step_size=0.1)
    np.testing.assert_array_equal(np.asarray(x["b"]), np.asarray(x0["b"]))
    assert all(f.shape == (0, 3) for f in info)


@pytest.mark.parametrize("mala", [False, True])
def test_config_from_delta_run_equals_sample(mala):
    delta, n_steps = 0.3, 12
    cfg = LangevinConfig.from_delta(delta, n_steps, mala=mala)
    a, b = coupled_from_delta(delta)
    assert (cfg.step_size, cfg.noise_scale, cfg.n_steps, cfg.mala) == (a, b, n_steps, mala)
    x0 = jnp.zeros((32, 2))
    key = jax.random.key(80)
    x_cfg, info_cfg = cfg.run(key, gauss_energy, x0)
    x_ref, info_ref = sample(key, gauss_energy, x0, n_steps=n_steps, step_size=a, noise_scale=b, mala=mala,
                             unroll=cfg.resolved_unroll)
    np.testing.assert_array_equal(np.asarray(x_cfg), np.asarray(x_ref))
    for f1, f2 in zip(info_cfg, info_ref):
        np.testing.assert_array_equal(np.asarray(f1), np.asarray(f2))


def test_decoupled_mala_targets_exp_minus_energy(long_jsample):
    """A decoupled move (T = b²/(2a) = 0.25) under MALA is only a proposal:
    the chain targets exp(−E), here N(0, 1), not exp(−E/T)."""
    energy = lambda x: 0.5 * jnp.sum(x**2)
    n = 20000
    x, info = long_jsample(jax.random.key(0), energy, jnp.zeros((n, 1)), n_steps=600,
                       step_size=0.5, noise_scale=0.5, mala=True)
    var = float(jnp.var(x))
    assert abs(var - 1.0) < 5 * math.sqrt(2.0 / n) * 1.0  # SE of a sample variance
    assert L.temperature(0.5, 0.5) == pytest.approx(0.25)


def test_temperature_and_config_validate_inputs():
    with pytest.raises(ValueError, match="step_size"):
        L.temperature(0.0, 1.0)
    with pytest.raises(ValueError, match="clip"):
        L.LangevinConfig(n_steps=2, step_size=0.1, mala=True, clip=(-1.0, 1.0))


def _quartic(x):
    return 0.25 * jnp.sum(x**4) + 0.5 * jnp.sum(x**2)


def _assert_same_chain(x, info, x_loop, info_loop, n_steps):
    """The same samples and the same per-step info, step by step, as the
    plain loop, to float rounding."""
    np.testing.assert_allclose(np.asarray(x), np.asarray(x_loop), rtol=1e-6, atol=1e-6)
    for a, b in zip(info, info_loop):
        assert a.shape == b.shape == (n_steps, 6)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)


def _has_loop(fn, x0):
    jaxpr = str(jax.make_jaxpr(fn)(x0))
    return "scan" in jaxpr or "while" in jaxpr


# A non-Gaussian energy with MALA exercises the accept/reject path.
QUARTIC_CHAIN = dict(step_size=0.3, mala=True)


@pytest.mark.parametrize("n_steps", [1, 2, 5])
def test_unrolled_chain_is_the_same_chain(n_steps):
    """``unroll=True`` (and any ``unroll >= n_steps``) gives the plain
    loop's chain; a single step is written out with no loop at all,
    whatever ``unroll`` is."""
    x0 = jax.random.normal(jax.random.key(0), (6, 3))
    kwargs = dict(n_steps=n_steps, **QUARTIC_CHAIN)
    x_loop, info_loop = sample(jax.random.key(1), _quartic, x0, **kwargs)
    assert float(jnp.max(jnp.abs(x_loop - x0))) > 0.1
    for unroll in (True, n_steps, n_steps + 3):
        _assert_same_chain(*sample(jax.random.key(1), _quartic, x0, unroll=unroll, **kwargs), x_loop, info_loop,
                           n_steps)
    for unroll in (1, True):
        # From two steps on the jaxpr holds a scan (XLA unrolls it or not).
        assert _has_loop(lambda x: sample(jax.random.key(1), _quartic, x, unroll=unroll, **kwargs), x0) == (n_steps > 1)


@pytest.mark.parametrize("n_steps,chunk", [(7, 3), (9, 3), (5, 2), (5, 3)])
def test_chunked_chain_is_the_same_chain(n_steps, chunk):
    """A scan over unrolled blocks (plus an unrolled remainder) is only a
    different program for the same chain: same keys, same samples and the
    same per-step info as the plain loop; one block is no loop at all."""
    x0 = jax.random.normal(jax.random.key(0), (6, 3))
    kwargs = dict(n_steps=n_steps, **QUARTIC_CHAIN)
    x_loop, info_loop = sample(jax.random.key(1), _quartic, x0, **kwargs)
    assert float(jnp.max(jnp.abs(x_loop - x0))) > 0.1
    _assert_same_chain(*sample(jax.random.key(1), _quartic, x0, chunk=chunk, **kwargs), x_loop, info_loop, n_steps)
    assert _has_loop(lambda x: sample(jax.random.key(1), _quartic, x, chunk=chunk, **kwargs), x0) == (
        n_steps // chunk > 1)
    config = LangevinConfig(n_steps=n_steps, chunk=chunk, **QUARTIC_CHAIN)
    x_config, _ = config.run(jax.random.key(1), _quartic, x0)
    np.testing.assert_allclose(np.asarray(x_config), np.asarray(x_loop), rtol=1e-6, atol=1e-6)
    assert LangevinConfig.from_dict(dataclasses.asdict(config)) == config


def test_config_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk"):
        LangevinConfig(n_steps=10, chunk=0)
    with pytest.raises(ValueError, match="chunk"):
        sample(jax.random.key(0), lambda x: jnp.sum(x**2), jnp.zeros((2, 1)), n_steps=3, step_size=0.1, chunk=0)


@pytest.mark.parametrize("mala,chain_batch", [(False, 1), (False, 2), pytest.param(True, 4, marks=pytest.mark.slow)])
def test_chains_in_groups_are_the_same_chains(mala, chain_batch):
    # Computing the chains in groups (a loop over vmapped groups; 6 chains in
    # groups of 4 leave a remainder) changes the program, not the chains:
    # same keys, same samples and per-step info as one vmap over all.
    energy = lambda x: 0.25 * jnp.sum(x**4) + 0.5 * jnp.sum(x**2)
    x0 = jax.random.normal(jax.random.key(0), (6, 3))
    kwargs = dict(n_steps=5, step_size=0.3, mala=mala)
    x_all, info_all = sample(jax.random.key(1), energy, x0, **kwargs)
    x_grouped, info_grouped = sample(jax.random.key(1), energy, x0, chain_batch=chain_batch, **kwargs)
    np.testing.assert_allclose(np.asarray(x_grouped), np.asarray(x_all), rtol=1e-6, atol=1e-6)
    for a, b in zip(info_grouped, info_all):
        assert a.shape == b.shape == (5, 6)
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(x_all - x0))) > 0.1
    config = LangevinConfig(n_steps=5, step_size=0.3, mala=mala, chain_batch=chain_batch)
    assert LangevinConfig.from_dict(dataclasses.asdict(config)) == config
    x_config, _ = config.run(jax.random.key(1), energy, x0)
    np.testing.assert_allclose(np.asarray(x_config), np.asarray(x_all), rtol=1e-6, atol=1e-6)


def test_config_rejects_bad_chain_batch():
    with pytest.raises(ValueError, match="chain_batch"):
        LangevinConfig(n_steps=10, chain_batch=0)
    with pytest.raises(ValueError, match="chain_batch"):
        sample(jax.random.key(0), lambda x: jnp.sum(x**2), jnp.zeros((2, 1)), n_steps=3, step_size=0.1, chain_batch=-1)
