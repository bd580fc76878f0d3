"""gcnjax's XLA:CPU defaults: when they are added to XLA_FLAGS, and that they
reach XLA (the compiled convolution leaves YNNPACK)."""

import os
import subprocess
import sys

import pytest

from gcnjax import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


@pytest.fixture
def tested_jaxlib(monkeypatch):
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: xla_flags.TESTED_JAXLIB[0])


def test_adds_the_flag_after_the_users_own(tested_jaxlib):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_flags.apply_cpu_defaults(env) == (FLAG,)
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8 " + FLAG
    empty = {}
    xla_flags.apply_cpu_defaults(empty)
    assert empty["XLA_FLAGS"] == FLAG


def test_the_users_setting_wins(tested_jaxlib):
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_dot"}
    assert xla_flags.apply_cpu_defaults(env) == ()
    assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=+individual_dot"


def test_opt_out_and_untested_jaxlib(tested_jaxlib, monkeypatch):
    env = {"GCNJAX_XLA_DEFAULTS": "0"}
    assert xla_flags.apply_cpu_defaults(env) == () and "XLA_FLAGS" not in env
    # XLA aborts on a flag it does not know: never pass one to an untested jaxlib.
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (99, 0))
    env = {}
    assert xla_flags.apply_cpu_defaults(env) == () and env == {}


def test_add_flags_keeps_the_users_values_and_skips_untested_jaxlib(tested_jaxlib, monkeypatch):
    env = {"XLA_FLAGS": "--xla_cpu_use_fusion_emitters=true"}
    flags = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}
    assert xla_flags.add_flags(flags, env) == ("--xla_backend_optimization_level=0",)
    assert env["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true --xla_backend_optimization_level=0"
    assert xla_flags.add_flags(flags, env) == ()  # a second call adds nothing
    monkeypatch.setattr(xla_flags, "_jaxlib_version", lambda: (99, 0))
    env = {}
    assert xla_flags.add_flags(flags, env) == () and env == {}


_COMPILED_CONV = """
import jax, jax.numpy as jnp
import gcnjax
x, k = jnp.ones((8, 34, 34, 128)), jnp.ones((3, 3, 128, 64))
conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "VALID",
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC")))
print("ynn" if "__ynn_fusion" in conv.lower(x, k).compile().as_text() else "xla")
print(float(conv(x, k).sum()))
"""


def _compiled_conv(env_update):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GCNJAX_XLA_DEFAULTS")}
    env.update(env_update)
    out = subprocess.run([sys.executable, "-c", _COMPILED_CONV], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(xla_flags._jaxlib_version() not in xla_flags.TESTED_JAXLIB, reason="flags not applied")
def test_import_gcnjax_takes_convolutions_out_of_ynnpack():
    """``import gcnjax`` (after jax, before any computation) changes which
    kernel XLA:CPU compiles the conv to (the shape of the 24 ms against
    3 ms in the module docstring), not its value: 8·32·32·64 outputs, each
    a sum of 3·3·128 ones."""
    total = 8 * 32 * 32 * 64 * 1152.0
    assert _compiled_conv({}) == ("xla", total)
    assert _compiled_conv({"GCNJAX_XLA_DEFAULTS": "0"}) == ("ynn", total)
