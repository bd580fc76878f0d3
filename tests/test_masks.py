import gzip

import numpy as np
import pytest

from gcnjax import masks, metrics
from gcnjax.data import DataError, load_fashion_mnist, load_idx


def test_salt_and_pepper_removes_the_exact_fraction_per_example():
    m = masks.salt_and_pepper((5, 20, 10, 3), 0.7, seed=1)
    assert m.shape == (5, 20, 10, 1)
    assert set(np.unique(m)) == {0.0, 1.0}
    np.testing.assert_array_equal((m == 0).sum(axis=(1, 2, 3)), np.full(5, 140))
    assert not np.array_equal(m[0], m[1])  # independent per example
    np.testing.assert_array_equal(m, masks.salt_and_pepper((5, 20, 10, 3), 0.7, seed=1))


def test_block_is_centred_or_placed():
    m = masks.block((2, 64, 64, 3), 20)
    assert (m == 0).sum() == 2 * 400
    assert m[0, 22:42, 22:42].max() == 0 and m[0, 21, 30] == 1 and m[0, 42, 30] == 1
    r = masks.block((50, 64, 64), (10, 30), seed=3)
    assert np.all((r == 0).sum(axis=(1, 2, 3)) == 300)
    assert len({tuple(np.argwhere(r[i, ..., 0] == 0)[0]) for i in range(50)}) > 10
    with pytest.raises(ValueError, match="fit"):
        masks.block((1, 8, 8), 9)


def test_from_spec_and_errors():
    np.testing.assert_array_equal(masks.from_spec("block:4x6", (1, 8, 8)), masks.block((1, 8, 8), (4, 6)))
    assert (masks.from_spec("pepper:0.5", (1, 8, 8)) == 0).sum() == 32
    with pytest.raises(ValueError, match="pepper:FRACTION"):
        masks.from_spec("holes:3", (1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        masks.from_spec("pepper:1.5", (1, 8, 8))
    assert masks.describe("pepper:0.7") == "70% pixels missing"
    assert masks.describe("block:32") == "32×32 block missing in the centre"
    assert masks.describe("randblock:20x30") == "20×30 block missing at a random place"


def test_masks_drawn_with_jax_follow_their_key_and_their_distribution():
    """One jit'd draw per key: a pepper mask removes exactly round(p·H·W)
    pixels per example, each pixel missing with probability p over keys
    (binomial bounds); a random block is one whole block per example, its
    top row uniform over the places where it fits; a centred block and a
    bad spec are from_spec's."""
    import jax

    draw = jax.jit(jax.vmap(lambda k: masks.draw(k, "pepper:0.25", (3, 4, 4, 3))))
    pepper = np.asarray(draw(jax.random.split(jax.random.key(0), 2000)))  # (draws, N, H, W, 1)
    assert pepper.shape == (2000, 3, 4, 4, 1) and set(np.unique(pepper)) == {0.0, 1.0}
    np.testing.assert_array_equal((pepper == 0).sum(axis=(2, 3, 4)), 4)
    frequency, sd = (pepper == 0).mean(axis=0), np.sqrt(0.25 * 0.75 / 2000)
    assert np.all(np.abs(frequency - 0.25) < 4.5 * sd), frequency
    assert not np.array_equal(pepper[0], pepper[1]) and not np.array_equal(pepper[0, 0], pepper[0, 1])

    blocks = np.asarray(jax.jit(jax.vmap(lambda k: masks.draw(k, "randblock:2x3", (2, 5, 6))))(
        jax.random.split(jax.random.key(1), 2000)))
    assert blocks.shape == (2000, 2, 5, 6, 1)
    missing = blocks[..., 0] == 0
    assert np.all(missing.sum(axis=(2, 3)) == 6)
    rows, cols = missing.any(axis=3), missing.any(axis=2)
    assert np.all(rows.sum(axis=2) == 2) and np.all(cols.sum(axis=2) == 3)  # one 2×3 block, not scattered
    tops = rows.argmax(axis=2).ravel()  # 4 possible rows, 4000 blocks
    counts, expected = np.bincount(tops, minlength=4), 4000 / 4
    assert np.all(np.abs(counts - expected) < 4.5 * np.sqrt(expected * 0.75)), counts

    centred = masks.draw(jax.random.key(2), "block:4x6", (1, 8, 8))
    np.testing.assert_array_equal(np.asarray(centred), masks.from_spec("block:4x6", (1, 8, 8)))
    with pytest.raises(ValueError, match="pepper:FRACTION"):
        masks.draw(jax.random.key(0), "holes:3", (1, 8, 8))


def test_missing_frames():
    m = masks.missing_frames((2, 6, 4, 4, 3), [1, 4])
    assert m.shape == (2, 6, 1, 1, 1)
    np.testing.assert_array_equal(m[0, :, 0, 0, 0], [1, 0, 1, 1, 0, 1])


def test_recovery_error_counts_missing_values_only():
    truth = np.zeros((2, 4, 4, 3))
    recovered = truth.copy()
    mask = masks.block(truth.shape, 2)
    recovered[mask[..., 0] == 1] = 100.0  # errors on observed pixels do not count
    recovered[0][mask[0, ..., 0] == 0] = 2.0
    np.testing.assert_allclose(metrics.recovery_error(truth, recovered, mask), [2.0, 0.0])


def _write_idx(path, array, type_byte):
    header = bytes([0, 0, type_byte, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def test_idx_round_trip_and_dataset_folder(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 0x08)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, 0x08)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    _write_idx(tmp_path / "f.idx", floats, 0x0D)
    np.testing.assert_array_equal(load_idx(tmp_path / "f.idx"), floats)
    x, y = load_fashion_mnist(tmp_path, limit=5)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], images[:5])
    np.testing.assert_array_equal(y, labels[:5])
    x, y = load_fashion_mnist(tmp_path, classes=[1])
    np.testing.assert_array_equal(y, [1, 1])
    with pytest.raises(DataError, match="t10k-images"):
        load_fashion_mnist(tmp_path, split="test")
    (tmp_path / "bad.idx").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(DataError, match="truncated"):
        load_idx(tmp_path / "bad.idx")
    (tmp_path / "text.idx").write_text("hello")
    with pytest.raises(DataError, match="not an idx file"):
        load_idx(tmp_path / "text.idx")
