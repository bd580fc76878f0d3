"""The training loop of gcnjax, and the run directory it writes.

Every model family hands :func:`fit` a jit'd ``step(state, batch) ->
(state, metrics)``; the loop owns the progress bar, the metrics CSV, periodic
snapshots (pictures) and the divergence check. Metrics stay on the device
between logs, so the loop syncs with the host once every ``log_every``
iterations, not every step.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import jax
import numpy as np

from gcnjax.langevin import ChainDivergedError

__all__ = ["RunDir", "fit", "write_atomic"]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


class RunDir:
    """A run's directory: ``config.json``, ``metrics.csv``, ``images/``, ``report.md``.

    Creating a RunDir never deletes anything: an existing non-empty
    directory is refused unless ``overwrite=True`` (which replaces only the
    files this run writes).
    """

    def __init__(self, path, *, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"run directory {str(self.path)!r} is a file; choose another --out path.")
        if self.path.is_dir() and any(self.path.iterdir()) and not overwrite:
            raise FileExistsError(
                f"run directory {str(self.path)!r} already holds a run; choose another --out path "
                "or pass --overwrite to write over it."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.images = self.path / "images"
        self.images.mkdir(exist_ok=True)
        self.metrics_path = self.path / "metrics.csv"
        self._fields: Optional[List[str]] = None
        if self.metrics_path.exists():
            self.metrics_path.unlink()

    def save_config(self, config, **extra) -> Path:
        payload = {"config": _jsonable(config), **{k: _jsonable(v) for k, v in extra.items()}}
        path = self.path / "config.json"
        write_atomic(path, json.dumps(payload, indent=2, sort_keys=True))
        return path

    def log(self, row: Dict[str, Any]) -> None:
        """Append one row to ``metrics.csv`` (columns fixed by the first row)."""
        if self._fields is None:
            self._fields = list(row)
            with open(self.metrics_path, "w", newline="") as fh:
                csv.DictWriter(fh, self._fields).writeheader()
        with open(self.metrics_path, "a", newline="") as fh:
            csv.DictWriter(fh, self._fields, extrasaction="ignore").writerow(row)

    def read_metrics(self) -> Dict[str, np.ndarray]:
        with open(self.metrics_path) as fh:
            rows = list(csv.DictReader(fh))
        return {k: np.array([float(r[k]) for r in rows]) for k in (rows[0] if rows else {})}

    def write_report(self, text: str) -> Path:
        path = self.path / "report.md"
        write_atomic(path, text)
        return path


def _progress(total: int, quiet: bool, desc: str):
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, disable=disable, dynamic_ncols=True, leave=False)


def fit(
    step_fn: Callable,
    state,
    batches: Callable[[int], Any],
    *,
    n_iterations: int,
    start: int = 0,
    run_dir: Optional[RunDir] = None,
    log_every: int = 10,
    snapshot_every: Optional[int] = None,
    on_snapshot: Optional[Callable[[Any, int], None]] = None,
    quiet: bool = False,
    desc: str = "training",
    step_size=None,
    extra_row: Optional[Dict[str, Any]] = None,
):
    """Run ``state, metrics = step_fn(state, batches(i))`` for iterations
    ``start .. start + n_iterations − 1``.

    Every ``log_every`` iterations the metrics of that iteration are pulled
    to the host, written to ``run_dir``'s CSV, and checked: a metric
    ``diverged > 0`` or a non-finite metric raises
    :class:`~gcnjax.langevin.ChainDivergedError` naming ``step_size``.
    ``on_snapshot(state, i)`` is called every ``snapshot_every`` iterations
    and after the last one. Returns ``(state, history)``, the logged rows.
    """
    history: List[Dict[str, Any]] = []
    bar = _progress(n_iterations, quiet, desc)
    t0 = time.perf_counter()
    end = start + n_iterations
    try:
        for i in range(start, end):
            state, metrics = step_fn(state, batches(i))
            last = i == end - 1
            if (i - start) % log_every == 0 or last:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                row = {"iteration": i + 1, "seconds": round(time.perf_counter() - t0, 3), **(extra_row or {}), **values}
                history.append(row)
                if run_dir is not None:
                    run_dir.log(row)
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("energy_samples", "f_data", "loss")})
                if values.get("diverged", 0) > 0 or not all(math.isfinite(v) for k, v in values.items() if k not in ("acceptance",)):
                    hint = f" with Langevin step_size={step_size!r}" if step_size is not None else ""
                    raise ChainDivergedError(
                        f"training diverged at iteration {i + 1}{hint}: "
                        + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                        + ". Reduce the Langevin step (delta) or the learning rate."
                    )
            if on_snapshot is not None and snapshot_every and ((i + 1) % snapshot_every == 0 or last):
                on_snapshot(state, i + 1)
            bar.update(1)
    finally:
        bar.close()
    return state, history
