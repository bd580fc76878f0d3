"""Options derived from the configs: every field settable, shortcuts that keep the chain's other settings."""

import argparse
import typing

import numpy as np
import pytest

from gcnjax import abp, cli, coop, multigrid, options, synthesis
from gcnjax.descriptor import DescriptorConfig
from gcnjax.generator import GeneratorConfig
from gcnjax.langevin import LangevinConfig
from gcnjax.multigrid import MultigridConfig


def test_values_are_read_by_the_field_type():
    assert options.parse_value("0.01", float) == 0.01
    assert options.parse_value("7", int) == 7
    assert options.parse_value("false", bool) is False
    assert options.parse_value("none", typing.Optional[float]) is None
    assert options.parse_value("2.5", typing.Optional[float]) == 2.5
    assert options.parse_value("-1,1", typing.Optional[typing.Tuple[float, float]]) == (-1.0, 1.0)
    assert options.parse_value("64,48", typing.Tuple[int, int]) == (64, 48)
    assert options.parse_value("true", typing.Union[int, bool, None]) is True
    assert options.parse_value("3", typing.Union[int, bool, None]) == 3
    with pytest.raises(ValueError, match="--n-chains: expected int"):
        options.parse_value("many", int, "--n-chains")
    with pytest.raises(ValueError, match="2 comma-separated"):
        options.parse_value("1,2,3", typing.Tuple[int, int], "--image-size")


def test_every_leaf_field_is_a_flag_and_sets_that_field():
    parser = argparse.ArgumentParser()
    options.add_config_flags(parser, DescriptorConfig)
    flags = [options.flag_name(path) for path, _ in options.config_fields(DescriptorConfig)]
    assert "--langevin.step-size" in flags and "--run.on-divergence" in flags and "--layers" in flags
    args = parser.parse_args(["--langevin.step-size", "0.02", "--langevin.clip=-3,3", "--sigma", "none",
                              "--layers", '[{"features": 5, "kernel": 3, "stride": 1, "padding": "SAME"}]',
                              "--run.on-divergence", "retry"])
    config = options.apply_config_flags(DescriptorConfig(), args)
    assert config.langevin.step_size == 0.02 and config.langevin.clip == (-3.0, 3.0)
    assert config.sigma is None and config.run.on_divergence == "retry"
    assert config.layers[0].features == 5 and config.layers[0].kernel == 3
    # Untouched fields keep the config's values; the config's own checks run.
    assert config.langevin.n_steps == DescriptorConfig().langevin.n_steps
    with pytest.raises(ValueError, match="n_chains"):
        options.apply_config_flags(DescriptorConfig(), parser.parse_args(["--n-chains", "0"]))


def test_with_delta_keeps_every_other_setting():
    coupled = LangevinConfig.from_delta(0.3, 10, chain_batch=4, clip=(-1.0, 1.0))
    c = coupled.with_delta(0.1)
    assert np.isclose(c.step_size, 0.005) and (c.noise_scale, c.clip, c.chain_batch, c.n_steps) == (0.1, (-1.0, 1.0), 4, 10)
    exact = LangevinConfig(step_size=0.5, noise_scale=None, mala=True).with_delta(0.2)
    assert exact.noise_scale is None and exact.mala and np.isclose(exact.step_size, 0.02)
    silent = LangevinConfig.from_delta(0.3, 90, noise=False).with_delta(0.2)
    assert silent.noise_scale == 0.0
    decoupled = LangevinConfig(n_steps=100, step_size=1.0, noise_scale=0.01).with_delta(0.1)
    assert decoupled.noise_scale == 0.01 and np.isclose(decoupled.step_size, 0.005)
    with pytest.raises(ValueError, match="delta"):
        coupled.with_delta(-1.0)


class _Captured(Exception):
    def __init__(self, config):
        self.config = config


def _capture(monkeypatch):
    def fake_learn(family, config, *a, **k):
        raise _Captured(config)

    for module in (synthesis, abp, multigrid, coop):
        monkeypatch.setattr(module, "learn", fake_learn)


def _commands(tmp_path, image_folder):
    """``(argv, path to the chain's LangevinConfig)`` of every learning command."""
    from gcnjax import data as gdata

    images = str(image_folder(4, 16))
    video = tmp_path / "v.gif"
    gdata.save_video(video, np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)), fps=5)
    out = ["--out", str(tmp_path / "out")]
    return [
        (["demo", "--image-size", "48"] + out, ("langevin",)),
        (["descriptor", "--data", "skimage:brick", "--image-size", "48"] + out, ("langevin",)),
        (["stgconvnet", "--data", str(video), "--frames", "4", "--image-size", "24"] + out, ("langevin",)),
        (["abp", "train", "--data", images, "--net", "digit", "--gray"] + out, ("langevin",)),
        (["multigrid", "--data", images, "--grids", "4,16", "--langevin.mala", "false"] + out, ("langevin",)),
        (["coop", "--data", images, "--image-size", "16"] + out, ("descriptor", "langevin")),
    ]


@pytest.mark.parametrize("case", range(6))
def test_delta_and_steps_keep_clip_chain_batch_mala_and_a_decoupled_noise(tmp_path, monkeypatch, image_folder, case):
    argv, path = _commands(tmp_path, image_folder)[case]
    _capture(monkeypatch)
    flag = options.flag_name(path)
    chain = [f"{flag}.chain-batch", "2", f"{flag}.step-size", "1.0", f"{flag}.noise-scale", "0.01"]
    clip = [] if argv[0] == "multigrid" else [f"{flag}.clip=-1,1"]  # multi-grid clips by clip_to_data
    with pytest.raises(_Captured) as got:
        cli.main(argv + chain + clip + ["--delta", "0.1", "--steps", "3"])
    sampler = options.get_at(got.value.config, path)
    assert np.isclose(sampler.step_size, 0.005) and sampler.noise_scale == 0.01 and sampler.n_steps == 3
    assert sampler.chain_batch == 2 and sampler.clip == (None if not clip else (-1.0, 1.0))
    if argv[0] == "multigrid":
        return
    mala = [f"{flag}.mala", "true", f"{flag}.chain-batch", "2"]
    with pytest.raises(_Captured) as got:
        cli.main(argv + mala + ["--delta", "0.1"])
    sampler = options.get_at(got.value.config, path)
    assert sampler.mala and sampler.chain_batch == 2 and np.isclose(sampler.step_size, 0.005)
    assert sampler.noise_scale is None or np.isclose(sampler.noise_scale, 0.1)


def test_shortrun_delta_keeps_the_decoupled_noise(tmp_path, monkeypatch):
    _capture(monkeypatch)
    with pytest.raises(_Captured) as got:
        cli.main(["descriptor", "--preset", "shortrun", "--delta", "0.1", "--out", str(tmp_path / "r")])
    sampler = got.value.config.langevin
    assert sampler.noise_scale == 0.01 and np.isclose(sampler.step_size, 0.005) and sampler.n_steps == 100


@pytest.mark.parametrize("command,config_type", [
    (["demo"], DescriptorConfig), (["descriptor"], DescriptorConfig), (["stgconvnet"], DescriptorConfig),
    (["abp", "train"], GeneratorConfig), (["multigrid"], MultigridConfig), (["coop"], coop.CoopConfig)])
def test_every_command_accepts_every_field_of_its_config(command, config_type):
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]
    if len(command) > 1:
        sub = sub._subparsers._group_actions[0].choices[command[1]]
    taken = set(sub._option_string_actions)
    missing = [options.flag_name(p) for p, _ in options.config_fields(config_type)
               if options.flag_name(p) not in taken]
    assert not missing
