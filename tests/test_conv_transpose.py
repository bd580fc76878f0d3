"""The sub-pixel and the unfolded transposed convs are
``lax.conv_transpose(..., "SAME")``.

:func:`gcnjax.ops.conv_transpose_subpixel` splits a stride-s transposed
conv into s^n ordinary convs, :func:`gcnjax.ops.conv_transpose_unfold` is
a matmul and the overlap-add of its patches; both checked against
``lax.conv_transpose`` (Flax's ConvTranspose) for 1-D and 2-D, kernels
longer, equal to and shorter than the stride, odd and even, and through
whole generators that use each (same outputs and gradients as with XLA's).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import nets, ops
from gcnjax.nets import init_params


@pytest.mark.parametrize("kernel,stride,size", [
    ((5, 5), (2, 2), (4, 5)),   # the face nets' 5×5 stride 2, odd and even inputs
    ((4, 4), (2, 2), (3, 3)),   # even kernel
    ((3, 2), (1, 3), (4, 2)),   # stride 1 on one axis; a kernel shorter than the stride on the other
    ((25,), (4,), (6,)),        # the sound net's 1-D kernel 25, stride 4
    ((2,), (3,), (5,)),         # kernel shorter than the stride: some output phases have no taps
])
@pytest.mark.parametrize("conv_transpose", [ops.conv_transpose_subpixel, ops.conv_transpose_unfold])
def test_matches_lax_conv_transpose(kernel, stride, size, conv_transpose):
    n = len(kernel)
    x = jax.random.normal(jax.random.key(0), (2,) + size + (3,))
    k = jax.random.normal(jax.random.key(1), kernel + (3, 4))
    numbers = ("N" + "HW"[-n:] + "C", "HW"[-n:] + "IO", "N" + "HW"[-n:] + "C") if n == 2 else ("NWC", "WIO", "NWC")
    reference = lambda x, k: jax.lax.conv_transpose(x, k, stride, "SAME", dimension_numbers=numbers)
    ours = lambda x, k: conv_transpose(x, k, stride)
    # the value and the gradients in x and in the kernel, each by one jitted function
    value_and_vjp = lambda f: jax.jit(lambda x, k, ct: (f(x, k), jax.vjp(f, x, k)[1](ct)))
    shape = (2,) + tuple(a * b for a, b in zip(size, stride)) + (4,)
    ct = jax.random.normal(jax.random.key(2), shape)
    out, grads = value_and_vjp(ours)(x, k, ct)
    ref, ref_grads = value_and_vjp(reference)(x, k, ct)
    assert out.shape == ref.shape == shape
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # and its gradients in x and in the kernel are the transposed conv's
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: nets.GeneratorNet(start=(2, 2), channels=(8, 16, 3)), marks=pytest.mark.slow),
    lambda: nets.SoundGeneratorNet(start=4, channels=(8, 16, 1), kernel=9, stride=4),
])
def test_generators_agree_with_flax_conv_transpose(make):
    """The CPU's transposed convs (the first, 16 channels out, sub-pixel; the
    last, 3 or 1, unfolded) against XLA's, values and gradients."""
    assert ops.UNFOLD_TRANSPOSE_BELOW_CHANNELS == 16
    net = make()
    z = jax.random.normal(jax.random.key(2), (3, 6))
    params = init_params(net, jax.random.key(3), z)
    target = jax.random.normal(jax.random.key(4), (3,) + net.output_shape())
    loss = lambda p, z: jnp.sum((net.apply(p, z) - target) ** 2)
    results = {}
    for impl in (ops.CPU_RULE, "xla"):
        with ops.conv_impl(impl):  # traced here: one jitted function per choice
            results[impl] = jax.jit(lambda p, z: (net.apply(p, z), jax.grad(loss, argnums=(0, 1))(p, z)))(params, z)
    (out, g_fast), (out_ref, g_ref) = results[ops.CPU_RULE], results["xla"]
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_ref), atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel,stride", [((5, 5), (2, 2)), ((9,), (4,))])
def test_the_layer_is_flax_conv_transpose(kernel, stride):
    """The same params as ``nn.ConvTranspose(padding="SAME")`` (names,
    shapes, initial values) and, with XLA's kernel, the same function."""
    x = jax.random.normal(jax.random.key(0), (2,) + (4,) * len(kernel) + (3,))
    ours = nets.ConvTranspose(5, kernel, stride)
    flax_layer = nn.ConvTranspose(5, kernel, strides=stride, padding="SAME")
    params, flax_params = init_params(ours, jax.random.key(1), x), init_params(flax_layer, jax.random.key(1), x)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(flax_params)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(flax_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params = jax.tree_util.tree_map(lambda a: a + 0.1, params)  # a non-zero bias too
    with ops.conv_impl("xla"):
        np.testing.assert_allclose(np.asarray(ours.apply(params, x)), np.asarray(flax_layer.apply(params, x)),
                                   rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_clear_errors():
    for conv_transpose in (ops.conv_transpose_subpixel, ops.conv_transpose_unfold):
        with pytest.raises(ValueError, match="spatial axes"):
            conv_transpose(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 2, 2)), (2, 2, 2))
