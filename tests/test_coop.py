"""Cooperative training: one jit'd step for the pair, the revision, both updates."""

import dataclasses
import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import cli, coop, presets
from gcnjax import descriptor as D
from gcnjax import generator as G
from gcnjax.langevin import LangevinConfig
from gcnjax.nets import ConvSpec
from gcnjax.train import RunConfig
from gcnjax.nets import init_params


def tiny_config(**kw):
    descriptor = D.DescriptorConfig(
        layers=(ConvSpec(4, 3, 2, "SAME"), ConvSpec(4, 3, 1, "SAME")), top="dense", activation="leaky_relu",
        init_std=0.1, sigma=0.5, langevin=LangevinConfig.from_delta(0.1, 5), n_chains=6, persistent=False,
        optimizer="adam", learning_rate=1e-2, beta1=0.5, weight_decay=0.0, divide_by_positions=False,
        max_abs_grad=None, image_size=(8, 8), channels=1, pixel_scale="unit", batch_size=6,
    )
    generator = G.GeneratorConfig(latent_dim=3, sigma=0.3, langevin=LangevinConfig.from_delta(0.1, 0),
                                  learning_rate=1e-2)
    base = dict(descriptor=descriptor, generator=generator, generator_start=(2, 2), generator_channels=(8, 4, 1),
                n_iterations=3, run=RunConfig(log_every=1, image_every=2, checkpoint_every=2))
    base.update(kw)
    return coop.CoopConfig(**base)


def _data(n=6, side=8):
    rng = np.random.default_rng(0)
    return jnp.asarray(np.tanh(rng.normal(0.3, 0.5, (n, side, side, 1))), jnp.float32)


@pytest.mark.parametrize("noise", [pytest.param(False, marks=pytest.mark.slow), True])
def test_coop_step_is_traced_once_and_the_revision_lowers_the_energy(noise):
    config = tiny_config()
    d = config.descriptor
    if not noise:  # gradient descent: every step lowers E for a small enough step
        d = dataclasses.replace(d, langevin=LangevinConfig.from_delta(0.1, 5, noise=False))
    config = dataclasses.replace(config, descriptor=d)
    des_net, gen_net = coop.make_nets(config)
    traces = {"n": 0}

    def counting_apply(params, x):
        traces["n"] += 1  # runs only while jax traces
        return des_net.apply(params, x)

    state = coop.init_state(jax.random.key(0), config, des_net, gen_net)
    if noise:
        # Langevin with noise lowers E only from above the model's typical
        # energies, where proposals are in training: saturate g(z) at ±1,
        # far above E's minimum near 0 (E(±1) = 64/(2σ²) = 128; the noise of
        # 5 steps raises E by about 64·5δ²/(2σ²) = 6 at most).
        state = state._replace(gen_params=jax.tree_util.tree_map(lambda p: 50.0 * p, state.gen_params))
    step = coop.make_train_step(config, counting_apply, gen_net.apply,
                                D.make_optimizer(d, state.des_params), G.make_optimizer(config.generator))
    data = _data()
    drops = []
    for i in range(4):
        state, metrics = step(state, data)
        if i == 0:
            after_first = traces["n"]
        drops.append(float(metrics["energy_proposals"]) - float(metrics["energy_revised"]))
        np.testing.assert_allclose(float(metrics["revision_drop"]), drops[-1], rtol=1e-4, atol=1e-4)
    assert traces["n"] == after_first > 0
    assert int(state.step) == 4
    assert all(drop > 0 for drop in drops), drops


class LinearDescriptor(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.normal(0.1), x.shape[1:])
        return jnp.sum(x * w, axis=tuple(range(1, x.ndim)))


class LinearGenerator(nn.Module):
    """g(z) = W z, reshaped to 4×4×1 images."""

    @nn.compact
    def __call__(self, z):
        return nn.Dense(16, use_bias=False, kernel_init=nn.initializers.normal(0.5))(z).reshape(-1, 4, 4, 1)


def test_both_updates_match_their_closed_forms_for_linear_nets():
    """One SGD step of rate η on each net:
    descriptor f = <w, x>: w' = w − η (mean x̃ − mean data);
    generator g(z) = W z on L = mean_i ||x̃_i − W z_i||² / (2σ²):
    W' = W + η / (n σ²) Σ_i (x̃_i − W z_i) z_iᵀ (Flax stores Wᵀ as the kernel)."""
    eta_d, eta_g, sigma_g = 0.05, 0.01, 0.3
    config = tiny_config(generator_start=(8, 8), generator_channels=(1,))
    d = dataclasses.replace(config.descriptor, image_size=(4, 4), optimizer="sgd", learning_rate=eta_d,
                            momentum=0.0, langevin=LangevinConfig.from_delta(0.2, 3))
    g = dataclasses.replace(config.generator, sigma=sigma_g, optimizer="sgd", learning_rate=eta_g, momentum=0.0)
    config = dataclasses.replace(config, descriptor=d, generator=g, generator_start=(4, 4))
    des_net, gen_net = LinearDescriptor(), LinearGenerator()
    state = coop.init_state(jax.random.key(1), config, des_net, gen_net)
    # Copies: the step donates its input state.
    before_key = jax.random.wrap_key_data(np.array(jax.random.key_data(state.key)))
    before_des = jax.tree_util.tree_map(np.array, state.des_params)
    kernel = np.array(state.gen_params["params"]["Dense_0"]["kernel"])  # (d, 16): g(z) = z @ kernel
    step = coop.make_train_step(config, des_net.apply, gen_net.apply, D.make_optimizer(d, state.des_params),
                                G.make_optimizer(g))
    data = _data(6, 4)
    new, metrics = step(state, data)

    # The same draws as the step: its key split, z, and the revision.
    _, k_z, k_revise, _ = jax.random.split(before_key, 4)
    z = np.asarray(jax.random.normal(k_z, (d.n_chains, g.latent_dim)))
    proposals = (z @ kernel).reshape(-1, 4, 4, 1)
    revised, _ = D.synthesize(k_revise, des_net.apply, before_des, jnp.asarray(proposals), d.langevin,
                              d.sigma)
    revised = np.asarray(revised)
    w = before_des["params"]["w"]
    np.testing.assert_allclose(new.des_params["params"]["w"], w - eta_d * (revised.mean(0) - np.asarray(data).mean(0)),
                               rtol=1e-4, atol=1e-5)
    y = revised.reshape(len(z), -1)
    expected = kernel + eta_g / (len(z) * sigma_g**2) * z.T @ (y - z @ kernel)
    new_kernel = np.asarray(new.gen_params["params"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(new_kernel, expected, rtol=1e-4, atol=1e-5)
    # g(z) moved towards the revised images.
    assert np.linalg.norm(y - z @ new_kernel) < np.linalg.norm(y - z @ kernel)
    np.testing.assert_allclose(float(metrics["gen_loss"]),
                               np.mean(np.sum((y - z @ kernel) ** 2, axis=1)) / (2 * sigma_g**2), rtol=1e-4)


@pytest.mark.slow
def test_latent_inference_option_lowers_the_generator_loss():
    """With a few steps of inference from z (gradient descent on E(z | x̃)),
    the generator learns at latents that fit the revised images better."""
    losses = {}
    for steps in (0, 4):
        config = tiny_config()
        g = dataclasses.replace(config.generator, langevin=LangevinConfig.from_delta(0.3, steps, noise=False))
        config = dataclasses.replace(config, generator=g)
        des_net, gen_net = coop.make_nets(config)
        state = coop.init_state(jax.random.key(0), config, des_net, gen_net)
        step = coop.make_train_step(config, des_net.apply, gen_net.apply,
                                    D.make_optimizer(config.descriptor, state.des_params), G.make_optimizer(g))
        _, metrics = step(state, _data())
        losses[steps] = float(metrics["gen_loss"])
    assert losses[4] < losses[0]


@pytest.mark.slow
def test_learn_coop_writes_a_run_and_resumes_to_the_same_result(tmp_path):
    config = tiny_config(n_iterations=4)
    pixels = (np.asarray(_data(10)) + 1) * 127.5
    out = tmp_path / "run"
    result = coop.learn_coop(config, pixels, out, quiet=True, n_pictures=4)
    for name in ("config.json", "metrics.csv", "observed.png", "proposals.png", "revised.png", "energy.png",
                 "report.md"):
        assert (out / name).is_file(), name
    assert (out / "images" / "proposals_000002.png").is_file() and (out / "images" / "revised_000002.png").is_file()
    history = result["history"]
    assert len(history["iteration"]) == 4
    np.testing.assert_allclose(history["revision_drop"], history["energy_proposals"] - history["energy_revised"],
                               rtol=1e-3, atol=1e-3)
    # Interrupted after iteration 2: its last checkpoint is gone; resume redoes 3..4.
    shutil.rmtree(out / "checkpoints" / "4")
    again = coop.learn_coop(config, pixels, out, quiet=True, resume=True, n_pictures=4)
    for a, b in zip(jax.tree_util.tree_leaves(result["state"].gen_params),
                    jax.tree_util.tree_leaves(again["state"].gen_params)):
        np.testing.assert_array_equal(a, b)
    assert len(again["history"]["iteration"]) == 4
    with pytest.raises(ValueError, match="different model"):
        coop.learn_coop(dataclasses.replace(config, seed=5), pixels, out, quiet=True, resume=True)


def test_coop_config_is_checked_and_round_trips():
    config = presets.coop(28, 1)
    assert config.generator_net().output_shape() == (28, 28, 1)
    assert presets.coop(64).generator_net().output_shape() == (64, 64, 3)
    assert coop.CoopConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="image_size"):
        dataclasses.replace(config, generator_start=(8, 8))
    with pytest.raises(ValueError, match="pixel_scale"):
        dataclasses.replace(config, descriptor=dataclasses.replace(config.descriptor, pixel_scale="minus_mean"))
    with pytest.raises(ValueError, match="cannot be made"):
        presets.coop(30)
    with pytest.raises(ValueError, match="learning_rate_decay"):
        dataclasses.replace(config, descriptor=dataclasses.replace(config.descriptor, learning_rate_decay="cosine"))
    with pytest.raises(ValueError, match="generator.learning_rate_decay"):
        dataclasses.replace(config, generator=dataclasses.replace(config.generator, learning_rate_decay="linear"))
    authors = presets.coop(32, 3, width=8, nets="authors")
    assert authors.generator_start == (4, 4) and authors.generator_channels == (32, 16, 8, 3)
    assert authors.generator_norm == "batch" and authors.descriptor.top_units == 100
    assert coop.CoopConfig.from_dict(authors.to_dict()) == authors
    with pytest.raises(ValueError, match="4·2"):
        presets.coop(28, 1, nets="authors")
    with pytest.raises(ValueError, match="inference"):
        dataclasses.replace(authors, generator=dataclasses.replace(
            authors.generator, langevin=LangevinConfig.from_delta(0.1, 3)))
    with pytest.raises(ValueError, match="batch statistics"):
        G.GeneratorConfig(net_norm="batch")


def test_the_authors_nets_are_the_functions_their_code_computes():
    """The authors' descriptor top (100 fully connected units, summed) is one
    filter Σ W_k as a function; the generator's 1×1 → 4×4 transposed conv of
    kernel 4 (VALID) is a dense layer reshaped; batch statistics leave each
    channel with mean = shift and variance var/(var + ε)."""
    config = presets.coop(8, 1, width=2, nets="authors")
    des_net, gen_net = coop.make_nets(config)
    x = jax.random.normal(jax.random.key(0), (5, 8, 8, 1))
    params = init_params(des_net, jax.random.key(1), x)
    top = params["params"]["top"]
    assert top["kernel"].shape[-1] == 100
    one_unit = D.make_net(dataclasses.replace(config.descriptor, top_units=1))
    summed = jax.tree_util.tree_map(lambda a: a, params)
    summed["params"]["top"] = {"kernel": top["kernel"].sum(-1, keepdims=True), "bias": top["bias"].sum(-1, keepdims=True)}
    np.testing.assert_allclose(des_net.apply(params, x), one_unit.apply(summed, x), rtol=1e-4, atol=1e-4)

    z = jax.random.normal(jax.random.key(2), (6, 3))
    dense = jax.random.normal(jax.random.key(3), (3, 4 * 4 * 5))
    # TensorFlow's conv2d_transpose (the gradient of a conv): kernel (kh, kw, out, in).
    kernel = dense.reshape(3, 4, 4, 5).transpose(1, 2, 3, 0)
    convt = jax.lax.conv_transpose(z.reshape(6, 1, 1, 3), kernel, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True)
    np.testing.assert_allclose(convt, (z @ dense).reshape(6, 4, 4, 5), rtol=1e-5, atol=1e-5)

    from gcnjax.nets import BatchStatNorm

    h = 3.0 + 2.0 * jax.random.normal(jax.random.key(4), (6, 4, 4, 5))
    norm = BatchStatNorm()
    p = init_params(norm, jax.random.key(5), h)
    p = {"params": {"shift": jnp.arange(5.0)}}
    out = np.asarray(norm.apply(p, h), np.float64)
    var = np.asarray(h, np.float64).reshape(-1, 5).var(0)
    np.testing.assert_allclose(out.reshape(-1, 5).mean(0), np.arange(5.0), atol=1e-5)
    np.testing.assert_allclose(out.reshape(-1, 5).var(0), var / (var + 1e-3), rtol=1e-4)
    # g(z) of one example depends on its batch: the same z among other draws maps elsewhere.
    g_params = init_params(gen_net, jax.random.key(6), z)
    g_params = jax.tree_util.tree_map(lambda a: a + 0.1, g_params)
    alone, among = gen_net.apply(g_params, z[:3]), gen_net.apply(g_params, z)[:3]
    assert float(jnp.abs(alone - among).max()) > 1e-3


@pytest.mark.slow
def test_coop_cli_on_a_folder(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    argv = ["coop", "--data", str(folder), "--out", str(out), "--image-size", "16", "--iterations", "2",
            "--chains", "3", "--steps", "2", "--latent-dim", "4", "--clip", "--nets", "authors", "--quiet"]
    assert cli.main(argv) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert tuple(saved["descriptor"]["langevin"]["clip"]) == (-1.0, 1.0)
    assert saved["generator_norm"] == "batch" and saved["descriptor"]["top_units"] == 100
    assert str(out / "report.md") in capsys.readouterr().out
    assert (out / "revised.png").is_file() and (out / "proposals.png").is_file()
    assert cli.main(["coop", "--out", str(out), "--resume", "--quiet"]) == 0
    assert cli.main(["coop", "--out", str(out), "--resume", "--steps", "3"]) == 2
    assert "--descriptor.langevin.n-steps 3 (the run's: 2)" in capsys.readouterr().err
    assert cli.main(["coop", "--out", str(tmp_path / "x"), "--data", str(folder), "--image-size", "30"]) == 2
    assert "cannot be made" in capsys.readouterr().err
