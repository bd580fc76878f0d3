"""Strided convs as stride-1 convs of the space-to-depth input.

:func:`gcnjax.nets.conv_space_to_depth` (and the ``Conv`` layer of the
descriptor nets) must give Flax's ``Conv`` value and gradients, in x and in
the kernel, for 1-, 2- and 3-D data, every padding the ConvSpecs take, and
kernels longer, equal to and shorter than the stride.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcnjax import descriptor as D
from gcnjax import nets, stg


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
def test_matches_flax_conv_with_gradients(shape, kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), shape)
    reference = nn.Conv(5, kernel, strides=stride, padding=padding)
    params = reference.init(jax.random.key(1), x)
    params = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), params)
    ours = nets.Conv(5, kernel, stride, padding, space_to_depth=True)
    y_ref, y = reference.apply(params, x), ours.apply(params, x)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-4, rtol=1e-4)  # float32 sums in another order

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    g_ref = jax.grad(loss(reference), argnums=(0, 1))(params, x)
    g = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)


def test_the_fc_s_net_is_the_same_function_either_way():
    config = stg.stg_config("fc_s", frames=8, image_size=16, channels=3)
    assert config.space_to_depth and not stg.stg_config("st").space_to_depth
    fast = D.make_net(config)
    plain = D.make_net(config.__class__(**{**config.__dict__, "space_to_depth": False}))
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
