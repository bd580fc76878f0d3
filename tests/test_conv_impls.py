"""The other ways of computing a conv layer: strided convs as stride-1 convs
of the space-to-depth input, 3-D convs as 2-D convs with the temporal taps
folded into channels (their value only, or value and gradients), strided
convs with a sub-pixel input gradient, convs as unfolded patches times the
kernel.

:func:`gcnjax.nets.conv_space_to_depth` and :func:`gcnjax.nets.conv_fold_time`
(through the ``Conv`` layer of the descriptor nets) must give Flax's ``Conv``
value and gradients, in x and in the kernel, for every padding the ConvSpecs
take, and kernels longer, equal to and shorter than the stride; space to
depth in 1-, 2- and 3-D.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import descriptor as D
from gcnjax import nets, stg


CASES_3D = [
    ((1, 16, 20, 20, 3), (7, 7, 7), (2, 2, 2), "SAME"),   # the FC_S net's first layer
    ((1, 8, 10, 10, 4), (5, 10, 10), (2, 2, 2), ((2, 2), (0, 0), (0, 0))),  # FC_S's second: explicit padding
    ((2, 7, 9, 8, 2), (2, 3, 3), (1, 2, 2), "SAME"),      # the ST net's last layer
    ((1, 9, 10, 11, 2), (3, 5, 4), (2, 3, 1), "CIRCULAR"),  # periodic, a different stride per axis
    ((2, 10, 8, 8, 1), (2, 3, 3), (3, 1, 1), "VALID"),    # temporal kernel shorter than its stride
]


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 9, 11, 3), (3, 3), (2, 2), "SAME"),              # odd and even sizes
    ((2, 9, 11, 3), (4, 4), (2, 2), "VALID"),             # the short-run net's 4×4 stride 2
    ((2, 16, 16, 2), (15, 15), (3, 3), "SAME"),           # the texture net's first layer
    ((2, 13, 12, 3), (5, 5), (2, 3), "CIRCULAR"),         # periodic, a different stride per axis
    ((2, 10, 10, 2), (2, 2), (3, 3), "VALID"),            # kernel shorter than the stride
    ((1, 16, 20, 20, 3), (7, 7, 7), (2, 2, 2), "SAME"),   # the FC_S net's first layer
    ((1, 8, 10, 10, 4), (5, 10, 10), (2, 2, 2), ((2, 2), (0, 0), (0, 0))),  # FC_S's second: explicit padding
    ((2, 50, 1), (16,), (4,), "SAME"),                    # a sound net's 1-D layer
])
def test_space_to_depth_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    _check_against_flax(shape, kernel, stride, padding, "space_to_depth")


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES_3D)
def test_fold_time_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    _check_against_flax(shape, kernel, stride, padding, "fold_time")


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES_3D + [
    ((1, 16, 20, 20, 3), (15, 15, 15), (7, 7, 7), "SAME"),  # the ST net's first layer
])
def test_fold_time_forward_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    """The time-folded value with XLA's gradients (a custom VJP): every case
    here has fewer than FOLD_TIME_FORWARD_BELOW_CHANNELS input channels, so
    the custom VJP is the path under test."""
    assert shape[-1] < nets.FOLD_TIME_FORWARD_BELOW_CHANNELS
    _check_against_flax(shape, kernel, stride, padding, "fold_time_forward")


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 16, 16, 3), (4, 4), (2, 2), "SAME"),             # the short-run net's stride-2 layers
    ((2, 9, 11, 3), (4, 4), (2, 2), "SAME"),              # odd sizes
    ((2, 9, 11, 3), (4, 4), (2, 2), "VALID"),             # the window leaves z: XLA's gradient
    ((2, 16, 16, 2), (15, 15), (3, 3), "SAME"),           # the texture net's first layer
    ((2, 13, 12, 3), (5, 5), (2, 3), "CIRCULAR"),         # periodic, a different stride per axis
    ((2, 10, 10, 2), (2, 2), (3, 3), "VALID"),            # kernel shorter than the stride
    ((2, 12, 12, 2), (3, 3), (2, 2), ((2, 0), (1, 1))),   # explicit, asymmetric padding
    ((2, 50, 1), (16,), (4,), "SAME"),                    # a sound net's 1-D layer
    ((2, 9, 11, 3), (3, 3), (1, 1), "SAME"),              # the short-run net's first layer: stride 1, 3 channels
    ((2, 9, 10, 2), (4, 3), (1, 1), "SAME"),              # stride 1, even kernel: asymmetric SAME padding
    ((2, 9, 11, 3), (3, 3), (1, 1), "VALID"),             # stride 1, VALID: XLA's gradient
    ((2, 30, 2), (5,), (1,), "CIRCULAR"),                 # stride 1, 1-D, periodic: XLA's gradient
])
def test_subpixel_grad_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    _check_against_flax(shape, kernel, stride, padding, "subpixel_grad")


def test_subpixel_grad_covers_strided_layers_and_stride_one_layers_with_few_channels():
    """Which layers take the custom input gradient: a stride-1 layer with
    few input channels does (its input gradient is then not XLA's
    transposed conv in the jaxpr), a stride-1 layer with many does not."""
    def custom_vjp_calls(channels, stride):
        layer = nets.Conv(4, (3, 3), (stride, stride), "SAME", impl="subpixel_grad")
        x = jnp.zeros((1, 8, 8, channels))
        params = layer.init(jax.random.key(0), x)
        return str(jax.make_jaxpr(lambda x: layer.apply(params, x))(x)).count("custom_vjp_call")

    assert custom_vjp_calls(3, 1) == 1
    assert custom_vjp_calls(nets.UNFOLD_TRANSPOSE_BELOW_CHANNELS, 1) == 0
    assert custom_vjp_calls(nets.UNFOLD_TRANSPOSE_BELOW_CHANNELS, 2) == 1


UNFOLD_CASES = [
    ((2, 9, 11, 3), (3, 3), (1, 1), "SAME"),              # stride 1
    ((2, 9, 11, 3), (4, 4), (2, 2), "VALID"),             # the short-run net's 4×4 stride 2
    ((2, 13, 12, 3), (5, 5), (2, 3), "CIRCULAR"),         # periodic, a different stride per axis
    ((2, 10, 10, 2), (2, 2), (3, 3), "VALID"),            # kernel shorter than the stride
    ((2, 12, 12, 2), (3, 3), (2, 2), ((2, 0), (1, 1))),   # explicit, asymmetric padding
    ((2, 50, 1), (16,), (4,), "SAME"),                    # a sound net's 1-D layer
    ((2, 3, 5, 5, 9), (7, 7, 7), (3, 3, 3), "SAME"),      # the ST net's second layer (>= 8 channels)
    ((1, 8, 10, 10, 8), (5, 10, 10), (2, 2, 2), ((2, 2), (0, 0), (0, 0))),  # FC_S's second layer
]


@pytest.mark.parametrize("shape,kernel,stride,padding", UNFOLD_CASES + CASES_3D + [
    ((1, 16, 20, 20, 3), (15, 15, 15), (7, 7, 7), "SAME"),  # the ST net's first layer
])
def test_unfold_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    """Through the layer: the 3-D cases with fewer than
    FOLD_TIME_FORWARD_BELOW_CHANNELS input channels take the time-folded
    value with the unfolded patches' gradients (a custom VJP), the others
    :func:`conv_unfold` and its autodiff gradients."""
    _check_against_flax(shape, kernel, stride, padding, "unfold")


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES_3D)
def test_conv_unfold_matches_xla_with_gradients(shape, kernel, stride, padding):
    """The function itself on the 3-D cases whose value the layer takes
    from :func:`conv_fold_time`."""
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), kernel + (shape[-1], 4)) / np.sqrt(np.prod(kernel) * shape[-1])
    pads = nets._resolve_padding(padding, shape[1:-1], kernel, stride)
    if padding == "CIRCULAR":
        reference = lambda x, k: nets._xla_conv(jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap"), k,
                                                stride, "VALID")
    else:
        reference = lambda x, k: nets._xla_conv(x, k, stride, pads)
    ours = lambda x, k: nets.conv_unfold(x, k, stride, padding)
    y, y_ref = ours(x, k), reference(x, k)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-4, rtol=1e-4)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))(x, k) for f in (ours, reference)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def test_subpixel_grad_takes_the_subpixel_path_where_it_fits():
    """The cases above must exercise the sub-pixel input gradient, not only
    its fall-back: δ per axis for the short-run net's layers is 0, for the
    texture net's first layer 1 (a window inside z), and None for a VALID
    4×4 stride-2 conv of 9 rows (its window leaves z)."""
    assert nets._subpixel_input_gradient_shift((32, 32), (4, 4), (2, 2), ((1, 1), (1, 1)), (16, 16)) == (0, 0)
    assert nets._subpixel_input_gradient_shift((64,), (15,), (3,), ((7, 7),), (22,)) == (1,)
    assert nets._subpixel_input_gradient_shift((9,), (4,), (2,), ((0, 0),), (3,)) is None


def test_fold_time_forward_value_is_the_time_folded_conv():
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 8, 3))
    k = jax.random.normal(jax.random.key(1), (3, 3, 3, 3, 4))
    np.testing.assert_array_equal(np.asarray(nets.conv_fold_time_forward(x, k, (2, 1, 1), "SAME")),
                                  np.asarray(nets.conv_fold_time(x, k, (2, 1, 1), "SAME")))


def _check_against_flax(shape, kernel, stride, padding, impl):
    x = jax.random.normal(jax.random.key(0), shape)
    reference = nn.Conv(5, kernel, strides=stride, padding=padding)
    params = reference.init(jax.random.key(1), x)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), params)
    ours = nets.Conv(5, kernel, stride, padding, impl=impl)
    y_ref, y = reference.apply(params, x), ours.apply(params, x)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-4, rtol=1e-4)  # float32 sums in another order

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    g_ref = jax.grad(loss(reference), argnums=(0, 1))(params, x)
    g = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant,impl", [("fc_s", "fold_time"), ("fc_s", "space_to_depth"),
                                          ("fc_s", "fold_time_forward"), ("fc_s", "unfold"), ("st", "unfold")])
def test_the_video_nets_are_the_same_function_either_way(variant, impl):
    config = stg.stg_config(variant, frames=8, image_size=16, channels=3)
    assert stg.stg_config("fc_s").conv == "fold_time"
    assert stg.stg_config("st").conv == ("unfold" if jax.default_backend() == "cpu" else "xla")
    assert config.langevin.chain_batch is None
    fast = D.make_net(dataclasses.replace(config, conv=impl))
    plain = D.make_net(dataclasses.replace(config, conv="xla"))
    x = jax.random.normal(jax.random.key(0), (2, 8, 16, 16, 3))
    params = fast.init(jax.random.key(1), x)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(plain.init(jax.random.key(1), x))
    params = jax.tree_util.tree_map(lambda a: a * 50.0, params)  # past the tiny initial weights
    np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-4, atol=1e-6)
    grad = [jax.grad(lambda v, n=n: n.apply(params, v).sum())(x) for n in (fast, plain)]
    np.testing.assert_allclose(grad[0], grad[1], rtol=1e-4, atol=1e-6 * float(jnp.abs(grad[1]).max()))


def test_too_small_an_input_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nets.conv_space_to_depth(jnp.zeros((1, 3, 3, 1)), jnp.zeros((5, 5, 1, 2)), (2, 2), "VALID")
    with pytest.raises(ValueError, match="fewer than the kernel"):
        nets.conv_fold_time(jnp.zeros((1, 3, 8, 8, 1)), jnp.zeros((5, 3, 3, 1, 2)), (1, 1, 1), "VALID")
    with pytest.raises(ValueError, match="videos"):
        nets.conv_fold_time(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 2)), (1, 1), "VALID")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nets.conv_unfold(jnp.zeros((1, 3, 3, 1)), jnp.zeros((5, 5, 1, 2)), (2, 2), "VALID")
    with pytest.raises(ValueError, match="spatial axes"):
        nets.conv_unfold(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 3, 1, 2)), (1, 1, 1), "VALID")
    with pytest.raises(ValueError, match="DescriptorConfig.conv"):
        dataclasses.replace(stg.stg_config("st"), conv="fast")


def test_runs_saved_with_the_old_space_to_depth_flag_still_load():
    saved = stg.stg_config("fc_s", frames=8, image_size=16).to_dict()
    del saved["conv"]
    for flag, impl in ((True, "space_to_depth"), (False, "xla")):
        assert D.DescriptorConfig.from_dict({**saved, "space_to_depth": flag}).conv == impl


def test_presets_take_the_cpu_convs_only_on_the_cpu(monkeypatch):
    """The sub-pixel and unfolded gradients were chosen on XLA:CPU; on other
    backends the presets keep XLA's own convs."""
    from gcnjax import presets

    assert jax.default_backend() == "cpu"
    assert presets.texture().conv == presets.shortrun().conv == "subpixel_grad"
    assert stg.stg_config("st").conv == "unfold"
    monkeypatch.setattr(nets.jax, "default_backend", lambda: "gpu")
    assert nets.cpu_conv("subpixel_grad") == "xla"
    assert presets.texture().conv == presets.shortrun().conv == presets.demo().conv == "xla"
    assert stg.stg_config("st").conv == "xla" and stg.stg_config("fc_s").conv == "fold_time"
