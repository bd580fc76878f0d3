"""Datasets and image I/O: the one way gcnjax loads and writes data.

Images are float32 arrays ``(N, H, W, C)`` in pixel units 0..255 as loaded;
the scale a model sees is a :class:`PixelScale`, part of a run's config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "load_data",
    "load_data_spec",
    "load_generator_data",
    "with_mirror_images",
    "DataError",
    "shuffled_batches",
    "check_batch",
    "IMAGE_EXTENSIONS",
    "BUNDLED_TEXTURES",
    "load_image",
    "load_images",
    "bundled_texture",
    "BUNDLED_PHOTOS",
    "bundled_photo_tiles",
    "center_crop",
    "PixelScale",
    "image_grid",
    "save_image_grid",
    "VIDEO_EXTENSIONS",
    "load_video",
    "save_video",
    "video_strip",
    "save_frame_strip",
    "side_by_side",
    "load_wav",
    "save_wav",
    "load_sound_clips",
    "sound_to_pixels",
    "pixels_to_sound",
    "FASHION_MNIST_DIR",
    "load_idx",
    "load_fashion_mnist",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
BUNDLED_TEXTURES = ("brick", "grass", "gravel")
# scikit-image's bundled colour photographs (no download needed).
BUNDLED_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".webm", ".gif")

PathLike = Union[str, os.PathLike]


class DataError(ValueError):
    """A user's data cannot be used; the message names the input and the fix."""


def _resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    from PIL import Image

    channels = image.shape[-1]
    out = []
    for c in range(channels):
        plane = Image.fromarray(image[..., c].astype(np.float32), mode="F")
        plane = plane.resize((size[1], size[0]), Image.Resampling.BICUBIC)
        out.append(np.asarray(plane))
    return np.clip(np.stack(out, axis=-1), 0.0, 255.0)


def _as_size(size) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise DataError(f"image size must be a positive int or (height, width), got {size!r}.")
    return size


def center_crop(image: np.ndarray, size) -> np.ndarray:
    """The central ``(height, width)`` window of an ``(..., H, W, C)`` image."""
    size = _as_size(size)
    h, w = image.shape[-3:-1]
    if size[0] > h or size[1] > w:
        raise DataError(f"cannot crop {size[1]}x{size[0]} from an image of {w}x{h}; choose a smaller crop.")
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return image[..., top : top + size[0], left : left + size[1], :]


def _to_channels(image: np.ndarray, channels: Optional[int], source: str) -> np.ndarray:
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 4:  # drop alpha
        image = image[..., :3]
    if channels is None or image.shape[-1] == channels:
        return image
    if channels == 1:
        return image.mean(axis=-1, keepdims=True)
    if channels == 3 and image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    raise DataError(f"{source}: has {image.shape[-1]} channels, cannot convert to {channels}.")


def _read_image(path: Path) -> np.ndarray:
    """An image file's pixels as float32 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise DataError(f"image file {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; pass an image file, or use load_images for a folder.")
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB", "RGBA") else im, np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read image {str(path)!r} ({err}); is it a complete PNG/JPEG file?"
        ) from None


def note(text: str) -> None:
    """Tell the user, on one line of stderr, what was done to their input."""
    print(f"note: {text}", file=sys.stderr)


def _input_notes(source: str, shapes: Sequence[Tuple[int, ...]], size, channels: Optional[int]) -> None:
    """One line per kind of change made to the images of ``source`` (their
    file shapes ``shapes``): enlarged more than 2×, stretched to another
    aspect ratio, converted between gray, RGB and RGBA."""
    size = _as_size(size)
    if size is not None:
        factors = [max(size[0] / h, size[1] / w) for h, w, *_ in shapes]
        enlarged = [f for f in factors if f > 2]
        if enlarged:
            h, w = shapes[int(np.argmax(factors))][:2]
            note(f"{source}: {len(enlarged)} image(s) enlarged up to {max(enlarged):.1f}× (from {w}×{h}) to "
                 f"{size[1]}×{size[0]}: they hold less detail than that size (--image-size sets it).")
        stretched = [(h, w) for h, w, *_ in shapes if abs(np.log((h / w) / (size[0] / size[1]))) > 0.05]
        if stretched:
            h, w = stretched[0]
            note(f"{source}: {len(stretched)} image(s) of another aspect ratio (e.g. {w}×{h}) stretched to "
                 f"{size[1]}×{size[0]} (--image-size sets the size; crop the images to keep their shape).")
    kinds = {1: "gray", 3: "RGB", 4: "RGBA"}
    counts: Dict[str, int] = {}
    for shape in shapes:
        have = shape[2] if len(shape) == 3 else 1
        want = channels if channels is not None else (3 if have == 4 else have)
        if have != want:
            change = f"{kinds.get(have, have)} to {kinds.get(want, want)}"
            counts[change] = counts.get(change, 0) + 1
    if counts:
        done = ", ".join(f"{n} image(s) from {change}" + (" (alpha dropped)" if change.startswith("RGBA") else "")
                         for change, n in counts.items())
        hint = "--gray learns gray images" if channels != 1 else "drop --gray to learn colour"
        note(f"{source}: converted {done} ({hint}).")


def load_image(path: PathLike, size=None, channels: Optional[int] = 3, crop=None) -> np.ndarray:
    """Read one image as float32 ``(H, W, C)`` in 0..255.

    Args:
      path: an image file (PNG, JPEG, ...).
      size: resize to ``(height, width)`` (or a square side) if given.
      channels: 3 (RGB), 1 (gray), or None to keep the file's.
      crop: then keep the central ``(height, width)`` window, if given.
    """
    path = Path(path)
    image = _to_channels(_read_image(path), channels, str(path))
    size = _as_size(size)
    if size is not None and image.shape[:2] != size:
        image = _resize(image, size)
    if crop is not None:
        image = center_crop(image, crop)
    return image.astype(np.float32)


def load_images(
    source: Union[PathLike, Sequence[PathLike]],
    size=None,
    channels: Optional[int] = 3,
    crop=None,
) -> np.ndarray:
    """Read a folder (or a list) of images as float32 ``(N, H, W, C)`` in 0..255.

    Without ``size`` all images must already share one size; with it, each
    is resized (and then centre-cropped to ``crop``, if given). Files are read
    in sorted name order.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise DataError(f"image folder {str(folder)!r} does not exist; check the path.")
        if folder.is_file():
            paths = [folder]
        else:
            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not paths:
                raise DataError(
                    f"image folder {str(folder)!r} holds no images "
                    f"(looked for {', '.join(IMAGE_EXTENSIONS)})."
                )
    else:
        paths = [Path(p) for p in source]
        if not paths:
            raise DataError("the list of image paths is empty; pass at least one image.")
    raw = [_read_image(p) for p in paths]
    images = []
    for path, image in zip(paths, raw):
        image = _to_channels(image, channels, str(path))
        if _as_size(size) is not None and image.shape[:2] != _as_size(size):
            image = _resize(image, _as_size(size))
        images.append(center_crop(image, crop) if crop is not None else image)
    _input_notes(str(source) if isinstance(source, (str, os.PathLike)) else f"{len(paths)} image files",
                 [im.shape for im in raw], size, channels)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        listing = ", ".join(f"{p.name}: {im.shape[1]}x{im.shape[0]}" for p, im in zip(paths, images))
        raise DataError(
            f"images have different sizes ({listing}); pass size=(height, width) "
            "(--image-size at the command line) to resize them to one size."
        )
    return np.stack(images)


def bundled_texture(name: str, size=None, channels: int = 1, crop=None) -> np.ndarray:
    """One of scikit-image's bundled gray textures (``brick``, ``grass``,
    ``gravel``; 512×512) as float32 ``(1, H, W, C)`` in 0..255, resized to
    ``size`` and then centre-cropped to ``crop`` if given."""
    if name not in BUNDLED_TEXTURES:
        raise DataError(f"unknown bundled texture {name!r}; choose one of {', '.join(BUNDLED_TEXTURES)}.")
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), np.float32)
    image = _to_channels(image, channels, f"skimage.data.{name}")
    size = _as_size(size)
    if size is not None and image.shape[:2] != size:
        image = _resize(image, size)
    if crop is not None:
        image = center_crop(image, crop)
    return image[None].astype(np.float32)


def bundled_photo_tiles(size=32, channels: int = 3, tiles_per_side: int = 4) -> np.ndarray:
    """Small images cut from scikit-image's bundled colour photographs
    (:data:`BUNDLED_PHOTOS`): each photo is resized so that its shorter side
    holds ``tiles_per_side`` tiles, then cut into non-overlapping tiles of
    ``size`` (an int or ``(height, width)``). Float32 ``(N, H, W, C)`` in
    0..255; a dataset of some 90 32×32 images that needs no download."""
    import skimage.data

    size = _as_size(size)
    if int(tiles_per_side) < 1:
        raise DataError(f"tiles_per_side must be >= 1, got {tiles_per_side!r}.")
    tiles = []
    for name in BUNDLED_PHOTOS:
        image = _to_channels(np.asarray(getattr(skimage.data, name)(), np.float32), channels,
                             f"skimage.data.{name}")
        h, w = image.shape[:2]
        scale = tiles_per_side * max(size[0] / h, size[1] / w)
        image = _resize(image, (max(size[0], int(h * scale)), max(size[1], int(w * scale))))
        for top in range(0, image.shape[0] - size[0] + 1, size[0]):
            for left in range(0, image.shape[1] - size[1] + 1, size[1]):
                tiles.append(image[top:top + size[0], left:left + size[1]])
    return np.stack(tiles).astype(np.float32)


_BATCH_KINDS = {3: "(N, T, C) sounds", 4: "(N, H, W, C) images", 5: "(N, T, H, W, C) videos"}


def check_batch(x, channels: int, name: str = "images", ndims: Sequence[int] = (4,)) -> np.ndarray:
    """``x`` as float32 after the checks every learner makes: a non-empty
    batch of one of the kinds ``ndims`` allows (4: images ``(N, H, W, C)``;
    5: videos; 3: sounds), ``channels`` channels, finite values. A
    :class:`DataError` naming ``name`` otherwise."""
    x = np.asarray(x, np.float32)
    if x.ndim not in ndims or x.shape[0] == 0:
        kinds = " or ".join(_BATCH_KINDS[n] for n in ndims)
        raise DataError(f"{name}: expected a non-empty batch of {kinds}, got shape {x.shape}.")
    if x.shape[-1] != channels:
        raise DataError(f"{name}: images have {x.shape[-1]} channels but the config has channels={channels}.")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name}: images contain NaN or infinite values.")
    return x


def shuffled_batches(x, batch_size: int, seed: int, *, always_shuffle: bool = False):
    """``batch(i)``: iteration ``i``'s batch of ``x`` (first axis), every
    batch of one size, so a learning step is traced once.

    Each epoch visits the examples in a fresh order (a function of ``seed``
    and the epoch, so a resumed run sees the same batches), and a batch that
    runs past the end of an epoch wraps to the start of that order. With
    ``len(x) <= batch_size`` every batch is all of ``x`` in its own order,
    unless ``always_shuffle``: then batches of ``batch_size`` are cut from
    the shuffled order all the same (repeating examples where there are
    fewer).
    """
    n = x.shape[0]
    if n <= batch_size and not always_shuffle:
        return lambda i: x
    orders = {}

    def batch(i):
        epoch, pos = divmod(i * batch_size, n)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        return x[np.take(orders[epoch], np.arange(pos, pos + batch_size), mode="wrap")]

    return batch


@dataclasses.dataclass(frozen=True)
class PixelScale:
    """How pixels 0..255 map to the values a model sees.

    kind:
      ``"minus_mean"``: ``x = p − mean`` (the descriptor papers; σ = 1).
        ``mean`` is one value per channel, the data's own unless given.
      ``"standard"``: ``x = (p − mean) / sd``, ``mean`` per channel as in
        ``"minus_mean"`` and ``sd`` ONE value, the standard deviation of
        ``p − mean`` over all pixels and channels (the data's own unless
        given): unit variance, the colour proportions kept (a scalar
        scale, so orthogonal colour maps stay orthogonal). A reference
        ``N(0, σ²)`` then has σ in units of the data's contrast.
      ``"unit"``: ``x = p / 127.5 − 1`` in [−1, 1] (ABP and later code).
      ``"pixels"``: ``x = p``, pixels 0..255 as they are (the multi-grid
        authors' code).
    """

    kind: str = "minus_mean"
    mean: Optional[Tuple[float, ...]] = None
    sd: Optional[float] = None

    def __post_init__(self):
        if self.kind not in ("minus_mean", "standard", "unit", "pixels"):
            raise ValueError(f"PixelScale.kind must be 'minus_mean', 'standard', 'unit' or 'pixels', "
                             f"got {self.kind!r}.")

    def fit(self, images: np.ndarray) -> "PixelScale":
        """This scale with its mean (and sd) taken from ``images`` (if it needs them)."""
        if self.kind not in ("minus_mean", "standard"):
            return self
        flat = np.asarray(images, np.float64).reshape(-1, images.shape[-1])
        mean = self.mean if self.mean is not None else tuple(float(m) for m in flat.mean(axis=0))
        sd = self.sd
        if self.kind == "standard" and sd is None:
            sd = float(np.sqrt(np.mean((flat - np.asarray(mean)) ** 2)))
            if not sd > 0:
                raise ValueError("PixelScale('standard'): the images are constant (sd 0); nothing to scale by.")
        return dataclasses.replace(self, mean=mean, sd=sd)

    def _divisor(self) -> float:
        return float(self.sd) if self.kind == "standard" else 1.0

    def to_model(self, pixels):
        if self.kind == "pixels":
            return pixels
        if self.kind == "unit":
            return pixels / 127.5 - 1.0
        if self.mean is None or (self.kind == "standard" and self.sd is None):
            raise ValueError(f"PixelScale({self.kind!r}) has no mean yet; call .fit(images) first.")
        return (pixels - np.asarray(self.mean, np.float32)) / np.float32(self._divisor())

    def to_pixels(self, x):
        if self.kind == "pixels":
            return np.asarray(x)
        if self.kind == "unit":
            return (np.asarray(x) + 1.0) * 127.5
        return np.asarray(x) * np.float32(self._divisor()) + np.asarray(self.mean, np.float32)

    def to_dict(self) -> Dict[str, Any]:
        """``{"kind": ..., "mean": [...] or None, "sd": ... or None}``, as a run's config.json keeps it."""
        return {"kind": self.kind, "mean": None if self.mean is None else list(self.mean), "sd": self.sd}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "PixelScale":
        """The scale that :meth:`to_dict` wrote."""
        return cls(d["kind"], None if d.get("mean") is None else tuple(float(m) for m in d["mean"]),
                   None if d.get("sd") is None else float(d["sd"]))

    @property
    def range(self) -> Tuple[float, float]:
        """The model-space box that pixels 0..255 fill (per channel, widest)."""
        if self.kind == "unit":
            return (-1.0, 1.0)
        if self.kind == "pixels":
            return (0.0, 255.0)
        mean = np.asarray(self.mean)
        return (float(-mean.max()) / self._divisor(), float(255.0 - mean.min()) / self._divisor())


def image_grid(images: np.ndarray, n_cols: Optional[int] = None, pad: int = 2) -> np.ndarray:
    """Tile ``(N, H, W, C)`` pixel images (0..255) into one uint8 image."""
    images = np.clip(np.nan_to_num(np.asarray(images, np.float32)), 0, 255)
    n, h, w, c = images.shape
    n_cols = n_cols or int(np.ceil(np.sqrt(n)))
    n_rows = int(np.ceil(n / n_cols))
    grid = np.full((n_rows * (h + pad) + pad, n_cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, n_cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = np.round(im).astype(np.uint8)
    return grid[..., 0] if c == 1 else grid


def save_image_grid(path: PathLike, images: np.ndarray, n_cols: Optional[int] = None) -> Path:
    """Write :func:`image_grid` of ``images`` to a PNG, atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(image_grid(images, n_cols)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------ video


def load_video(path: PathLike, *, n_frames: Optional[int] = None, size=None, channels: int = 3) -> np.ndarray:
    """Read a video (AVI/MP4/... through imageio's bundled ffmpeg, a GIF, or
    a folder of frame images read in sorted name order) as float32
    ``(T, H, W, C)`` in 0..255: the first ``n_frames`` frames, each resized
    to ``size`` if given."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.exists():
        raise DataError(f"video file {str(path)!r} does not exist; check the path.")
    if n_frames is not None and int(n_frames) < 1:
        raise DataError(f"n_frames must be >= 1 (or None for all frames), got {n_frames!r}.")
    if path.is_dir():
        frame_paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not frame_paths:
            raise DataError(
                f"frame folder {str(path)!r} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "give a video file or a folder of frames."
            )
        return load_images(frame_paths[:n_frames], size=size, channels=channels)
    if path.stat().st_size == 0:
        raise DataError(f"video file {str(path)!r} is empty (0 bytes); give a complete video file.")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DataError(f"{str(path)!r} is not a video file I can read ({', '.join(VIDEO_EXTENSIONS)}).")
    frames = []
    try:
        with _ffmpeg_quiet():
            for frame in iio.imiter(path):
                frames.append(_to_channels(np.asarray(frame, np.float32), channels, str(path)))
                if n_frames is not None and len(frames) >= n_frames:
                    break
    except DataError:
        raise
    except Exception as err:  # imageio raises many kinds for a broken file
        if not frames:
            raise DataError(f"cannot read video {str(path)!r} ({_last_line(err)}); "
                            "is it a complete video file?") from None
    if not frames:
        raise DataError(f"video {str(path)!r} has no frames; give a video with at least one frame.")
    size = _as_size(size)
    if size is not None and frames[0].shape[:2] != size:
        frames = [_resize(f, size) for f in frames]
    return np.stack(frames).astype(np.float32)


@contextlib.contextmanager
def _ffmpeg_quiet():
    """Start ffmpeg (imageio's subprocess) without Python's warning that
    os.fork() in a multithreaded (JAX) process may deadlock: the child execs
    ffmpeg at once and touches no lock."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def _last_line(err: Exception) -> str:
    """The last line of an error's text (ffmpeg's reason, without its banner)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1].rstrip(").") if lines else type(err).__name__


def save_video(path: PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Write ``(T, H, W, C)`` pixel frames (0..255) as GIF or MP4 (by the
    suffix), atomically."""
    import imageio.v3 as iio

    path = Path(path)
    frames = np.clip(np.nan_to_num(np.asarray(frames, np.float32)), 0, 255).round().astype(np.uint8)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise DataError(f"save_video needs frames (T, H, W, C) with T >= 1, got shape {frames.shape}.")
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    if path.suffix.lower() == ".gif":
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        if min(frames.shape[1:3]) < 2:
            raise DataError(f"cannot encode {path.name}: frames of {frames.shape[2]}×{frames.shape[1]} pixels are "
                            "too small for a video codec; use larger frames.")
        try:
            with _ffmpeg_quiet():
                iio.imwrite(tmp, frames, extension=path.suffix, fps=fps, macro_block_size=1)
        except Exception as err:  # ffmpeg's failures come in many kinds
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot write {path.name} ({_last_line(err)}).") from None
    os.replace(tmp, path)
    return path


def video_strip(videos: np.ndarray, max_frames: int = 10, pad: int = 2) -> np.ndarray:
    """One uint8 picture of ``(N, T, H, W, C)`` pixel videos: a row per video
    of at most ``max_frames`` frames, evenly spaced over time (first and last
    included)."""
    videos = np.asarray(videos, np.float32)
    if videos.ndim != 5 or videos.shape[0] == 0 or videos.shape[1] == 0:
        raise DataError(f"video_strip needs videos (N, T, H, W, C), got shape {videos.shape}.")
    n, t = videos.shape[:2]
    idx = np.unique(np.round(np.linspace(0, t - 1, min(t, int(max_frames)))).astype(int))
    frames = videos[:, idx].reshape((-1,) + videos.shape[2:])
    return image_grid(frames, n_cols=len(idx), pad=pad)


def save_frame_strip(path: PathLike, videos: np.ndarray, max_frames: int = 10) -> Path:
    """Write :func:`video_strip` of ``videos`` to a PNG, atomically."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(video_strip(videos, max_frames)).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def side_by_side(*videos: np.ndarray, pad: int = 2) -> np.ndarray:
    """Videos ``(T_i, H, W, C)`` placed left to right in one video, padded
    with white; each shorter video holds its last frame (so that a 30-frame
    observed video and a 60-frame synthesized one play together)."""
    videos = [np.asarray(v, np.float32) for v in videos]
    if not videos or any(v.ndim != 4 for v in videos):
        raise DataError(f"side_by_side needs videos (T, H, W, C), got shapes {[v.shape for v in videos]}.")
    t = max(v.shape[0] for v in videos)
    h = max(v.shape[1] for v in videos)
    c = max(v.shape[3] for v in videos)
    parts = []
    for i, v in enumerate(videos):
        v = np.repeat(v, c // v.shape[3], axis=3) if v.shape[3] != c else v
        v = np.concatenate([v, np.repeat(v[-1:], t - v.shape[0], axis=0)]) if v.shape[0] < t else v
        frame = np.full((t, h, v.shape[2], c), 255.0, np.float32)
        frame[:, : v.shape[1]] = v
        parts.append(frame)
        if i < len(videos) - 1:
            parts.append(np.full((t, h, pad, c), 255.0, np.float32))
    return np.concatenate(parts, axis=2)


# ------------------------------------------------------------------ idx (MNIST, Fashion-MNIST)

#: Where Debian's ``dataset-fashion-mnist`` installs the idx files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def load_idx(path: PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format; gzipped if the name ends in .gz).

    The header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
    dimensions ``n``, then ``n`` big-endian uint32 sizes; the data follow in
    C order. Returns the array in its stored dtype (native byte order).
    """
    import gzip

    path = Path(path)
    if not path.exists():
        raise DataError(f"idx file {str(path)!r} does not exist; check the path.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read idx file {str(path)!r} ({err}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{str(path)!r} is not an idx file (it must start with two zero bytes and a type byte); "
            "give an MNIST-format file such as train-images-idx3-ubyte(.gz)."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], ">u4")) if ndim else ()
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"idx file {str(path)!r} is truncated or corrupt: its header says shape {shape} "
            f"({expected} bytes of data) but it holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(root: PathLike = FASHION_MNIST_DIR, split: str = "train", *,
                       limit: Optional[int] = None, classes: Optional[Sequence[int]] = None):
    """Fashion-MNIST (or MNIST: the same file names) from a folder of idx files.

    Returns ``(images, labels)``: float32 ``(N, 28, 28, 1)`` in 0..255 and
    int32 ``(N,)``, the first ``limit`` examples (of the ``classes`` given,
    if any). ``split`` is ``"train"`` or ``"test"`` (``t10k``). The default
    folder is where Debian's ``dataset-fashion-mnist`` installs them.
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}.")
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    files = {}
    for kind, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        candidates = [root / stem, root / (stem + ".gz")]
        found = [c for c in candidates if c.exists()]
        if not found:
            hint = (" (install it with: apt-get install dataset-fashion-mnist)"
                    if root == FASHION_MNIST_DIR else "")
            raise DataError(f"no {stem}[.gz] in {str(root)!r}{hint}; give the folder of the idx files.")
        files[kind] = found[0]
    images, labels = load_idx(files["images"]), load_idx(files["labels"])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"idx files in {str(root)!r} do not pair up: images {images.shape}, labels {labels.shape}."
        )
    if classes is not None:
        keep = np.isin(labels, np.asarray(list(classes)))
        images, labels = images[keep], labels[keep]
    if limit is not None:
        images, labels = images[:int(limit)], labels[:int(limit)]
    if images.shape[0] == 0:
        raise DataError(f"no examples left in {str(root)!r} (classes={classes!r}, limit={limit!r}).")
    return images[..., None].astype(np.float32), labels.astype(np.int32)


# ------------------------------------------------------------------ sound


def load_wav(path: PathLike) -> Tuple[np.ndarray, int]:
    """Read a PCM WAV file as float32 ``(T, C)`` in [−1, 1] and its rate.

    8-, 16- and 32-bit integer PCM are read; other sample widths are refused
    with the conversion to make.
    """
    import wave

    path = Path(path)
    if not path.exists():
        raise DataError(f"sound file {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; give a WAV file.")
    try:
        with wave.open(str(path), "rb") as fh:
            width, channels, rate, n = fh.getsampwidth(), fh.getnchannels(), fh.getframerate(), fh.getnframes()
            raw = fh.readframes(n)
    except EOFError:
        raise DataError(f"cannot read WAV file {str(path)!r}: it ends inside its header (a truncated file?); "
                        "give a complete WAV file.") from None
    except (wave.Error, OSError) as err:
        raise DataError(f"cannot read WAV file {str(path)!r} ({err or type(err).__name__}); "
                        "is it an uncompressed PCM WAV?") from None
    frame_bytes = width * channels
    if len(raw) < n * frame_bytes:
        note(f"WAV file {str(path)!r} is truncated: its header promises {n} samples, it holds "
             f"{len(raw) // max(frame_bytes, 1)}; reading those.")
        raw = raw[: len(raw) // max(frame_bytes, 1) * frame_bytes]
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise DataError(
            f"WAV file {str(path)!r} has {8 * width}-bit samples; convert it to 16-bit PCM "
            "(for example: sox in.wav -b 16 out.wav)."
        )
    samples = np.frombuffer(raw, dtypes[width]).astype(np.float64)
    if width == 1:
        samples = (samples - 128.0) / 128.0
    else:
        samples = samples / float(2 ** (8 * width - 1))
    if samples.size == 0:
        raise DataError(f"WAV file {str(path)!r} holds no samples.")
    return samples.reshape(-1, channels).astype(np.float32), rate


def sound_to_pixels(samples: np.ndarray) -> np.ndarray:
    """Waveform samples in [−1, 1] to pixel-like units ``127.5 (s + 1)`` in
    0..255, so that a sound goes through the same scales and models as an
    image or a video."""
    return 127.5 * (np.asarray(samples, np.float32) + 1.0)


def pixels_to_sound(pixels: np.ndarray) -> np.ndarray:
    """The inverse of :func:`sound_to_pixels`."""
    return np.asarray(pixels, np.float32) / 127.5 - 1.0


def save_wav(path: PathLike, samples: np.ndarray, rate: int) -> Path:
    """Write float samples ``(T,)`` or ``(T, C)`` in [−1, 1] as 16-bit PCM, atomically."""
    import wave

    path = Path(path)
    samples = np.asarray(samples, np.float64)
    if samples.ndim == 1:
        samples = samples[:, None]
    pcm = np.round(np.clip(np.nan_to_num(samples), -1.0, 1.0) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(str(tmp), "wb") as fh:
        fh.setnchannels(pcm.shape[1])
        fh.setsampwidth(2)
        fh.setframerate(int(rate))
        fh.writeframes(pcm.tobytes())
    os.replace(tmp, path)
    return path


def load_sound_clips(source: Union[PathLike, Sequence[PathLike]], length: int, *,
                     hop: Optional[int] = None, max_clips_per_file: Optional[int] = None):
    """Cut WAV files into mono clips of ``length`` samples: ``(N, length, 1)``
    float32 in [−1, 1], and the sample rate.

    ``source`` is a WAV file, a folder of them (sorted by name) or a list.
    Each file is mixed to mono and cut into clips starting every ``hop``
    samples (default ``length``: no overlap); a file shorter than ``length``
    gives no clip. All files must share one sample rate.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise DataError(f"sound path {str(folder)!r} does not exist; check the path.")
        paths = [folder] if folder.is_file() else sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise DataError(f"no .wav files in {str(source)!r}; give a WAV file or a folder of them.")
    length = int(length)
    hop = int(hop or length)
    if length < 1 or hop < 1:
        raise DataError(f"clip length and hop must be >= 1, got length={length}, hop={hop}.")
    clips, rates = [], {}
    for path in paths:
        samples, rate = load_wav(path)
        rates[path.name] = rate
        mono = samples.mean(axis=1)
        starts = range(0, mono.shape[0] - length + 1, hop)
        if max_clips_per_file is not None:
            starts = list(starts)[:int(max_clips_per_file)]
        clips.extend(mono[s:s + length] for s in starts)
    if len(set(rates.values())) > 1:
        listing = ", ".join(f"{k}: {v} Hz" for k, v in rates.items())
        raise DataError(f"the WAV files have different sample rates ({listing}); resample them to one rate.")
    if not clips:
        raise DataError(f"no WAV file in {str(source)!r} is at least {length} samples long; use shorter clips.")
    return np.stack(clips)[..., None].astype(np.float32), next(iter(rates.values()))


# ---------------------------------------------------------------- data specs


def load_data(spec: str, size=None, channels: int = 3, crop=None):
    """Images from ``spec``: an image file, a folder of images,
    ``skimage:NAME`` for a bundled texture (brick, grass, gravel),
    ``skimage:photos`` for tiles of ``size`` cut from scikit-image's bundled
    colour photos, ``fashion-mnist[:N]`` (the first N training images of
    Debian's Fashion-MNIST, zero-padded or resized to ``size``) or
    ``idx:FOLDER`` (the training images of any folder of MNIST-format idx
    files, likewise); resized to ``size`` and then centre-cropped to
    ``crop`` where given."""
    if spec == "skimage:photos":
        return bundled_photo_tiles(size or 32, channels=channels)
    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        return _fashion_mnist(spec, size, channels)
    if spec.startswith("idx:"):
        return _fashion_mnist("fashion-mnist", size, channels, root=spec.split(":", 1)[1])
    if spec.startswith("skimage:"):
        return bundled_texture(spec.split(":", 1)[1], size=size, channels=channels, crop=crop)
    return load_images(spec, size=size, channels=channels, crop=crop)


def load_data_spec(spec: dict):
    """The images of a data spec, as a run saves it in ``config.json``'s
    ``"data_spec"`` (``spec``, ``size``, ``channels``, ``crop``): the same
    images :func:`load_data` gave the run."""
    return load_data(**{k: spec.get(k) for k in ("spec", "size", "channels", "crop")})


def _fashion_mnist(spec: str, size, channels: int, root=None):
    limit = None
    if ":" in spec:
        text = spec.split(":", 1)[1]
        if not text.isdigit() or int(text) < 1:
            raise DataError(f"fashion-mnist:N needs a whole number N >= 1 of images, got {spec!r}.")
        limit = int(text)
    images, _ = load_fashion_mnist(root or FASHION_MNIST_DIR, limit=limit)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        dh, dw = h - 28, w - 28
        if dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0:  # pad, as is usual for 32×32 nets
            images = np.pad(images, ((0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2), (0, 0)))
        elif (h, w) != (28, 28):
            images = np.stack([_resize(im, (h, w)) for im in images])
    return np.repeat(images, 3, axis=-1) if channels == 3 else images


def load_generator_data(spec: str, net: str, *, size=None, channels=None, limit=None):
    """Observations for a generator: ``(array, sample rate or None)``.

    ``spec`` is what :func:`load_data` reads (a folder of images,
    ``fashion-mnist``, ``idx:FOLDER``, ...), resized to the net's size, or,
    for ``net == "sound"``, a WAV file or folder (cut into clips of the
    sound net's length)."""
    from gcnjax import generator as G  # jax: only for generator nets

    base = G.GENERATOR_NETS[net]()
    shape = base.output_shape()
    if net == "sound":
        clips, rate = load_sound_clips(spec, shape[0])
        return clips[:limit], rate
    images = load_data(spec, size=size or shape[:2], channels=channels or shape[-1])
    return images[:limit], None


def with_mirror_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    """The examples followed by their left-right mirror images, ``(2N, H, W,
    C)``: ``out[N + i] = images[i, :, ::-1]``. Twice the examples of a class
    that looks the same mirrored (faces, most objects); kept to the training
    examples, never to those that score a model."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise DataError(f"{name}: mirror images need images (N, H, W, C), got shape {images.shape}; "
                        "sounds and videos have no left and right to mirror (drop --mirror).")
    return np.concatenate([images, images[:, :, ::-1]], axis=0)
