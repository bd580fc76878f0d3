"""The run engine: one function runs any model family into a run directory.

A model family is a :class:`Family`, a small record of pure functions in the
spirit of BlackJAX's ``SamplingAlgorithm``: how to check its data and fit
its scale, and, for one config and one data set, a :class:`Trainer`: how to
start its state, its jit'd learning step, what a snapshot draws, what a
finished run writes and reports. The family never opens a file or loops over
iterations; :func:`learn` does both, the same way for every family:

1. check the data, open the run directory (new, ``overwrite`` or ``resume``),
   fit the scale (or read the saved one), save ``config.json``;
2. restore the last checkpoint or save step 0, and run the phases (layer-by-
   layer growth is a sequence of phases) through :func:`gcnjax.train.fit`;
3. the divergence policy of ``config.run``: ``"stop"`` rolls back to the last
   good checkpoint and raises; ``"retry"`` rolls back and goes on with the
   Langevin step × ``retry_step_factor`` and the noise × its square root (the
   same temperature ``noise² / (2 step)``), recorded in ``config.json`` so
   that a resumed run keeps it;
4. early stopping where the family can score its params on validation data;
5. ``params.msgpack``, the family's outputs (pictures, arrays, sounds),
   ``metrics.csv`` plotted, and ``report.md``.

A resumed run gives the same result as an uninterrupted one, bit for bit on
the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import flax.serialization
import jax
import numpy as np

from gcnjax import data as gdata
from gcnjax.langevin import LangevinConfig
from gcnjax.options import get_at, replace_at
from gcnjax.train import Checkpointer, RunDir, TrainingDiverged, fit, write_atomic, write_npy

__all__ = ["Family", "Trainer", "Outputs", "Picture", "OutOfMemory", "learn", "out_of_memory", "smaller_step",
           "save_picture", "save_video", "plot_metrics", "plot_waveforms"]


class Picture(NamedTuple):
    """A picture in data units: a grid of images ``(N, H, W, C)`` (``n_cols``
    per row), a frame strip per video ``(N, T, H, W, C)``, or the waveforms of
    sounds ``(N, T, C)`` (in the pixel units of :func:`gcnjax.data.sound_to_pixels`)."""

    pixels: np.ndarray
    n_cols: Optional[int] = None


class Outputs(NamedTuple):
    """What a finished run writes besides its params, metrics and report.

    pictures: ``name -> Picture``, written as ``name.png``.
    arrays: ``name -> array``, written as ``name.npy`` (float32).
    sounds: ``name -> (samples (T, C) in [−1, 1], rate)``, written as ``sounds/name.wav``.
    videos: ``name -> (frames (T, H, W, C) pixels, fps)``, written as
      ``name.gif`` and ``name.mp4`` (where ffmpeg can write it).
    report: the family's section of ``report.md`` (markdown lines).
    summary: numbers returned to the caller (and kept in the report's text).
    records: ``name -> JSON-able dict``, written as ``name.json``: numbers
      that later jobs on the run read (a sampling job's reference energies).
    """

    pictures: Dict[str, Picture] = {}
    arrays: Dict[str, np.ndarray] = {}
    sounds: Dict[str, Tuple[np.ndarray, int]] = {}
    videos: Dict[str, Tuple[np.ndarray, float]] = {}
    report: Sequence[str] = ()
    summary: Dict[str, Any] = {}
    records: Dict[str, Dict[str, Any]] = {}


class Trainer(NamedTuple):
    """A family's learning, for one config and one data set (model units).

    phase_ends: the iteration at which each phase ends (a single phase for
      most families; one per depth for layer-by-layer growth).
    init: ``phase -> state``, the starting state with that phase's structure
      (its keys derived from the config's seed, so a resumed run rebuilds it).
    enter: ``(state of phase p − 1, p) -> state of phase p`` (growth).
    step: ``phase -> step(state, batch) -> (state, metrics)``, jit'd.
    batches: ``iteration -> batch`` (the same batches on resume).
    snapshot: ``(state, iteration) -> {name: Picture}``, drawn every
      ``config.run.image_every`` iterations into ``images/name_ITER.png``.
    params: ``state -> params``, what ``params.msgpack`` holds.
    finish: ``(state, params) -> Outputs``; ``params`` are the kept ones
      (the best on validation data when the run stops early, else the last).
    describe: one markdown sentence of the settings, for the report.
    plot_keys: the metrics plotted against the iterations.
    validate: optional ``params -> score`` on validation data (lower is
      better), evaluated at every snapshot: the run keeps the best params.
    row: ``phase -> {column: value}`` added to each metrics row.
    desc: ``phase -> text`` for the progress bar.
    sharded: the state's fields (a NamedTuple's) whose leaves have a
      leading chain axis: split over the devices with the batches' leading
      axis, every other field replicated (:mod:`gcnjax.sharding`).
    """

    phase_ends: Sequence[int]
    init: Callable[[int], Any]
    step: Callable[[int], Callable]
    batches: Callable[[int], Any]
    snapshot: Callable[[Any, int], Dict[str, Picture]]
    params: Callable[[Any], Any]
    finish: Callable[[Any, Any], Outputs]
    describe: str = ""
    plot_keys: Sequence[str] = ()
    enter: Optional[Callable[[Any, int], Any]] = None
    validate: Optional[Callable[[Any], float]] = None
    row: Callable[[int], Dict[str, Any]] = lambda phase: {}
    desc: Callable[[int], str] = lambda phase: ""
    sharded: Sequence[str] = ()


class Family(NamedTuple):
    """A model family as the run engine drives it.

    name: saved as ``config.json``'s ``"family"``.
    config_type: its frozen config dataclass (with ``from_dict``, ``run``,
      ``seed``).
    check: ``(config, data, inputs) -> data`` float32, or a
      :class:`gcnjax.data.DataError` naming the input and the fix.
    scale: ``(config, data, inputs) -> scale`` with ``to_model``, ``to_dict``.
    load_scale: ``dict -> scale``, the saved one.
    trainer: ``(config, x, scale, data, inputs) -> Trainer`` (``x`` in model
      units on the device; ``inputs`` the family's own keyword arguments to
      :func:`learn`, e.g. an observation mask).
    langevin_path: the config fields that lead to the chain's
      :class:`gcnjax.langevin.LangevinConfig` (the one the retry policy
      makes smaller), e.g. ``("descriptor", "langevin")``.
    observed: ``(data, scale, inputs) -> {name: Picture}``, written once at
      the start of a new run.
    recorded: ``inputs -> {name: value}`` saved in ``config.json`` and
      checked on resume (e.g. the mask's spec).
    memory_bound: what bounds a step's memory, in the command line's words
      (the advice of the out-of-memory message).
    chains: ``(run_dir, config.json, settings) -> Chains``: how a learned
      run of the family draws samples (:mod:`gcnjax.sampling`; None: it
      does not).
    """

    name: str
    config_type: type
    check: Callable[[Any, np.ndarray, Dict[str, Any]], np.ndarray]
    scale: Callable[[Any, np.ndarray, Dict[str, Any]], Any]
    load_scale: Callable[[Any], Any]
    trainer: Callable[..., Trainer]
    langevin_path: Tuple[str, ...] = ("langevin",)
    observed: Callable[[np.ndarray, Any, Dict[str, Any]], Dict[str, Picture]] = (
        lambda data, scale, inputs: {"observed": Picture(data[:64])})
    recorded: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda inputs: {}
    memory_bound: str = "lower --chains (the chains of one iteration) or --batch-size (its observed images)"
    chains: Optional[Callable[[Path, Dict[str, Any], Any], Any]] = None


# ---------------------------------------------------------------- the divergence policy


def smaller_step(sampler: LangevinConfig, factor: float) -> LangevinConfig:
    """The chain with step ``a · factor`` and noise ``b · sqrt(factor)``: the
    same temperature ``b² / (2a)``, a smaller move. (The exact noise
    ``noise_scale=None`` follows the step by itself.)"""
    noise = None if sampler.noise_scale is None else sampler.noise_scale * float(np.sqrt(factor))
    return dataclasses.replace(sampler, step_size=sampler.step_size * factor, noise_scale=noise)


class OutOfMemory(MemoryError):
    """A step needed more memory than the device has."""


def _memory_limit() -> Optional[int]:
    """Bytes of memory of the default device (the host's RAM on the CPU)."""
    device = jax.devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every backend reports
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def out_of_memory(err: Exception, bound: str) -> Optional[OutOfMemory]:
    """The one-line :class:`OutOfMemory` for XLA's ``RESOURCE_EXHAUSTED``
    error ``err`` (None for any other error): the allocation that failed
    against the device's memory, and ``bound``, the option that bounds it."""
    text = str(err)
    if "RESOURCE_EXHAUSTED" not in text:
        return None
    # XLA:CPU says "allocating N bytes", the GPU's allocator "trying to allocate N bytes".
    found = re.search(r"allocat(?:ing|e) (\d+) bytes", text)
    needed = f"about {int(found.group(1)) / 2**30:.1f} GiB at once" if found else "more memory than there is"
    limit = _memory_limit()
    has = f" (this {jax.devices()[0].platform.upper()} has {limit / 2**30:.0f} GiB)" if limit else ""
    return OutOfMemory(f"out of memory: one step needs {needed}{has}; {bound}.")


# ---------------------------------------------------------------- pictures and plots


def save_picture(path: Path, picture) -> Path:
    """Write a :class:`Picture` (or a bare pixel array) as a PNG."""
    pixels, n_cols = (picture.pixels, picture.n_cols) if isinstance(picture, Picture) else (picture, None)
    pixels = np.asarray(pixels)
    if pixels.ndim == 5:
        return gdata.save_frame_strip(path, pixels)
    if pixels.ndim == 3:
        return plot_waveforms(gdata.pixels_to_sound(pixels), path)
    return gdata.save_image_grid(path, pixels, n_cols=n_cols)


def save_video(path: Path, frames: np.ndarray, fps: float) -> Dict[str, Path]:
    """``path.gif``, and ``path.mp4`` where ffmpeg can write it (H.264 wants
    even sizes: the frames are cut to them), of ``(T, H, W, C)`` pixels."""
    path = Path(path)
    paths = {"gif": gdata.save_video(path.with_name(path.name + ".gif"), frames, fps=fps)}
    try:
        even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
        paths["mp4"] = gdata.save_video(path.with_name(path.name + ".mp4"), even, fps=fps)
    except Exception as err:  # no ffmpeg: the GIF is enough
        print(f"MP4 not written ({type(err).__name__}: {err})", file=sys.stderr)
    return paths


def _save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = Path(path).with_name(Path(path).name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)


def plot_waveforms(sounds: np.ndarray, path: Path) -> Path:
    """Plot each waveform of ``(N, T, C)`` sounds (first channel) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sounds = np.asarray(sounds)
    fig, axes = plt.subplots(len(sounds), 1, figsize=(7, 1.3 * len(sounds) + 0.4), dpi=90, squeeze=False)
    for ax, wave in zip(axes[:, 0], sounds):
        ax.plot(wave[:, 0], lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("sample")
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_metrics(history: Dict[str, np.ndarray], path: Path, keys=("f_data", "f_samples")) -> Path:
    """Plot metric curves against the iterations to a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for k in keys:
        if k in history:
            ax.plot(history["iteration"], history[k], label=k)
    ax.set_xlabel("iteration")
    if any(k in history for k in keys):
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save_figure(fig, path)


def _describe_data(data: np.ndarray, source: str) -> str:
    shape = data.shape
    if data.ndim == 4:
        what = f"image(s) of {shape[2]}×{shape[1]}×{shape[3]}"
    else:
        kind = {5: "video", 3: "sound"}.get(data.ndim, "example")
        what = f"{kind}(s) of shape {'×'.join(map(str, shape[1:]))}"
    return f"Source: {source or 'given data'}; {shape[0]} observed {what}."


def _last_values(history: Dict[str, np.ndarray], keys: Sequence[str]) -> List[str]:
    shown = [k for k in keys if k in history and len(history[k])]
    if not shown:
        return []
    return ["| metric | last logged value |", "|---|---|",
            *[f"| {k} | {float(history[k][-1]):.4g} |" for k in shown], ""]


# ---------------------------------------------------------------- early stopping


class _Validation:
    """The best params on validation data, kept across a resume in
    ``validation.json`` and ``params_best.msgpack``."""

    def __init__(self, run: RunDir, score: Optional[Callable[[Any], float]]):
        self.score = score
        self.path, self.best_path = run.path / "validation.json", run.path / "params_best.msgpack"
        self.record: Dict[str, Any] = {"rows": [], "best_iteration": None, "best_mse": None}

    def restore(self, done: int) -> None:
        """Keep the evaluations up to iteration ``done``; those after it are
        redone. The best params file keeps the best one seen, which may be one
        of them."""
        if self.score is None or not self.path.exists():
            return
        saved = json.loads(self.path.read_text())
        self.record["rows"] = [r for r in saved["rows"] if r["iteration"] <= done]
        if self.best_path.exists():
            self.record.update(best_iteration=saved["best_iteration"], best_mse=saved["best_mse"])

    def __call__(self, params, iteration: int) -> None:
        if self.score is None:
            return
        value = float(self.score(params))
        self.record["rows"].append({"iteration": iteration, "mse": value})
        if self.record["best_mse"] is None or value < self.record["best_mse"]:
            write_atomic(self.best_path, flax.serialization.to_bytes(jax.device_get(params)))
            self.record.update(best_iteration=iteration, best_mse=value)
        write_atomic(self.path, json.dumps(self.record, indent=1))

    def kept(self, params):
        """The best params if any were scored, else ``params``."""
        if self.record["best_iteration"] is None:
            return params
        return flax.serialization.from_bytes(params, self.best_path.read_bytes())

    def report(self) -> List[str]:
        if self.record["best_iteration"] is None:
            return []
        curve = ", ".join(f"{r['iteration']}: {r['mse']:.5f}" for r in self.record["rows"])
        return [
            "## Early stopping",
            "",
            "Validation error (not trained on) by iteration: " + curve + ". "
            f"`params.msgpack` holds the params of iteration {self.record['best_iteration']}, the lowest "
            f"({self.record['best_mse']:.5f}), and every output above is drawn with them; the last "
            "iteration's params are `params_final.msgpack`.",
            "",
        ]


# ---------------------------------------------------------------- the engine


class _Run:
    """One call of :func:`learn`: its run directory, chain settings and trainer."""

    def __init__(self, family: Family, config, data, out, *, title, source, data_spec, overwrite, resume, quiet,
                 inputs, devices=None):
        self.family, self.config, self.inputs, self.quiet = family, config, inputs, quiet
        self.devices = devices
        self.title, self.source, self.resume = title or family.name, source, resume
        self.data = family.check(config, data, inputs)
        self.run = RunDir(out, overwrite=overwrite, resume=resume)
        with self.run.failing():
            self._open(data_spec)

    def _open(self, data_spec) -> None:
        family, config, inputs, source = self.family, self.config, self.inputs, self.source
        recorded = family.recorded(inputs)
        self.scale = family.scale(config, self.data, inputs)
        saved: Dict[str, Any] = {}
        if self.resume:
            saved = self.run.load_for_resume(config, observed_shape=self.data.shape, **recorded)
            self.scale = family.load_scale(saved.get("pixel_scale"))
        else:
            self.run.save_config(config, family=family.name, pixel_scale=self.scale.to_dict(), source=source,
                                 observed_shape=list(self.data.shape), data_spec=data_spec or {}, title=self.title,
                                 **recorded)
            for name, picture in family.observed(self.data, self.scale, inputs).items():
                save_picture(self.run.path / f"{name}.png", picture)
        self.x = jax.numpy.asarray(self.scale.to_model(self.data))
        self.sampler, self.retries = get_at(config, family.langevin_path), 0
        if saved.get("adjusted_langevin"):  # a divergence retry made the step smaller
            self.sampler = LangevinConfig.from_dict(saved["adjusted_langevin"])
            self.retries = int(saved.get("retries", 0))
        self.trainer = self._trainer()
        self.validation = _Validation(self.run, self.trainer.validate)
        self.mesh = self._mesh()

    def _mesh(self):
        """The devices the chains and batches are split over: the first
        ``devices`` (default all), fewer where the chains would not split
        evenly (with a note); None for one device."""
        from math import gcd

        from gcnjax import sharding

        available = jax.devices()
        wanted = len(available) if self.devices is None else int(self.devices)
        if not 1 <= wanted <= len(available):
            raise ValueError(f"--devices must be between 1 and {len(available)} (the devices here), got "
                             f"{self.devices!r}.")
        if wanted == 1:
            return None
        # The chains decide; where a family shards no state, its batches do.
        probe = jax.eval_shape(lambda: self.trainer.init(0))
        leaves = [leaf for name in self.trainer.sharded for leaf in jax.tree_util.tree_leaves(getattr(probe, name))]
        leaves = leaves or jax.tree_util.tree_leaves(self.trainer.batches(0))
        sizes = {int(np.shape(leaf)[0]) for leaf in leaves if np.ndim(leaf) > 0}
        if not sizes:
            return None
        common = 0
        for size in sizes:
            common = gcd(common, size)
        used = max(d for d in range(1, wanted + 1) if common % d == 0)
        if used < wanted:
            print(f"note: {' and '.join(map(str, sorted(sizes)))} chains per step do not split evenly over {wanted} "
                  f"devices; using {used}.", file=sys.stderr)
        return sharding.chain_mesh(available[:used]) if used > 1 else None

    def _placed(self, state):
        """``state`` with its chains split over the mesh, the rest replicated."""
        if self.mesh is None:
            return state
        from gcnjax import sharding

        return sharding.shard_state(state, self.mesh, chain_fields=tuple(self.trainer.sharded))

    def _batches(self):
        """The batches split over the mesh where they divide evenly (the
        observed images of a texture, fewer than the devices, are copied to
        each)."""
        if self.mesh is None:
            return self.trainer.batches
        from gcnjax import sharding

        batches, n = self.trainer.batches, self.mesh.devices.size

        def place(leaf):
            whole = np.ndim(leaf) == 0 or np.shape(leaf)[0] % n
            return jax.device_put(leaf, sharding.replicated(self.mesh) if whole else sharding.chains_sharding(self.mesh))

        return lambda i: jax.tree_util.tree_map(place, batches(i))

    def _trainer(self) -> Trainer:
        config = replace_at(self.config, self.family.langevin_path, self.sampler)
        return self.family.trainer(config, self.x, self.scale, self.data, self.inputs)

    def _snapshot(self, state, iteration: int) -> None:
        for name, picture in self.trainer.snapshot(state, iteration).items():
            save_picture(self.run.images / f"{name}_{iteration:06d}.png", picture)
        self.validation(self.trainer.params(state), iteration)

    def _retry(self, err: TrainingDiverged) -> int:
        """Roll back to the last good checkpoint with a smaller step (the
        divergence policy "retry"); the iteration to go on from."""
        if self.config.run.on_divergence == "stop" or self.retries >= self.config.run.max_retries:
            raise err
        self.retries += 1
        self.sampler = smaller_step(self.sampler, self.config.run.retry_step_factor)
        # Recorded, so that a resumed run goes on with the smaller step.
        payload = self.run.load_config()
        payload.update(adjusted_langevin=dataclasses.asdict(self.sampler), retries=self.retries)
        write_atomic(self.run.path / "config.json", json.dumps(payload, indent=2, sort_keys=True))
        self.trainer = self._trainer()
        self.validation.score = self.trainer.validate
        self.run.truncate_metrics(err.last_good)
        self.validation.restore(err.last_good)
        if not self.quiet:
            print(f"{err}\nretrying from iteration {err.last_good} with Langevin step_size="
                  f"{self.sampler.step_size:g}", file=sys.stderr)
        return err.last_good

    def _start(self, checkpointer: Checkpointer, done: int, phase: int):
        """The state at iteration ``done``, in ``phase``'s structure: restored
        from its checkpoint (or the start, saved as the first good one), grown
        into ``phase`` when that phase begins at ``done``."""
        begins = [0] + list(self.trainer.phase_ends[:-1])
        restore_phase = phase - 1 if (done == begins[phase] and phase > 0) else phase
        # Waited for here: a state too large for the memory fails now, as an
        # error the caller reports, not later inside the checkpointer (where
        # the failed buffer aborts the process).
        state = jax.block_until_ready(self.trainer.init(restore_phase))
        if done in checkpointer.all_steps():
            state = checkpointer.restore(state, done)
        else:
            checkpointer.save(0, state)
        return self.trainer.enter(state, phase) if restore_phase != phase else state

    def train(self):
        """Run the phases from the last checkpoint to the end, under the
        divergence policy; returns the final state and its iteration."""
        with Checkpointer(self.run.checkpoints, keep=self.config.run.keep_checkpoints) as checkpointer:
            done = checkpointer.latest_step() if self.resume else 0
            if done is None:
                raise FileNotFoundError(f"cannot resume {str(self.run.path)!r}: it has no checkpoint yet; "
                                        "start it again.")
            if self.resume:
                self.run.truncate_metrics(done)
                self.validation.restore(done)
            state, phase, ends = None, 0, list(self.trainer.phase_ends)
            while phase < len(ends):
                if ends[phase] <= done:
                    phase += 1
                    continue
                if state is None:
                    state = self._start(checkpointer, done, phase)
                elif phase > 0 and done == ends[phase - 1]:
                    state = self.trainer.enter(state, phase)
                state = self._placed(state)
                try:
                    state, _ = fit(self.trainer.step(phase), state, self._batches(), start=done,
                                   end=ends[phase], total=ends[-1], run_dir=self.run, run=self.config.run,
                                   checkpointer=checkpointer, on_snapshot=self._snapshot, quiet=self.quiet,
                                   desc=self.title + self.trainer.desc(phase), step_size=self.sampler.step_size,
                                   extra_row=self.trainer.row(phase))
                except TrainingDiverged as err:
                    done, state, phase = self._retry(err), None, 0  # restored from the last good checkpoint
                    continue
                done, phase = ends[phase], phase + 1
            if state is None:  # resumed after the last checkpoint: only the outputs are left to write
                state = checkpointer.restore(self.trainer.init(len(ends) - 1), done)
        return state, done

    def write_outputs(self, state):
        """``params.msgpack`` (the kept params), the family's outputs and the
        metrics plot; returns ``(params, outputs, history)``."""
        path = self.run.path
        last_params = self.trainer.params(state)
        params = self.validation.kept(last_params)
        if params is not last_params:
            write_atomic(path / "params_final.msgpack", flax.serialization.to_bytes(jax.device_get(last_params)))
        write_atomic(path / "params.msgpack", flax.serialization.to_bytes(jax.device_get(params)))
        outputs = self.trainer.finish(state, params)
        for name, picture in outputs.pictures.items():
            save_picture(path / f"{name}.png", picture)
        for name, array in outputs.arrays.items():
            write_npy(path / f"{name}.npy", array)
        for name, (samples, rate) in outputs.sounds.items():
            gdata.save_wav(path / "sounds" / f"{name}.wav", samples, rate)
        for name, (frames, fps) in outputs.videos.items():
            save_video(path / name, frames, fps)
        for name, record in outputs.records.items():
            write_atomic(path / f"{name}.json", json.dumps(record, indent=2))
        history = self.run.read_metrics()
        plot_metrics(history, path / "energy.png", keys=self.trainer.plot_keys)
        return params, outputs, history

    def write_report(self, done: int, seconds: float, outputs: Outputs, history) -> Path:
        snapshots: Dict[int, List[str]] = {}
        for p in sorted(self.run.images.glob("*_[0-9][0-9][0-9][0-9][0-9][0-9].png")):
            snapshots.setdefault(int(p.stem.rsplit("_", 1)[1]), []).append(f"![{p.stem}](images/{p.name})")
        reduced = (f" The Langevin step was reduced {self.retries} time(s) after divergence, to "
                   f"{self.sampler.step_size:g}." if self.retries else "")
        lines = [
            f"# {self.title}", "",
            _describe_data(self.data, self.source),
            f"{done} iterations ({seconds:.0f} s in this session). {self.trainer.describe}{reduced}", "",
            *outputs.report,
            *self.validation.report(),
            "## Over the iterations", "",
            *[f"iteration {it}: " + " ".join(pictures) for it, pictures in sorted(snapshots.items())], "",
            "## Metrics", "",
            "![metrics](energy.png)", "",
            *_last_values(history, self.trainer.plot_keys),
            "Per-iteration values in `metrics.csv`; config: `config.json`; params: `params.msgpack`.",
        ]
        return self.run.write_report("\n".join(lines) + "\n")


def learn(family: Family, config, data, out, *, title: str = "", source: str = "",
          data_spec: Optional[Dict[str, Any]] = None, overwrite: bool = False, resume: bool = False,
          quiet: bool = False, devices: Optional[int] = None, **inputs) -> Dict[str, Any]:
    """Learn ``family``'s model of ``config`` from ``data`` into the run
    directory ``out`` (see the module's docstring for the steps).

    ``data`` are observations in data units (pixels 0..255, or what the
    family takes); ``inputs`` are the family's own keyword arguments.
    ``resume=True`` continues the run in ``out`` from its last checkpoint;
    ``overwrite=True`` writes a new run over it. ``data_spec`` (how the data
    were loaded) is saved for resuming from the command line. The chains
    and batches are split over the first ``devices`` of ``jax.devices()``
    (default all; the family's :attr:`Trainer.sharded` fields), the params
    replicated: the same numbers on one device or many, to float rounding
    of the reductions over chains.
    Returns a summary: ``run_dir``, ``report``, ``seconds``, ``state``,
    ``params`` (the kept ones), ``scale``, ``history`` (the metrics),
    ``iterations``, ``retries``, and the family's own ``Outputs.summary``.
    """
    session = _Run(family, config, data, out, title=title, source=source, data_spec=data_spec,
                   overwrite=overwrite, resume=resume, quiet=quiet, inputs=inputs, devices=devices)
    with session.run:
        try:
            t0 = time.perf_counter()
            state, done = session.train()
            seconds = time.perf_counter() - t0
            params, outputs, history = session.write_outputs(state)
            report = session.write_report(done, seconds, outputs, history)
        except jax.errors.JaxRuntimeError as err:
            memory = out_of_memory(err, family.memory_bound)
            if memory is None:
                raise
            raise memory from None
    summary = {"run_dir": session.run.path, "report": report, "seconds": seconds, "state": state,
               "params": params, "scale": session.scale, "history": history, "iterations": done,
               "retries": session.retries, **outputs.summary}
    if session.validation.record["best_iteration"] is not None:
        summary["validation"] = dict(session.validation.record)
    return summary
