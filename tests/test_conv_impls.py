"""The other ways of computing a conv layer (:mod:`gcnjax.ops`): 3-D convs as
2-D convs with the temporal taps folded into channels, strided convs with a
sub-pixel input gradient, convs as unfolded patches times the kernel; and
which of them a layer takes.

Each, forced with :func:`gcnjax.ops.conv_impl` through the ``Conv`` layer of
the descriptor nets, must give Flax's ``Conv`` value and gradients, in x and
in the kernel, for every padding the ConvSpecs take, and kernels longer,
equal to and shorter than the stride. The choice is made when a net is
traced, from the backend, and is no part of a saved config.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import descriptor as D
from gcnjax import nets, ops, presets
from gcnjax.nets import init_params


CASES_3D = [
    ((1, 16, 20, 20, 3), (7, 7, 7), (2, 2, 2), "SAME"),   # the FC_S net's first layer
    ((1, 8, 10, 10, 4), (5, 10, 10), (2, 2, 2), ((2, 2), (0, 0), (0, 0))),  # FC_S's second: explicit padding
    ((2, 7, 9, 8, 2), (2, 3, 3), (1, 2, 2), "SAME"),      # the ST net's last layer
    ((1, 9, 10, 11, 2), (3, 5, 4), (2, 3, 1), "CIRCULAR"),  # periodic, a different stride per axis
    ((2, 10, 8, 8, 1), (2, 3, 3), (3, 1, 1), "VALID"),    # temporal kernel shorter than its stride
]


# The time-folded value is also checked on every case through the layer's
# "unfold" choice below (its value for videos of few channels); the first
# case (the FC_S net's first layer) checks fold_time's own gradients by
# default, the others are slow checks.
@pytest.mark.parametrize("shape,kernel,stride,padding",
                         CASES_3D[:1] + [pytest.param(*case, marks=pytest.mark.slow) for case in CASES_3D[1:]])
def test_fold_time_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    _check_against_flax(shape, kernel, stride, padding, "fold_time")


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 16, 16, 3), (4, 4), (2, 2), "SAME"),             # the short-run net's stride-2 layers
    ((2, 9, 11, 3), (4, 4), (2, 2), "SAME"),              # odd sizes
    ((2, 9, 11, 3), (4, 4), (2, 2), "VALID"),             # the window leaves z: g extended by zeros
    ((2, 20, 17, 2), (15, 15), (3, 3), "CIRCULAR"),       # the texture preset's first layer (also extended)
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
        layer = nets.Conv(4, (3, 3), (stride, stride), "SAME")
        x = jnp.zeros((1, 8, 8, channels))
        params = init_params(layer, jax.random.key(0), x)
        with ops.conv_impl("subpixel_grad"):
            return str(jax.make_jaxpr(lambda x: layer.apply(params, x))(x)).count("custom_vjp_call")

    assert custom_vjp_calls(3, 1) == 1
    assert custom_vjp_calls(ops.UNFOLD_TRANSPOSE_BELOW_CHANNELS, 1) == 0
    assert custom_vjp_calls(ops.UNFOLD_TRANSPOSE_BELOW_CHANNELS, 2) == 1


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
    FOLD_TIME_VALUE_BELOW_CHANNELS input channels take the time-folded
    value with the unfolded patches' gradients (a custom VJP), the others
    :func:`conv_unfold` and its autodiff gradients."""
    _check_against_flax(shape, kernel, stride, padding, "unfold")


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES_3D)
def test_conv_unfold_matches_xla_with_gradients(shape, kernel, stride, padding):
    """The function itself on the 3-D cases whose value the layer takes
    from :func:`conv_fold_time`."""
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), kernel + (shape[-1], 4)) / np.sqrt(np.prod(kernel) * shape[-1])
    pads = ops._resolve_padding(padding, shape[1:-1], kernel, stride)
    if padding == "CIRCULAR":
        reference = lambda x, k: ops._xla_conv(jnp.pad(x, ((0, 0),) + pads + ((0, 0),), mode="wrap"), k,
                                               stride, "VALID")
    else:
        reference = lambda x, k: ops._xla_conv(x, k, stride, pads)
    ours = lambda x, k: ops.conv_unfold(x, k, stride, padding)
    # One jitted function each for the value and its gradients.
    value_and_grads = lambda f: jax.jit(lambda x, k: (f(x, k), jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))),
                                                                       argnums=(0, 1))(x, k)))
    (y, g), (y_ref, g_ref) = value_and_grads(ours)(x, k), value_and_grads(reference)(x, k)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-4, rtol=1e-4)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def test_subpixel_grad_takes_the_subpixel_path_where_it_fits():
    """The cases above must exercise both geometries of the sub-pixel input
    gradient: δ per axis for the short-run net's layers is 0, for the
    texture net's first layer (SAME) 1, windows inside z; a VALID 4×4
    stride-2 conv of 9 rows (3 outputs, z of 6 values) needs the window
    z[−1 : 8], so one zero output before g and one after (δ = −1 + 2); the
    texture preset's first layer, CIRCULAR (a VALID conv of the 64 + 14
    wrapped values, 22 outputs, z of 66), needs z[−6 : 72]: two zero
    outputs on each side (δ = −6 + 6)."""
    assert ops._subpixel_input_gradient_shift((32, 32), (4, 4), (2, 2), ((1, 1), (1, 1)), (16, 16)) == (
        (0, 0), ((0, 0), (0, 0)))
    assert ops._subpixel_input_gradient_shift((64,), (15,), (3,), ((7, 7),), (22,)) == ((1,), ((0, 0),))
    assert ops._subpixel_input_gradient_shift((9,), (4,), (2,), ((0, 0),), (3,)) == ((1,), ((1, 1),))
    assert ops._subpixel_input_gradient_shift((78,), (15,), (3,), ((0, 0),), (22,)) == ((0,), ((2, 2),))


def _check_against_flax(shape, kernel, stride, padding, impl):
    """Values and gradients (in the params and in x) of ``nets.Conv`` with
    ``impl`` against Flax's ``Conv``, each computed by one jitted function
    (one compilation instead of one per primitive; the kernel is chosen when
    the function is traced, inside the ``conv_impl`` block)."""
    x = jax.random.normal(jax.random.key(0), shape)
    reference = nn.Conv(5, kernel, strides=stride, padding=padding)
    params = init_params(reference, jax.random.key(1), x)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), params)
    ours = nets.Conv(5, kernel, stride, padding)

    def value_and_grads(module):
        loss = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
        return jax.jit(lambda p, x: (module.apply(p, x), jax.grad(loss, argnums=(0, 1))(p, x)))

    y_ref, g_ref = value_and_grads(reference)(params, x)
    with ops.conv_impl(impl):
        y, g = value_and_grads(ours)(params, x)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-4, rtol=1e-4)  # float32 sums in another order
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


# On the CPU the rule picks fold_time for FC_S and unfold for ST (see
# CPU_CHOICES below): there the forced cases are the same programs as the
# rule's, so they are slow checks (elsewhere they are not).
@pytest.mark.parametrize("variant,impl", [pytest.param("fc_s", "fold_time", marks=pytest.mark.slow),
                                          pytest.param("fc_s", "unfold", marks=pytest.mark.slow),
                                          pytest.param("st", "unfold", marks=pytest.mark.slow),
                                          ("st", ops.CPU_RULE), ("fc_s", ops.CPU_RULE)])
def test_the_video_nets_are_the_same_function_either_way(variant, impl):
    config = presets.stg(variant, frames=8, image_size=16, channels=3)
    assert config.langevin.chain_batch is None
    net = D.make_net(config)
    x = jax.random.normal(jax.random.key(0), (2, 8, 16, 16, 3))
    params = init_params(net, jax.random.key(1), x)
    params = jax.tree_util.tree_map(lambda a: a * 50.0, params)  # past the tiny initial weights
    results = []
    for chosen in (impl, "xla"):
        with ops.conv_impl(chosen):  # traced here: one jitted function per choice
            results.append(jax.jit(lambda p, v: (net.apply(p, v), jax.grad(lambda v: net.apply(p, v).sum())(v)))(
                params, x))
    (f, grad), (f_xla, grad_xla) = results
    np.testing.assert_allclose(f, f_xla, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad, grad_xla, rtol=1e-4, atol=1e-6 * float(jnp.abs(grad_xla).max()))


def test_too_small_an_input_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than the kernel"):
        ops.conv_fold_time(jnp.zeros((1, 3, 8, 8, 1)), jnp.zeros((5, 3, 3, 1, 2)), (1, 1, 1), "VALID")
    with pytest.raises(ValueError, match="videos"):
        ops.conv_fold_time(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 1, 2)), (1, 1), "VALID")
    with pytest.raises(ValueError, match="smaller than the kernel"):
        ops.conv_unfold(jnp.zeros((1, 3, 3, 1)), jnp.zeros((5, 5, 1, 2)), (2, 2), "VALID")
    with pytest.raises(ValueError, match="spatial axes"):
        ops.conv_unfold(jnp.zeros((1, 8, 8, 1)), jnp.zeros((3, 3, 3, 1, 2)), (1, 1, 1), "VALID")
    with pytest.raises(ValueError, match="conv_impl"):
        with ops.conv_impl("fast"):
            pass


def test_saved_configs_hold_no_conv_choice_and_old_ones_still_load():
    saved = presets.stg("st", frames=8, image_size=16).to_dict()
    assert not {"conv", "space_to_depth"} & set(saved)
    assert D.DescriptorConfig.from_dict(saved) == presets.stg("st", frames=8, image_size=16)
    for old in ({"conv": "subpixel_grad"}, {"conv": "space_to_depth"}, {"space_to_depth": True}):
        assert D.DescriptorConfig.from_dict({**saved, **old}) == presets.stg("st", frames=8, image_size=16)


# Per preset net, the implementation of each layer on the CPU.
CPU_CHOICES = [
    (presets.texture().layers, 3, ("subpixel_grad", "xla", "xla")),
    (presets.object_pattern().layers, 3, ("subpixel_grad", "xla", "xla")),
    (presets.demo().layers, 1, ("subpixel_grad", "xla", "xla")),
    (presets.shortrun().layers, 3, ("subpixel_grad",) * 4 + ("xla",)),
    (presets.stg("st").layers, 3, ("unfold",) * 3),
    (presets.stg("fc_s").layers, 3, ("fold_time",) * 3),
]


@pytest.mark.parametrize("layers,channels,expected", CPU_CHOICES)
def test_the_rule_gives_each_preset_its_cpu_kernels_and_xla_elsewhere(layers, channels, expected):
    n_axes = layers[0].n_axes() or 2  # the 2-D presets give ints, the video nets tuples
    chosen = {backend: [] for backend in ("cpu", "gpu", "tpu")}
    for spec in layers:
        for backend, impls in chosen.items():
            impls.append(ops.choose_conv_impl(backend, spec.kernel_for(n_axes), spec.stride_for(n_axes), channels))
        channels = spec.features
    assert tuple(chosen["cpu"]) == expected
    assert set(chosen["gpu"]) == set(chosen["tpu"]) == {"xla"}


def test_the_kernels_are_chosen_when_traced_from_the_backend(monkeypatch):
    """The same config, traced as if for a CPU and for a GPU: the texture
    net's first layer (15×15, stride 3) takes the custom input gradient on
    the CPU (a transposed conv without zeros: a matmul, no conv of the
    3-dilated cotangent) and XLA's own gradient elsewhere."""
    config = presets.texture()
    net = D.make_net(config)
    x = jnp.zeros((24, 24, 3))
    params = init_params(net, jax.random.key(0), x[None])
    energy = D.make_energy_fn(net.apply, params, config.sigma)
    traced = {}
    for backend in ("cpu", "gpu"):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        # Fresh functions each time: a function traced before keeps its trace.
        traced[backend] = (str(jax.make_jaxpr(lambda x: energy(x))(x)),
                           str(jax.make_jaxpr(jax.grad(lambda x: energy(x)))(x)))
    (cpu_energy, cpu_grad), (gpu_energy, gpu_grad) = traced["cpu"], traced["gpu"]
    assert cpu_energy.count("custom_vjp_call") == 1 and "custom_vjp_call" not in gpu_energy
    assert "lhs_dilation=(3, 3)" in gpu_grad and "dot_general" not in gpu_grad
    assert "lhs_dilation=(3, 3)" not in cpu_grad and "dot_general" in cpu_grad


def test_conv_impl_overrides_the_backend_within_its_block_only():
    layer = nets.Conv(4, (4, 4), (2, 2), "SAME")
    x = jnp.zeros((1, 8, 8, 3))
    params = init_params(layer, jax.random.key(0), x)
    count = lambda: str(jax.make_jaxpr(lambda x: layer.apply(params, x))(x)).count("custom_vjp_call")
    with ops.conv_impl("xla"):
        assert count() == 0
    with ops.conv_impl(ops.CPU_RULE):
        assert count() == 1
    assert count() == (1 if jax.default_backend() == "cpu" else 0)
