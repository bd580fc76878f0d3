"""The run directory: one writer at a time, overwrites that leave nothing stale."""

import json
import os
import subprocess
import time
import sys


import jax.numpy as jnp
import pytest

from gcnjax import cli
from gcnjax.train import LOCK_NAME, RunDir, RunLocked

_HOLD = """
import sys, time
from gcnjax.train import RunDir
run = RunDir(sys.argv[1])
(run.path / "config.json").write_text("{}")
(run.path / "metrics.csv").write_text("iteration\\n1\\n")
print("ready", flush=True)
time.sleep(120)
"""


def _holder(path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        before = sorted(p.name for p in out.iterdir())
        for flags in (["--overwrite"], ["--resume"], []):
            assert cli.main(["demo", "--out", str(out), "--quiet", *flags]) == 2
            err = capsys.readouterr().err
            assert f"being written by process {proc.pid}" in err, err
        with pytest.raises(RunLocked, match=str(proc.pid)):
            RunDir(out, overwrite=True)
        # Nothing of the first writer's was touched.
        assert sorted(p.name for p in out.iterdir()) == before
        assert (out / "metrics.csv").read_text() == "iteration\n1\n"
    finally:
        proc.kill()
        proc.wait()
    # Its process gone (killed: the lock stays behind), the next writer takes the run over.
    assert (out / LOCK_NAME).is_file()
    run = RunDir(out, overwrite=True)
    assert "which is gone; taking the run over" in capsys.readouterr().err
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    run.close()
    assert not (out / LOCK_NAME).exists()


def test_overwrite_removes_the_previous_runs_files_and_keeps_the_users(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        RunDir(out)
    first = RunDir(out, overwrite=True)  # the folder's own files are recorded as not the run's
    (out / "config.json").write_text("{}")
    (first.images / "synthesized_000010.png").write_bytes(b"png")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events").write_text("x")
    (out / "latents.npy").write_bytes(b"npy")
    first.close()
    capsys.readouterr()
    second = RunDir(out, overwrite=True)
    err = capsys.readouterr().err
    assert "removed the previous run's" in err and "latents.npy" in err and "kept 1 file" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["images", "notes.txt"]
    assert list(second.images.iterdir()) == []
    second.close()


def test_overwrite_of_a_run_from_before_the_record_removes_only_run_outputs(tmp_path):
    out = tmp_path / "old"
    (out / "images").mkdir(parents=True)
    (out / "images" / "samples_000002.png").write_bytes(b"png")
    for name in ("config.json", "metrics.csv", "report.md", "params.msgpack", "samples.png"):
        (out / name).write_text("x")
    (out / "my_script.py").write_text("print()")
    RunDir(out, overwrite=True).close()
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["images", "my_script.py"]


def test_the_lock_is_released_when_the_process_ends(tmp_path):
    out = tmp_path / "run"
    code = f"from gcnjax.train import RunDir; RunDir({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.is_dir() and not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_sigint_checkpoints_the_current_iteration_and_says_how_to_resume(tmp_path):
    import signal

    out = tmp_path / "run"
    # A learning rate low enough that the run cannot end by itself before the signal comes: at the
    # demo's rate one Langevin step per iteration lets the chains collapse after about 2000
    # iterations, which a loaded machine can reach before the signal is handled.
    argv = [sys.executable, "-m", "gcnjax.cli", "demo", "--image-size", "40", "--iterations", "100000",
            "--checkpoint-every", "1000000", "--steps", "1", "--lr", "1e-5", "--out", str(out), "--quiet"]
    # The child takes SIGINT's default action even where this process ignores it (started under nohup or
    # in the background), which it would otherwise inherit.
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics = out / "metrics.csv"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] > 0, steps  # the iteration it reached, though no periodic checkpoint was due
    assert f"checkpointed at iteration {steps[-1]}" in err and "--resume" in err
    assert not (out / LOCK_NAME).exists()


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    import pathlib

    # The folder's system refuses (as for a user without the right; root is never refused here).
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", refuse)
    assert cli.main(["demo", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and "--out" in err and "Traceback" not in err


TINY_NET = '[{"features": 2, "kernel": 3, "stride": 1, "padding": "SAME"}]'


def test_out_of_memory_is_one_line_and_leaves_the_folder_reusable(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["descriptor", "--data", "skimage:brick", "--image-size", "8", "--layers", TINY_NET, "--iterations", "1",
            "--steps", "1", "--out", str(out), "--quiet"]
    # 2³³ chains of 8×8: 2 TiB for the chains alone.
    assert cli.main(argv + ["--chains", str(2**33)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of memory: one step needs about" in err[0] and "GiB" in err[0], err
    assert "lower --chains" in err[0] and "nothing was kept" in err[0]
    assert not out.exists()
    # In a folder of the user's: their file stays, the run's are gone, and the
    # same command with fewer chains runs there.
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(argv + ["--chains", str(2**33), "--overwrite"]) == 2
    assert sorted(os.listdir(out)) == ["notes.txt"]
    assert cli.main(argv + ["--chains", "2", "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "synthesized.png").is_file()


def test_out_of_memory_reads_the_size_from_the_cpus_and_the_gpus_messages():
    from gcnjax.run import out_of_memory

    for text in ("RESOURCE_EXHAUSTED: Out of memory allocating 3221225472 bytes.",  # XLA:CPU
                 "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3221225472 bytes."):  # a GPU's
        message = str(out_of_memory(RuntimeError(text), "lower --chains"))
        assert "one step needs about 3.0 GiB at once" in message and message.endswith("lower --chains."), message
    assert "more memory than there is" in str(out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: no size"), "x"))
    assert out_of_memory(RuntimeError("INVALID_ARGUMENT: 3 bytes"), "x") is None


def test_a_failed_run_is_kept_only_where_it_can_go_on(tmp_path):
    kept = RunDir(tmp_path / "kept")
    (kept.checkpoints / "4").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"kept at iteration 4 .*--resume continues it.*--overwrite"):
        with kept:
            raise ValueError("boom")
    assert (tmp_path / "kept" / "checkpoints" / "4").is_dir()
    fresh = RunDir(tmp_path / "fresh")
    (fresh.checkpoints / "0").mkdir(parents=True)
    with pytest.raises(ValueError, match="nothing was kept"):
        with fresh:
            raise ValueError("boom")
    assert not (tmp_path / "fresh").exists()
    # A stalled or collapsed run keeps its metrics, the record of how it got there.
    from gcnjax.train import TrainingStalled

    stalled = RunDir(tmp_path / "stalled")
    stalled.log({"iteration": 1, "samples_flat": 1.0})
    with pytest.raises(TrainingStalled, match=r"metrics are kept in .*metrics\.csv.*--overwrite"):
        with stalled:
            raise TrainingStalled("the chains collapsed at iteration 1")
    assert (tmp_path / "stalled" / "metrics.csv").read_text().splitlines()[-1] == "1,1.0"


def test_resume_takes_equal_settings_and_refuses_other_data(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--steps", "1", "--chains", "1", "--checkpoint-every", "2", "--quiet", "--out", str(out)]
    assert cli.main(["demo", "--image-size", "40", "--iterations", "2", *common]) == 0
    saved = json.loads((out / "config.json").read_text())
    lr = saved["config"]["learning_rate"]
    # The run's own values, given again, are no change.
    assert cli.main(["demo", "--resume", "--image-size", "40", "--texture", "brick", "--lr", str(lr),
                     "--iterations", "4", *common]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["n_iterations"] == 4
    capsys.readouterr()
    for flags, named in ((["--texture", "grass"], "--texture grass (the run's: brick)"),
                         (["--image-size", "48"], "--image-size 48 (the run's: 40)"),
                         (["--lr", str(lr * 10)], f"(the run's: {lr})")):
        assert cli.main(["demo", "--resume", *flags, "--iterations", "6", *common]) == 2
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
    assert json.loads((out / "config.json").read_text())["config"]["n_iterations"] == 4


def test_resume_refuses_other_data_and_another_preset(tmp_path, capsys, image_folder):
    folder, other = image_folder(2, 16, name="a"), image_folder(2, 16, name="b")
    out = tmp_path / "run"
    common = ["--image-size", "16", "--layers", TINY_NET, "--steps", "1", "--chains", "1", "--checkpoint-every",
              "1", "--quiet", "--out", str(out)]
    assert cli.main(["descriptor", "--data", str(folder), "--iterations", "1", *common]) == 0
    for flags, named in ((["--data", str(other)], f"--data {other}"), (["--preset", "object"], "--preset object")):
        assert cli.main(["descriptor", "--resume", *flags, "--iterations", "2", *common]) == 2
        assert named in capsys.readouterr().err
    # The same folder by another path is the same data.
    relative = os.path.relpath(folder)
    assert cli.main(["descriptor", "--resume", "--data", relative, "--preset", "texture", "--iterations", "2",
                     *common]) == 0


def test_sigint_stops_the_loop_after_its_iteration_even_where_a_library_swallows_the_interrupt():
    import signal

    from gcnjax.train import TrainingInterrupted, fit

    calls = []

    def step(state, batch):  # the signal comes inside the third step, where it is caught and dropped
        calls.append(batch)
        if batch == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            except KeyboardInterrupt:
                pass
        return state + 1, {"loss": jnp.float32(0.0)}

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has another handler in this process")
    with pytest.raises(TrainingInterrupted, match="interrupted before the first checkpoint"):
        fit(step, jnp.int32(0), lambda i: i, end=10, quiet=True)
    assert calls == [0, 1, 2]  # the third iteration ran to its end, no fourth began
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
