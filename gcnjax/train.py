"""The training loop of gcnjax, and the run directory it writes.

Every model family hands :func:`fit` a jit'd ``step(state, batch) ->
(state, metrics)``; the loop owns the progress bar, the metrics CSV, periodic
snapshots (pictures) and the divergence check. Metrics stay on the device
between logs, so the loop syncs with the host once every ``log_every``
iterations, not every step.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gcnjax.langevin import ChainDivergedError

__all__ = ["LEARNING_RATE_DECAYS", "learning_rate_schedule", "check_learning_rate_decay", "RunConfig", "RunDir", "RunLocked", "Checkpointer", "TrainingDiverged", "TrainingStalled", "TrainingInterrupted", "fit", "write_atomic", "write_npy"]


LEARNING_RATE_DECAYS = ("constant", "cosine", "linear")


def learning_rate_schedule(rate: float, decay: str, final_fraction: float, total: int):
    """The learning rate of iteration t of T = ``total``, a = ``final_fraction``:
    ``"constant"`` lr (a float); ``"cosine"`` lr·(a + (1 − a)(1 + cos(πt/T))/2);
    ``"linear"`` lr·(a + (1 − a)(1 − t/T)) (Optax schedules ``t -> lr_t``,
    at a·lr from the last iteration on). Every family's config with a
    ``learning_rate_decay`` reads it here."""
    if decay not in LEARNING_RATE_DECAYS:
        raise ValueError(f"learning_rate_decay must be one of {LEARNING_RATE_DECAYS}, got {decay!r}.")
    if decay == "cosine":
        return optax.cosine_decay_schedule(rate, total, alpha=final_fraction)
    if decay == "linear":
        return optax.linear_schedule(rate, final_fraction * rate, total)
    return rate


def check_learning_rate_decay(owner: str, decay, final_fraction) -> None:
    """Raise a ValueError naming ``owner``'s field unless ``decay`` is one of
    :data:`LEARNING_RATE_DECAYS` and ``final_fraction`` is in [0, 1]."""
    if decay not in LEARNING_RATE_DECAYS:
        raise ValueError(f"{owner}.learning_rate_decay must be one of {LEARNING_RATE_DECAYS}, got {decay!r}.")
    if (isinstance(final_fraction, bool) or not isinstance(final_fraction, (int, float, np.integer, np.floating))
            or not 0 <= final_fraction <= 1):
        raise ValueError(f"{owner}.learning_rate_decay_to is the decayed rate's last value as a fraction "
                         f"of learning_rate, in [0, 1], got {final_fraction!r}.")


class TrainingDiverged(ChainDivergedError):
    """Training produced non-finite values.

    iteration: the iteration at which it was seen.
    last_good: the step of the last checkpoint saved before (None if none).
    """

    def __init__(self, message: str, iteration: int, last_good: Optional[int]):
        super().__init__(message)
        self.iteration = iteration
        self.last_good = last_good


class TrainingStalled(ValueError):
    """Learning cannot go on: e.g. every ReLU of the net is inactive, so f is
    constant and its gradient is zero for good; or the chains keep landing
    where f is flat, so learning only raises f on the data."""


# The collapse check of :func:`fit`: the share of recent iterations with
# ``samples_flat`` (an exponential average over about this many iterations)
# above which the run is stopped. A learning run whose chains sit where f is
# flat gets no pull from them; once that holds for a good part of the
# iterations, f of the data runs away and does not come back.
FLAT_SAMPLES_HORIZON = 100
FLAT_SAMPLES_LIMIT = 0.25


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


class Checkpointer:
    """Orbax checkpoints of a training state (any pytree, PRNG keys included).

    Each save is written to a temporary directory and renamed when complete,
    so a crash mid-write never leaves a checkpoint that loads wrongly; the
    last ``keep`` are kept. Saves are synchronous: a checkpoint that
    :meth:`save` returned from is on disk.
    """

    def __init__(self, directory, keep: int = 3):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise ValueError(f"keep must be >= 1 checkpoint, got {keep}.")
        self.directory = Path(directory).absolute()
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )

    @staticmethod
    def _to_saveable(state):
        return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)

    def save(self, step: int, state) -> None:
        self._manager.save(int(step), args=self._ocp.args.StandardSave(self._to_saveable(state)), force=True)
        self._manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        return self._manager.latest_step()

    def all_steps(self) -> List[int]:
        return sorted(self._manager.all_steps())

    def restore(self, like, step: Optional[int] = None):
        """The state saved at ``step`` (the latest by default), with the
        structure, shapes and dtypes of ``like``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {str(self.directory)!r} to restore.")
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype) if not _is_key(x)
            else jax.ShapeDtypeStruct(jax.random.key_data(x).shape, jax.random.key_data(x).dtype),
            like,
        )
        try:
            restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"checkpoint {step} in {str(self.directory)!r} does not match this model's state ({err}); "
                "was the run made with another model or config?"
            ) from None
        return jax.tree_util.tree_map(
            lambda r, x: jax.random.wrap_key_data(r, impl=jax.random.key_impl(x)) if _is_key(x) else r,
            restored, like,
        )

    def close(self):
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_atomic(path: Path, data) -> None:
    """Write ``data`` (str or bytes) to ``path`` so that a crash never leaves
    half a file: a temporary file is written, then renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)


def write_npy(path: Path, array) -> None:
    """Write ``array`` as a float32 ``.npy`` file, atomically (:func:`write_atomic`)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    write_atomic(path, buffer.getvalue())


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return obj


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a training run is kept: logs, pictures, checkpoints, divergence.

    log_every: iterations between metric rows (and divergence checks).
    image_every: iterations between picture snapshots.
    checkpoint_every: iterations between checkpoints (0: none).
    keep_checkpoints: how many checkpoints to keep.
    on_divergence: ``"stop"`` (roll back to the last good checkpoint and
      stop with a message) or ``"retry"`` (roll back and go on with the
      Langevin step multiplied by ``retry_step_factor``, at most
      ``max_retries`` times).
    """

    log_every: int = 10
    image_every: int = 100
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    on_divergence: str = "stop"
    max_retries: int = 3
    retry_step_factor: float = 0.5

    def __post_init__(self):
        for name in ("log_every", "image_every", "keep_checkpoints"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"RunConfig.{name} must be an integer >= 1, got {value!r}.")
        if not isinstance(self.checkpoint_every, (int, np.integer)) or self.checkpoint_every < 0:
            raise ValueError(f"RunConfig.checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}.")
        if self.on_divergence not in ("stop", "retry"):
            raise ValueError(f"RunConfig.on_divergence must be 'stop' or 'retry', got {self.on_divergence!r}.")
        if not (0 < self.retry_step_factor < 1):
            raise ValueError(f"RunConfig.retry_step_factor must be in (0, 1), got {self.retry_step_factor!r}.")
        if self.max_retries < 0:
            raise ValueError(f"RunConfig.max_retries must be >= 0, got {self.max_retries!r}.")


# Config fields that say how long a run is, not what it learns: a resumed run
# may change them (see RunDir.load_for_resume).
RUN_LENGTH_FIELDS = ("n_iterations", "n_epochs")


def _what_is_computed(value):
    """``value`` with the fields that only say HOW it is computed left out:
    a config class lists them in ``SPEED_FIELDS`` (the chain's unrolling,
    the conv implementation, ...: the same numbers either way), at any depth
    of nested configs. Two runs that differ only there are the same run."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        speed = getattr(type(value), "SPEED_FIELDS", ())
        return tuple((f.name, _what_is_computed(getattr(value, f.name)))
                     for f in dataclasses.fields(value) if f.name not in speed)
    return value


LOCK_NAME = ".gcnjax.lock"
MARKER_NAME = ".gcnjax-run.json"
# What an older run (one without a marker) may have written: removed by --overwrite.
_LEGACY_DIRS = ("images", "checkpoints", "tensorboard", "sounds")
_LEGACY_SUFFIXES = (".json", ".csv", ".md", ".msgpack", ".npy", ".png", ".gif", ".mp4", ".tmp")


class RunLocked(FileExistsError):
    """Another live process is writing the run directory."""


def _read_lock(lock: Path) -> Optional[Dict[str, Any]]:
    for _ in range(20):  # a lock being written is empty for a moment
        try:
            return json.loads(lock.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            time.sleep(0.05)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HELD_LOCKS: Dict[Path, None] = {}


def _release_held_locks() -> None:
    for lock in list(_HELD_LOCKS):
        _release(lock)


def _release(lock: Path) -> None:
    holder = _read_lock(lock)
    if holder is not None and holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)
    _HELD_LOCKS.pop(lock, None)


class RunDir:
    """A run's directory: ``config.json``, ``metrics.csv``, ``images/``,
    ``checkpoints/``, ``report.md``.

    One writer at a time: opening a RunDir takes the lock file
    ``.gcnjax.lock`` (process id, host, command), released by :meth:`close`
    or when the process exits; a lock whose process is gone is taken over
    with a note, a live one is refused with :class:`RunLocked` naming its
    process. A new RunDir never deletes anything that is not a run's: an
    existing non-empty directory is refused unless ``overwrite=True``, which
    removes what the previous run wrote (the files that were in the folder
    before that run came, recorded in ``.gcnjax-run.json``, stay) and says
    what it removed. ``resume=True`` opens an existing run to continue it.
    """

    def __init__(self, path, *, overwrite: bool = False, resume: bool = False):
        self.path = Path(path)
        self.resumed = resume
        self._created = not self.path.exists()
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"run directory {str(self.path)!r} is a file; choose another --out path.")
        if resume and not (self.path / "config.json").is_file():
            raise FileNotFoundError(
                f"cannot resume: {str(self.path)!r} holds no run (no config.json); "
                "start a new run with this --out path instead."
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            raise PermissionError(f"cannot create the run directory {str(self.path)!r}: permission denied; "
                                  "choose an --out path you can write.") from None
        self._lock = self.path / LOCK_NAME
        self._tb = None
        self.checkpoints = self.path / "checkpoints"
        self._take_lock()
        try:
            self._open(overwrite, resume)
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        import atexit
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300]}
        while True:
            try:
                fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(self._lock) or {}
                if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    break  # this process opened the run before
                RunDir.refuse_if_locked(self.path)
                print(f"note: {str(self.path)!r} was locked by process {holder.get('pid')}, which is gone; "
                      "taking the run over.", file=sys.stderr)
                self._lock.unlink(missing_ok=True)
                continue
            except PermissionError:
                raise PermissionError(f"cannot write in the run directory {str(self.path)!r}: permission denied; "
                                      "choose an --out path you can write.") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            break
        if not _HELD_LOCKS:
            atexit.register(_release_held_locks)
        _HELD_LOCKS[self._lock] = None

    @staticmethod
    def refuse_if_locked(path) -> None:
        """:class:`RunLocked` if another live process holds the lock of the run in ``path``."""
        import socket

        lock = Path(path) / LOCK_NAME
        holder = _read_lock(lock) if lock.exists() else None
        if not holder or (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
            return
        if holder.get("host", socket.gethostname()) != socket.gethostname() or _alive(holder.get("pid", 0)):
            raise RunLocked(
                f"run directory {str(path)!r} is being written by process {holder.get('pid')} on "
                f"{holder.get('host')} ({holder.get('command', '?')}); wait for it to finish or stop it, or "
                f"choose another --out (if that process is gone, remove {str(lock)!r})."
            )

    def close(self) -> None:
        """Release the run directory's lock (also done when the process exits)."""
        if self._tb:
            self._tb.close()
        _release(self._lock)

    def __enter__(self) -> "RunDir":
        return self

    @contextlib.contextmanager
    def failing(self):
        """A block whose error fails the run (:meth:`fail`) and releases its lock
        (the run stays open when the block succeeds)."""
        try:
            yield self
        except BaseException as err:
            self.fail(err)
            self.close()
            raise

    def __exit__(self, kind, err, traceback) -> bool:
        if err is not None:
            self.fail(err)
        self.close()
        return False

    def latest_checkpoint(self) -> Optional[int]:
        """The last iteration saved under ``checkpoints/`` (None: none)."""
        if not self.checkpoints.is_dir():
            return None
        steps = [int(p.name) for p in self.checkpoints.iterdir() if p.name.isdigit()]
        return max(steps, default=None)

    def reached(self) -> Optional[str]:
        """How far the run got, where it can go on from there: ``"iteration
        N"`` (its last checkpoint past the start) or ``"block B of M"`` (a
        sampling job's ``progress.json``); None otherwise."""
        step = self.latest_checkpoint()
        if step:
            return f"iteration {step}"
        progress = self.path / "progress.json"
        if progress.is_file():
            done = json.loads(progress.read_text())
            if done.get("blocks"):
                return f"block {done['blocks']} of {done.get('of', '?')}"
        return None

    def fail(self, err: BaseException) -> None:
        """After ``err`` stopped the command: a run that can go on (a resumed
        one, or one with a checkpoint past its start) is kept, and the
        message says how to continue or restart it; so is a stalled or
        collapsed one (:class:`TrainingStalled`) that logged metrics, the
        record of how it got there. Anything else that this run wrote is
        removed (:meth:`discard`), so that the same command can be given
        again, and the message says so. The note is appended to ``err``'s
        message."""
        if self.resumed:
            return
        reached = self.reached()
        if reached:
            if isinstance(err, TrainingInterrupted):
                return  # its message already says how to resume
            note = (f"the run is kept at {reached} in {str(self.path)!r}: --resume continues it with its own "
                    "settings, --overwrite starts it again")
        elif isinstance(err, TrainingStalled) and (self.path / "metrics.csv").is_file():
            note = (f"its metrics are kept in {str(self.path / 'metrics.csv')!r}, with no checkpoint past the start: "
                    "--overwrite starts it again")
        else:
            self.discard()
            note = f"nothing was kept in {str(self.path)!r}"
        if err.args and isinstance(err.args[0], str):
            err.args = (f"{err.args[0].rstrip('.')} ({note}).",) + tuple(err.args[1:])

    def discard(self) -> None:
        """Remove what this run wrote: every file but those that were in the
        folder before it (the directory too, if it created it and it is left
        empty)."""
        import shutil

        if self._tb:
            self._tb.close()
            self._tb = None
        marker = self.path / MARKER_NAME
        foreign = json.loads(marker.read_text()).get("foreign_files", []) if marker.is_file() else []
        for target in self.path.iterdir():
            if target.name in foreign or target.name == LOCK_NAME:
                continue
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        if self._created and [p.name for p in self.path.iterdir()] in ([], [LOCK_NAME]):
            _release(self._lock)
            self.path.rmdir()

    def _open(self, overwrite: bool, resume: bool) -> None:
        marker = self.path / MARKER_NAME
        present = sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK_NAME, MARKER_NAME))
        if not resume:
            if present and not overwrite:
                if marker.is_file() or (self.path / "config.json").is_file():
                    raise FileExistsError(
                        f"run directory {str(self.path)!r} already holds a run; choose another --out path, "
                        "pass --resume to continue it, or --overwrite to write over it."
                    )
                shown = ", ".join(present[:5]) + (" ..." if len(present) > 5 else "")
                raise FileExistsError(
                    f"run directory {str(self.path)!r} is not empty ({shown}); choose another --out path, or "
                    "pass --overwrite to write the run beside these files (they are kept)."
                )
            foreign = present
            if marker.is_file():
                foreign = [n for n in json.loads(marker.read_text()).get("foreign_files", []) if n in present]
            elif (self.path / "config.json").is_file() or (self.path / "metrics.csv").is_file():
                foreign = [n for n in present if n not in _LEGACY_DIRS and not n.endswith(_LEGACY_SUFFIXES)]
            removed = [n for n in present if n not in foreign]
            for name in removed:
                target = self.path / name
                import shutil

                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
            if removed:
                shown = ", ".join(removed[:8]) + (f" and {len(removed) - 8} more" if len(removed) > 8 else "")
                print(f"--overwrite: removed the previous run's {shown} from {str(self.path)!r}"
                      + (f" (kept {len(foreign)} file(s) that were not the run's)" if foreign else ""),
                      file=sys.stderr)
            write_atomic(marker, json.dumps({"foreign_files": foreign}))
        self.images = self.path / "images"
        self.images.mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.csv"
        self._fields: Optional[List[str]] = None

    @staticmethod
    def read_config(path) -> Dict[str, Any]:
        """The ``config.json`` of the run in ``path``, to resume it (refused,
        :class:`RunLocked`, while another process writes it)."""
        RunDir.refuse_if_locked(path)
        config = Path(path) / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{str(path)!r} holds no run (no config.json); give the directory of a run.")
        return json.loads(config.read_text())

    def load_config(self) -> Dict[str, Any]:
        return json.loads((self.path / "config.json").read_text())

    def load_for_resume(self, config, *, observed_shape, **recorded) -> Dict[str, Any]:
        """The saved ``config.json`` of the run being resumed, after checking
        that it is a run of ``config`` on data of ``observed_shape`` and with
        the other ``recorded`` entries (e.g. its mask) as given; a ValueError
        naming what differs otherwise.

        A resumed run may change ``run`` (logging and checkpoints), its
        length (:data:`RUN_LENGTH_FIELDS`: a finished run is extended by
        resuming it with more iterations) and the speed-only settings of its
        configs (``SPEED_FIELDS``, e.g. a run begun on a CPU resumed on a
        GPU). Such changes are written back to ``config.json``, so that the
        next resume continues with them."""
        saved = self.load_config()
        kind = type(config).__name__
        try:
            saved_config = type(config).from_dict(saved["config"])
        except (TypeError, KeyError, ValueError) as err:
            raise ValueError(f"{str(self.path)!r} is not a {kind} run ({err}); cannot resume it here.") from None
        changeable = ("run",) + RUN_LENGTH_FIELDS + tuple(getattr(type(config), "SPEED_FIELDS", ()))
        differ = [f.name for f in dataclasses.fields(config)
                  if f.name not in changeable
                  and _what_is_computed(getattr(config, f.name)) != _what_is_computed(getattr(saved_config, f.name))]
        if list(observed_shape) != saved.get("observed_shape"):
            differ.append(f"observed data {list(observed_shape)} vs {saved.get('observed_shape')}")
        differ += [name for name, value in recorded.items() if saved.get(name) != value]
        if differ:
            raise ValueError(
                f"cannot resume {str(self.path)!r}: it is a run of a different model or data "
                f"({', '.join(differ)} differ); resume with the run's own settings (--resume and no other "
                "options) or start a new --out."
            )
        if config != saved_config:
            saved["config"] = _jsonable(config)
            write_atomic(self.path / "config.json", json.dumps(saved, indent=2, sort_keys=True))
        return saved

    def save_config(self, config, **extra) -> Path:
        payload = {"config": _jsonable(config), **{k: _jsonable(v) for k, v in extra.items()}}
        path = self.path / "config.json"
        write_atomic(path, json.dumps(payload, indent=2, sort_keys=True))
        return path

    def truncate_metrics(self, last_iteration: int) -> None:
        """Drop metric rows after ``last_iteration`` (a resumed run redoes them)."""
        if not self.metrics_path.exists():
            return
        with open(self.metrics_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
            fields = list(rows[0]) if rows else None
        kept = [r for r in rows if int(float(r["iteration"])) <= last_iteration]
        if fields is None:
            return
        self._fields = fields
        tmp = self.metrics_path.with_name("metrics.csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fields)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.metrics_path)

    def _tensorboard(self):
        """A TensorBoard writer when tensorboardX is installed (optional), else None."""
        if self._tb is None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.path / "tensorboard"))
        return self._tb or None

    def log(self, row: Dict[str, Any]) -> None:
        """Append one row to ``metrics.csv`` (columns fixed by the first row),
        and to TensorBoard event files where tensorboardX is installed."""
        writer = self._tensorboard() if "iteration" in row else None
        if writer is not None:
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    writer.add_scalar(k, v, int(row["iteration"]))
            writer.flush()
        if self._fields is None:
            self._fields = list(row)
            with open(self.metrics_path, "w", newline="") as fh:
                csv.DictWriter(fh, self._fields).writeheader()
        with open(self.metrics_path, "a", newline="") as fh:
            csv.DictWriter(fh, self._fields, extrasaction="ignore").writerow(row)

    def read_metrics(self) -> Dict[str, np.ndarray]:
        if not self.metrics_path.exists():
            return {}
        with open(self.metrics_path) as fh:
            rows = list(csv.DictReader(fh))

        def column(k):
            values = [r[k] for r in rows]
            try:
                return np.array([float(v) for v in values])
            except ValueError:  # a text column
                return np.array(values)

        return {k: column(k) for k in (rows[0] if rows else {})}

    def write_report(self, text: str) -> Path:
        path = self.path / "report.md"
        write_atomic(path, text)
        return path


def _progress(total: int, initial: int, quiet: bool, desc: str):
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, disable=disable, dynamic_ncols=True, leave=False)


@jax.jit
def _finite_tree(tree) -> jax.Array:
    """True when every floating leaf of ``tree`` is finite: one compiled
    program per tree structure (eagerly, two per leaf shape)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


@jax.jit
def _bad_step(metrics) -> jax.Array:
    """True when a step's metrics show divergence (computed on the device)."""
    bad = ~_finite_tree(metrics)
    if "diverged" in metrics:
        bad = bad | (metrics["diverged"] > 0)
    return bad


def _diverged(iteration: int, values, step_size, last_good: Optional[int]) -> TrainingDiverged:
    hint = f" with Langevin step_size={step_size!r}" if step_size is not None else ""
    shown = "" if values is None else " (" + ", ".join(f"{k}={v:.4g}" for k, v in values.items()) + ")"
    where = f"; the last good checkpoint is step {last_good}" if last_good is not None else ""
    return TrainingDiverged(
        f"training diverged by iteration {iteration}{hint}{shown}{where}. "
        "Start again with a smaller Langevin step (--delta) or learning rate (--lr).",
        iteration=iteration, last_good=last_good,
    )


def _stalled(iteration: int, last_good: Optional[int]) -> TrainingStalled:
    where = f"; the last good checkpoint is step {last_good}" if last_good is not None else ""
    return TrainingStalled(
        f"learning stalled at iteration {iteration}: the learning gradient is exactly zero (every unit of a net "
        "inactive, or a saturated output), from which it cannot recover"
        f"{where}. Start again with a lower learning rate (--lr, or --gen-lr for a generator)."
    )


def _collapsed(iteration: int, share: float, last_good: Optional[int]) -> TrainingStalled:
    where = (f"; the last checkpoint (step {last_good}) may already be collapsed: go back to one from before the "
             "first iterations with samples_flat = 1 in metrics.csv") if last_good else ""
    return TrainingStalled(
        f"the chains collapsed at iteration {iteration}: f was flat on every chain (the samples' half of the "
        f"learning gradient exactly zero) in {share:.0%} of the last ~{FLAT_SAMPLES_HORIZON} iterations, so "
        f"learning only raises f on the data, without bound{where}. Start again with a lower learning rate "
        "(--lr) or fewer iterations."
    )


@contextlib.contextmanager
def interrupt_between_steps():
    """While a loop (:func:`fit`'s iterations, a sampling job's blocks) runs
    in this context, SIGINT (Ctrl-C) sets the yielded event instead of
    raising at once; the loop reads it after each step and raises
    ``KeyboardInterrupt`` there. A ``KeyboardInterrupt`` raised wherever the signal lands can
    be swallowed by library code that calls back into Python (the run then
    goes on as if never interrupted) or cut a step; a flag is neither. A
    second SIGINT raises at once, for a step that does not return. Outside
    the main thread, or where SIGINT has another handler than Python's
    default (ignored, or the caller's own), nothing is changed."""
    event = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield event
        return

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def fit(
    step_fn: Callable,
    state,
    batches: Callable[[int], Any],
    *,
    end: int,
    start: int = 0,
    run_dir: Optional[RunDir] = None,
    run: RunConfig = RunConfig(),
    checkpointer: Optional["Checkpointer"] = None,
    on_snapshot: Optional[Callable[[Any, int], None]] = None,
    quiet: bool = False,
    desc: str = "training",
    step_size=None,
    extra_row: Optional[Dict[str, Any]] = None,
    total: Optional[int] = None,
):
    """Run ``state, metrics = step_fn(state, batches(i))`` for iterations
    ``i = start .. end − 1`` (iteration ``i + 1`` is the one done).

    Divergence is detected on the device at every step (a non-finite metric,
    or a metric ``diverged > 0``) and accumulated without a host sync; the
    host reads the flag only when it logs (every ``run.log_every``) or
    checkpoints (every ``run.checkpoint_every``). A checkpoint is saved only
    from a state whose steps and params were all finite, so the last
    checkpoint is always good. Divergence raises :class:`TrainingDiverged`
    (naming ``step_size`` and the last good checkpoint), a logged
    ``dead_units > 0`` :class:`TrainingStalled`, as does a collapse: the
    metric ``samples_flat`` set in more than ``FLAT_SAMPLES_LIMIT`` of the
    iterations (an exponential average over ``FLAT_SAMPLES_HORIZON``, kept
    on the device), checked when a row is logged; SIGINT
    :class:`TrainingInterrupted` at the end of the iteration it came in,
    after checkpointing that iteration (a second SIGINT: at once).
    ``on_snapshot(state, i)`` runs every ``run.image_every`` iterations and
    after the last. Returns ``(state, history)``, the logged rows."""
    history: List[Dict[str, Any]] = []
    bar = _progress(total or end, start, quiet, desc)
    t0 = time.perf_counter()
    bad = jnp.bool_(False)
    flat_share = jnp.float32(0)
    last_good = checkpointer.latest_step() if checkpointer is not None else None

    def diverged(i, values=None):
        return _diverged(i, values, step_size, last_good)

    done = start
    try:
        with interrupt_between_steps() as interrupted:
            for i in range(start, end):
                state, metrics = step_fn(state, batches(i))
                done = i + 1
                bad = bad | _bad_step(metrics)
                if "samples_flat" in metrics:
                    flat_share = flat_share + (metrics["samples_flat"] - flat_share) / FLAT_SAMPLES_HORIZON
                it = i + 1
                last = it == end
                log_now = (it - start - 1) % run.log_every == 0 or last
                checkpoint_now = checkpointer is not None and run.checkpoint_every and (
                    it % run.checkpoint_every == 0 or last)
                if log_now:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    row = {"iteration": it, "seconds": round(time.perf_counter() - t0, 3), **(extra_row or {}), **values}
                    if bool(bad):
                        raise diverged(it, values)
                    history.append(row)
                    if run_dir is not None:
                        run_dir.log(row)
                    if values.get("dead_units", 0) > 0:
                        raise _stalled(it, last_good)
                    if "samples_flat" in values and float(flat_share) > FLAT_SAMPLES_LIMIT:
                        raise _collapsed(it, float(flat_share), last_good)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("f_data", "f_samples", "loss")})
                if checkpoint_now:
                    if bool(bad | ~_finite_tree(state)):
                        raise diverged(it)
                    checkpointer.save(it, state)
                    last_good = it
                if on_snapshot is not None and (it % run.image_every == 0 or last):
                    on_snapshot(state, it)
                bar.update(1)
                if interrupted.is_set():
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise _interrupted(done, state, bad, checkpointer, last_good) from None
    finally:
        bar.close()
    return state, history


class TrainingInterrupted(KeyboardInterrupt):
    """The run was interrupted (SIGINT, Ctrl-C); ``iteration`` is the one its
    last checkpoint holds (None: no checkpoint)."""

    def __init__(self, message: str, iteration: Optional[int]):
        super().__init__(message)
        self.iteration = iteration


def _interrupted(done: int, state, bad, checkpointer, last_good) -> TrainingInterrupted:
    """Save the last finished iteration's state (when it is good and newer
    than the last checkpoint) and say how to go on."""
    if checkpointer is not None and done != last_good:
        try:
            if not bool(bad | ~_finite_tree(state)):
                checkpointer.save(done, state)
                last_good = done
        except Exception:  # the step was cut while it held the state's buffers
            pass
    if last_good is None:
        return TrainingInterrupted("interrupted before the first checkpoint; start the run again.", None)
    return TrainingInterrupted(f"interrupted; the run is checkpointed at iteration {last_good}: continue it with "
                               "the same command and --resume.", last_good)
