"""Image loading, pixel scales, grids: and the errors users get."""

import numpy as np
import pytest
from PIL import Image

from gcnjax import data as gdata


def write_png(path, array):
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def test_load_image_round_trip_and_channels(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3))
    p = write_png(tmp_path / "a.png", rgb)
    im = gdata.load_image(p)
    assert im.dtype == np.float32 and im.shape == (20, 30, 3)
    np.testing.assert_array_equal(im, rgb)
    gray = gdata.load_image(p, channels=1)
    np.testing.assert_allclose(gray[..., 0], rgb.mean(axis=-1), rtol=1e-6)
    resized = gdata.load_image(p, size=(10, 15))
    assert resized.shape == (10, 15, 3) and resized.min() >= 0 and resized.max() <= 255
    cropped = gdata.load_image(p, crop=(10, 10))
    np.testing.assert_array_equal(cropped, rgb[5:15, 10:20])


def test_load_images_folder_sorted_and_sized(tmp_path):
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):
        write_png(tmp_path / name, np.full((8, 8, 3), 10 * i))
    (tmp_path / "notes.txt").write_text("not an image")
    ims = gdata.load_images(tmp_path)
    assert ims.shape == (3, 8, 8, 3)
    assert ims[0, 0, 0, 0] == 10  # a.png first


def test_mixed_sizes_need_a_size(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((8, 8, 3)))
    write_png(tmp_path / "b.png", np.zeros((9, 8, 3)))
    with pytest.raises(gdata.DataError, match="different sizes.*--image-size"):
        gdata.load_images(tmp_path)
    assert gdata.load_images(tmp_path, size=8).shape == (2, 8, 8, 3)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda d: d / "missing.png", "does not exist"),
        (lambda d: (d / "fake.png").write_text("hello") and d / "fake.png", "cannot read image"),
        (lambda d: d, "is a directory"),
    ],
)
def test_load_image_errors_name_the_file(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(gdata.DataError, match=match):
        gdata.load_image(path)


def test_truncated_png_is_a_clear_error(tmp_path):
    p = write_png(tmp_path / "t.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3)))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(gdata.DataError, match="t.png"):
        gdata.load_image(p)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(gdata.DataError, match="holds no images"):
        gdata.load_images(tmp_path)
    with pytest.raises(gdata.DataError, match="does not exist"):
        gdata.load_images(tmp_path / "nope")


def test_bundled_textures():
    for name in gdata.BUNDLED_TEXTURES:
        im = gdata.bundled_texture(name, size=(64, 64))
        assert im.shape == (1, 64, 64, 1) and 20 < im.mean() < 235 and im.std() > 5
    with pytest.raises(gdata.DataError, match="unknown bundled texture"):
        gdata.bundled_texture("marble")


def test_pixel_scales_invert():
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 5, 5, 3)).astype(np.float32)
    scale = gdata.PixelScale("minus_mean").fit(pixels)
    x = scale.to_model(pixels)
    np.testing.assert_allclose(x.reshape(-1, 3).mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(scale.to_pixels(x), pixels, atol=1e-3)
    unit = gdata.PixelScale("unit")
    u = unit.to_model(pixels)
    assert u.min() >= -1 and u.max() <= 1
    np.testing.assert_allclose(unit.to_pixels(u), pixels, atol=1e-3)
    with pytest.raises(ValueError, match="fit"):
        gdata.PixelScale("minus_mean").to_model(pixels)


def test_standard_pixel_scale_has_unit_variance_and_inverts():
    rng = np.random.default_rng(1)
    pixels = (rng.normal(size=(3, 6, 6, 3)) * np.array([10.0, 20.0, 30.0]) + np.array([50.0, 100.0, 150.0]))
    scale = gdata.PixelScale("standard").fit(pixels.astype(np.float32))
    x = scale.to_model(pixels.astype(np.float32))
    # Per-channel mean 0; ONE sd, so the mean square over everything is 1
    # and the channels keep their proportions (closed form: the sample sds).
    np.testing.assert_allclose(x.reshape(-1, 3).mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.mean(x.astype(np.float64) ** 2), 1.0, rtol=1e-4)
    centred = pixels.reshape(-1, 3) - pixels.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(scale.sd, np.sqrt(np.mean(centred ** 2)), rtol=1e-6)
    np.testing.assert_allclose(x.reshape(-1, 3).std(axis=0), centred.std(axis=0) / scale.sd, rtol=1e-4)
    np.testing.assert_allclose(scale.to_pixels(x), pixels, atol=1e-3)
    again = gdata.PixelScale.from_dict(scale.to_dict())
    assert again == scale
    lo, hi = scale.range
    np.testing.assert_allclose((lo, hi), (-max(scale.mean) / scale.sd, (255 - min(scale.mean)) / scale.sd))
    with pytest.raises(ValueError, match="fit"):
        gdata.PixelScale("standard").to_model(pixels)
    with pytest.raises(ValueError, match="constant"):
        gdata.PixelScale("standard").fit(np.full((1, 4, 4, 1), 7.0))


def test_image_grid_layout(tmp_path):
    ims = np.stack([np.full((4, 4, 1), v) for v in (0, 100, 200)])
    grid = gdata.image_grid(ims, n_cols=2, pad=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1)
    assert grid[1, 1] == 0 and grid[1, 6] == 100 and grid[6, 1] == 200 and grid[6, 6] == 255
    path = gdata.save_image_grid(tmp_path / "g.png", ims)
    saved = np.asarray(Image.open(path))
    np.testing.assert_array_equal(saved, gdata.image_grid(ims))  # 2 columns, pad 2: 14 x 14
    assert saved.shape == (14, 14)


def test_mirror_images_follow_the_images_flipped_left_to_right():
    images = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    both = gdata.with_mirror_images(images)
    np.testing.assert_array_equal(both[:2], images)
    for i in range(2):
        for col in range(4):
            np.testing.assert_array_equal(both[2 + i, :, col], images[i, :, 3 - col])
    # The set is symmetric: its mean image is its own mirror.
    np.testing.assert_allclose(both.mean(0), both.mean(0)[:, ::-1])
    with pytest.raises(gdata.DataError, match="--mirror"):
        gdata.with_mirror_images(np.zeros((2, 16, 1)), "--mirror")
