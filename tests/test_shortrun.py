"""The short-run preset (Nijkamp et al. 2019) on the descriptor's code."""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import cli, presets
from gcnjax import data as gdata
from gcnjax import descriptor as D
from gcnjax.nets import ConvSpec, layer_output_sizes
from gcnjax.nets import init_params


def test_shortrun_preset_has_the_authors_settings():
    c = presets.get("shortrun")
    assert (c.langevin.n_steps, c.langevin.step_size, c.langevin.noise_scale) == (100, 1.0, 0.01)
    assert not c.langevin.mala and c.langevin.clip is None
    assert c.sigma is None and c.chain_init == "uniform" and c.init_scale == 1.0 and not c.persistent
    assert c.data_noise == 0.03 and c.pixel_scale == "unit" and c.image_size == (32, 32) and c.channels == 3
    assert (c.optimizer, c.learning_rate, c.beta1) == ("adam", 1e-4, 0.9)
    assert c.n_chains == 64 and c.batch_size == 64
    assert c.max_abs_grad is None and not c.divide_by_positions and c.weight_decay == 0
    assert c.activation == "leaky_relu" and not c.activate_last and c.init_scheme == "torch" and c.top == "sum"
    assert c.layers == (ConvSpec(64, 3, 1, "SAME"), ConvSpec(128, 4, 2, "SAME"), ConvSpec(256, 4, 2, "SAME"),
                        ConvSpec(512, 4, 2, "SAME"), ConvSpec(1, 4, 1, "VALID"))
    assert layer_output_sizes(c.layers, (32, 32)) == [(32, 32), (16, 16), (8, 8), (4, 4), (1, 1)]
    assert D.DescriptorConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_shortrun_net_is_linear_at_the_top_with_torch_init():
    c = presets.shortrun(n_filters=4)
    net = D.make_net(c)
    x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3), minval=-1, maxval=1)
    params = init_params(net, jax.random.key(1), x)
    p = params["params"]
    # PyTorch's default Conv2d init: U(±1/sqrt(fan_in)) for kernels and biases.
    for name, fan_in in (("conv1", 3 * 3 * 3), ("conv2", 4 * 4 * 4), ("conv5", 4 * 4 * 32)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(p[name]["kernel"]).max() <= bound and np.abs(p[name]["bias"]).max() <= bound
        assert np.abs(p[name]["bias"]).max() > 0
    k = np.asarray(p["conv4"]["kernel"])
    np.testing.assert_allclose(k.std(), 1 / np.sqrt(4 * 4 * 16) / np.sqrt(3), rtol=0.05)
    # f = the last conv's single output, no activation after it: it can be negative,
    # and it equals a LeakyReLU(0.2) chain computed by hand.
    h = x
    for i, spec in enumerate(c.layers, start=1):
        h = jax.lax.conv_general_dilated(h, p[f"conv{i}"]["kernel"], (spec.stride,) * 2, spec.padding,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + p[f"conv{i}"]["bias"]
        if i < len(c.layers):
            h = jnp.where(h > 0, h, 0.2 * h)
    np.testing.assert_allclose(net.apply(params, x), h.reshape(-1), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_shortrun_langevin_is_x_plus_grad_f_plus_small_noise():
    """Decoupled: x' = x − 1·∇E + 0.01 ξ with E = −f, i.e. x + ∇f(x) + 0.01 ξ."""
    c = dataclasses.replace(presets.shortrun(n_filters=2), langevin=dataclasses.replace(
        presets.shortrun().langevin, n_steps=1))
    net = D.make_net(c)
    x0 = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    params = init_params(net, jax.random.key(1), x0)
    key = jax.random.key(2)
    x1, _ = D.synthesize(key, net.apply, params, x0, c.langevin, c.sigma)
    grad_f = jax.vmap(jax.grad(lambda xi: net.apply(params, xi[None])[0]))(x0)
    xi = (np.asarray(x1) - np.asarray(x0) - np.asarray(grad_f)) / 0.01
    assert abs(xi.mean()) < 0.05 and abs(xi.std() - 1) < 0.05  # the rest is N(0, 1) noise


class SumF(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.ones, (1,))
        return w[0] * jnp.sum(x, axis=(1, 2, 3))


def test_data_noise_is_added_to_the_observed_batch():
    """With f = Σx the metric f_data is the mean of Σ(x + 0.03 ξ): it moves
    off Σx by noise of sd 0.03·sqrt(D/N), fresh every iteration."""
    c = dataclasses.replace(presets.shortrun(n_filters=2), langevin=dataclasses.replace(
        presets.shortrun().langevin, n_steps=1), n_chains=2, learning_rate=1e-12)
    data = jnp.zeros((8, 32, 32, 3))
    net = SumF()
    state = D.init_state(jax.random.key(0), c, net, data)
    step = D.make_train_step(c, net.apply, D.make_optimizer(c, state.params))
    sd = 0.03 * np.sqrt(32 * 32 * 3 / 8)
    values = []
    for _ in range(3):
        state, m = step(state, data)
        values.append(float(m["f_data"]))
    assert all(0 < abs(v) < 5 * sd for v in values) and len(set(values)) == 3
    quiet = D.make_train_step(dataclasses.replace(c, data_noise=0.0), net.apply, D.make_optimizer(c, state.params))
    assert float(quiet(state, data)[1]["f_data"]) == 0.0


def test_bundled_photo_tiles():
    tiles = gdata.bundled_photo_tiles(32)
    assert tiles.shape[1:] == (32, 32, 3) and tiles.shape[0] >= 64
    assert 0 <= tiles.min() and tiles.max() <= 255 and tiles.std() > 20


def test_shortrun_cli_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "sr"
    argv = ["descriptor", "--preset", "shortrun", "--out", str(out), "--iterations", "2", "--steps", "3",
            "--filters", "4", "--chains", "4", "--quiet"]
    assert cli.main(argv) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    cfg = D.DescriptorConfig.from_dict(saved["config"])
    # --steps keeps the decoupled step and noise; --filters sets n_f.
    assert (cfg.langevin.n_steps, cfg.langevin.step_size, cfg.langevin.noise_scale) == (3, 1.0, 0.01)
    assert [l.features for l in cfg.layers] == [4, 8, 16, 32, 1]
    assert saved["data_spec"]["spec"] == "skimage:photos"
    synth = np.load(out / "synthesized.npy")
    assert synth.shape == (4, 32, 32, 3) and np.isfinite(synth).all()
    assert cli.main(["descriptor", "--preset", "texture", "--filters", "4", "--data", "skimage:brick",
                     "--out", str(tmp_path / "x")]) == 2
    assert "--preset shortrun" in capsys.readouterr().err
