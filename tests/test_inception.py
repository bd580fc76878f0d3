"""Inception-v3 port: architecture, the PyTorch-named weights file, clear errors (random weights)."""

import numpy as np
import pytest

from gcnjax import inception, metrics


def _random_npz(path, seed=0):
    """A PyTorch-named state dict of random weights (He-scaled convs, positive variances)."""
    rng = np.random.default_rng(seed)
    shapes = inception._torch_names(inception.inception_variables_shapes())
    arrays = {}
    for name, (keys, leaf) in shapes.items():
        if keys[-1] == "kernel":
            h, w, cin, cout = leaf.shape
            arrays[name] = rng.standard_normal((cout, cin, h, w), np.float32) * np.float32(np.sqrt(2.0 / (h * w * cin)))
        elif keys[-1] == "var":
            arrays[name] = rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        else:
            arrays[name] = rng.normal(0, 0.1, leaf.shape).astype(np.float32)
    arrays["fc.weight"] = np.zeros((10, 2048), np.float32)  # extra arrays are ignored
    np.savez(path, **arrays)
    return arrays


def test_weights_round_trip_and_pool3_features(tmp_path):
    arrays = _random_npz(tmp_path / "w.npz")
    assert len(arrays) == 1 + 94 * 5  # 94 conv+bn units in Inception-v3 up to pool3, plus fc
    assert arrays["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    variables = inception.load_inception(tmp_path / "w.npz")
    # the conv kernel is the torch weight transposed OIHW -> HWIO
    np.testing.assert_array_equal(variables["params"]["Conv2d_1a_3x3"]["conv"]["kernel"],
                                  arrays["Conv2d_1a_3x3.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats"]["Mixed_6b"]["branch7x7_2"]["bn"]["var"],
                                  arrays["Mixed_6b.branch7x7_2.bn.running_var"])
    inception.save_inception_npz(variables, tmp_path / "again.npz")
    again = np.load(tmp_path / "again.npz")
    assert set(again.files) == set(arrays) - {"fc.weight"}
    for name in again.files:
        np.testing.assert_array_equal(again[name], arrays[name])

    # The mapping is PyTorch's arithmetic: the first unit on a small input against a direct computation
    # with the torch-layout arrays, conv (stride 2, cross-correlation) then (y − mean)/sqrt(var + eps)·w + b, ReLU.
    x = np.random.default_rng(2).normal(size=(2, 9, 9, 3)).astype(np.float32)
    unit = {c: variables[c]["Conv2d_1a_3x3"] for c in ("params", "batch_stats")}
    got = np.asarray(inception.BasicConv(32, (3, 3), (2, 2)).apply(unit, x))
    w = arrays["Conv2d_1a_3x3.conv.weight"].astype(np.float64)
    conv = np.zeros((2, 4, 4, 32))
    for i in range(4):
        for j in range(4):
            conv[:, i, j] = np.einsum("nabc,ocab->no", x[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3], w)
    bn = {k: arrays[f"Conv2d_1a_3x3.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    expected = np.maximum(
        (conv - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-3) * bn["weight"] + bn["bias"], 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

    extractor = inception.inception_features(variables, resize=None)
    images = np.random.default_rng(1).uniform(0, 255, (3, inception.MIN_SIZE, inception.MIN_SIZE, 3))
    features = metrics.extract_features(images, extractor)
    assert features.shape == (3, 2048) and np.isfinite(features).all()
    assert np.all(features >= 0) and np.ptp(features, axis=0).max() > 0  # ReLU outputs that depend on the image


def test_missing_and_ill_shaped_arrays(tmp_path):
    # The loader checks arrays in a fixed order (batch statistics, then params, modules sorted by name), so
    # small files reach the failing array without writing a whole state dict.
    shapes = inception._torch_names(inception.inception_variables_shapes())
    stats = {name: np.ones(leaf.shape, np.float32) for name, (keys, leaf) in shapes.items() if keys[0] == "batch_stats"}
    np.savez(tmp_path / "missing.npz", **stats)
    with pytest.raises(ValueError, match=r"no array 'Conv2d_1a_3x3.bn.bias'.*Inception-v3 state dict"):
        inception.load_inception(tmp_path / "missing.npz")
    bn = {f"Conv2d_1a_3x3.bn.{k}": np.ones(32, np.float32) for k in ("weight", "bias")}
    np.savez(tmp_path / "bad.npz", **stats, **bn, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 5, 5), np.float32)})
    with pytest.raises(ValueError, match=r"'Conv2d_1a_3x3.conv.weight'.*\(32, 3, 5, 5\), expected \(32, 3, 3, 3\)"):
        inception.load_inception(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="convert a PyTorch state dict"):
        inception.load_inception(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="at least 75"):
        inception.inception_features({}, resize=32)
