"""The default feature extractor: a small classifier, its training, its cache."""

import numpy as np
import pytest

from gcnjax import classifier, metrics

TINY = classifier.ClassifierConfig(channels=(4, 8), features=16, n_classes=2, image_size=(12, 12), epochs=4,
                                   batch_size=32, learning_rate=3e-3)


def _stripes(n, seed):
    """Two classes: horizontal or vertical stripes of random phase and period, plus noise, pixels 0..255."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    period = rng.uniform(3, 6, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    rows, cols = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    coord = np.where(labels[:, None, None] == 0, rows[None], cols[None])
    images = 127.5 + 80 * np.sin(2 * np.pi * coord / period + phase) + rng.normal(0, 20, (n, 12, 12))
    return np.clip(images, 0, 255)[..., None].astype(np.float32), labels


@pytest.mark.slow
def test_training_reaches_high_accuracy_and_round_trips(tmp_path):
    images, labels = _stripes(320, 0)
    params, info = classifier.train_classifier(images, labels, TINY)
    assert info["steps"] == 40 and info["train_accuracy"] > 0.95
    test_images, test_labels = _stripes(200, 1)
    acc = classifier.accuracy(params, TINY, test_images, test_labels)
    assert acc > 0.95

    path = classifier.save_classifier(params, TINY, tmp_path / "c.msgpack", test_accuracy=acc)
    loaded, config, info = classifier.load_classifier(path)
    assert config == TINY and info["test_accuracy"] == acc
    assert classifier.accuracy(loaded, config, test_images, test_labels) == acc

    extractor = metrics.classifier_features(path)
    features = metrics.extract_features(test_images, extractor, batch_size=64)
    assert features.shape == (200, 16) and np.isfinite(features).all()
    # the features separate the classes: the Fréchet distance between the two classes is far larger than
    # between two halves of one class
    horizontal, vertical = features[test_labels == 0], features[test_labels == 1]
    within = metrics.frechet_distance_from_features(horizontal[::2], horizontal[1::2])
    between = metrics.frechet_distance_from_features(horizontal, vertical)
    assert between > 5 * within
    assert metrics.fcd(test_images, test_images, path=path) == pytest.approx(0.0, abs=1e-6)


def test_cache_dir_and_missing_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("GCNJAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert classifier.cache_dir() == tmp_path / "xdg" / "gcnjax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert classifier.cache_dir() == tmp_path / "home" / ".cache" / "gcnjax"
    monkeypatch.setenv("GCNJAX_CACHE", str(tmp_path / "mine"))
    assert classifier.default_weights_path() == tmp_path / "mine" / classifier.WEIGHTS_NAME
    with pytest.raises(FileNotFoundError, match="gcnjax classifier --data"):
        metrics.classifier_features()
    (tmp_path / "mine").mkdir()
    classifier.default_weights_path().write_bytes(b"not a classifier")
    with pytest.raises(ValueError, match="not a gcnjax classifier file"):
        classifier.load_classifier()


def test_bad_config_and_labels():
    with pytest.raises(ValueError, match="image_size"):
        classifier.ClassifierConfig(channels=(4, 8, 8), image_size=(6, 6))
    with pytest.raises(ValueError, match="n_classes"):
        classifier.train_classifier(np.zeros((4, 12, 12, 1)), np.array([0, 1, 2, 1]), TINY)


def _write_idx(path, array):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.tobytes())


def test_cli_trains_caches_and_measures(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from gcnjax import cli

    monkeypatch.setenv("GCNJAX_CACHE", str(tmp_path / "cache"))
    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix, n, seed in (("train", 256, 2), ("t10k", 64, 3)):
        images, labels = _stripes(n, seed)
        _write_idx(idx / f"{prefix}-images-idx3-ubyte", images[..., 0])
        _write_idx(idx / f"{prefix}-labels-idx1-ubyte", labels)
    # no weights yet: the distance names the command to run
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(_stripes(6, 4)[0]):
        Image.fromarray(im[..., 0].astype(np.uint8)).save(folder / f"{i}.png")
    assert cli.main(["fcd", "--a", str(folder), "--b", str(folder)]) == 2
    assert "gcnjax classifier --data" in capsys.readouterr().err

    assert cli.main(["classifier", "--data", str(idx), "--epochs", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and (tmp_path / "cache" / classifier.WEIGHTS_NAME).is_file()
    _, config, info = classifier.load_classifier()
    assert config.n_classes == 2 and 0 <= info["test_accuracy"] <= 1

    np.save(tmp_path / "noise.npy", np.random.default_rng(0).uniform(0, 255, (6, 12, 12, 1)).astype(np.float32))
    assert cli.main(["fcd", "--a", str(folder), "--b", str(folder), "--kid", "--kid-subsets", "3"]) == 0
    out = capsys.readouterr().out
    assert "FCD (Fréchet classifier distance): 0.0000" in out and "KCD" in out
    assert cli.main(["fcd", "--a", str(folder), "--b", str(tmp_path / "noise.npy")]) == 0
    assert float(capsys.readouterr().out.split(":")[1].split()[0]) > 0
