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
