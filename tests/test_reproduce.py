"""The reproduction report: every row is a measured result, a failure, or
marked as not run; none is filled in."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from experiments import reproduce
from gcnjax import data as gdata


def test_report_shows_measured_failed_and_missing_jobs(tmp_path):
    out = tmp_path / "runs"
    (out / "cd").mkdir(parents=True)
    (out / "cd" / "summary.json").write_text(json.dumps(
        {"autoencoding_error_initial": 1.0, "autoencoding_error_learned": 0.2491, "chain_moved": 0.185,
         "autoencoding_error_mirrored": 0.519, "autoencoding_error_unseen": 0.579, "unseen_images": 10,
         "unseen": "data/codebook/hummingbird"}))
    gdata.save_image_grid(out / "cd" / "reconstruction.png", np.zeros((2, 8, 8, 3)))
    cd = next(j for j in reproduce.JOBS if j.name == "cd")
    measured = {"command": "python experiments/contrastive_divergence.py ...", "seconds": 12.0, "returncode": 0,
                "finished": "2026-01-01 00:00",
                "rows": [{"ours": r.measure(out / "cd"), "pictures": [str(p) for p in r.pictures(out / "cd")]}
                         for r in cd.rows]}
    failed = {"command": "python experiments/object_synthesis.py ...", "seconds": 3.0, "returncode": 1,
              "finished": "2026-01-01 00:00", "rows": [], "error": "ValueError: no images"}
    report = tmp_path / "REPRODUCTION.md"
    text = reproduce.render({"jobs": {"cd": measured, "object": failed}, "machine": "test"}, report, full=False)
    assert "CD-learned 0.249" in text and "the observed image mirrored 0.519, 10 hummingbird images 0.579" in text
    assert cd.rows[0].score(out / "cd") == [(0.2491, 0.519)]
    assert "**failed**: ValueError: no images" in text
    assert text.count("**not run yet**") == len(reproduce.JOBS) - 2
    copied = tmp_path / "results" / "reproduction" / "cd_0_0.png"
    assert copied.exists() and "results/reproduction/cd_0_0.png" in text


def test_incomplete_data_rows_name_their_masks_and_score_every_seed(tmp_path):
    def record(abps, pca):  # the incomplete stage's summary of one mask: per seed, and over the seeds
        seeds = [{"seed": k, "missing_values_mae": {"abp_pasted": a, "abp_generated_alone": a, "pca": pca, "mean": 0.2},
                  "whole_image_mae": {"abp_pasted": a / 2, "abp_generated_alone": 0.05, "pca": pca / 2, "mean": 0.1}}
                 for k, a in enumerate(abps)]

        def over(measure, method):
            values = [r[measure][method] for r in seeds]
            return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                    "values": values}

        return {"seeds": seeds, **{m: {k: over(m, k) for k in seeds[0][m]}
                                   for m in ("missing_values_mae", "whole_image_mae")}}

    (tmp_path / "summary.json").write_text(json.dumps(
        {"test": {}, "incomplete_pepper_0p5": record([0.06, 0.07, 0.08], 0.09), "incomplete_block_20": record([0.09], 0.1)}))
    text = reproduce._abp_incomplete(tmp_path)
    assert text == ("pepper 0.5 missing in training (3 seeds, mean ± sd): recovery MAE 0.0700 ± 0.0100 (PCA from the "
                    "same incomplete faces 0.0900 ± 0.0000, mean 0.2000 ± 0.0000; g(z) alone over the whole image "
                    "0.0500 ± 0.0000); "
                    "block 20 missing in training (1 seed, mean ± sd): recovery MAE 0.0900 (PCA from the same "
                    "incomplete faces 0.1000, mean 0.2000; g(z) alone over the whole image 0.0500)")
    scores = reproduce._abp_incomplete_scores(tmp_path)
    assert scores == [(0.06, 0.09), (0.07, 0.09), (0.08, 0.09)]
    assert reproduce.verdict(scores).startswith("**reproduced**: 0.07 ± 0.01 against 0.09 (3 seeds)")


def test_the_hand_written_reading_survives_a_new_report(tmp_path):
    report = tmp_path / "REPRODUCTION.md"
    report.write_text("# old\n\n| table |\n\n## Reading of the results\n\nThe egrets are egrets.\n\n## The runs\n\nold runs\n")
    reading = reproduce.kept_reading(report)
    assert reading == "## Reading of the results\n\nThe egrets are egrets.\n"
    text = reproduce.render({"jobs": {}, "machine": "test"}, report, full=False, reading=reading)
    assert text.index("The egrets are egrets.") < text.index("## The runs")
    assert "old runs" not in text


def test_a_verdict_needs_three_seeds_and_a_margin_beyond_their_spread():
    three = [(10.74, 17.31), (10.78, 17.31), (10.76, 17.31)]
    assert reproduce.verdict(three).startswith("**reproduced**: 10.76 ± 0.02 against 17.31 (3 seeds)")
    assert reproduce.verdict(three, "no pulsing").startswith("**partly**") and "no pulsing" in reproduce.verdict(
        three, "no pulsing")
    assert reproduce.verdict(three[:1]) == "**partly**: 10.74 against 17.31 (one seed); fewer than 3 seeds"
    # Lower than the baseline on average, but by less than the spread (sd 1.0 against a margin of 0.5).
    noisy = [(9.5, 11.0), (10.5, 11.0), (11.5, 11.0)]
    assert "within the spread" in reproduce.verdict(noisy)
    assert reproduce.verdict([(0.117, 0.053)] * 3).startswith("**not**")


def test_the_seeds_of_a_job_write_beside_its_first(tmp_path):
    wave = next(j for j in reproduce.JOBS if j.name == "dynamic-wave")
    out = reproduce.ROOT / "runs" / "reproduction"
    first, third = (reproduce._command(wave, str(tmp_path), out, False, seed) for seed in (0, 2))
    assert "--seed" not in first and first[first.index("--out") + 1] == "runs/reproduction/dynamic-wave"
    assert third[third.index("--out") + 1] == "runs/reproduction/dynamic-wave-seed2" and third[-2:] == ["--seed", "2"]
    # The verdict reads every seed's folder: the power off the waves' true peaks, against the shuffled frames'.
    for seed, peaks in enumerate((0.996, 0.994, 0.995)):
        folder = tmp_path / reproduce._seed_folder(wave, seed)
        folder.mkdir()
        (folder / "summary.json").write_text(json.dumps({
            "peak_power_fraction_longer_first_frames": peaks, "longer_frames": 48,
            "peak_power_fraction_synthesized": 0.996, "best_shifted_copy_correlation": 0.998,
            "peak_power_fraction_shuffled_frames": 0.1, "peak_power_fraction_noise": 0.0002,
            "spectrum_distance_synthesized": 10.7, "spectrum_distance_shuffled_frames": 0.12,
            "spectrum_distance_noise": 17.31}))
    (row,) = reproduce.measure(wave, tmp_path / "dynamic-wave")
    assert row["verdict"].startswith("**reproduced**: 0.005 ± 0.001 against 0.9 (3 seeds)") and len(row["scores"]) == 3
    assert row["ours"].startswith("power at the six true peaks: videos of 48 frames from noise 99.6% (their first "
                                  "frames), the persistent chains 99.6% (shifted copies")
    assert "the observed frames shuffled in time 10.0%, noise of the data's variance 0.02%" in row["ours"]


def test_texture_row_reads_the_spectrum_and_gram_distances(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"ivy": {
        "spectrum_distance_synthesized": 1.004, "spectrum_distance_noise": 2.9,
        "gram_distance_synthesized": 7593.1, "gram_distance_shuffled": 17022.5, "gram_distance_noise": 2.39e5}}))
    text = reproduce._texture(tmp_path)
    assert text.startswith("spectrum distance to the observed ivy 1.00 (white noise of its mean and variance: 2.90)")
    assert "filters 7.59e+03 (the observed image's 16² tiles shuffled: 1.7e+04; white noise: 2.39e+05)" in text


def test_a_cpu_size_limit_does_not_follow_a_full_run():
    """The fire row's verdict names `st_small` at the CPU size; a `--full`
    run (the ST net) gets the row's full-size limit instead."""
    fire_job = next(j for j in reproduce.JOBS if j.name == "dynamic-fire")
    (fire,) = fire_job.rows
    assert "st_small" in fire.limit_at(False) and "st_small" not in fire.limit_at(True)
    assert "judge the videos" in fire.limit_at(True)
    wave = next(j for j in reproduce.JOBS if j.name == "dynamic-wave").rows[0]
    assert wave.limit_at(True) == wave.limit_at(False) == ""


def test_the_fire_is_scaled_by_its_own_later_clips(tmp_path):
    """A video that repeats every 4 frames: each later clip of 4 has the
    first clip's spectrum exactly (distance 0), and 10 frames hold 1 more
    complete clip; a clip that changes is farther; a video of one clip has
    none to compare."""
    import imageio.v3 as iio

    from experiments.dynamic_textures import observed_clip_distance

    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    periodic = tmp_path / "periodic"
    periodic.mkdir()
    for t in range(10):
        iio.imwrite(periodic / f"{t:03d}.png", clip[t % 4])
    distance, n = observed_clip_distance(periodic, 4, 8, 3)
    assert (distance, n) == (0.0, 1)
    changing = tmp_path / "changing"
    changing.mkdir()
    for t in range(8):
        frame = clip[t % 4] if t < 4 else np.clip(clip[t % 4].astype(int) // 4 + 100, 0, 255).astype(np.uint8)
        iio.imwrite(changing / f"{t:03d}.png", frame)
    distance, n = observed_clip_distance(changing, 4, 8, 3)
    assert n == 1 and distance > 0.1
    assert observed_clip_distance(periodic, 8, 8, 3) == (None, 0)


def test_the_fire_row_says_when_the_videos_from_noise_sit_below_the_data(tmp_path):
    summary = {"observed_consecutive_frames_mae": 13.2, "spectrum_distance_synthesized": 1.15,
               "spectrum_distance_noise": 4.12, "spectrum_distance_observed_later_clips": 0.97,
               "spectrum_distance_shuffled_frames": 0.94,
               "observed_later_clips": 5, "chains_mae_to_observed": 50.0, "longer_frames": 32,
               "longer_nearest_observed_frame_mae": 66.1, "longer_between_videos_mae": 4.2,
               "spectrum_distance_longer_first_frames": 1.91, "energy_observed": -2.71e8,
               "energy_chains": -3.42e8, "energy_longer_first_frames": -4.87e8}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = reproduce._fire(tmp_path)
    assert "later clips: 0.97, 5 of them" in text and "50.0 of 255 from the observed video (not copies" in text
    assert "(the observed frames shuffled in time: 0.94; noise of the data's variance: 4.12;" in text
    assert "energy -4.87e+08 (the observed video -2.71e+08, the chains -3.42e+08: far below both, a mode the chains never visited)" in text
    for below_by_little in (-3.0e8, -4.0e8):  # between the chains and the data; below both by less than 25%
        summary["energy_longer_first_frames"] = below_by_little
        (tmp_path / "summary.json").write_text(json.dumps(summary))
        assert "below both" not in reproduce._fire(tmp_path)
    # The videos from noise's first-layer statistics: farther from the observed video's than white noise's.
    summary.update(first_layer_gram_longer=5.2e6, first_layer_gram_chains=1.1e3, first_layer_gram_noise=8.4e5)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert ("first-layer Gram distance to the observed video 5.2e+06 (the chains 1.1e+03, white noise 8.4e+05: "
            "farther than the noise, unlike the data)") in reproduce._fire(tmp_path)
    summary["first_layer_gram_longer"] = 2.0e5
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert "unlike the data" not in reproduce._fire(tmp_path)


def test_the_videos_noise_baseline_has_each_channels_moments():
    """A colour video whose channels differ in mean and spread: the noise
    baseline has each channel's own moments (a global mean and sd would give
    every channel the same), and a video of the observed clip itself is at
    spectrum distance 0, noise farther."""
    from experiments.dynamic_textures import spectrum_distances

    rng = np.random.default_rng(1)
    observed = np.stack([rng.normal(0.2, 0.05, (6, 8, 8)), rng.normal(0.8, 0.2, (6, 8, 8)),
                         rng.normal(0.5, 0.01, (6, 8, 8))], axis=-1)[None]
    distances, noise = spectrum_distances(observed, np.repeat(observed, 40, axis=0))
    np.testing.assert_allclose(noise.reshape(-1, 3).mean(0), [0.2, 0.8, 0.5], atol=0.01)
    np.testing.assert_allclose(noise.reshape(-1, 3).std(0), observed.reshape(-1, 3).std(0), rtol=0.03)
    assert distances["spectrum_distance_synthesized"] == pytest.approx(0.0, abs=1e-9)
    assert distances["spectrum_distance_noise"] > 0.1


def test_other_clips_fill_the_missing_frames_with_real_ones():
    """A video in which frames 24–31 repeat the clip's frames 0–7: the
    nearest other clip on the observed frames is that repeat, which fills
    the missing frames exactly (error 0); clips overlapping the clip are
    never used; the mean over the other clips is a direct computation."""
    from experiments.dynamic_textures import other_clip_fills

    rng = np.random.default_rng(0)
    whole = rng.uniform(0, 255, (40, 4, 4, 3))
    whole[24:32] = whole[0:8]
    mask = np.ones((8, 1, 1, 1))
    mask[3:5] = 0
    fills = other_clip_fills(whole, 0, whole[0:8], mask)
    assert fills["nearest_other_clip_first_frame"] == 24
    assert fills["nearest_other_clip_error"] == 0.0
    starts = range(8, 33)
    assert fills["other_clips"] == len(starts)
    direct = np.mean([np.abs(whole[u + 3:u + 5] - whole[3:5]).mean() for u in starts])
    assert fills["other_clips_error"] == pytest.approx(direct)
    # A clip in the middle: neither the clips overlapping it nor itself are candidates.
    middle = other_clip_fills(whole, 24, whole[24:32], mask)
    assert middle["nearest_other_clip_first_frame"] == 0 and middle["other_clips"] == len(range(0, 17)) + len(range(32, 33))


def test_a_report_renders_from_its_record_once_the_runs_are_gone(tmp_path):
    """The record keeps each picture's run path; once that run is deleted
    (a new checkout), the report links the copy it made before, and a
    picture copied by no earlier report is left out, not linked."""
    run = tmp_path / "runs" / "cd"
    run.mkdir(parents=True)
    gdata.save_image_grid(run / "reconstruction.png", np.zeros((2, 8, 8, 3)))
    record = {"jobs": {"cd": {"command": "python ...", "seconds": 1.0, "returncode": 0, "finished": "2026-01-01 00:00",
                              "machine": "test", "rows": [{"ours": "measured", "pictures": [str(run / "reconstruction.png")],
                                                           "verdict": "**reproduced**: 0.2 against 1 (3 seeds)"}]},
                      "object": {"command": "python ...", "seconds": 2.0, "returncode": 0, "finished": "2026-01-01 00:00",
                                 "machine": "test", "rows": [{"ours": "egrets", "pictures": [str(tmp_path / "gone.png")]}]}}}
    report = tmp_path / "REPRODUCTION.md"
    first = reproduce.render(record, report, full=False)
    (run / "reconstruction.png").unlink()
    again = reproduce.render(record, report, full=False)
    assert again == first
    assert "![Contrastive divergence reconstructs the observed image (rose), Xie et al. 2016: reconstruction.png]" \
           "(results/reproduction/cd_0_0.png)" in again
    assert "object_0_0" not in again and "Machine: test;" in again and "add up to 0 min" in again


def test_the_abp_samples_row_scores_the_prior_samples_against_pcas_gaussian(tmp_path):
    keys = ("training_faces", "mean_image", "reconstructions", "pca_gaussian", "prior", "fitted")
    seeds = [{"seed": k, "latent_dim": 20, "latent_norm_median": 26.0 + k,
              "frechet": dict(zip(keys, (0.002, 0.12, 0.004, 0.011, prior, 0.005)))}
             for k, prior in enumerate((0.40, 0.42, 0.44))]
    over = {key: {"mean": float(np.mean([s["frechet"][key] for s in seeds])),
                  "sd": float(np.std([s["frechet"][key] for s in seeds], ddof=1))} for key in keys}
    (tmp_path / "summary.json").write_text(json.dumps({"samples": {
        "seeds": seeds, "frechet": over, "latent_norm_median": {"mean": 27.0, "sd": 1.0}}}))
    row = next(r for r in next(j for j in reproduce.JOBS if j.name == "abp").rows if r.measure is reproduce._abp_samples)
    text = row.measure(tmp_path)
    assert "z from the prior N(0, I) 0.4200 ± 0.0200" in text and "PCA's Gaussian of the same d 0.0110" in text
    assert "median norm 27.0 ± 1.0 (a prior draw's: 4.5)" in text
    scores = row.score(tmp_path)
    assert scores == [(0.40, 0.011), (0.42, 0.011), (0.44, 0.011)]
    assert reproduce.verdict(scores).startswith("**not**")


def test_a_jobs_command_reads_back_as_it_runs(tmp_path):
    job = next(j for j in reproduce.JOBS if j.name == "abp-samples")
    argv = reproduce._command(job, "data", tmp_path / "runs", False)
    assert argv[argv.index("--flags") + 1] == "--sigma 0.5"
    line = reproduce.command_line(argv)
    assert "--flags '--sigma 0.5'" in line and shlex.split(line) == ["python", *argv]


def test_abp_faces_gathers_seeds_of_several_invocations_and_keeps_the_ridge_fills_of_its_split():
    from experiments import abp_faces

    def samples_row(seed, frechet):
        return {"seed": seed, "frechet": {key: frechet for key in abp_faces.SETS}, "latent_norm_median": 10.0 + seed}

    first = {"split": {"test": 4}, "samples": abp_faces._aggregate_samples([samples_row(0, 0.1), samples_row(1, 0.5)])}
    # A later invocation scores seed 1 again and seed 2 for the first time.
    later = {"split": {"test": 4}, "samples": abp_faces._aggregate_samples([samples_row(1, 0.2), samples_row(2, 0.3)])}
    merged = abp_faces.merge_summaries(first, later)["samples"]
    assert [r["seed"] for r in merged["seeds"]] == [0, 1, 2]
    prior = merged["frechet"]["prior"]
    assert prior["values"] == [0.1, 0.2, 0.3]
    assert prior["mean"] == pytest.approx(0.2) and prior["sd"] == pytest.approx(np.std([0.1, 0.2, 0.3], ddof=1))
    assert merged["latent_norm_median"]["values"] == [10.0, 11.0, 12.0]

    rng = np.random.default_rng(0)
    train, test = rng.uniform(0, 255, (30, 4, 4, 1)), rng.uniform(0, 255, (3, 4, 4, 1))
    masks = ["pepper:0.5", "block:2"]
    computed = abp_faces._ridge_recoveries(train, test, masks)
    kept = {"pepper:0.5": -1.0, "block:2": -2.0}

    def earlier(masks_then, size_then=(4, 4)):  # an earlier invocation's summary
        return {"split": {"test": 3}, "test_recovery_ridge": kept,
                "test_recovery_ridge_of": {"masks": masks_then, "image_size": list(size_then)}}

    assert abp_faces._ridge_recoveries_kept(earlier(masks), {"test": 3}, train, test, masks) == (
        kept, {"masks": masks, "image_size": [4, 4]})
    # Another split, another image size, or the masks in another order (each mask's pixels depend on its place)
    # computes them again.
    assert abp_faces._ridge_recoveries_kept(earlier(masks), {"test": 4}, train, test, masks)[0] == computed
    assert abp_faces._ridge_recoveries_kept(earlier(masks, (8, 8)), {"test": 3}, train, test, masks)[0] == computed
    assert abp_faces._ridge_recoveries_kept(earlier(masks), {"test": 3}, train, test, masks[::-1]) == (
        abp_faces._ridge_recoveries(train, test, masks[::-1]), {"masks": masks[::-1], "image_size": [4, 4]})
    # Saved, new fills replace the earlier ones whole (no stale mask left); the select stage's configurations
    # gather by name.
    saved = abp_faces.merge_summaries({**earlier(masks), "select": {"a": 1}},
                                      {"test_recovery_ridge": {"block:2": 0.5}, "select": {"b": 2}})
    assert saved["test_recovery_ridge"] == {"block:2": 0.5} and saved["select"] == {"a": 1, "b": 2}


def test_abp_faces_refuses_an_out_that_holds_another_split_or_other_flags(tmp_path):
    from experiments import abp_faces

    split = {"data": "faces", "train": 600, "validation": 100, "test": 100}
    earlier = {"split": {**split, "first_and_last": {}}}
    abp_faces._refuse_another_setup(earlier, split, tmp_path)  # the same split: gathered
    abp_faces._refuse_another_setup({}, split, tmp_path)  # a new --out
    abp_faces._refuse_another_setup(earlier, {**split, "data": str(Path("faces").resolve())}, tmp_path)
    with pytest.raises(SystemExit, match="another split"):
        abp_faces._refuse_another_setup(earlier, {**split, "data": "other_faces"}, tmp_path)
    with pytest.raises(SystemExit, match="another split .*train 600.*same --data, --train"):
        abp_faces._refuse_another_setup(earlier, {**split, "train": 500}, tmp_path)
    # Runs learned with other flags of `gcnjax abp train` (a summary without flags: the defaults).
    tuned = {**earlier, "flags": "--sigma 0.5"}
    abp_faces._refuse_another_setup(tuned, split, tmp_path, "--sigma  0.5")
    abp_faces._refuse_another_setup(earlier, split, tmp_path, "")
    with pytest.raises(SystemExit, match="learned with --flags '--sigma 0.5'.*same --flags"):
        abp_faces._refuse_another_setup(tuned, split, tmp_path, "")
    with pytest.raises(SystemExit, match="learned with --flags ''"):
        abp_faces._refuse_another_setup(earlier, split, tmp_path, "--sigma 0.5")
    # Flags that `gcnjax abp train` does not take are refused before anything runs.
    abp_faces._check_train_flags("--sigma 0.5 --delta 0.1", "--flags")
    with pytest.raises(SystemExit, match="--flags '--sigmaa 0.5': not flags of `gcnjax abp train`"):
        abp_faces._check_train_flags("--sigmaa 0.5", "--flags")
