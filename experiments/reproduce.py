"""Run the papers' experiments and write ``experiments/REPRODUCTION.md``:
each experiment's result here beside what the paper reports, with the
command, the settings and the run time.

    python -m experiments.reproduce --data ../shared/data
    python -m experiments.reproduce --data ../shared/data --full     # the papers' sizes (a GPU)
    python -m experiments.reproduce --data ../shared/data --only abp coop   # rerun some jobs

The default size fits the 2-core CPU (about 190 minutes in all); ``--full``
passes ``--full`` (or the papers' settings) to every experiment. The cheap
jobs run 3 seeds, the multi-grid and CoopNets 5 (``Job.seeds``; seed 0's
output makes the row, the others go to ``OUT/JOB-seedS``), and a row with a
number and a baseline (``Row.score``) gets its verdict over them
(:func:`verdict`). Each job is one experiment script run as a subprocess, so
every row's command can be rerun by hand; its numbers are read back from the
``summary.json`` it writes under ``--out``. The results accumulate in a
record kept beside the report (``--record``, ``experiments/reproduction.json``:
each job's command, run time, machine, rows, seeds' scores and verdicts), so
``--only`` reruns some jobs on any checkout and keeps the others' last
results, and ``--render-only`` rewrites the report from the record alone (a
job's pictures are read from its run where that is still on disk, else from
the report's copies). A job that fails is reported as failed, with its
error, never left out or filled in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
SOUND_ICONS = Path("/usr/share/sounds/sound-icons/canary-long.wav")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the report: an experiment of a paper and its measurement.

    ``score`` reads ``[(ours, baseline), ...]`` (one pair per seed the
    output holds) from a job's output, both lower is better: with it the
    row gets a verdict (:func:`verdict`) over all the job's seeds; ``limit`` names what the number does not show (the verdict is
    then at most "partly"), at the CPU size; ``full_limit``, where given,
    stands for it in a ``--full`` run (the CPU size's shortfalls, a smaller
    net, say nothing of the papers' size)."""

    experiment: str
    paper: str  # what the paper reports
    measure: Callable[[Path], str]  # our result, read from the job's output
    pictures: Callable[[Path], List[Path]] = lambda out: []
    score: Optional[Callable[[Path], List[Tuple[float, float]]]] = None
    limit: str = ""
    full_limit: Optional[str] = None

    def limit_at(self, full: bool) -> str:
        return self.full_limit if full and self.full_limit is not None else self.limit


@dataclasses.dataclass(frozen=True)
class Job:
    """One experiment script run; several rows may read its output."""

    name: str
    argv: Callable[[str, bool], List[str]]  # (data folder, full) -> arguments after `python`
    settings: str
    rows: List[Row]
    needs: Optional[str] = None  # a job whose output this one reads
    seeds: int = 1  # runs with --seed 0 .. seeds − 1 (the script takes --seed); seed 0's output is the row's


def _summary(out: Path) -> Dict:
    path = out / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} was not written")
    return json.loads(path.read_text())


def _existing(*paths: Path) -> List[Path]:
    return [p for p in paths if p.exists()]


def _first(out: Path, pattern: str) -> List[Path]:
    found = sorted(out.glob(pattern))
    return found[:1]


# ---------------------------------------------------------------- the measurements


def _pair(summary: Dict, ours: str, baseline: str) -> List[Tuple[float, float]]:
    """``[(ours, baseline)]`` read from a summary, for a row's verdict."""
    return [(float(summary[ours]), float(summary[baseline]))]


def _texture(out):
    s = _summary(out)["ivy"]
    return (f"spectrum distance to the observed ivy {s['spectrum_distance_synthesized']:.2f} "
            f"(white noise of its mean and variance: {s['spectrum_distance_noise']:.2f}); Gram distance with the "
            f"learned first-layer filters {s['gram_distance_synthesized']:.3g} (the observed image's 16² tiles "
            f"shuffled: {s['gram_distance_shuffled']:.3g}; white noise: {s['gram_distance_noise']:.3g})")


def _theory(out):
    s = _summary(out)
    return (f"{s['n_starts']} descents (noise of growing scale, and the learned chains) end at "
            f"x = σ²∇f(x): largest relative residual {s['max_residual']:.1e}, median {s['median_residual']:.1e}; "
            f"{s['distinct_patterns']} distinct activation patterns (local minima)")


def _object(out):
    s = _summary(out)
    return (f"{s['images']} persistent chains after {s['iterations']} iterations; final mean f: observed "
            f"{s['f_data']:.4g}, synthesized {s['f_samples']:.4g}")


def _cd(out):
    s = _summary(out)
    return (f"‖x − σ²∇f(x)‖/‖x‖ at the observed image: initial model {s['autoencoding_error_initial']:.3f}, "
            f"CD-learned {s['autoencoding_error_learned']:.3f}; the CD-learned model at images it never saw: "
            f"the observed image mirrored {s['autoencoding_error_mirrored']:.3f}, "
            f"{s['unseen_images']} {Path(s['unseen']).name} images {s['autoencoding_error_unseen']:.3f}; the CD "
            f"chains moved {s['chain_moved']:.3f} of ‖x‖")


def _spread(entry, digits=5):
    sd = entry.get("sd")
    return f"{entry['mean']:.{digits}f}" + (f" ± {sd:.{digits}f}" if sd is not None else "")


def _abp_heldout(out):
    t = _summary(out)["test"]
    n = len(t["seeds"])
    return (f"test MSE ({n} seed{'s' if n > 1 else ''}, mean ± sd): ABP {_spread(t['test_mse_abp'])} (posterior "
            f"mode), {_spread(t['test_mse_abp_fit'])} (least-squares fit); PCA {_spread(t['test_mse_pca'])}; "
            f"ABP (mode) lower on {t['test_abp_better_fraction']['mean']:.0%} of the faces")


def _abp_samples(out):
    s = _summary(out)["samples"]
    n, f = len(s["seeds"]), s["frechet"]
    d = s["seeds"][0]["latent_dim"]
    return (f"random-feature Fréchet distance to the test faces, as many images ({n} seed{'s' if n > 1 else ''}, "
            f"mean ± sd): g(z), z from the prior N(0, I) {_spread(f['prior'], 4)}; from the Gaussian fitted to "
            f"the training latents {_spread(f['fitted'], 4)}; PCA's Gaussian of the same d "
            f"{_spread(f['pca_gaussian'], 4)}; the training faces' mean image repeated "
            f"{_spread(f['mean_image'], 4)}; training faces {_spread(f['training_faces'], 4)}. The training "
            f"latents' median norm {_spread(s['latent_norm_median'], 1)} (a prior draw's: {d ** 0.5:.1f})")


def _abp_samples_pictures(out):
    return _existing(out / "test" / "seed0" / "samples_test" / "prior" / "samples.png",
                     out / "test" / "seed0" / "samples_test" / "fitted" / "samples.png")


def _abp_samples_score(out):
    """The prior's samples against PCA's Gaussian of the same d, per seed."""
    return [(r["frechet"]["prior"], r["frechet"]["pca_gaussian"]) for r in _summary(out)["samples"]["seeds"]]


def _abp_heldout_score(out):
    """The posterior mode's test MSE against PCA's, per seed."""
    return [(r["test_mse_abp"], r["test_mse_pca"]) for r in _summary(out)["test"]["seeds"]]


ABP_HELDOUT_CLAIM = ("ABP's reconstruction error of testing images is below PCA's at the same latent dimension "
                     "(a table; CelebA faces, not comparable in value)")
ABP_SAMPLES_CLAIM = "g(z) with z from the prior N(0, I) are faces (pictures, no number)"


def _abp_recovery(out):
    s = _summary(out)
    r, ridge = s["test"]["recovery"], s["test_recovery_ridge"]
    names = {"pepper:0.5": "50%", "pepper:0.7": "70%", "pepper:0.9": "90%"}

    def bound(v):  # runs scored before the bounds were reported lack them
        return f" [bound {v['abp_bound']['mean']:.4f}]" if "abp_bound" in v else ""

    parts = [f"{names.get(k, k.replace('block:', 'block ') + '²')} {v['abp']['mean']:.4f}{bound(v)} (PCA "
             f"{v['pca']['mean']:.4f}, ridge {ridge[k]:.4f}, mean {v['mean']['mean']:.4f})" for k, v in r.items()]
    text = ("recovery MAE per missing value, ABP (baselines: PCA at ABP's d, ridge regression of the missing pixels "
            "on the observed ones, the mean; all fitted on the training faces): " + ", ".join(parts))
    if any("abp_bound" in v for v in r.values()):
        text += ("; [bound]: ABP's error on the same missing values with z inferred from the whole face, the best "
                 "its generator can draw there")
    return text


def _abp_incomplete(out):
    s = _summary(out)
    parts = []
    for key, value in s.items():
        if key.startswith("incomplete_"):  # incomplete_pepper_0p5: the mask pepper:0.5
            kind, amount = key[len("incomplete_"):].split("_", 1)
            m, n = value["missing_values_mae"], len(value["seeds"])
            parts.append(f"{kind} {amount.replace('p', '.')} missing in training ({n} seed{'s' if n > 1 else ''}, "
                         f"mean ± sd): recovery MAE {_spread(m['abp_pasted'], 4)} (PCA from the same incomplete "
                         f"faces {_spread(m['pca'], 4)}, mean {_spread(m['mean'], 4)}; g(z) alone over the whole "
                         f"image {_spread(value['whole_image_mae']['abp_generated_alone'], 4)})")
    return "; ".join(parts)


def _abp_incomplete_scores(out):
    value = _summary(out)["incomplete_pepper_0p5"]
    return [(r["missing_values_mae"]["abp_pasted"], r["missing_values_mae"]["pca"]) for r in value["seeds"]]


def _waves(out):
    s = _summary(out)
    return (f"power at the six true peaks: videos of {s['longer_frames']} frames from noise "
            f"{s['peak_power_fraction_longer_first_frames']:.1%} (their first frames), the persistent chains "
            f"{s['peak_power_fraction_synthesized']:.1%} (shifted copies of the observed waves, correlation "
            f"{s['best_shifted_copy_correlation']:.3f}, as every draw of three waves with random phases is); the "
            f"observed frames shuffled in time {s['peak_power_fraction_shuffled_frames']:.1%}, noise of the data's "
            f"variance {s['peak_power_fraction_noise']:.2%}. Spatial-temporal spectrum distance of the chains "
            f"{s['spectrum_distance_synthesized']:.2f} (the shuffled frames {s['spectrum_distance_shuffled_frames']:.2f}, "
            f"noise {s['spectrum_distance_noise']:.2f})")


def _waves_score(out):
    """The videos from noise's power off the true peaks, lower is better:
    the waves' spectrum is known, and the chains are shifted copies."""
    s = _summary(out)
    return [(1 - s["peak_power_fraction_longer_first_frames"], 1 - s["peak_power_fraction_shuffled_frames"])]


def _sound(out):
    s = _summary(out)
    later = ("; the observed song's last clip of the same length: {:.2f} and {:.2f}".format(
        s["spectrum_distance_observed_later_clip"], s["modulation_distance_observed_later_clip"])
        if "modulation_distance_observed_later_clip" in s else "")
    rates = ", ".join(f"{r:g}" for r in s["synthesized_pulse_rate_hz"])
    return (f"loudness modulation distance {s['modulation_distance_synthesized']:.2f} (the song's power spectrum "
            f"with random phases: {s['modulation_distance_matched_noise']:.2f}; noise of the data's "
            f"variance: {s['modulation_distance_noise']:.2f}); log-power spectrum distance "
            f"{s['spectrum_distance_synthesized']:.2f} (noise: {s['spectrum_distance_noise']:.2f}){later}; the "
            f"loudness pulses at {rates} Hz (the song: {s['observed_pulse_rate_hz']:g} Hz)")


def _fire(out):
    s = _summary(out)
    step = s["observed_consecutive_frames_mae"]

    def copies(distance):  # nearer to the observed frames than they are to each other
        return "copies" if distance < step else "not copies"

    later = s.get("spectrum_distance_observed_later_clips")
    floor = (f"; the observed video's own later clips: {later:.2f}, {s['observed_later_clips']} of them"
             if later is not None else "")
    text = (f"spatial-temporal spectrum distance of the persistent chains {s['spectrum_distance_synthesized']:.2f} "
            f"(the observed frames shuffled in time: {s['spectrum_distance_shuffled_frames']:.2f}; noise of the data's "
            f"variance: {s['spectrum_distance_noise']:.2f}{floor}); the chains are "
            f"{s['chains_mae_to_observed']:.1f} of 255 from the observed video ({copies(s['chains_mae_to_observed'])}: "
            f"consecutive observed frames differ by {step:.1f})")
    if s.get("longer_frames"):
        near = s["longer_nearest_observed_frame_mae"]
        text += (f". Videos of {s['longer_frames']} frames from noise: spectrum distance (first frames) "
                 f"{s['spectrum_distance_longer_first_frames']:.2f}, each frame {near:.1f} from its nearest observed "
                 f"frame ({copies(near)}), the two videos {s['longer_between_videos_mae']:.1f} apart")
        if "energy_longer_first_frames" in s:
            from gcnjax.sampling import spurious_mode

            below = spurious_mode({"observed": s["energy_observed"], "chains": s["energy_chains"],
                                   "from_noise": s["energy_longer_first_frames"]}, fresh="from_noise")
            text += (f"; energy {s['energy_longer_first_frames']:.3g} (the observed video {s['energy_observed']:.3g}, "
                     f"the chains {s['energy_chains']:.3g}"
                     + (": far below both, a mode the chains never visited)" if below else ")"))
        if "first_layer_gram_longer" in s:
            from gcnjax.sampling import unlike_data

            unlike = unlike_data({"white_noise": s["first_layer_gram_noise"], "from_noise": s["first_layer_gram_longer"]},
                                 fresh="from_noise")
            text += (f"; first-layer Gram distance to the observed video {s['first_layer_gram_longer']:.3g} (the "
                     f"chains {s['first_layer_gram_chains']:.3g}, white noise {s['first_layer_gram_noise']:.3g}"
                     + (": farther than the noise, unlike the data)" if unlike else ")"))
    return text


VIDEO_UNIT = 255.0  # the video runs report errors in pixel values 0..255; the report in [0, 1]


def _stg_recover(out):
    s = _summary(out)
    text = (f"{s['what']} ({s['missing_fraction']:.0%} missing): recovery MAE {s['recovery_error'] / VIDEO_UNIT:.4f}; "
            f"filled with the observed mean {s['mean_fill_error'] / VIDEO_UNIT:.4f}, linear interpolation in time "
            f"{s['temporal_interpolation_error'] / VIDEO_UNIT:.4f}")
    if "other_clips_error" in s:
        text += (f"; with real frames from the video's other clips: the clip nearest on the observed frames "
                 f"{s['nearest_other_clip_error'] / VIDEO_UNIT:.4f}, any of the {s['other_clips']} "
                 f"{s['other_clips_error'] / VIDEO_UNIT:.4f}")
    return text


# The multi-grid job at the CPU size: the multi-grid's Adam learning rate (the authors' 0.3 at full size) and
# its baseline, the 64² grid alone from the same start at equal Langevin FLOPs with its own step δ = 1.2 and
# learning rate 0.3; each chosen on the held-out faces of seed 0 (the multi-grid's among 4 steps and 4 rates,
# the single grid's among 4 steps and 3 rates).
SINGLE_GRID_SPEC = "mean:flops:delta=1.2:lr=0.3"
SINGLE_GRID = "singlegrid_mean_flops_delta1p2_lr0p3"
MULTIGRID_CPU_LR = "0.6"


def _multigrid(out):
    s = _summary(out)
    d = s["distances_to_training_faces"]
    f = {k: v["random_feature_frechet"] for k, v in d.items()}
    single = s["settings"]["single_grids"][SINGLE_GRID]
    return (f"Fréchet distance of random-conv features to the training faces: multi-grid samples "
            f"{f['multi-grid samples']:.3g}, a single 64² grid from the same start at equal Langevin FLOPs "
            f"({single['langevin_steps']} steps of size {single['langevin_step_size']:.3g}) "
            f"{f[SINGLE_GRID + ' samples']:.3g}, held-out real faces "
            f"{f['held-out real faces']:.3g}, flat mean colours {f['start: flat mean colours']:.3g}")


def _multigrid_score(out):
    f = _summary(out)["distances_to_training_faces"]
    return [(f["multi-grid samples"]["random_feature_frechet"], f[SINGLE_GRID + " samples"]["random_feature_frechet"])]


def _multigrid_inpaint(out):
    summary = _summary(out)
    p = summary["inpainting"]
    unit = 255.0  # multi-grid runs report errors in pixel values 0..255
    baselines = "".join(f", {label} {p[key] / unit:.4f}" for key, label in (
        ("pca_error", f"PCA (d = {p.get('pca_dim')}, fitted on the training faces)"),
        ("ridge_regression_error", "ridge regression of the missing pixels on the observed ones (the best linear "
                                   "fill, fitted there too)"),
        ("nearest_training_face_error", "the nearest training face"),
        ("training_mean_error", "the training faces' mean")) if key in p)
    text = (f"{p['mask']} missing on {p.get('faces', 16)} held-out faces: recovery MAE "
            f"{p['mean_recovery_error'] / unit:.4f}; filled with each face's mean colour "
            f"{p['mean_colour_fill_error'] / unit:.4f}{baselines}")
    v = summary.get("inpainting_validation")
    if v:
        text += (f" (on the {v.get('faces')} validation faces that chose the settings: "
                 f"{v['mean_recovery_error'] / unit:.4f}, PCA {v['pca_error'] / unit:.4f}, ridge regression "
                 f"{v['ridge_regression_error'] / unit:.4f})")
    return text


def _multigrid_inpaint_score(out):
    # Against the strongest of the fills fitted on the training faces: the best linear one.
    p = _summary(out)["inpainting"]
    return [(p["mean_recovery_error"], p["ridge_regression_error"])]


def _coop(out):
    s = _summary(out)
    text = (f"the descriptor's revision lowered the energy of the generator's proposals in "
            f"{s['revision_lowered_energy']} of {s['logged_iterations']} logged iterations "
            f"(mean drop {s['mean_revision_drop']:.3g})")
    q = s.get("quality")
    if q:
        def cell(name, distance):
            values = q[name][distance]
            return f"{statistics.fmean(values):.3g} ± {statistics.stdev(values):.1g}"

        text += (f"; Fréchet distances to {q['n']} held-out faces (mean ± sd over {q['draws']} draws of as many "
                 f"images), random conv features / eigenface coordinates: generator "
                 f"{cell('generator', 'random_conv')} / {cell('generator', 'eigenface')}, revised "
                 f"{cell('revised', 'random_conv')} / {cell('revised', 'eigenface')}; training faces "
                 f"{cell('training_real', 'random_conv')} / {cell('training_real', 'eigenface')}, per-pixel noise "
                 f"{cell('pixel_gaussian', 'random_conv')} / {cell('pixel_gaussian', 'eigenface')}")
    return text


def _coop_score(out):
    """The paper's claim, the revision improving the proposals: the revised
    samples' eigenface Fréchet distance to the held-out faces against that of
    the proposals they revised (noise and the training faces, in the row's
    text, give its scale)."""
    q = _summary(out)["quality"]
    return [(statistics.fmean(q["revised"]["eigenface"]), statistics.fmean(q["generator"]["eigenface"]))]


# ---------------------------------------------------------------- the jobs


def _py(script, *args):
    return [f"experiments/{script}.py", *args]


JOBS: List[Job] = [
    Job("texture", lambda d, full: _py("texture_synthesis", "--ivy", f"{d}/textures/ivy.jpg", "--only", "ivy",
                                       "--seeds", "0", "1", "2", *(["--full"] if full else [])),
        "`texture` preset (the authors' 3 conv layers, wrapped at the border, σ = 1, δ = 0.3, 10 steps, 4 "
        "persistent chains, plain SGD); CPU: a 64² crop, 200 iterations; full: 224², the preset's iterations",
        [Row("Texture synthesis (ivy), Xie et al. 2016",
             "synthesized textures that look like the observed one (pictures, no number)",
             _texture, lambda o: _existing(o / "ivy" / "observed.png", o / "ivy" / "synthesized.png"),
             score=lambda o: [(s["gram_distance_synthesized"], s["gram_distance_shuffled"])
                              for s in _summary(o)["ivy"]["per_seed"].values()])]),
    Job("theory", lambda d, full: _py("autoencoding_theory", "--run", "{out}/texture/ivy"),
        "the learned ivy model; 6 noise starts + its chains, 200 steps of gradient descent on E",
        [Row("The auto-encoding theory check, Xie et al. 2016",
             "gradient descent on E converges to local minima that auto-encode, x = σ²∇f(x) (a theorem)",
             _theory, lambda o: _existing(o / "minima.png"))],
        needs="texture"),
    Job("object", lambda d, full: _py("object_synthesis", "--data", f"{d}/objects/egret", *(["--full"] if full else [])),
        "`object` preset (VALID convs + a fully connected top, 30 steps, one chain per image); CPU: 64², 600 "
        "iterations; full: 224²",
        [Row("Object pattern synthesis (7 egrets), Xie et al. 2016",
             "new egret images from 7 observed ones (pictures, no number)",
             _object, lambda o: _existing(o / "observed.png", o / "synthesized.png"))]),
    Job("cd", lambda d, full: _py("contrastive_divergence", "--data", f"{d}/codebook/rose", "--unseen",
                                  f"{d}/codebook/hummingbird", *(["--full"] if full else [])),
        "`cd` preset (CD-10 from the observed image, δ = 0.5); CPU: 96², 1500 iterations; the baseline: the "
        "learned model's auto-encoding error at the observed image mirrored left to right (every local statistic "
        "kept, the arrangement never seen)",
        [Row("Contrastive divergence reconstructs the observed image (rose), Xie et al. 2016",
             "CD-learned models reconstruct the observed images, x ≈ σ²∇f(x) (pictures)",
             _cd, lambda o: _existing(o / "reconstruction.png"),
             score=lambda o: _pair(_summary(o), "autoencoding_error_learned", "autoencoding_error_mirrored"))],
        seeds=3),
    Job("abp", lambda d, full: _py("abp_faces", "--data", f"{d}/faces64", "--seeds", "0", "1", "2",
                                   *(["--full"] if full else [])),
        "`gcnjax abp train`'s defaults (σ = 0.2, 10 warm-started Langevin steps of δ = 0.05, Adam 1e-3, batch "
        "50, 40 epochs, early stopping every 50 iterations) and `reconstruct`'s and `inpaint`'s (30 rounds of "
        "inference); faces 1–600 to train, 601–700 for early stopping, 701–800 tested; learning from incomplete "
        "data: faces 1–600 with half their pixels missing, the whole 40 epochs (no early stopping); samples: 100 "
        "per seed, z from the prior and from the Gaussian fitted to the training latents; CPU: 32², the "
        "`face32` net, d = 20; full: 64², the `face` net, d = 100",
        [Row("ABP: reconstruction of held-out faces against PCA at the same d, Han et al. 2017", ABP_HELDOUT_CLAIM,
             _abp_heldout, lambda o: _existing(o / "test" / "seed0" / "heldout.png"), score=_abp_heldout_score),
         Row("ABP: recovery of occluded faces, Han et al. 2017",
             "recovery errors per mask: salt-and-pepper 50/70/90% and a missing 20²/30² block on 64² "
             "(a table; CelebA)",
             _abp_recovery, lambda o: _existing(o / "test" / "seed0" / "inpaint_test" / "recovery_pepper_0p7.png",
                                                o / "test" / "seed0" / "inpaint_test" / "recovery_block_15.png")),
         Row("ABP: learning from incomplete data, Han et al. 2017",
             "a generator learned from faces with pixels missing recovers them (a table of errors; CelebA)",
             _abp_incomplete, lambda o: _existing(o / "incomplete_pepper_0p5" / "seed0" / "recovered.png"),
             score=_abp_incomplete_scores),
         Row("ABP: samples of the learned generator, Han et al. 2017", ABP_SAMPLES_CLAIM,
             _abp_samples, _abp_samples_pictures, score=_abp_samples_score)]),
    Job("abp-samples", lambda d, full: _py("abp_faces", "--data", f"{d}/faces64", "--seeds", "0", "1", "2",
                                           "--stages", "test", "samples", "--flags", "--sigma 0.5",
                                           *(["--full"] if full else [])),
        "`gcnjax abp train --sigma 0.5`, the defaults otherwise: σ = 0.5 drew the prior samples nearest the "
        "validation faces 601–700 among the 15 configurations tried there at 32² (RESULTS.md, \"σ and the "
        "inference step\"); faces 1–600 to train, 601–700 for early stopping, 701–800 tested once; 100 samples "
        "per seed, z from the prior and from the Gaussian fitted to the training latents; CPU: 32², the `face32` "
        "net, d = 20; full: 64², the `face` net, d = 100",
        [Row("ABP: samples of a generator learned with σ = 0.5 (chosen for its samples), Han et al. 2017",
             ABP_SAMPLES_CLAIM, _abp_samples, _abp_samples_pictures, score=_abp_samples_score),
         Row("ABP with σ = 0.5: reconstruction of held-out faces against PCA at the same d (the price of the "
             "samples)", ABP_HELDOUT_CLAIM, _abp_heldout, lambda o: _existing(o / "test" / "seed0" / "heldout.png"),
             score=_abp_heldout_score)]),
    Job("dynamic-wave", lambda d, full: _py("dynamic_textures", "procedural", "--out", "{out}/dynamic-wave",
                                            "--frames", "24", "--size", "32", "--iterations", "150",
                                            "--synth-frames", "48"),
        "ST net, 24 frames of 32², 150 iterations, 2 chains, 10 steps",
        [Row("Dynamic texture with a known spectrum (travelling waves), Xie et al. 2017",
             "(no such experiment: a check that the synthesized video has the observed spatial-temporal "
             "statistics)", _waves, lambda o: _first(o, "*_frames.png"), score=_waves_score)],
        seeds=3),
    Job("dynamic-fire", lambda d, full: _py("dynamic_textures", "fire", "--data", f"{d}/videos/fire_pot.avi",
                                            "--out", "{out}/dynamic-fire",
                                            *(["--frames", "70", "--size", "100", "--iterations", "500",
                                               "--chains", "3", "--steps", "20", "--synth-frames", "140"] if full else
                                              ["--variant", "st_small", "--frames", "32", "--size", "32",
                                               "--iterations", "1000", "--steps", "10", "--synth-frames", "64"])),
        "CPU: the `st_small` net (its top units see 13×17×17: the ST net's see the whole clip at 32² and copy it) "
        "and a clip of 32 frames (with 16 its chains copied the clip on two seeds of three), 32², 1000 iterations, "
        "2 persistent chains, 10 steps, then 2 videos of 64 frames from noise (250 steps); full: the ST net at the "
        "paper's 70 frames of 100², 500 iterations, 3 chains, 20 steps",
        [Row("Dynamic texture synthesis (fire pot), Xie et al. 2017",
             "synthesized videos that look like the observed fire (videos, no number)",
             _fire, lambda o: _existing(o / "observed_vs_synthesized_frames.png", o / "longer_frames.png"),
             score=lambda o: _pair(_summary(o), "spectrum_distance_longer_first_frames",
                                   "spectrum_distance_shuffled_frames"),
             limit="the CPU size with a smaller net than the paper's (`st_small`); the videos have the fire's "
                   "colours and layout, not its flames",
             full_limit="a spectrum distance against noise's does not tell flames from coloured patches: judge "
                        "the videos")],
        seeds=3),
    Job("dynamic-recover", lambda d, full: _py("dynamic_textures", "recover", "--data", f"{d}/videos/fire_pot.avi",
                                               "--out", "{out}/dynamic-recover", "--mask", "frames:6-9",
                                               "--frames", "16", "--size", "32", "--iterations", "60",
                                               "--steps", "10"),
        "ST net, 16 frames of 32², frames 6–9 missing, 60 iterations, 10 steps",
        [Row("Recovery of missing frames (fire pot), Xie et al. 2017",
             "the missing frames are filled in by sampling them only (videos)",
             _stg_recover, lambda o: _first(o, "*recovered*.png"),
             score=lambda o: [(ours / VIDEO_UNIT, base / VIDEO_UNIT) for ours, base in
                              _pair(_summary(o), "recovery_error", "temporal_interpolation_error")])],
        seeds=3),
    Job("sound", lambda d, full: _py("dynamic_textures", "sound", "--out", "{out}/sound", "--iterations", "600",
                                     "--chains", "3", "--steps", "20", "--samples", "8000",
                                     *(["--data", str(SOUND_ICONS)] if SOUND_ICONS.exists() else [])),
        "the 1-D sound net; half a second of a canary's song (Debian sound-icons; a synthesized tone if absent), "
        "600 iterations, 3 chains, 20 steps, σ = 0.5",
        [Row("Sound synthesis, Xie et al. 2017",
             "synthesized sounds like the observed one (audio, no number)",
             _sound, lambda o: _existing(o / "spectrograms.png"),
             score=lambda o: _pair(_summary(o), "modulation_distance_synthesized", "modulation_distance_matched_noise"))],
        seeds=3),
    Job("multigrid", lambda d, full: [*_py("multigrid_faces", f"{d}/faces64", "--out", "{out}/multigrid",
                                           "--single-grids", SINGLE_GRID_SPEC, "--overwrite",
                                           *([] if full else ["--iterations", "480", "--lr", MULTIGRID_CPU_LR])),
                                      *(["--faces", "700", "--iterations", "3000", "--width", "1", "--steps", "30",
                                         "--batch", "100"] if full else [])],
        "`authors` preset (des4/des16/des64, batch norm, no noise, 0..255); CPU: 160 faces, nets at 1/8 of the "
        "authors' widths, 15 steps per grid, 480 iterations, Adam lr 0.6 (the authors' 0.3 at full size; chosen "
        "on the held-out faces of one seed at the CPU size); the baseline: the 64² grid alone, from the same start, with as "
        "many Langevin steps as cost the multi-grid's FLOPs, of its own step δ = 1.2 and lr 0.3 (the "
        "multi-grid's δ = 0.3 leaves it far behind; chosen likewise)",
        [Row("Multi-grid synthesis of 64² faces from 1×1 starts, Gao et al. 2018",
             "realistic 64² samples, better than a single grid's (pictures; Inception scores on CIFAR-10)",
             _multigrid, lambda o: _existing(o / "multigrid" / "images" / "pyramid_final.png",
                                             o / "multigrid" / "fresh_samples.png",
                                             o / SINGLE_GRID / "fresh_samples.png"),
             score=_multigrid_score,
             limit="a CPU size (160 faces, nets at 1/8 of the authors' widths); the samples stay far from real "
                   "faces",
             full_limit=""),
         Row("Multi-grid inpainting by the models learned for synthesis (not the paper's protocol)",
             "(the paper learns its models for the task: the next row)",
             _multigrid_inpaint, lambda o: _existing(o / "inpaint" / "recovered.png"),
             score=_multigrid_inpaint_score)],
        # Five seeds: the single grid fails outright on some seeds, and three of them left that spread unread.
        seeds=5),
    Job("multigrid-inpaint",
        lambda d, full: _py("multigrid_faces", f"{d}/faces64", "--out", "{out}/multigrid-inpaint", "--single-grids",
                            "--learn-mask", "block:32", "--faces", "640", "--validation", "64", "--held-out", "64",
                            "--iterations", "2880", "--overwrite",
                            *(["--width", "1", "--batch", "100"] if full else ["--lr", MULTIGRID_CPU_LR])),
        "`authors` preset, learned for inpainting (`--learn-mask block:32`: each iteration's chains fill the "
        "batch's centred 32×32 block from the observed ring, coarse to fine, and each grid learns the gradient of "
        "the missing pixels' conditional likelihood); faces 1–640 to train, 641–704 to choose the settings, "
        "705–768 tested once; CPU: nets at 1/8 of the authors' widths, 15 steps per grid, 2880 iterations, Adam "
        "lr 0.6 (8 configurations tried on the validation faces, seed 0: RESULTS.md \"Learned for "
        "inpainting\"); the baseline: the best linear fill, ridge regression of the block on the ring fitted on the "
        "training faces (its ridge by leave-one-out there), PCA's fill (d = 20) beside it",
        [Row("Multi-grid inpainting, Gao et al. 2018",
             "occluded faces completed by sampling the missing pixels, the models learned for the task (pictures)",
             _multigrid_inpaint, lambda o: _existing(o / "inpaint" / "recovered.png"),
             score=_multigrid_inpaint_score,
             limit="a CPU size (nets at 1/8 of the authors' widths, 640 faces)", full_limit="")],
        seeds=3),
    Job("coop", lambda d, full: _py("coop_training", "--data", f"{d}/faces64", "--out", "{out}/coop", "--nets",
                                    "authors", "--lr", "0.007", "--gen-lr", "1e-4",
                                    *(["--image-size", "64", "--limit", "700", "--iterations", "3000", "--chains",
                                       "100", "--width", "64"] if full else
                                      ["--image-size", "32", "--limit", "700", "--chains", "64", "--iterations",
                                       "2000"])),
        "CoopNets, the authors' nets (a descriptor top of 100 summed units, a batch-normalised generator from a 4×4 "
        "start) and settings (σ_d = 0.016, δ = 0.002, 15 revision steps, σ_g = 0.3, Adam 0.007 and 1e-4), the "
        "revision unclipped; CPU: 700 faces at 32² (the last 100 held out), nets of width 32, 64 proposals, "
        "2000 iterations",
        [Row("Cooperative training on faces, Xie et al. 2018",
             "the descriptor's revision improves the generator's proposals; both nets' samples (pictures)",
             _coop, lambda o: _existing(o / "proposals.png", o / "revised.png"),
             score=_coop_score,
             limit="a 32² CPU size with nets of a quarter of the authors' widths; the revised samples' distance "
                   "to held-out faces stays above that of real training faces",
             full_limit="")],
        # Five seeds: 2000 iterations of the two nets' game carry any change of rounding to other samples, and
        # the seeds' spread is wider than the revision's effect at this size.
        seeds=5),
]


def _command(job: Job, data: str, out: Path, full: bool, seed: int = 0) -> List[str]:
    """The job's arguments, paths relative to the project (the commands run
    there); a seed past the first writes to ``OUT/JOB-seedS``."""
    out_arg = os.path.relpath(out, ROOT)
    argv = [a.replace("{out}", out_arg) for a in job.argv(os.path.relpath(Path(data).resolve(), ROOT), full)]
    if "--out" not in argv:
        argv += ["--out", f"{out_arg}/{job.name}"]
    if seed:
        argv = [a.replace(f"{out_arg}/{job.name}", f"{out_arg}/{_seed_folder(job, seed)}") for a in argv]
        argv += ["--seed", str(seed)]
    return argv


def command_line(argv: List[str]) -> str:
    """A job's command as a shell reads it back (a value with a space, such
    as ``--flags '--sigma 0.5'``, quoted), for the log and the report."""
    return "python " + shlex.join(argv)


def _seed_folder(job: Job, seed: int) -> str:
    return job.name if seed == 0 else f"{job.name}-seed{seed}"


def run_job(job: Job, data: str, out: Path, full: bool) -> Dict:
    commands = [_command(job, data, out, full, seed) for seed in range(job.seeds)]
    for seed in range(job.seeds):
        stale = out / _seed_folder(job, seed)
        if stale.exists():
            shutil.rmtree(stale)  # a stale summary must not stand for this run
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    logs, proc = [], None
    for argv in commands:
        print(f"== {job.name}: {command_line(argv)}", flush=True)
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
        logs.append(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            break
    seconds = time.perf_counter() - t0
    (out / f"{job.name}.log").write_text("\n".join(logs))
    record = {"command": command_line(commands[0]), "seconds": round(seconds, 1), "full": full,
              "returncode": proc.returncode, "seeds": job.seeds, "finished": time.strftime("%Y-%m-%d %H:%M"),
              "rows": []}
    if proc.returncode != 0:
        record["error"] = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        return record
    record["rows"] = measure(job, out / job.name, full)
    return record


def _project_path(path: Path) -> str:
    """``path`` relative to the project where it lies inside it (the record
    is committed; the runs' folder may be elsewhere)."""
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def measure(job: Job, job_out: Path, full: bool = False) -> List[Dict]:
    """Each row's result read from a finished job's output folder (seed 0),
    and its verdict over the seeds' folders beside it (``full``: the job ran
    at the papers' size)."""
    rows = []
    for row in job.rows:
        try:
            got = {"ours": row.measure(job_out), "pictures": [_project_path(p) for p in row.pictures(job_out)]}
            if row.score is not None:
                scores = [pair for s in range(job.seeds) for pair in row.score(job_out.parent / _seed_folder(job, s))]
                got["scores"] = scores
                got["verdict"] = verdict(scores, row.limit_at(full))
            rows.append(got)
        except (FileNotFoundError, KeyError, ValueError) as err:
            rows.append({"ours": None, "error": f"{type(err).__name__}: {err}", "pictures": []})
    return rows


def verdict(scores: List[Tuple[float, float]], limit: str = "") -> str:
    """A row's verdict from ``(ours, baseline)`` per seed, lower is better:
    **reproduced** where the mean beats the baseline's by more than the
    spread (the larger standard deviation over seeds of the two) with at
    least 3 seeds, and nothing in ``limit``; **partly** where it beats it
    with fewer seeds, within the spread, or with a ``limit``; **not**
    where it does not beat it."""
    ours, base = [o for o, _ in scores], [b for _, b in scores]
    n = len(scores)
    spread = max(statistics.stdev(ours), statistics.stdev(base)) if n > 1 else float("nan")
    numbers = (f"{statistics.fmean(ours):.4g} ± {spread:.2g} against {statistics.fmean(base):.4g} ({n} seeds)"
               if n > 1 else f"{ours[0]:.4g} against {base[0]:.4g} (one seed)")
    margin = statistics.fmean(base) - statistics.fmean(ours)
    if margin <= 0:
        return f"**not**: {numbers}"
    if n < 3:
        return f"**partly**: {numbers}; fewer than 3 seeds"
    if margin <= spread:
        return f"**partly**: {numbers}; the difference is within the spread"
    if limit:
        return f"**partly**: {numbers}; {limit}"
    return f"**reproduced**: {numbers}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


READING = "## Reading of the results"


def kept_reading(report: Path) -> str:
    """The hand-written reading section of an existing report (from its
    heading to the next ``## ``), kept when the report is written again."""
    if not report.exists():
        return ""
    text = report.read_text()
    start = text.find(READING)
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(READING))
    return text[start:end if end >= 0 else len(text)].rstrip() + "\n"


def render(results: Dict, report: Path, full: bool, reading: str = "") -> str:
    """The markdown report; pictures are copied next to it. ``reading``: a
    hand-written section placed after the table (see :func:`kept_reading`)."""
    pictures_dir = report.parent / "results" / "reproduction"
    machines = list(dict.fromkeys(r.get("machine") or results.get("machine", "unknown")
                                  for r in results.get("jobs", {}).values()))
    lines = [
        "# Reproduction: the papers' experiments, run here",
        "",
        "Generated by `python -m experiments.reproduce --data ../shared/data"
        + (" --full" if full else "") + "` (see its docstring); every row below is a real run of the command "
        "in its section, its numbers read back from the run's `summary.json`.",
        "",
        f"Machine: {'; '.join(machines) or 'unknown'}; the jobs' run times add up to "
        f"{sum(r['seconds'] for r in results.get('jobs', {}).values()) / 60:.0f} min.",
        "",
        "The papers report pictures for most experiments and numbers on data we do not have (CelebA, "
        "CIFAR-10); the paper column says what they show, our column what we measured, with a baseline for "
        "scale where there is one. Errors are in [0, 1] intensity units. Where a row has a number and a "
        "baseline, its verdict is computed over the job's seeds (`verdict()` in the script); the others are "
        "judged in the reading.",
        "",
        "| experiment | the paper | here | verdict | time |",
        "|---|---|---|---|---|",
    ]
    sections = []
    for job in JOBS:
        rec = results.get("jobs", {}).get(job.name)
        if rec is None:
            lines.append(f"| {job.rows[0].experiment} | {job.rows[0].paper} | **not run yet** | | |")
            continue
        for i, row in enumerate(job.rows):
            got = rec["rows"][i] if i < len(rec["rows"]) else {"ours": None, "error": rec.get("error", "failed")}
            ours = got["ours"] if got.get("ours") else f"**failed**: {got.get('error', rec.get('error'))}"
            anchor = job.name
            judged = got.get("verdict") or ("see the reading below" if got.get("ours") else "")
            lines.append(f"| {_cell(row.experiment)} | {_cell(row.paper)} | {_cell(ours)} | {_cell(judged)} | "
                         f"[{rec['seconds']:.0f} s](#{anchor}) |")
        body = [f"### {job.name}", "", f"    {rec['command']}", "", f"Settings: {job.settings}. "
                f"Run time {rec['seconds']:.0f} s (finished {rec['finished']}).", ""]
        for i, row in enumerate(job.rows):
            got = rec["rows"][i] if i < len(rec["rows"]) else {"pictures": []}
            for j, pic in enumerate(got.get("pictures", [])):
                src = ROOT / pic  # an absolute path stays itself
                dest = pictures_dir / f"{job.name}_{i}_{j}{src.suffix}"
                if src.exists():
                    pictures_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                elif not dest.exists():  # neither the run nor an earlier copy: nothing to show
                    continue
                body.append(f"![{row.experiment}: {src.name}]({dest.relative_to(report.parent).as_posix()})")
        sections += body + [""]
    middle = ["", reading.rstrip(), ""] if reading else []
    return "\n".join(lines + middle + ["", "## The runs", ""] + sections) + "\n"


def _write_record(path: Path, results: Dict) -> None:
    """The record, whole or not at all (a run stopped while writing it
    keeps the last one), in readable UTF-8: it is committed with the report."""
    from gcnjax.train import write_atomic

    write_atomic(path, json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", required=True, help="the papers' data folder (textures/, objects/, codebook/, "
                                                  "videos/, faces64/)")
    ap.add_argument("--out", type=Path, default=Path("runs/reproduction"), help="where the runs go")
    ap.add_argument("--report", type=Path, default=ROOT / "experiments" / "REPRODUCTION.md")
    ap.add_argument("--full", action="store_true", help="the papers' sizes (a GPU)")
    ap.add_argument("--only", nargs="*", choices=[j.name for j in JOBS], help="run only these jobs")
    ap.add_argument("--record", type=Path, default=ROOT / "experiments" / "reproduction.json",
                    help="the results the report is rendered from, kept beside it (jobs not rerun keep theirs)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the report from the record")
    args = ap.parse_args(argv)

    missing = [p for p in ("textures/ivy.jpg", "objects/egret", "codebook/rose", "videos/fire_pot.avi", "faces64")
               if not (Path(args.data) / p).exists()]
    if missing and not args.render_only:
        raise SystemExit(f"--data {args.data!r} lacks {', '.join(missing)}: give the folder that holds the "
                         "papers' data (../shared/data).")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = args.record
    results = json.loads(results_path.read_text()) if results_path.exists() else {"jobs": {}}
    if not args.render_only:
        import jax  # only to name the device in the report

        machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} on "
                   f"{jax.devices()[0].device_kind}")
        todo = [j for j in JOBS if not args.only or j.name in args.only]
        for job in todo:
            if job.needs and not (out / job.needs).is_dir():
                raise SystemExit(f"job {job.name!r} reads the output of {job.needs!r}, which is not under {out}: "
                                 f"run that one first (--only {job.needs} {job.name}).")
            record = {**run_job(job, args.data, out, args.full), "machine": machine}
            results["jobs"][job.name] = record
            _write_record(results_path, results)
            status = "ok" if record["returncode"] == 0 else f"FAILED: {record.get('error')}"
            print(f"   {record['seconds']:.0f} s, {status}", flush=True)
    for name, record in results["jobs"].items():
        # Read the finished runs again, so the report follows the current measurements.
        job = next((j for j in JOBS if j.name == name), None)
        if job is not None and record["returncode"] == 0 and (out / name).is_dir():
            record["rows"] = measure(job, out / name, record.get("full", False))
    _write_record(results_path, results)
    args.report.write_text(render(results, args.report, args.full, kept_reading(args.report)))
    print(f"report: {args.report}")


if __name__ == "__main__":
    main()
