"""The command line and the run directory, end to end on tiny settings."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gcnjax import cli

TINY = ["--iterations", "3", "--image-size", "40", "--chains", "2", "--steps", "2", "--quiet"]


def test_demo_writes_a_complete_run(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert str(out / "report.md") in printed
    for name in ("config.json", "metrics.csv", "observed.png", "synthesized.png", "energy.png",
                 "params.msgpack", "report.md", "synthesized.npy"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["n_iterations"] == 3 and config["config"]["image_size"] == [40, 40]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("iteration,") and len(rows) >= 2
    report = (out / "report.md").read_text()
    assert "synthesized.png" in report and "observed.png" in report
    synth = np.load(out / "synthesized.npy")
    assert synth.shape == (2, 40, 40, 1) and np.isfinite(synth).all()
    assert np.asarray(Image.open(out / "synthesized.png")).ndim == 2  # gray grid

    # The theory check runs on the finished run.
    theory = tmp_path / "theory"
    assert cli.main(["theory", "--run", str(out), "--out", str(theory), "--starts", "2", "--steps", "5"]) == 0
    summary = json.loads((theory / "summary.json").read_text())
    assert summary["n_starts"] == 4  # 2 noise starts + 2 synthesized images


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    keep = out / "precious.txt"
    keep.write_text("old results")
    assert cli.main(["demo", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "is not empty (precious.txt)" in err and "--overwrite" in err
    assert keep.read_text() == "old results"


@pytest.mark.parametrize(
    "argv,match",
    [
        (["descriptor", "--data", "/no/such/folder", "--out", "X"], "does not exist"),
        (["descriptor", "--data", "skimage:marble", "--out", "X"], "unknown bundled texture"),
        (["descriptor", "--data", "skimage:brick", "--out", "X", "--image-size", "16"], "receptive field"),
        (["theory", "--run", "/no/run", "--out", "X"], "finished descriptor run"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, argv, match):
    argv = [a if a != "X" else str(tmp_path / "out") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("flag,value", [("--delta", "0"), ("--delta", "-0.3"), ("--lr", "nan"), ("--iterations", "0")])
def test_bad_numbers_are_refused_by_the_parser(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", flag, value])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_empty_folder_at_the_cli(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["descriptor", "--data", str(empty), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "gcnjax.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


@pytest.mark.slow
def test_descriptor_command_on_a_folder(tmp_path, capsys):
    folder = tmp_path / "objects"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (50, 46, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert cli.main(["descriptor", "--preset", "object", "--data", str(folder), "--out", str(out), *TINY]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["top"] == "dense" and saved["observed_shape"] == [2, 40, 40, 3]
    assert np.load(out / "synthesized.npy").shape == (2, 40, 40, 3)
    # and it resumes (nothing left to do but the outputs) with its own settings
    assert cli.main(["descriptor", "--resume", "--out", str(out), "--quiet"]) == 0
