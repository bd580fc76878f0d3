"""The descriptor: energy, learning step, optimizer extras, theory check."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax import langevin
from gcnjax.nets import ConvSpec, DescriptorNet, layer_output_sizes, receptive_field
from gcnjax.train import RunConfig, fit
from gcnjax.nets import init_params

SMALL_LAYERS = (ConvSpec(4, 3, 2), ConvSpec(3, 3, 1))


class LinearF(nn.Module):
    """f(x) = <w, x>: with a N(0, σ²I) reference the model is N(σ²w, σ²I)."""

    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.zeros, x.shape[1:])
        return jnp.sum(x * w, axis=tuple(range(1, x.ndim)))


def small_config(**kw):
    base = dict(
        layers=SMALL_LAYERS, image_size=(12, 12), channels=1, n_chains=3,
        langevin=langevin.LangevinConfig.from_delta(0.3, 3), learning_rate=1e-3,
    )
    base.update(kw)
    return D.DescriptorConfig(**base)


def test_energy_is_reference_minus_f():
    net = DescriptorNet(layers=SMALL_LAYERS)
    x = jax.random.normal(jax.random.key(0), (2, 12, 12, 1)) * 3
    params = init_params(net, jax.random.key(1), x)
    sigma = 2.0
    expected = np.sum(np.asarray(x) ** 2, axis=(1, 2, 3)) / (2 * sigma**2) - np.asarray(net.apply(params, x))
    np.testing.assert_allclose(D.energy(net.apply, params, x, sigma), expected, rtol=1e-5)
    np.testing.assert_allclose(D.energy(net.apply, params, x, None), -net.apply(params, x), rtol=1e-6)
    one = D.make_energy_fn(net.apply, params, sigma)
    np.testing.assert_allclose(one(x[1]), expected[1], rtol=1e-5)


def test_mean_energies_over_chunks_of_sets_of_any_size():
    """f = <w, x>: E = ||x||²/2σ² − <w, x> in numpy, against sets of 7 and
    2 samples evaluated 3 at a time (the last chunks padded)."""
    rng = np.random.default_rng(0)
    w, a, b = rng.normal(size=(5, 5, 1)), rng.normal(size=(7, 5, 5, 1)), rng.normal(size=(2, 5, 5, 1))
    params = {"params": {"w": jnp.asarray(w, jnp.float32)}}
    direct = lambda x: np.mean(np.sum(x**2, axis=(1, 2, 3)) / (2 * 0.5**2) - np.sum(x * w, axis=(1, 2, 3)))
    means = D.mean_energies(LinearF().apply, params, 0.5, batch=3, a=a, b=b)
    assert means == pytest.approx({"a": direct(a), "b": direct(b)}, rel=1e-5)


def test_linear_descriptor_learns_the_closed_form_mean(run_optimised_jit):
    """ML learning of f = <w, x> on N(0, σ²I) converges to σ² w = mean(data)."""
    sigma = 0.7
    data = jnp.asarray(np.random.default_rng(0).normal([[1.0, -2.0], [0.5, 3.0]], 0.3, (64, 2, 2)))[..., None]
    n_chains = 4000
    cfg = small_config(
        sigma=sigma, n_chains=n_chains, chain_init="zeros", persistent=True,
        langevin=langevin.LangevinConfig(n_steps=4, step_size=0.5 * sigma**2),
        optimizer="sgd", learning_rate=0.5, momentum=0.0, weight_decay=0.0,
        divide_by_positions=False, max_abs_grad=None, image_size=(2, 2),
    )
    net = LinearF()
    state = D.init_state(jax.random.key(0), cfg, net, data)
    step = run_optimised_jit(D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params)))
    ws = []
    for i in range(300):
        state, _ = step(state, data)
        if i >= 200:
            ws.append(np.asarray(state.params["params"]["w"]))
    w = np.mean(ws, axis=0)
    target = np.asarray(data.mean(axis=0))
    # Each iteration's gradient has Monte-Carlo error sd σ/sqrt(n_chains) per
    # coordinate; averaging 100 correlated iterates leaves less than that.
    tol = 5 * sigma / np.sqrt(n_chains)
    np.testing.assert_allclose(sigma**2 * w, target, atol=tol)
    # The chains sample N(σ²w, s²I) with the unadjusted-Langevin variance at
    # step a: x' = (1 − a/σ²) x + sqrt(2a) ξ has s² = σ² / (1 − a/(2σ²)).
    a = cfg.langevin.step_size
    s = sigma / np.sqrt(1 - a / (2 * sigma**2))
    chains = np.asarray(state.chains).reshape(n_chains, -1)
    np.testing.assert_allclose(chains.std(axis=0), s, rtol=0.05)
    assert abs(chains.std() - sigma) > 0.1 * sigma  # that bias is real at this step


def test_train_step_traced_once_per_shape():
    traces = {"n": 0}
    net = DescriptorNet(layers=SMALL_LAYERS)

    def counting_apply(params, x):
        traces["n"] += 1  # runs only while jax traces
        return net.apply(params, x)

    cfg = small_config()
    data = jnp.ones((1, 12, 12, 1))
    state = D.init_state(jax.random.key(0), cfg, net, data)
    step = D.make_train_step(cfg, counting_apply, D.make_optimizer(cfg, state.params))
    state, _ = step(state, data)
    after_first = traces["n"]
    assert after_first > 0
    for _ in range(3):
        state, _ = step(state, data + 1.0)
    assert traces["n"] == after_first, "the step was traced again for the same shapes"
    data2 = jnp.ones((2, 12, 12, 1))
    state, _ = step(state, data2)
    assert traces["n"] == 2 * after_first, "a new data shape traces exactly once more"


def _run(cfg, seed, n=3):
    net = D.make_net(cfg)
    data = jax.random.normal(jax.random.key(42), (2, 12, 12, 1)) * 20
    state = D.init_state(jax.random.key(seed), cfg, net, data)
    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params))
    for _ in range(n):
        state, metrics = step(state, data)
    return state, metrics


def test_same_key_same_samples_and_params():
    cfg = small_config()
    a, _ = _run(cfg, 0)
    b, _ = _run(cfg, 0)
    c, _ = _run(cfg, 1)
    np.testing.assert_array_equal(np.asarray(a.chains), np.asarray(b.chains))
    for la, lb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))
    assert not np.allclose(np.asarray(a.chains), np.asarray(c.chains))


@pytest.mark.parametrize("init", ["zeros", "noise", "uniform", "data"])
def test_chain_initialisations(init):
    data = jnp.arange(2 * 4 * 4).reshape(2, 4, 4, 1).astype(jnp.float32)
    x = D.init_chains(jax.random.key(0), init, (5, 4, 4, 1), scale=2.0, data=data)
    assert x.shape == (5, 4, 4, 1)
    if init == "zeros":
        assert not np.any(np.asarray(x))
    elif init == "uniform":
        assert np.all(np.abs(np.asarray(x)) <= 2.0)
    elif init == "data":
        np.testing.assert_array_equal(np.asarray(x[2]), np.asarray(data[0]))
        np.testing.assert_array_equal(np.asarray(x[3]), np.asarray(data[1]))
    else:
        assert 1.0 < float(jnp.std(x)) < 3.0


def test_contrastive_divergence_starts_at_data():
    """With zero Langevin steps, CD 'samples' are the observed images."""
    cfg = small_config(chain_init="data", persistent=False, n_chains=2,
                       langevin=langevin.LangevinConfig(n_steps=0, step_size=0.1))
    net = D.make_net(cfg)
    data = jax.random.normal(jax.random.key(3), (2, 12, 12, 1))
    state = D.init_state(jax.random.key(0), cfg, net, data)
    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params))
    new, metrics = step(state, data)
    np.testing.assert_array_equal(np.asarray(new.chains), np.asarray(data))
    assert float(metrics["grad_norm"]) == 0.0  # data and samples coincide: no learning signal


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_persistent_chains_restart_with_the_given_probability(fraction):
    """With zero Langevin steps a step's samples are its starts: the chains
    carried over (all ones here) or, restarted, the zeros of chain_init.
    The restarted count is Binomial(n, fraction)."""
    n = 4000
    cfg = small_config(chain_init="zeros", n_chains=n, restart_fraction=fraction,
                       langevin=langevin.LangevinConfig(n_steps=0, step_size=0.1))
    net = D.make_net(cfg)
    data = jnp.ones((2, 12, 12, 1))
    state = D.init_state(jax.random.key(0), cfg, net, data)._replace(chains=jnp.ones((n, 12, 12, 1)))
    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params))
    new, _ = step(state, data)
    chains = np.asarray(new.chains).reshape(n, -1)
    restarted = np.all(chains == 0, axis=1)
    assert np.all(restarted | np.all(chains == 1, axis=1))  # every chain is one or the other, whole
    assert abs(restarted.mean() - fraction) <= 4 * np.sqrt(fraction * (1 - fraction) / n)
    with pytest.raises(ValueError, match="restart_fraction restarts persistent chains"):
        small_config(persistent=False, restart_fraction=0.1)


def _cd_setup(n_steps, step_size=0.3):
    """7 distinct 8×8 observed images and a CD config whose n_chains (2) and
    batch_size (32 ≥ 7) would, read as chains, start only 2 of them."""
    cfg = D.DescriptorConfig(
        layers=(ConvSpec(4, 3, 2), ConvSpec(3, 3, 1)), image_size=(8, 8), channels=1, init_std=0.3,
        chain_init="data", persistent=False, n_chains=2, batch_size=32, weight_decay=0.0,
        divide_by_positions=False, max_abs_grad=None,
        langevin=langevin.LangevinConfig(n_steps=n_steps, step_size=step_size, noise_scale=0.0))
    net = D.make_net(cfg)
    images = jax.random.normal(jax.random.key(5), (7, 8, 8, 1))
    batch = gdata.shuffled_batches(images, cfg.batch_size, cfg.seed)(0)  # the engine's first batch
    state = D.init_state(jax.random.key(0), cfg, net, images)
    return cfg, net, images, batch, state


def _rows(x):
    return sorted(np.asarray(r).tobytes() for r in np.asarray(x))


def test_contrastive_divergence_starts_one_chain_at_each_image_of_the_batch():
    """CD-k: one chain per observed image of the batch, whatever n_chains
    says; with k = 0 the samples are exactly the batch's images."""
    cfg, net, images, batch, state = _cd_setup(n_steps=0)
    assert _rows(batch) == _rows(images) and len(set(_rows(images))) == 7
    init_shape = state.chains.shape
    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params))
    new, _ = step(state, batch)
    assert _rows(new.chains) == _rows(batch), "CD samples are not the 7 observed images, one each"
    assert init_shape == batch.shape  # the state's chains keep one shape: the step is traced once
    # A batch smaller than the data: the state's chains are the batch's size.
    small = dataclasses.replace(cfg, batch_size=4)
    assert D.init_state(jax.random.key(0), small, net, images).chains.shape == (4, 8, 8, 1)
    assert gdata.shuffled_batches(images, 4, 0)(1).shape == (4, 8, 8, 1)


def test_contrastive_divergence_gradient_is_over_the_batch():
    """With k > 0 noise-free steps the learning gradient is that of
    mean f(x_k) − mean f(x) over the batch's images x and the chains x_k
    started at them, computed here independently."""
    cfg, net, images, batch, state = _cd_setup(n_steps=2)
    params = jax.tree_util.tree_map(np.array, state.params)  # the state is donated
    # SGD of rate 1 alone: the params move by exactly minus the gradient.
    sgd = optax.sgd(1.0)
    state = state._replace(opt_state=sgd.init(state.params))
    step = D.make_train_step(cfg, net.apply, sgd)
    new, _ = step(state, batch)

    grad_f = jax.grad(lambda x: jnp.sum(net.apply(params, x)))  # ∇f of each image
    x = batch
    for _ in range(2):  # x ← x − a (x/σ² − ∇f(x)), σ = 1
        x = x - 0.3 * (x - grad_f(x))
    expected = jax.grad(lambda p: jnp.mean(net.apply(p, x)) - jnp.mean(net.apply(p, batch)))(params)
    got = jax.tree_util.tree_map(lambda a, b: a - np.asarray(b), params, new.params)
    assert float(optax.tree.norm(expected)) > 1e-3  # a learning signal to compare
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(g, np.asarray(e), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new.chains), np.asarray(x), rtol=1e-5, atol=1e-6)


def test_spatial_position_scales_and_cap():
    net = DescriptorNet(layers=SMALL_LAYERS)
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    scales = D.spatial_position_scales(params, SMALL_LAYERS, (12, 12))
    sizes = layer_output_sizes(SMALL_LAYERS, (12, 12))
    assert sizes == [(5, 5), (3, 3)]
    assert float(scales["params"]["conv1"]["kernel"]) == pytest.approx(1 / 25)
    assert float(scales["params"]["conv2"]["bias"]) == pytest.approx(1 / 9)

    grads = {"a": jnp.array([40.0, -10.0]), "b": jnp.array([0.5, -0.25])}
    capped, _ = D.cap_max_abs(20.0).update(grads, optax.EmptyState())
    np.testing.assert_allclose(capped["a"], [20.0, -5.0])  # rescaled, direction kept
    np.testing.assert_allclose(capped["b"], [0.5, -0.25])  # already under the cap


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("final", [0.0, 0.1])
@pytest.mark.parametrize("decay,expected", [
    ("constant", lambda t, T, a: np.ones_like(t)),
    ("cosine", lambda t, T, a: a + (1 - a) * 0.5 * (1 + np.cos(np.pi * t / T))),
    ("linear", lambda t, T, a: a + (1 - a) * (1 - t / T)),
])
def test_learning_rate_decays_to_its_final_fraction_by_the_last_iteration(optimizer, decay, expected, final):
    # A gradient of 1 every step: plain SGD moves by -lr_t; Adam normalises
    # a constant gradient to 1 (up to eps), so it too moves by -lr_t.
    total, rate = 8, 0.3
    cfg = small_config(optimizer=optimizer, momentum=0.0, learning_rate=rate, learning_rate_decay=decay,
                       learning_rate_decay_to=final, n_iterations=total, divide_by_positions=False,
                       max_abs_grad=None, weight_decay=0.0)
    params = {"w": jnp.zeros(())}
    optimizer_ = D.make_optimizer(cfg, params)
    state = optimizer_.init(params)
    moves = []
    for _ in range(total + 1):
        updates, state = optimizer_.update({"w": jnp.ones(())}, state, params)
        moves.append(-float(updates["w"]))
    t = np.arange(total + 1, dtype=np.float64)
    np.testing.assert_allclose(moves, rate * expected(t, total, final), rtol=1e-5, atol=1e-7)


def test_grow_keeps_learned_layers():
    cfg = small_config(grow_iterations=(1, 1))
    data = jnp.ones((1, 12, 12, 1))
    net1 = D.make_net(cfg, depth=1)
    state = D.init_state(jax.random.key(0), cfg, net1, data)
    assert set(state.params["params"]) == {"conv1"}
    net2 = D.make_net(cfg, depth=2)
    grown = D.grow(jax.random.key(1), state, cfg, net2, data)
    assert set(grown.params["params"]) == {"conv1", "conv2"}
    np.testing.assert_array_equal(grown.params["params"]["conv1"]["kernel"], state.params["params"]["conv1"]["kernel"])
    assert net2.apply(grown.params, data).shape == (1,)


def test_divergence_is_reported_with_the_step_size():
    cfg = small_config(langevin=langevin.LangevinConfig(n_steps=60, step_size=50.0), sigma=0.5)
    net = D.make_net(cfg)
    data = jnp.ones((1, 12, 12, 1))
    state = D.init_state(jax.random.key(0), cfg, net, data)
    state = state._replace(chains=state.chains + 1.0)
    step = D.make_train_step(cfg, net.apply, D.make_optimizer(cfg, state.params))
    with pytest.raises(langevin.ChainDivergedError, match="step_size=50.0"):
        fit(step, state, lambda i: data, end=2, run=RunConfig(log_every=1), quiet=True, step_size=50.0)


def test_local_minima_are_auto_encoding_fixed_points():
    """Gradient descent on E reaches x = σ²∇f(x) (PAPERS §1), in closed form.

    One layer of K orthonormal filters w_k covering the whole image, bias −1:
    f(x) = Σ_k relu(<w_k, x> − 1). For σ² > 1 every subset S of the units is
    an interior local minimum x_S = σ² Σ_{k∈S} w_k (units in S see σ² − 1 > 0,
    the others −1 < 0): 2^K minima, each with its own activation pattern.
    """
    K, sigma = 3, np.sqrt(2.0)
    net = DescriptorNet(layers=(ConvSpec(K, 4, 1),))
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(16, K)))
    w = q.T  # K orthonormal rows
    params = {"params": {"conv1": {"kernel": jnp.asarray(q.reshape(4, 4, 1, K), jnp.float32),
                                   "bias": -jnp.ones((K,), jnp.float32)}}}
    subsets = [np.array([(i >> k) & 1 for k in range(K)], bool) for i in range(2**K)]
    minima = np.stack([sigma**2 * w[s].sum(axis=0) for s in subsets]).reshape(-1, 4, 4, 1)
    starts = minima + 0.3 * np.random.default_rng(1).normal(size=minima.shape)
    x, residual = D.descend_to_minimum(net.apply, params, jnp.asarray(starts, jnp.float32), sigma, n_steps=60)
    np.testing.assert_allclose(np.asarray(x), minima, atol=1e-5)
    # The empty subset's minimum is x = 0, where a relative residual means
    # nothing; its end point is checked above.
    assert np.all(np.asarray(residual)[1:] < 1e-5), residual
    pattern = D.activation_pattern(net, params, x)
    np.testing.assert_array_equal(pattern, np.stack(subsets))
    assert len({p.tobytes() for p in pattern}) == 2**K


def test_piecewise_gaussian_within_a_piece():
    """Where the activation pattern is fixed, E is quadratic with Hessian I/σ²:
    E(x + h) − E(x) = <∇E(x), h> + ||h||²/(2σ²) exactly for small h."""
    net = DescriptorNet(layers=SMALL_LAYERS, init_std=0.3)
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 12, 12, 1)))
    sigma = 1.3
    energy_fn = D.make_energy_fn(net.apply, params, sigma)
    x = jax.random.normal(jax.random.key(2), (12, 12, 1)) * 4
    h = 1e-3 * jax.random.normal(jax.random.key(3), x.shape)
    same = D.activation_pattern(net, params, jnp.stack([x, x + h]))
    assert (same[0] == same[1]).all()
    e0, g = jax.value_and_grad(energy_fn)(x)
    e1 = energy_fn(x + h)
    predicted = float(jnp.vdot(g, h) + jnp.sum(h**2) / (2 * sigma**2))
    assert float(e1 - e0) == pytest.approx(predicted, rel=2e-2, abs=1e-4)


def test_receptive_field_of_paper_net():
    from gcnjax.nets import OBJECT_LAYERS, TEXTURE_LAYERS

    assert receptive_field(OBJECT_LAYERS) == 15 + 4 * 3 + 2 * 3
    assert layer_output_sizes(OBJECT_LAYERS, (224, 224)) == [(70, 70), (66, 66), (64, 64)]
    assert layer_output_sizes(TEXTURE_LAYERS, (224, 224)) == [(75, 75), (75, 75), (75, 75)]
    net = DescriptorNet(layers=OBJECT_LAYERS, depth=2)
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 40, 40, 3)))
    _, inter = net.apply(params, jnp.ones((1, 40, 40, 3)), mutable=["intermediates"])
    shapes = [v[0].shape[1:3] for v in inter["intermediates"].values()]
    assert shapes == [tuple(s) for s in layer_output_sizes(OBJECT_LAYERS[:2], (40, 40))]


@pytest.mark.parametrize(
    "field,value",
    [("sigma", 0.0), ("sigma", -1.0), ("learning_rate", 0.0), ("learning_rate", float("nan")),
     ("n_chains", 0), ("chain_init", "nowhere"), ("optimizer", "rmsprop"), ("max_abs_grad", -1.0),
     ("grow_iterations", (10,)), ("restart_fraction", 1.5), ("restart_fraction", -0.1),
     ("learning_rate_decay", "exponential"), ("learning_rate_decay_to", 1.5), ("learning_rate_decay_to", -0.1)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        small_config(**{field: value})


def test_learning_rate_decay_is_refused_with_growth():
    with pytest.raises(ValueError, match="learning_rate_decay.*grow_iterations"):
        small_config(learning_rate_decay="cosine", grow_iterations=(2, 2))


def test_config_round_trips_through_dict():
    cfg = small_config(langevin=langevin.LangevinConfig.from_delta(0.3, 5, clip=(-1.0, 1.0)), grow_iterations=(2, 3))
    import json

    back = D.DescriptorConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg
