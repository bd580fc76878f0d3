"""The benchmark's arithmetic: blocks of consecutive calls, medians, ratios
and the table's columns, on a fake clock that each call advances by a known
time (so nothing here depends on the machine's speed)."""

import math

import pytest

from experiments.benchmarks import __main__ as bench


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(bench.time, "perf_counter", fake)
    return fake


def _call(clock, seconds, first=None, log=None, name=None):
    state = {"n": 0}

    def fn():
        clock.now += first if (first is not None and state["n"] == 0) else seconds
        state["n"] += 1
        if log is not None:
            log.append(name)
    return fn, state


def test_blocks_medians_and_ratios(clock):
    log = []
    # binary fractions of a second, so that the clock's sums are exact
    jax_call, jax_n = _call(clock, 2**-6, first=3.0, log=log, name="jax")
    twin_call, twin_n = _call(clock, 2**-4, first=0.5, log=log, name="torch")
    compiled_call, _ = _call(clock, 2**-5, first=9.0, log=log, name="compile")
    case = bench.Case("w", chains=8, steps=10, flops=4e9, is_training=True, jax_call=jax_call,
                      twin_calls={"twin": twin_call, "compiled": compiled_call})
    row = bench.measure(case, repeats=3, min_block_s=0.5)
    # blocks fill 0.5 s: 32 calls of 1/64 s, 8 of 1/16 s, 16 of 1/32 s
    assert (row["jax_calls_per_block"], row["twin_calls_per_block"], row["compiled_calls_per_block"]) == (32, 8, 16)
    assert jax_n["n"] == 2 + 3 * 32 and twin_n["n"] == 2 + 3 * 8
    assert row["jax_s"] == pytest.approx(2**-6) and row["twin_s"] == pytest.approx(2**-4)
    assert row["ratio"] == pytest.approx(4.0) and row["ratio_compiled"] == pytest.approx(2.0)
    assert row["jax_chain_steps_s"] == pytest.approx(80 * 64) and row["jax_it_s"] == pytest.approx(64.0)
    assert row["jax_gflops"] == pytest.approx(4 * 64)
    assert row["jax_compile_s"] == pytest.approx(3.0 - 2**-6) and row["compiled_first_s"] == pytest.approx(9.0)
    # the rounds rotate which framework's block runs first
    timed_log = log[6:]
    firsts = [timed_log[0], timed_log[32 + 8 + 16], timed_log[2 * (32 + 8 + 16)]]
    assert firsts == ["jax", "torch", "compile"]


def test_single_calls_and_gcnjax_alone(clock):
    jax_call, jax_n = _call(clock, 2.0)
    case = bench.Case("w", chains=4, steps=5, flops=1e9, is_training=False, jax_call=jax_call, twin_calls={})
    row = bench.measure(case, repeats=3, min_block_s=0.5)
    assert row["jax_calls_per_block"] == 1 and jax_n["n"] == 5
    assert math.isnan(row["ratio"]) and math.isnan(row["jax_it_s"])
    table = bench.markdown([row])
    assert "torch.compile" not in table and "| w | 4 | 5 | 10.0 | – | – |" in table


def test_compiled_columns_appear_with_a_compiled_twin(clock):
    calls = {name: _call(clock, t)[0] for name, t in (("twin", 0.2), ("compiled", 0.1))}
    case = bench.Case("w", chains=1, steps=1, flops=1e9, is_training=False, jax_call=_call(clock, 0.1)[0],
                      twin_calls=calls)
    table = bench.markdown([bench.measure(case, repeats=1)])
    header = table.splitlines()[0]
    assert "gcnjax / torch.compile" in header and "torch.compile 1st call s" in header
    assert "| 2.00 | 10.0 | 1.00 |" in table  # gcnjax / torch, then torch.compile's rate and ratio


def test_compiled_bytes_counts_arguments_outputs_and_donations():
    """``--memory``: a 1000-float32 map holds its argument and its output
    (8000 bytes), or one buffer when the output reuses the donated
    argument; a case without a gcnjax function has no figure."""
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((1000,), jnp.float32)
    kept = bench.Case("w", 1, 1, 1.0, False, lambda: None, {}, jax_fn=jax.jit(lambda x: 2 * x),
                      jax_args=lambda: (x,))
    donated = bench.Case("w", 1, 1, 1.0, False, lambda: None, {},
                         jax_fn=jax.jit(lambda x: 2 * x, donate_argnums=0), jax_args=lambda: (x,))
    assert bench.compiled_bytes(kept) == 8000
    assert bench.compiled_bytes(donated) == 4000
    assert math.isnan(bench.compiled_bytes(bench.Case("w", 1, 1, 1.0, False, lambda: None, {})))


def test_memory_column_and_count_options(clock):
    case = bench.Case("w", chains=1, steps=1, flops=1e9, is_training=False, jax_call=_call(clock, 0.5)[0],
                      twin_calls={})
    row = bench.measure(case, repeats=1)
    assert "gcnjax MiB" not in bench.markdown([row])
    row["jax_mib"] = 1536.0
    table = bench.markdown([row])
    assert table.splitlines()[0].endswith("| gcnjax MiB |") and table.splitlines()[2].endswith("| 1536 |")
    assert bench._counts("1,100,10000") == [1, 100, 10000] and bench._positive("7") == 7
    for bad in ("0", "1,x", ""):
        with pytest.raises(Exception, match="positive integers"):
            bench._counts(bad)
    with pytest.raises(Exception, match="positive integer"):
        bench._positive("-3")


def test_workload_names_are_known_before_building_and_match_the_built_cases():
    """--only skips a workload by its name without building its nets."""
    for mode, entries in bench.MODES.items():
        for builder, kwargs, _ in entries:
            assert builder in bench.WORKLOAD_NAMES, (mode, builder)
    assert bench.abp_name("face32") == "abp_train face32 32x32"
    assert bench.abp_name("face") == "abp_train face 64x64"
    builder, kwargs, _ = bench.MODES["quick"][1]
    assert builder is bench.texture_case
    assert builder(1, twin_mod=None, **kwargs).workload == bench.WORKLOAD_NAMES[builder](**kwargs)
