"""The generator (alternating back-propagation): inference against the
closed-form Gaussian posterior of a linear generator, masking, learning the
principal subspace, the training step's compile and warm-start contracts,
the nets, and the config."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gcnjax import generator as G
from gcnjax import nets
from gcnjax.langevin import LangevinConfig
from gcnjax.train import RunConfig, TrainingDiverged, fit
from gcnjax.nets import init_params


class LinearG(nn.Module):
    """g(z) = W z + b (Dense: kernel = Wᵀ)."""

    out_dim: int

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.out_dim, name="linear")(z)


def linear_params(W, b):
    return {"params": {"linear": {"kernel": jnp.asarray(W.T, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}}}


def posterior(W, b, x, sigma, m=None):
    """Closed form of p(z | x) for g(z) = Wz + b, z ~ N(0, I), x = g(z) + N(0, σ²I)
    observed where m = 1: precision H = WᵀMW/σ² + I, mean H⁻¹WᵀM(x − b)/σ²."""
    M = np.eye(len(b)) if m is None else np.diag(np.asarray(m, np.float64) ** 2)
    H = W.T @ M @ W / sigma**2 + np.eye(W.shape[1])
    mean = np.linalg.solve(H, W.T @ M @ (np.asarray(x, np.float64) - b) / sigma**2)
    return mean, H


def small_problem(seed=0, D=8, d=3, scale=0.4):
    rng = np.random.default_rng(seed)
    W = rng.normal(0, scale, (D, d))
    b = rng.normal(0, 0.5, D)
    return W, b, rng


# ---------------------------------------------------------------- inference


def test_one_step_is_the_papers_update():
    """z ← z + (δ²/2)[(1/σ²) Wᵀ(x − Wz − b) − z] (noise off), in numpy."""
    W, b, rng = small_problem()
    sigma, delta = 0.5, 0.2
    x = rng.normal(size=(4, 8))
    z0 = rng.normal(size=(4, 3))
    z1, info = G.infer(jax.random.key(0), LinearG(8).apply, linear_params(W, b), x, z0,
                       sigma=sigma, sampler=LangevinConfig.from_delta(delta, 1, noise=False))
    expected = z0 + 0.5 * delta**2 * ((x - z0 @ W.T - b) @ W / sigma**2 - z0)
    np.testing.assert_allclose(np.asarray(z1), expected, rtol=1e-5, atol=1e-6)
    assert info.energy.shape == (1, 4)


def test_gradient_descent_reaches_the_posterior_mode():
    """Noise off: z → z* = (WᵀW/σ² + I)⁻¹ Wᵀ(x − b)/σ², for every example."""
    W, b, rng = small_problem()
    sigma = 0.5
    x = rng.normal(size=(5, 8))
    _, H = posterior(W, b, x[0], sigma)
    eig = np.linalg.eigvalsh(H)
    # Step a = 1/λmax contracts the error by (1 − λmin/λmax) per step.
    a = 1.0 / eig[-1]
    n_steps = int(np.ceil(np.log(1e-8) / np.log(1 - eig[0] / eig[-1])))
    sampler = LangevinConfig.from_delta(np.sqrt(2 * a), n_steps, noise=False)
    infer = jax.jit(G.infer, static_argnames=("apply_fn", "sampler"))
    z, info = infer(jax.random.key(0), LinearG(8).apply, linear_params(W, b), x, np.zeros((5, 3)),
                    sigma=sigma, sampler=sampler)
    expected = np.stack([posterior(W, b, xi, sigma)[0] for xi in x])
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-4, atol=1e-5)
    assert bool(np.all(info.is_finite))


def test_prior_weight_zero_descends_to_the_least_squares_fit():
    """λ = 0, noise off: z → argmin ||x − Wz − b||² = W⁺(x − b), numpy's
    lstsq, which differs from the posterior mode (the prior's shrinkage)."""
    W, b, rng = small_problem(seed=2)
    sigma = 0.5
    x = rng.normal(size=(4, 8))
    eig = np.linalg.eigvalsh(W.T @ W / sigma**2)
    a = 1.0 / eig[-1]
    n_steps = int(np.ceil(np.log(1e-8) / np.log(1 - eig[0] / eig[-1])))
    sampler = LangevinConfig.from_delta(np.sqrt(2 * a), n_steps, noise=False)
    z, _ = G.infer(jax.random.key(0), LinearG(8).apply, linear_params(W, b), x, np.zeros((4, 3)),
                   sigma=sigma, sampler=sampler, prior_weight=0.0)
    expected = np.linalg.lstsq(W, (x - b).T, rcond=None)[0].T
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-4, atol=1e-5)
    mode = np.stack([posterior(W, b, xi, sigma)[0] for xi in x])
    assert np.abs(expected - mode).max() > 0.05


def test_reconstruct_from_observed_pixels_is_the_masked_posterior_mode():
    """With a mask, z* uses only observed pixels and g(z*) fills in the rest."""
    W, b, rng = small_problem(seed=1)
    sigma = 0.5
    x = rng.normal(size=(3, 8))
    mask = (rng.uniform(size=(3, 8)) < 0.6).astype(np.float32)
    mask[:, 0] = 1.0
    H_max = max(np.linalg.eigvalsh(posterior(W, b, xi, sigma, mi)[1])[-1] for xi, mi in zip(x, mask))
    config = G.GeneratorConfig(latent_dim=3, sigma=sigma, latent_init="zeros",
                               langevin=LangevinConfig(n_steps=300, step_size=1.0 / H_max, noise_scale=0.0))
    x_hat, z = G.reconstruct(jax.random.key(0), LinearG(8).apply, linear_params(W, b), x, config=config, mask=mask)
    z_star = np.stack([posterior(W, b, xi, sigma, mi)[0] for xi, mi in zip(x, mask)])
    np.testing.assert_allclose(np.asarray(z), z_star, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(x_hat), z_star @ W.T + b, rtol=1e-4, atol=1e-5)
    # Differs from the unmasked mode: the mask mattered.
    z_full = np.stack([posterior(W, b, xi, sigma)[0] for xi in x])
    assert np.abs(z_star - z_full).max() > 0.05


@pytest.mark.parametrize("mala", [True, False])
def test_langevin_samples_have_the_posterior_mean_and_covariance(mala, run_optimised_jit):
    """Many chains for one x: mean H⁻¹Wᵀ(x − b)/σ², covariance
    H⁻¹ (MALA, exact) or the unadjusted chain's V diag(2/(λ(2 − aλ))) Vᵀ
    (z' = (I − aH)z + … + sqrt(2a)ξ; eigenpairs (λ, V) of H)."""
    rng = np.random.default_rng(3)
    D, d, sigma = 5, 2, 0.5
    W = rng.normal(0, 0.5, (D, d))
    W[:, 1] = 0.9 * W[:, 0] + 0.15 * rng.normal(size=D)  # correlated, anisotropic posterior
    b = rng.normal(0, 0.5, D)
    x = rng.normal(size=D)
    mean, H = posterior(W, b, x, sigma)
    lam, V = np.linalg.eigh(H)
    a = 0.5 / lam[-1]
    n_chains = 4000
    n_steps = int(np.ceil(np.log(1e-6) / np.log(1 - a * lam[0])))
    sampler = LangevinConfig.from_delta(np.sqrt(2 * a), n_steps, mala=mala)
    infer = run_optimised_jit(G.infer, static_argnames=("apply_fn", "sampler"))
    z, info = infer(jax.random.key(7), LinearG(D).apply, linear_params(W, b), np.tile(x, (n_chains, 1)),
                    np.zeros((n_chains, d)), sigma=sigma, sampler=sampler)
    z = np.asarray(z, np.float64)
    cov = np.linalg.inv(H) if mala else V @ np.diag(2.0 / (lam * (2 - a * lam))) @ V.T
    # Independent chains: standard errors of the sample mean and covariance.
    se_mean = np.sqrt(np.diag(cov) / n_chains)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n_chains)
    np.testing.assert_array_less(np.abs(z.mean(0) - mean), 5 * se_mean)
    np.testing.assert_array_less(np.abs(np.cov(z.T) - cov), 5 * se_cov)
    if mala:
        assert float(np.mean(info.acceptance_rate)) > 0.5
    else:  # the unadjusted chain's bias is real at this step: its largest eigenvalue's variance is 4/3 of exact
        v_min = V[:, -1]
        assert v_min @ np.cov(z.T) @ v_min > 1.15 / lam[-1]


@pytest.mark.slow
def test_masked_pixels_are_ignored_exactly():
    """Changing x where m = 0 (even to NaN or inf) leaves z bit-identical."""
    net = nets.GeneratorNet(start=(2, 2), channels=(4, 3, 1), kernel=3, init_std=0.5)
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 3)))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 8, 8, 1)).astype(np.float32)
    mask = (rng.uniform(size=x.shape) < 0.5).astype(np.float32)
    z0 = rng.normal(size=(3, 3)).astype(np.float32)
    sampler = LangevinConfig.from_delta(0.1, 10)
    garbage = rng.choice(np.array([1e6, -3.0, np.nan, np.inf], np.float32), size=x.shape)
    x_changed = np.where(mask == 1, x, garbage)

    infer = jax.jit(G.infer, static_argnames=("apply_fn", "sampler"))

    def run(x, mask):
        return np.asarray(infer(jax.random.key(5), net.apply, params, x, z0, sigma=0.3, sampler=sampler,
                                mask=mask)[0])

    z = run(x, mask)
    assert np.all(np.isfinite(z))
    np.testing.assert_array_equal(run(x_changed, mask), z)
    # An observed pixel does matter.
    observed = tuple(np.argwhere(mask == 1)[0])
    x_obs_changed = x.copy()
    x_obs_changed[observed] += 0.5
    assert not np.array_equal(run(x_obs_changed, mask), z)
    # A mask shared by all examples broadcasts.
    shared = mask[0]
    np.testing.assert_array_equal(run(np.where(shared == 1, x, garbage), shared), run(x, shared))


# ---------------------------------------------------------------- learning


def test_abp_learns_the_principal_subspace():
    """x = A z + small noise in 10-D, rank 2: a linear generator learned by
    ABP spans the top-2 principal subspace of the data (the ML solution of
    probabilistic PCA spans it for any σ² below the 2nd eigenvalue)."""
    rng = np.random.default_rng(0)
    D, d, n = 10, 2, 500
    Q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    A = Q[:, :d] * np.array([2.0, 1.0])
    mu = rng.normal(0, 0.5, D)
    data = (rng.normal(size=(n, d)) @ A.T + mu + 0.05 * rng.normal(size=(n, D))).astype(np.float32)
    centered = data - data.mean(0)
    pcs = np.linalg.svd(centered, full_matrices=False)[2][:d].T

    config = G.GeneratorConfig(latent_dim=d, sigma=0.2, langevin=LangevinConfig.from_delta(0.1, 20),
                               optimizer="adam", learning_rate=0.02, beta1=0.9, batch_size=100, n_epochs=60)
    net = LinearG(D)
    state = G.init_state(jax.random.key(0), config, net, n, (D,))
    W0 = np.asarray(state.params["params"]["linear"]["kernel"]).T
    step = G.make_train_step(config, net.apply, G.make_optimizer(config))
    batches = G.make_batches(data, config.batch_size, seed=config.seed)
    for i in range(config.total_iterations(n)):
        state, metrics = step(state, batches(i))
    assert int(metrics["diverged"]) == 0
    W = np.asarray(state.params["params"]["linear"]["kernel"]).T
    cosines = np.cos(scipy.linalg.subspace_angles(W, pcs))
    assert cosines.min() > 0.99, cosines
    assert np.cos(scipy.linalg.subspace_angles(W0, pcs)).min() < 0.9  # it was learned, not given
    # Off the learned subspace the bias is the data mean (within it, b trades
    # against the mean of the latents, a slow direction of the learning).
    off_subspace = np.eye(D) - W @ np.linalg.pinv(W)
    bias = np.asarray(state.params["params"]["linear"]["bias"])
    np.testing.assert_allclose(off_subspace @ (bias - data.mean(0)), 0.0, atol=0.03)
    # Reconstructions from posterior samples: noise floor 0.05² plus the
    # posterior spread σ² d / D = 0.008, about 0.0105 in all.
    assert float(metrics["mse"]) < 0.02


def test_train_step_traced_once_per_shape():
    traces = {"n": 0}
    net = LinearG(6)

    def counting_apply(params, z):
        traces["n"] += 1  # runs only while jax traces
        return net.apply(params, z)

    config = G.GeneratorConfig(latent_dim=2, sigma=0.5, langevin=LangevinConfig.from_delta(0.1, 3), batch_size=4)
    state = G.init_state(jax.random.key(0), config, net, 12, (6,))
    step = G.make_train_step(config, counting_apply, G.make_optimizer(config))
    x = np.ones((12, 6), np.float32)
    state, _ = step(state, (jnp.arange(4), x[:4], None))
    after_first = traces["n"]
    assert after_first > 0
    for i in range(1, 3):
        state, _ = step(state, (jnp.arange(4 * i, 4 * i + 4), x[:4] + i, None))
    assert traces["n"] == after_first, "the step was traced again for the same shapes"
    state, _ = step(state, (jnp.arange(6), x[:6], None))
    assert traces["n"] == 2 * after_first, "a new batch shape traces exactly once more"


def test_latents_are_warm_started_and_written_back():
    """The chains start at state.latents[indices]: one noise-free step gives
    z_old + a[(Wᵀ(x − W z_old − b))/σ² − z_old] at those rows; the others
    are untouched."""
    W, b, rng = small_problem(seed=2)
    sigma, a = 0.5, 0.05
    n = 10
    config = G.GeneratorConfig(latent_dim=3, sigma=sigma, optimizer="sgd", learning_rate=0.1,
                               langevin=LangevinConfig(n_steps=1, step_size=a, noise_scale=0.0))
    net = LinearG(8)
    state = G.init_state(jax.random.key(0), config, net, n, (8,))
    state = state._replace(params=linear_params(W, b))
    z_old = np.asarray(state.latents).copy()
    data = rng.normal(size=(n, 8)).astype(np.float32)
    indices = np.array([1, 4, 7])
    step = G.make_train_step(config, net.apply, G.make_optimizer(config))
    new, metrics = step(state, (jnp.asarray(indices), data[indices], None))
    z_new = np.asarray(new.latents)
    zi = z_old[indices]
    expected = zi + a * ((data[indices] - zi @ W.T - b) @ W / sigma**2 - zi)
    np.testing.assert_allclose(z_new[indices], expected, rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(n), indices)
    np.testing.assert_array_equal(z_new[others], z_old[others])
    assert int(new.step) == 1
    # Metrics at the inferred z with θ before the update, in closed form.
    r = data[indices] - expected @ W.T - b
    np.testing.assert_allclose(float(metrics["mse"]), np.mean(r**2), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["latent_energy"]),
                               np.mean(np.sum(r**2, 1) / (2 * sigma**2) + np.sum(expected**2, 1) / 2), rtol=1e-5)
    assert int(metrics["diverged"]) == 0


def test_fit_runs_the_step_and_reports_divergence():
    W, b, rng = small_problem(seed=4)
    data = rng.normal(size=(12, 8)).astype(np.float32)
    net = LinearG(8)
    config = G.GeneratorConfig(latent_dim=3, sigma=0.5, langevin=LangevinConfig.from_delta(0.1, 5), batch_size=5,
                               n_epochs=2)
    state = G.init_state(jax.random.key(0), config, net, 12, (8,))
    step = G.make_train_step(config, net.apply, G.make_optimizer(config))
    end = config.total_iterations(12)
    assert end == 6
    state, history = fit(step, state, G.make_batches(data, 5, mask=np.ones_like(data)), end=end,
                         run=RunConfig(log_every=1), quiet=True)
    assert [row["iteration"] for row in history] == list(range(1, end + 1))
    assert all(np.isfinite(row["loss"]) and row["diverged"] == 0 for row in history)

    bad = dataclasses.replace(config, langevin=LangevinConfig(n_steps=50, step_size=50.0))
    state = G.init_state(jax.random.key(0), bad, net, 12, (8,))
    step = G.make_train_step(bad, net.apply, G.make_optimizer(bad))
    with pytest.raises(TrainingDiverged, match="step_size=50.0"):
        fit(step, state, G.make_batches(data, 5), end=2, run=RunConfig(log_every=1), quiet=True, step_size=50.0)


def test_make_batches_visits_every_example_each_epoch():
    x = np.arange(10, dtype=np.float32)[:, None]
    batches = G.make_batches(x, 4, seed=3)
    per_epoch = G.iterations_per_epoch(10, 4)
    assert per_epoch == 3
    for epoch in range(2):
        seen = set()
        for j in range(per_epoch):
            idx, xb, m = batches(epoch * per_epoch + j)
            assert idx.shape == (4,) and len(set(np.asarray(idx).tolist())) == 4 and m is None
            np.testing.assert_array_equal(np.asarray(xb)[:, 0], np.asarray(idx))
            seen |= set(np.asarray(idx).tolist())
        assert seen == set(range(10))


def test_sample_has_the_model_mean_and_covariance():
    """g(z), z ~ N(0, I), for a linear g: mean b, covariance WWᵀ."""
    W, b, _ = small_problem(seed=5, D=4, d=2, scale=1.0)
    n = 20000
    x = np.asarray(G.sample(jax.random.key(0), LinearG(4).apply, linear_params(W, b), n, 2), np.float64)
    cov = W @ W.T
    se_mean = np.sqrt(np.diag(cov) / n)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - b), 5 * se_mean)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), 5 * se_cov + 1e-9)


# ---------------------------------------------------------------- nets and config


@pytest.mark.parametrize("make, shape", [
    (nets.face_generator, (64, 64, 3)),
    (nets.digit_generator, (28, 28, 1)),
    (nets.sound_generator, (1024, 1)),
])
def test_generator_presets_shapes_and_tanh_range(make, shape):
    net = make()
    z = jax.random.normal(jax.random.key(1), (2, 16))
    params = jax.jit(net.init)(jax.random.key(0), z[:1])
    apply = jax.jit(net.apply)
    out = apply(params, z)
    assert out.shape == (2,) + shape == (2,) + net.output_shape()
    assert out.dtype == jnp.float32
    # Large weights drive tanh into saturation; the output still stays in [−1, 1].
    big = jax.tree_util.tree_map(lambda p: 50.0 * p, params)
    out = np.asarray(apply(big, z))
    assert np.all(np.abs(out) <= 1.0) and np.abs(out).max() > 0.99


def test_generator_net_layer_norm_is_per_example():
    net = nets.digit_generator(norm="layer")
    z = jax.random.normal(jax.random.key(1), (3, 8))
    params = init_params(net, jax.random.key(0), z)
    together = np.asarray(net.apply(params, z))
    alone = np.asarray(net.apply(params, z[1:2]))
    np.testing.assert_allclose(together[1:2], alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="norm must be one of"):
        nets.GeneratorNet(norm="group").init(jax.random.key(0), z)


@pytest.mark.parametrize("field, value", [
    ("latent_dim", 0), ("latent_dim", -3), ("sigma", 0.0), ("sigma", -0.3), ("sigma", float("nan")),
    ("learning_rate", float("nan")), ("learning_rate", float("inf")), ("learning_rate", 0.0),
    ("optimizer", "rmsprop"), ("batch_size", 0), ("n_epochs", 0), ("beta1", 1.0), ("latent_init", "uniform"),
    ("langevin", {"n_steps": 3}), ("max_grad_norm", 0.0), ("max_grad_norm", float("inf")),
    ("learning_rate_decay", "exponential"), ("learning_rate_decay_to", 1.5), ("learning_rate_decay_to", -0.1),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        G.GeneratorConfig(**{field: value})


def test_max_grad_norm_scales_a_larger_gradient_to_that_norm():
    # Plain SGD makes the update readable: -lr · g · min(1, c / ||g||), over all leaves together.
    grads = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}  # global norm 5
    for clip, scale in ((None, 1.0), (10.0, 1.0), (2.5, 0.5)):
        optimizer = G.make_optimizer(G.GeneratorConfig(optimizer="sgd", learning_rate=0.1, max_grad_norm=clip))
        updates, _ = optimizer.update(grads, optimizer.init(grads))
        for name in grads:
            np.testing.assert_allclose(updates[name], -0.1 * scale * grads[name], rtol=1e-6)


def test_adam_update_follows_its_bias_corrected_moments_with_beta2():
    # A gradient, then one three times larger (a spike): the second step is
    # -lr · m̂ / (sqrt(v̂) + eps), m̂ = m / (1 - b1²), v̂ = v / (1 - b2²), from the moments' recursions.
    g1, g2 = np.array([0.2, -1.0]), np.array([0.6, -3.0])
    for b2 in (0.999, 0.99):
        config = G.GeneratorConfig(learning_rate=0.1, beta1=0.5, beta2=b2)
        optimizer = G.make_optimizer(config)
        state = optimizer.init(jnp.zeros(2))
        _, state = optimizer.update(jnp.asarray(g1), state)
        update, _ = optimizer.update(jnp.asarray(g2), state)
        m = 0.5 * (0.5 * g1) + 0.5 * g2
        v = b2 * (1 - b2) * g1 ** 2 + (1 - b2) * g2 ** 2
        expected = -0.1 * (m / (1 - 0.5 ** 2)) / (np.sqrt(v / (1 - b2 ** 2)) + 1e-8)
        np.testing.assert_allclose(update, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="beta2"):
        G.GeneratorConfig(beta2=1.0)


@pytest.mark.parametrize("decay, expected", [
    ("cosine", lambda t, T, a: a + (1 - a) * 0.5 * (1 + np.cos(np.pi * t / T))),
    ("linear", lambda t, T, a: a + (1 - a) * (1 - t / T)),
])
def test_learning_rate_decays_over_the_runs_iterations(decay, expected):
    # Plain SGD with a gradient of 1 moves by -lr_t; T is the run's length for
    # its training set: 2 epochs of ceil(12 / 5) = 3 batches.
    config = G.GeneratorConfig(optimizer="sgd", learning_rate=0.2, learning_rate_decay=decay,
                               learning_rate_decay_to=0.1, batch_size=5, n_epochs=2)
    total = config.total_iterations(12)
    assert total == 6
    optimizer = G.make_optimizer(config, 12)
    state = optimizer.init(jnp.zeros(()))
    moves = []
    for _ in range(total + 2):
        update, state = optimizer.update(jnp.ones(()), state)
        moves.append(-float(update))
    t = np.minimum(np.arange(total + 2), total)
    np.testing.assert_allclose(moves, 0.2 * expected(t, total, 0.1), rtol=1e-5)
    with pytest.raises(ValueError, match="n_examples"):
        G.make_optimizer(config)


def test_draws_from_the_fitted_latent_gaussian_have_its_moments():
    # Latents of a known Gaussian (rank 2 in d = 3: singular), fitted, then drawn through g(z) = A z + b:
    # the draws' mean is A μ̂ + b and their covariance A Σ̂ Aᵀ (Σ̂, μ̂ from numpy on the same latents).
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(400, 2)) @ np.array([[3.0, 0.0, 1.0], [0.0, 0.5, -1.0]]) + np.array([5.0, -2.0, 0.0])
    mean, factor = G.fitted_latent_gaussian(latents)
    np.testing.assert_allclose(mean, latents.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(factor @ factor.T, np.cov(latents, rowvar=False), atol=1e-9)
    A, b = rng.normal(size=(4, 3)), rng.normal(size=4)
    apply_fn = lambda params, z: z @ params["A"].T + params["b"]
    n = 40000
    x = np.asarray(G.sample(jax.random.key(1), apply_fn, {"A": jnp.asarray(A, jnp.float32), "b": jnp.asarray(b, jnp.float32)},
                            n, 3, (mean, factor)), np.float64)
    target = A @ np.cov(latents, rowvar=False) @ A.T
    se = np.sqrt(np.diag(target) / n)
    assert np.all(np.abs(x.mean(axis=0) - (A @ mean + b)) < 4 * se)
    np.testing.assert_allclose(np.cov(x, rowvar=False), target, atol=0.05 * np.abs(target).max())
    with pytest.raises(ValueError, match="latents"):
        G.fitted_latent_gaussian(np.ones((1, 3)))
    with pytest.raises(ValueError, match="latent_gaussian"):
        G.sample(jax.random.key(0), apply_fn, {"A": A, "b": b}, 2, 3, (mean[:2], factor))


def test_config_round_trips_through_json():
    config = G.GeneratorConfig(latent_dim=7, langevin=LangevinConfig.from_delta(0.2, 12, mala=True),
                               max_grad_norm=1.5, run=RunConfig(log_every=3))
    assert G.GeneratorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_bad_inputs_name_the_fix():
    net = LinearG(6)
    config = G.GeneratorConfig(latent_dim=2)
    with pytest.raises(ValueError, match="shape"):
        G.init_state(jax.random.key(0), config, net, 5, (7,))
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="mask"):
        G.infer(jax.random.key(0), net.apply, params, jnp.zeros((3, 6)), jnp.zeros((3, 2)), sigma=0.3,
                sampler=config.langevin, mask=jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="z0"):
        G.infer(jax.random.key(0), net.apply, params, jnp.zeros((3, 6)), jnp.zeros((2, 2)), sigma=0.3,
                sampler=config.langevin)
    with pytest.raises(ValueError, match="sigma"):
        G.infer(jax.random.key(0), net.apply, params, jnp.zeros((3, 6)), jnp.zeros((3, 2)), sigma=0.0,
                sampler=config.langevin)


def test_curvature_ratio_of_a_linear_generator_is_its_top_eigenvalue():
    # g(z) = W z + b: J = W at every z, so s = a · (λmax(WᵀW)/σ² + 1) (experiments/abp_spikes.py).
    from experiments.abp_spikes import curvature_ratio

    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(6, 3)), rng.normal(size=6)
    expected = 0.01 * (np.linalg.eigvalsh(W.T @ W)[-1] / 0.3 ** 2 + 1)
    s = curvature_ratio(LinearG(6), linear_params(W, b), jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                        sigma=0.3, step_size=0.01, iterations=100)
    np.testing.assert_allclose(np.asarray(s), expected, rtol=1e-4)
