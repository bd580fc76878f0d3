"""A table of bad inputs: each must give a clear error, none a traceback at
the command line, none losing an existing run's files."""

import wave

import numpy as np
import pytest
from PIL import Image

from gcnjax import cli
from gcnjax import data as gdata
from gcnjax.descriptor import DescriptorConfig
from gcnjax.langevin import LangevinConfig
from gcnjax.train import RunConfig

TINY = ["--iterations", "2", "--image-size", "40", "--chains", "1", "--steps", "1", "--quiet"]


def _png(path, shape=(48, 48, 3), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def truncated_png(d):
    p = _png(d / "cut.png")
    p.write_bytes(p.read_bytes()[:100])
    return p


def text_named_png(d):
    p = d / "notes.png"
    p.write_text("this is not an image")
    return p


def empty_folder(d):
    (d / "empty").mkdir()
    return d / "empty"


def mixed_sizes(d):
    (d / "mixed").mkdir()
    _png(d / "mixed" / "a.png", (48, 48, 3))
    _png(d / "mixed" / "b.png", (50, 48, 3))
    return d / "mixed"


IMAGE_CASES = {
    "truncated PNG": (truncated_png, "cannot read image"),
    "text file named .png": (text_named_png, "cannot read image"),
    "empty folder": (empty_folder, "holds no images"),
    "images of mixed sizes": (mixed_sizes, "different sizes"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_images_library_and_cli(tmp_path, capsys, case):
    make, message = IMAGE_CASES[case]
    source = make(tmp_path)
    with pytest.raises(gdata.DataError, match=message):
        gdata.load_images(source)
    if case == "images of mixed sizes":
        return  # the CLI resizes every image to the preset's size, so mixed sizes are fine there
    # At the CLI: one line, exit 2.
    argv = ["descriptor", "--data", str(source), "--out", str(tmp_path / "run"), "--iterations", "2", "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and str(source.name) in err


# The test's own ffmpeg (imageio_ffmpeg.write_frames) is a fork + exec, which
# JAX's fork hook warns about although it takes no lock.
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_video_with_zero_frames(tmp_path):
    import imageio_ffmpeg

    path = tmp_path / "empty.mp4"
    writer = imageio_ffmpeg.write_frames(str(path), (32, 32))
    writer.send(None)
    writer.close()
    with pytest.raises(gdata.DataError, match="empty.mp4"):
        gdata.load_video(path)
    (tmp_path / "zero.avi").write_bytes(b"")
    with pytest.raises(gdata.DataError, match="zero.avi"):
        gdata.load_video(tmp_path / "zero.avi")


def test_video_round_trip(tmp_path):
    frames = np.zeros((6, 32, 32, 3), np.float32)
    for t in range(6):
        frames[t, :, 4 * t : 4 * t + 8] = 255.0  # a moving bar
    for suffix, tol in ((".gif", 1.0), (".mp4", 40.0)):
        path = gdata.save_video(tmp_path / f"v{suffix}", frames, fps=5)
        back = gdata.load_video(path)
        assert back.shape == frames.shape
        assert np.abs(back - frames).mean() < tol  # mp4 is lossy
    assert gdata.load_video(tmp_path / "v.gif", n_frames=2).shape[0] == 2


def _wav(path, width, data):
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(width)
        fh.setframerate(8000)
        fh.writeframes(data)
    return path


def test_wav_with_wrong_sample_width(tmp_path):
    path = _wav(tmp_path / "24bit.wav", 3, bytes(3 * 100))
    with pytest.raises(gdata.DataError, match="24-bit.*16-bit"):
        gdata.load_wav(path)
    (tmp_path / "bad.wav").write_text("RIFF nonsense")
    with pytest.raises(gdata.DataError, match="cannot read WAV"):
        gdata.load_wav(tmp_path / "bad.wav")


def test_wav_round_trip(tmp_path):
    t = np.arange(800) / 8000.0
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    gdata.save_wav(tmp_path / "tone.wav", tone, 8000)
    back, rate = gdata.load_wav(tmp_path / "tone.wav")
    assert rate == 8000 and back.shape == (800, 1)
    np.testing.assert_allclose(back[:, 0], tone, atol=1 / 32767)
    pcm8 = _wav(tmp_path / "u8.wav", 1, np.array([0, 128, 255], np.uint8).tobytes())
    np.testing.assert_allclose(gdata.load_wav(pcm8)[0][:, 0], [-1.0, 0.0, 127 / 128])


@pytest.mark.parametrize(
    "make",
    [
        lambda: DescriptorConfig(sigma=-1.0),
        lambda: DescriptorConfig(sigma=float("nan")),
        lambda: DescriptorConfig(learning_rate=-0.1),
        lambda: DescriptorConfig(learning_rate=float("nan")),
        lambda: DescriptorConfig(n_iterations=-5),
        lambda: DescriptorConfig(weight_decay=float("nan")),
        lambda: LangevinConfig(step_size=-0.1),
        lambda: LangevinConfig(step_size=float("nan")),
        lambda: LangevinConfig(step_size=0.1, noise_scale=-1.0),
        lambda: LangevinConfig.from_delta(float("nan"), 10),
        lambda: RunConfig(checkpoint_every=-1),
    ],
)
def test_negative_or_nan_config_values(make):
    with pytest.raises(ValueError, match="must"):
        make()


def test_failed_run_keeps_existing_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["demo", "--out", str(out), *TINY]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # a second run into the same directory, a bad resume, bad data: all refused
    assert cli.main(["demo", "--out", str(out), *TINY]) == 2
    assert cli.main(["demo", "--resume", "--out", str(out), "--chains", "3"]) == 2
    assert cli.main(["descriptor", "--data", str(tmp_path / "nothing"), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 3
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_enlarged_stretched_and_converted_images_are_reported(tmp_path, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    _png(folder / "a.png", (5, 5))  # gray, 5×5
    _png(folder / "b.png", (30, 60, 3))  # RGB, 2:1
    _png(folder / "c.png", (40, 40, 4))  # RGBA
    images = gdata.load_images(folder, size=224, channels=3)
    assert images.shape == (3, 224, 224, 3)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 3, notes
    assert "enlarged up to 44.8× (from 5×5) to 224×224" in notes[0] and "--image-size" in notes[0]
    assert "1 image(s) of another aspect ratio (e.g. 60×30) stretched" in notes[1]
    assert "1 image(s) from gray to RGB" in notes[2] and "RGBA to RGB (alpha dropped)" in notes[2]
    # Images used as they are: nothing to say.
    gdata.load_images(folder / "b.png", size=(30, 60), channels=3)
    assert "note:" not in capsys.readouterr().err


def test_sizes_that_cannot_make_an_output_are_refused(tmp_path, capsys):
    frames = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3))
    video = gdata.save_video(tmp_path / "v.gif", frames)
    for command in (["stgconvnet", "--data", str(video)], ["multigrid", "--data", str(tmp_path)],
                    ["descriptor", "--data", "skimage:brick"]):
        with pytest.raises(SystemExit):
            cli.main([*command, "--image-size", "1", "--out", str(tmp_path / "run")])
        assert "hold nothing to learn; give a size of at least 8" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(gdata.DataError, match="too small for a video codec"):
        gdata.save_video(tmp_path / "tiny.mp4", frames[:, :1, :1])


def test_video_tools_speak_in_one_line(tmp_path):
    import warnings

    fake = tmp_path / "fake.avi"
    fake.write_bytes(b"not a video" * 100)
    with pytest.raises(gdata.DataError) as info:
        gdata.load_video(fake)
    assert "\n" not in str(info.value) and "ffmpeg version" not in str(info.value) and "fake.avi" in str(info.value)
    # ffmpeg runs as a subprocess of a (multithreaded) JAX process: Python's
    # fork warning is not shown for it.
    frames = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gdata.save_video(tmp_path / "v.mp4", frames)
        gdata.load_video(tmp_path / "v.mp4")
    assert not [w for w in caught if "fork" in str(w.message)], [str(w.message) for w in caught]


def test_truncated_wav_says_what_is_wrong(tmp_path, capsys):
    whole = _wav(tmp_path / "tone.wav", 2, (1000 * np.sin(np.arange(800) / 5)).astype(np.int16).tobytes())
    (tmp_path / "header.wav").write_bytes(whole.read_bytes()[:30])
    with pytest.raises(gdata.DataError, match="ends inside its header") as info:
        gdata.load_wav(tmp_path / "header.wav")
    assert "()" not in str(info.value)
    (tmp_path / "cut.wav").write_bytes(whole.read_bytes()[:44 + 2 * 300 + 1])
    samples, _ = gdata.load_wav(tmp_path / "cut.wav")
    assert samples.shape == (300, 1)
    np.testing.assert_array_equal(samples, gdata.load_wav(whole)[0][:300])
    assert "truncated: its header promises 800 samples, it holds 300" in capsys.readouterr().err
