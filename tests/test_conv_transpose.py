"""The sub-pixel and the unfolded transposed convs are
``lax.conv_transpose(..., "SAME")``.

:func:`gcnjax.nets.conv_transpose_subpixel` splits a stride-s transposed
conv into s^n ordinary convs, :func:`gcnjax.nets.conv_transpose_unfold` is
a matmul and the overlap-add of its patches; both checked against
``lax.conv_transpose`` (Flax's ConvTranspose) for 1-D and 2-D, kernels
longer, equal to and shorter than the stride, odd and even, and through
whole generators that use each (same params, same outputs and gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import nets


@pytest.mark.parametrize("kernel,stride,size", [
    ((5, 5), (2, 2), (4, 5)),   # the face nets' 5×5 stride 2, odd and even inputs
    ((4, 4), (2, 2), (3, 3)),   # even kernel
    ((3, 2), (1, 3), (4, 2)),   # stride 1 on one axis; a kernel shorter than the stride on the other
    ((25,), (4,), (6,)),        # the sound net's 1-D kernel 25, stride 4
    ((2,), (3,), (5,)),         # kernel shorter than the stride: some output phases have no taps
])
@pytest.mark.parametrize("conv_transpose", [nets.conv_transpose_subpixel, nets.conv_transpose_unfold])
def test_matches_lax_conv_transpose(kernel, stride, size, conv_transpose):
    n = len(kernel)
    x = jax.random.normal(jax.random.key(0), (2,) + size + (3,))
    k = jax.random.normal(jax.random.key(1), kernel + (3, 4))
    numbers = ("N" + "HW"[-n:] + "C", "HW"[-n:] + "IO", "N" + "HW"[-n:] + "C") if n == 2 else ("NWC", "WIO", "NWC")
    ref = jax.lax.conv_transpose(x, k, stride, "SAME", dimension_numbers=numbers)
    out = conv_transpose(x, k, stride)
    assert out.shape == ref.shape == (2,) + tuple(a * b for a, b in zip(size, stride)) + (4,)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # and its gradients in x and in the kernel are the transposed conv's
    ct = jax.random.normal(jax.random.key(2), ref.shape)
    grads = jax.vjp(lambda x, k: conv_transpose(x, k, stride), x, k)[1](ct)
    ref_grads = jax.vjp(lambda x, k: jax.lax.conv_transpose(x, k, stride, "SAME", dimension_numbers=numbers),
                        x, k)[1](ct)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [
    lambda **kw: nets.GeneratorNet(start=(2, 2), channels=(8, 16, 3), **kw),
    lambda **kw: nets.SoundGeneratorNet(start=4, channels=(8, 16, 1), kernel=9, stride=4, **kw),
])
def test_generators_agree_with_flax_conv_transpose(make):
    """The first transposed conv (16 channels out) is sub-pixel, the last
    (3 or 1) unfolded."""
    assert nets.UNFOLD_TRANSPOSE_BELOW_CHANNELS == 16
    fast, ref = make(), make(deconv="xla")
    z = jax.random.normal(jax.random.key(2), (3, 6))
    params = fast.init(jax.random.key(3), z)
    ref_params = ref.init(jax.random.key(3), z)
    # the same params (names, shapes and initial values)
    for a, b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(ref_params)):
        assert a[0] == b[0]
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
    np.testing.assert_allclose(np.asarray(fast.apply(params, z)), np.asarray(ref.apply(params, z)), atol=1e-6)
    target = jax.random.normal(jax.random.key(4), fast.apply(params, z).shape)
    loss = lambda net: lambda p, z: jnp.sum((net.apply(p, z) - target) ** 2)
    g_fast = jax.grad(loss(fast), argnums=(0, 1))(params, z)
    g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, z)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_bad_deconv_is_refused():
    with pytest.raises(ValueError, match="deconv"):
        nets.GeneratorNet(start=(2, 2), channels=(4, 3), deconv="fft").init(jax.random.key(0), jnp.zeros((1, 2)))


def test_bad_shapes_are_clear_errors():
    for conv_transpose in (nets.conv_transpose_subpixel, nets.conv_transpose_unfold):
        with pytest.raises(ValueError, match="spatial axes"):
            conv_transpose(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 3, 2, 2)), (2, 2, 2))
