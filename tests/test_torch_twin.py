"""The PyTorch twin of the benchmarks computes what gcnjax computes.

From the same weights (copied JAX → torch with the layout transposes) and
the same noise (gcnjax's per-chain noise re-derived from its keys), one
Langevin step and one learning step of the twin and of gcnjax must give the
same numbers to float32 tolerance. Skipped without torch (an optional extra:
``pip install gcnjax[bench]``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from experiments.benchmarks import torch_twin as T  # noqa: E402
from gcnjax import descriptor as D  # noqa: E402
from gcnjax import generator as G  # noqa: E402
from gcnjax import langevin, nets, ops, presets  # noqa: E402


torch.set_num_threads(1)


def chain_noises(key, n_steps, n_chains, shape):
    """The ξ that :func:`gcnjax.langevin.sample` draws: step k's key split
    over chains, each chain's noise from ``fold_in(chain_key, 0)`` split
    over the leaves of the position (here one)."""
    out = []
    for step_key in jax.random.split(key, n_steps):
        keys = jax.random.split(step_key, n_chains)
        out.append(jax.vmap(lambda k: jax.random.normal(jax.random.split(jax.random.fold_in(k, 0), 1)[0], shape, jnp.float32))(keys))
    return out


def adam_close(new_jax, new_torch, old, grad, lr):
    """Params after one Adam step agree; where a gradient is at rounding
    level its sign (hence Adam's ±lr move) is not determined, so those
    entries are left out."""
    meaningful = np.abs(grad) > 1e-4 * np.abs(grad).max()
    assert meaningful.mean() > 0.9
    np.testing.assert_allclose(new_torch[meaningful], new_jax[meaningful], atol=1e-3 * lr + 1e-6, rtol=0)
    # and they moved by about lr · sign(g), Adam's first step (less where |g| ~ eps)
    np.testing.assert_allclose(np.abs(new_jax - old)[meaningful], lr, rtol=5e-2)


@pytest.mark.parametrize("layers,shape,sigma,activation,activate_last,conv", [
    # the short-run net (stride-2 4×4 SAME convs, LeakyReLU, linear VALID top)
    (presets.shortrun_layers(4), (32, 32), None, "leaky_relu", False, "xla"),
    # the texture net: 15×15 stride-3 SAME convs, asymmetric padding at 20×20
    (nets.TEXTURE_LAYERS, (20, 20), 1.0, "relu", True, "xla"),
    # the texture preset's net: the same convs wrapped around the border (CIRCULAR)
    (presets.texture().layers, (20, 20), 1.0, "relu", True, "xla"),
    # the spatial-temporal ST net on a 8×16×16 video (3-D convs, stride 7 then 3)
    (nets.stg_layers("st"), (8, 16, 16), 1.0, "relu", True, "xla"),
    # FC_S: integer paddings (2, 0, 0), a spatially full kernel, gcnjax's time-folded convs
    (nets.stg_layers("fc_s", 12), (6, 12, 12), 1.0, "relu", True, "fold_time"),
])
def test_langevin_steps_match(layers, shape, sigma, activation, activate_last, conv):
    with ops.conv_impl(conv):  # the kernels each case pins, on any backend
        net = nets.DescriptorNet(layers=layers, activation=activation, activate_last=activate_last,
                                 init_scheme="torch")
        params = net.init(jax.random.key(0), jnp.zeros((1,) + shape + (3,)))
        n_chains, n_steps, a, b = 3, 2, 0.05, 0.1
        x0 = jax.random.uniform(jax.random.key(1), (n_chains,) + shape + (3,), minval=-1, maxval=1)
        key = jax.random.key(2)
        x_jax, _ = langevin.sample(key, D.make_energy_fn(net.apply, params, sigma), x0, n_steps=n_steps,
                                   step_size=a, noise_scale=b)

        twin = T.descriptor_from_jax(T.DescriptorTwin(layers, 3, shape, activation, activate_last), params)
        f_jax = net.apply(params, x0)
        np.testing.assert_allclose(twin(T.nhwc_to_nchw(x0)).detach().numpy(), np.asarray(f_jax),
                                   rtol=1e-4, atol=1e-4)
        noises = [T.nhwc_to_nchw(n) for n in chain_noises(key, n_steps, n_chains, x0.shape[1:])]
        x_torch = T.langevin(lambda x: T.descriptor_energy(twin, x, sigma), T.nhwc_to_nchw(x0), n_steps, a, b,
                             noises)
        channels_last = (0,) + tuple(range(2, x_torch.ndim)) + (1,)
        np.testing.assert_allclose(x_torch.permute(*channels_last).numpy(), np.asarray(x_jax), atol=2e-5, rtol=0)
        # the steps moved the chains well beyond the tolerance
        assert float(jnp.max(jnp.abs(x_jax - x0))) > 0.05


def test_shortrun_train_step_matches():
    config = dataclasses.replace(
        presets.shortrun(4), n_chains=3, persistent=True, data_noise=0.0,
        langevin=langevin.LangevinConfig(n_steps=2, step_size=1.0, noise_scale=0.01), learning_rate=1e-3)
    net = D.make_net(config)
    data = jax.random.uniform(jax.random.key(3), (4, 32, 32, 3), minval=-1, maxval=1)
    state = D.init_state(jax.random.key(4), config, net, data)
    chains0 = np.asarray(state.chains)
    old = jax.tree_util.tree_map(np.asarray, state.params)
    k_langevin = jax.random.split(state.key, 3)[2]
    step = D.make_train_step(config, net.apply, D.make_optimizer(config, state.params, (32, 32)))
    new_state, metrics = step(state, data)

    twin = T.descriptor_from_jax(T.DescriptorTwin(config.layers, 3, (32, 32), "leaky_relu", False), old)
    noises = [T.nhwc_to_nchw(n) for n in chain_noises(k_langevin, 2, 3, (32, 32, 3))]
    samples = T.langevin(lambda x: -twin(x), T.nhwc_to_nchw(chains0), 2, 1.0, 0.01, noises)
    np.testing.assert_allclose(samples.permute(0, 2, 3, 1).numpy(), np.asarray(new_state.chains), atol=2e-5)
    opt = T.adam(twin.parameters(), lr=1e-3, b1=0.9)
    loss = T.descriptor_learning_step(twin, opt, samples, T.nhwc_to_nchw(data))
    np.testing.assert_allclose(float(loss), float(metrics["f_samples"] - metrics["f_data"]), rtol=1e-4, atol=1e-5)

    grads = jax.grad(D.ml_loss)(old, net.apply, data, jnp.asarray(new_state.chains))["params"]
    for i, conv in enumerate(twin.convs):
        name = f"conv{i + 1}"
        new_jax = np.asarray(new_state.params["params"][name]["kernel"])
        np.testing.assert_allclose(conv.weight.grad.permute(2, 3, 1, 0).numpy(), np.asarray(grads[name]["kernel"]),
                                   rtol=1e-3, atol=1e-5 * float(jnp.max(jnp.abs(grads[name]["kernel"]))))
        adam_close(new_jax, conv.weight.detach().permute(2, 3, 1, 0).numpy(), old["params"][name]["kernel"],
                   np.asarray(grads[name]["kernel"]), 1e-3)


def test_abp_train_step_matches():
    net = nets.GeneratorNet(start=(2, 2), channels=(8, 4, 3))
    config = G.GeneratorConfig(latent_dim=5, sigma=0.3, langevin=langevin.LangevinConfig.from_delta(0.3, 2),
                               learning_rate=1e-3, beta1=0.5, batch_size=4)
    state = G.init_state(jax.random.key(5), config, net, 6, (8, 8, 3))
    x = jax.random.uniform(jax.random.key(6), (4, 8, 8, 3), minval=-1, maxval=1)
    indices = jnp.array([0, 2, 3, 5])
    z0 = np.asarray(state.latents[indices])
    old = jax.tree_util.tree_map(np.asarray, state.params)
    k_infer = jax.random.split(state.key, 3)[2]
    step = G.make_train_step(config, net.apply, G.make_optimizer(config))
    new_state, metrics = step(state, (indices, x))

    twin = T.generator_from_jax(T.GeneratorTwin(5, (2, 2), (8, 4, 3)), old)
    np.testing.assert_allclose(twin(T._t(z0)).permute(0, 2, 3, 1).detach().numpy(),
                               np.asarray(net.apply(old, jnp.asarray(z0))), atol=1e-5)
    # infer: one single-chain sample per example with key split(k_infer, B)[i]
    per_example = [chain_noises(k, 2, 1, (5,)) for k in jax.random.split(k_infer, 4)]
    noises = [T._t(np.concatenate([per_example[i][s] for i in range(4)])) for s in range(2)]
    a, b = langevin.coupled_from_delta(0.3)
    opt = T.adam(twin.parameters(), lr=1e-3, b1=0.5)
    z, loss = T.abp_iteration(twin, opt, T.nhwc_to_nchw(x), T._t(z0), sigma=0.3, n_steps=2, step_size=a,
                              noise_scale=b, noises=noises)
    np.testing.assert_allclose(z.numpy(), np.asarray(new_state.latents[indices]), atol=2e-5)
    np.testing.assert_allclose(float(loss), float(metrics["loss"]), rtol=1e-4)

    grads = jax.grad(G.learning_loss)(old, net.apply, jnp.asarray(z.numpy()), x, sigma=0.3)["params"]
    new_jax = np.asarray(new_state.params["params"]["deconv2"]["kernel"])
    new_torch = torch.flip(twin.deconvs[1].weight.detach().permute(2, 3, 0, 1), dims=(0, 1)).numpy()
    adam_close(new_jax, new_torch, old["params"]["deconv2"]["kernel"], np.asarray(grads["deconv2"]["kernel"]), 1e-3)
    np.testing.assert_allclose(twin.dense.weight.detach().numpy().T, np.asarray(new_state.params["params"]["dense"]
                                                                                ["kernel"]), atol=1e-5)
