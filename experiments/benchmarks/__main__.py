"""gcnjax against its PyTorch twin: one table of throughput, same-run ratios.

    python -m experiments.benchmarks [--quick | --full] [--device cpu|gpu] [--out DIR] [--no-twin]

For each workload and chain count both frameworks are built and called once
(the compile / warm-up time, reported apart), then timed ``--repeats``
times, each time a block of consecutive calls filling ``--min-block-s``
(steady-state throughput, :func:`measure`), the blocks of the frameworks
INTERLEAVED (rotating which goes first) so that load from other processes
hits both alike; the table holds medians. Throughput is chain-steps per
second (a chain-step is one Langevin step of one chain), plus training
iterations per second for the
training steps. GFLOP/s come from a FLOP count of the nets' layer shapes
(:func:`net_flops`; 2 FLOPs per multiply-add): a Langevin step costs the
forward pass plus the gradient with respect to the input (2× the forward),
a learning step the forward, input and weight gradients (3×). The peak is a
large float32 matmul timed with jax in the same run.

Writes ``bench.csv`` and ``bench.md`` to ``--out`` (default
``runs/bench-<mode>``) and prints the markdown table. Runs on a GPU as is
(jax with CUDA; the twin then runs on CUDA too when torch has it, with a
``torch.cuda.synchronize()`` closing each timed call).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import descriptor as D
from gcnjax import generator as G
from gcnjax import langevin, nets, presets

# ---------------------------------------------------------------- FLOP counts


def descriptor_flops(layers, image_size, channels=3) -> float:
    """FLOPs of one forward pass of a DescriptorNet on one image, video or
    sound (2 per MAC)."""
    c = channels
    total = 0.0
    n_axes = len(image_size)
    for spec, out in zip(layers, nets.layer_output_sizes(layers, image_size)):
        total += 2.0 * float(np.prod(out)) * spec.features * float(np.prod(spec.kernel_for(n_axes))) * c
        c = spec.features
    return total


def generator_flops(net: nets.GeneratorNet, latent_dim: int) -> float:
    """FLOPs of one forward pass of a GeneratorNet on one latent: the dense
    layer, then each transposed conv (every output position gathers
    ``(k/s)²`` input positions per channel on average: k² MACs per input
    position and output channel)."""
    h, w = net.start
    c = net.channels[0]
    total = 2.0 * latent_dim * h * w * c
    for cout in net.channels[1:]:
        total += 2.0 * h * w * c * cout * net.kernel * net.kernel
        h, w, c = h * net.stride, w * net.stride, cout
    return total


# ---------------------------------------------------------------- workloads


@dataclasses.dataclass
class Case:
    """One row: a workload at one chain count, for both frameworks."""

    workload: str
    chains: int
    steps: int
    flops: float  # per call
    is_training: bool
    jax_call: Callable[[], None]
    # The twin's timed calls by variant: "twin" (eager) and, with
    # --torch-compile, "compiled" (the twin's net through torch.compile).
    twin_calls: Dict[str, Callable[[], None]]
    # gcnjax's timed function and its arguments, for --memory.
    jax_fn: Optional[Callable] = None
    jax_args: Callable[[], tuple] = tuple


def compiled_bytes(case: Case) -> float:
    """Device memory one gcnjax call needs, from XLA's buffer assignment
    of the compiled call (arguments, outputs and temporaries, less the
    outputs that reuse donated arguments); NaN where the backend does not
    report it."""
    if case.jax_fn is None:
        return float("nan")
    analysis = case.jax_fn.lower(*case.jax_args()).compile().memory_analysis()
    if analysis is None:
        return float("nan")
    return float(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                 + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def _block(x):
    jax.block_until_ready(x)


def _twin_calls(twin_mod, build) -> Dict[str, Callable[[], None]]:
    """The twin's timed calls: ``build(compiled)`` makes a fresh twin (its
    own params, optimizer and chains) and returns its timed call; with
    ``compiled`` its net runs through ``torch.compile`` (the user's one-line
    change; the Langevin loop and the optimizer stay eager Python)."""
    if twin_mod is None:
        return {}
    return {name: build(name == "compiled") for name in twin_mod[2]}


def _maybe_compile(torch, module, compiled: bool):
    if not compiled:
        return module
    # Dynamo keeps its compiled graphs per code object, so the twins of the
    # earlier rows (other nets, other shapes) count against its recompile
    # limit (8) for this one's forward: past it, torch runs eager, silently.
    torch._dynamo.reset()
    return torch.compile(module)


def _descriptor_training(config, data, seed):
    """gcnjax's side of a descriptor training workload: the state holder and
    one timed call of ``descriptor.make_train_step``."""
    net = D.make_net(config)
    holder = {"state": D.init_state(jax.random.key(seed + 1), config, net, data)}
    step = D.make_train_step(config, net.apply,
                             D.make_optimizer(config, holder["state"].params, data.shape[1:-1]))

    def jax_call():
        holder["state"], metrics = step(holder["state"], data)
        _block(metrics)

    return holder, jax_call, dict(jax_fn=step, jax_args=lambda: (holder["state"], data))


def shortrun_name(n_filters, **_) -> str:
    return f"shortrun_train nf{n_filters}"


def texture_name(size, **_) -> str:
    return f"texture_langevin {size}x{size}"


_GENERATORS = {"face": nets.face_generator, "face32": nets.face32_generator}


def abp_name(net_name, **_) -> str:
    height, width = _GENERATORS[net_name]().output_shape()[:2]
    return f"abp_train {net_name} {height}x{width}"


def stg_name(frames, size, variant="st", **_) -> str:
    return f"stg_train {variant} {frames}x{size}x{size}"


def shortrun_case(n_chains, n_steps, n_filters, twin_mod, seed=0) -> Case:
    """(a) one short-run training iteration (presets.shortrun, make_train_step)."""
    import dataclasses as dc

    config = dc.replace(presets.shortrun(n_filters), n_chains=n_chains, batch_size=n_chains,
                        langevin=dc.replace(presets.shortrun().langevin, n_steps=n_steps))
    data = jax.random.uniform(jax.random.key(seed), (n_chains, 32, 32, 3), minval=-1, maxval=1)
    holder, jax_call, memory = _descriptor_training(config, data, seed)

    def build_twin(compiled):
        T, torch, _ = twin_mod
        dev = T.device()
        twin = T.descriptor_from_jax(T.DescriptorTwin(config.layers, 3, (32, 32), "leaky_relu", False),
                                     holder["state"].params).to(dev)
        net = _maybe_compile(torch, twin, compiled)
        opt = T.adam(twin.parameters(), lr=config.learning_rate, b1=config.beta1)
        tdata = T.nhwc_to_nchw(data).to(dev)
        gen = torch.Generator(device=dev).manual_seed(seed)

        def twin_call():
            T.shortrun_iteration(net, opt, tdata, n_steps=n_steps, n_chains=n_chains, generator=gen)
            T.synchronize()
        return twin_call

    f = descriptor_flops(config.layers, (32, 32))
    flops = n_chains * n_steps * 2 * f + 2 * n_chains * 3 * f
    return Case(shortrun_name(n_filters), n_chains, n_steps, flops, True, jax_call,
                _twin_calls(twin_mod, build_twin), **memory)


def texture_case(n_chains, n_steps, size, twin_mod, seed=0) -> Case:
    """(b) the texture descriptor's Langevin chain (presets.texture net)."""
    config = presets.texture()
    sampler = dataclasses.replace(config.langevin, n_steps=n_steps)
    net = D.make_net(config)
    params = net.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))
    energy_fn = D.make_energy_fn(net.apply, params, config.sigma)
    run = jax.jit(lambda key, x: sampler.run(key, energy_fn, x)[0])
    x0 = 10.0 * jax.random.normal(jax.random.key(seed + 1), (n_chains, size, size, 3))
    counter = [0]

    def jax_call():
        counter[0] += 1
        _block(run(jax.random.key(counter[0]), x0))

    def build_twin(compiled):
        T, torch, _ = twin_mod
        dev = T.device()
        twin = T.descriptor_from_jax(T.DescriptorTwin(config.layers, 3, (size, size), "relu", True), params).to(dev)
        for p in twin.parameters():
            p.requires_grad_(False)
        net = _maybe_compile(torch, twin, compiled)
        tx0 = T.nhwc_to_nchw(x0).to(dev)
        gen = torch.Generator(device=dev).manual_seed(seed)

        def twin_call():
            T.langevin(lambda x: T.descriptor_energy(net, x, config.sigma), tx0, n_steps, sampler.step_size,
                       sampler.noise_scale, generator=gen)
            T.synchronize()
        return twin_call

    flops = n_chains * n_steps * 2 * descriptor_flops(config.layers, (size, size))
    return Case(texture_name(size), n_chains, n_steps, flops, False, jax_call,
                _twin_calls(twin_mod, build_twin), jax_fn=run, jax_args=lambda: (jax.random.key(0), x0))


def abp_case(n_chains, n_steps, net_name, twin_mod, seed=0) -> Case:
    """(c) one ABP iteration: Langevin inference of z, then one learning step."""
    net = _GENERATORS[net_name]()
    config = G.GeneratorConfig(langevin=langevin.LangevinConfig.from_delta(0.3, n_steps), batch_size=n_chains)
    shape = net.output_shape()
    holder = {"state": G.init_state(jax.random.key(seed), config, net, n_chains, shape)}
    x = jax.random.uniform(jax.random.key(seed + 1), (n_chains,) + shape, minval=-1, maxval=1)
    indices = jnp.arange(n_chains)
    step = G.make_train_step(config, net.apply, G.make_optimizer(config))
    z0 = np.asarray(holder["state"].latents)

    def jax_call():
        holder["state"], metrics = step(holder["state"], (indices, x))
        _block(metrics)

    def build_twin(compiled):
        T, torch, _ = twin_mod
        dev = T.device()
        twin = T.generator_from_jax(T.GeneratorTwin(config.latent_dim, net.start, net.channels),
                                    holder["state"].params).to(dev)
        g = _maybe_compile(torch, twin, compiled)
        opt = T.adam(twin.parameters(), lr=config.learning_rate, b1=config.beta1)
        tx = T.nhwc_to_nchw(x).to(dev)
        tz = {"z": T._t(z0).to(dev)}
        a, b = config.langevin.step_size, config.langevin.noise_scale
        gen = torch.Generator(device=dev).manual_seed(seed)

        def twin_call():
            tz["z"], _ = T.abp_iteration(g, opt, tx, tz["z"], sigma=config.sigma, n_steps=n_steps,
                                         step_size=a, noise_scale=b, generator=gen)
            T.synchronize()
        return twin_call

    f = generator_flops(net, config.latent_dim)
    flops = n_chains * n_steps * 2 * f + n_chains * 3 * f
    return Case(abp_name(net_name), n_chains, n_steps, flops, True, jax_call,
                _twin_calls(twin_mod, build_twin), jax_fn=step, jax_args=lambda: (holder["state"], (indices, x)))


def stg_case(n_chains, n_steps, frames, size, twin_mod, variant="st", seed=0) -> Case:
    """(d) one training iteration of the spatial-temporal descriptor
    (``presets.stg``): K Langevin steps of the persistent video chains,
    then one Adam step."""
    config = presets.stg(variant, frames=frames, image_size=size, channels=3, n_chains=n_chains,
                            langevin=langevin.LangevinConfig.from_delta(0.3, n_steps))
    shape = (frames, size, size, 3)
    data = 30.0 * jax.random.normal(jax.random.key(seed), (1,) + shape)
    holder, jax_call, memory = _descriptor_training(config, data, seed)

    def build_twin(compiled):
        T, torch, _ = twin_mod
        dev = T.device()
        twin = T.descriptor_from_jax(T.DescriptorTwin(config.layers, 3, shape[:-1], "relu", True),
                                     holder["state"].params).to(dev)
        net = _maybe_compile(torch, twin, compiled)
        opt = T.adam(twin.parameters(), lr=config.learning_rate, b1=config.beta1)
        tdata = T.nhwc_to_nchw(data).to(dev)
        chains = {"x": T.nhwc_to_nchw(holder["state"].chains).to(dev)}
        a, b = config.langevin.step_size, config.langevin.noise_scale
        gen = torch.Generator(device=dev).manual_seed(seed)

        def twin_call():
            chains["x"], _ = T.persistent_iteration(net, opt, tdata, chains["x"], sigma=config.sigma,
                                                    n_steps=n_steps, step_size=a, noise_scale=b, generator=gen)
            T.synchronize()
        return twin_call

    f = descriptor_flops(config.layers, shape[:-1])
    flops = n_chains * n_steps * 2 * f + (n_chains + 1) * 3 * f
    return Case(stg_name(frames, size, variant), n_chains, n_steps, flops, True, jax_call,
                _twin_calls(twin_mod, build_twin), **memory)


# The name of a builder's workload, known before anything is built (--only).
WORKLOAD_NAMES = {shortrun_case: shortrun_name, texture_case: texture_name, abp_case: abp_name, stg_case: stg_name}

# (workload builder, kwargs, chain counts) per mode.
MODES: Dict[str, List] = {
    "quick": [
        (shortrun_case, dict(n_steps=10, n_filters=16), (4, 16)),
        (texture_case, dict(n_steps=5, size=32), (1, 4)),
        (abp_case, dict(n_steps=5, net_name="face32"), (4, 16)),
        (abp_case, dict(n_steps=2, net_name="face"), (1, 4)),
        (stg_case, dict(n_steps=5, frames=8, size=32), (1, 3)),
    ],
    "default": [
        (shortrun_case, dict(n_steps=20, n_filters=64), (4, 16)),
        (texture_case, dict(n_steps=10, size=64), (1, 4)),
        (texture_case, dict(n_steps=5, size=128), (1, 4)),
        (abp_case, dict(n_steps=10, net_name="face32"), (8, 32)),
        (abp_case, dict(n_steps=5, net_name="face"), (2, 8)),
        (stg_case, dict(n_steps=10, frames=16, size=32), (1, 3)),
        (stg_case, dict(n_steps=10, frames=16, size=32, variant="fc_s"), (1, 3)),
    ],
    "full": [
        (shortrun_case, dict(n_steps=100, n_filters=64), (8, 64)),
        # The 64² texture chain from one chain to 10,000 in one call: where
        # throughput stops growing with the chains, the device is full.
        (texture_case, dict(n_steps=10, size=64), (1, 8, 100, 1000, 10000)),
        (texture_case, dict(n_steps=10, size=128), (1, 8)),
        (abp_case, dict(n_steps=30, net_name="face32"), (8, 100)),
        (abp_case, dict(n_steps=30, net_name="face"), (8, 100)),
        (stg_case, dict(n_steps=20, frames=70, size=100), (1, 3)),
    ],
}


# ---------------------------------------------------------------- measuring


def matmul_peak(n=2048, repeats=5) -> float:
    """GFLOP/s of a float32 n×n matmul with jax (the machine's practical peak)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda a, b: a @ b)
    _block(mm(a, a))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(mm(a, a))
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(times) / 1e9


def timed(fn, calls: int = 1) -> float:
    """Seconds per call of ``calls`` consecutive calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def measure(case: Case, repeats: int, min_block_s: float = 0.5) -> Dict:
    """Times gcnjax and each twin variant: one first call each (compile /
    warm-up) and one more to size the blocks, then ``repeats`` rounds of one
    block per framework, the order within a round rotating so that no
    framework always runs first; medians of the blocks' time per call.

    A block is as many consecutive calls as fill ``min_block_s`` (at most
    100): steady-state throughput, what a long run sees. Timing single calls
    measures each framework right after the other, with the other's thread
    pool still spinning and its own asleep: on the 2-core CPU a 12 ms ABP
    step then took 17–35 ms. Keys per twin variant ``v`` ("twin" for eager
    torch, "compiled" for torch.compile)."""
    row = {"workload": case.workload, "chains": case.chains, "steps": case.steps}
    calls = [("jax", case.jax_call)] + list(case.twin_calls.items())
    times = {key: [] for key, _ in calls}
    block = {}
    for key, fn in calls:
        row[f"{key}_first_s"] = timed(fn)
        block[key] = max(1, min(100, math.ceil(min_block_s / timed(fn))))
    for r in range(repeats):
        for key, fn in calls[r % len(calls):] + calls[:r % len(calls)]:
            times[key].append(timed(fn, block[key]))
    for key in ("jax", "twin", "compiled"):
        median = statistics.median(times[key]) if times.get(key) else float("nan")
        row[f"{key}_s"] = median
        row[f"{key}_chain_steps_s"] = case.chains * case.steps / median
        row[f"{key}_it_s"] = 1.0 / median if case.is_training else float("nan")
        row[f"{key}_gflops"] = case.flops / median / 1e9
        row.setdefault(f"{key}_first_s", float("nan"))
        row[f"{key}_calls_per_block"] = block.get(key, 0)
    row["ratio"] = row["twin_s"] / row["jax_s"]
    row["ratio_compiled"] = row["compiled_s"] / row["jax_s"]
    row["gflop_per_call"] = case.flops / 1e9
    # The compile time is the first call less one steady call.
    row["jax_compile_s"] = row["jax_first_s"] - row["jax_s"]
    return row


COLUMNS = [
    ("workload", "workload", "{}"), ("chains", "chains", "{}"), ("steps", "K", "{}"),
    ("jax_chain_steps_s", "gcnjax chain-steps/s", "{:.1f}"), ("twin_chain_steps_s", "torch chain-steps/s", "{:.1f}"),
    ("ratio", "gcnjax / torch", "{:.2f}"), ("jax_it_s", "gcnjax it/s", "{:.3f}"), ("twin_it_s", "torch it/s", "{:.3f}"),
    ("jax_compile_s", "gcnjax compile s", "{:.1f}"), ("twin_first_s", "torch 1st call s", "{:.1f}"),
    ("jax_gflops", "gcnjax GFLOP/s", "{:.1f}"), ("jax_peak_frac", "of peak", "{:.0%}"),
    ("twin_gflops", "torch GFLOP/s", "{:.1f}"),
]
# With --torch-compile: the compiled twin's throughput, the ratio to it and
# its first call (torch.compile's compile time is in it).
COMPILED_COLUMNS = [
    ("compiled_chain_steps_s", "torch.compile chain-steps/s", "{:.1f}"),
    ("ratio_compiled", "gcnjax / torch.compile", "{:.2f}"),
    ("compiled_first_s", "torch.compile 1st call s", "{:.1f}"),
]


# With --memory: what one gcnjax call holds on the device.
MEMORY_COLUMN = ("jax_mib", "gcnjax MiB", "{:.0f}")


def markdown(rows) -> str:
    columns = COLUMNS
    if any(not np.isnan(row.get("compiled_s", float("nan"))) for row in rows):
        columns = COLUMNS[:6] + COMPILED_COLUMNS + COLUMNS[6:]
    if any("jax_mib" in row for row in rows):
        columns = columns + [MEMORY_COLUMN]
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _counts(text: str) -> List[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas (e.g. 1,100,10000), "
                                         f"got {text!r}")
    return counts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def load() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _measure_rows(args, mode, twin_mod, peak, rows):
    """Measures the rows of ``mode`` that ``args`` selects, appending each to
    ``rows`` as it is done (and printing it)."""
    for builder, kwargs, chain_counts in MODES[mode]:
        if args.steps:
            kwargs = {**kwargs, "n_steps": args.steps}
        if args.only and args.only not in WORKLOAD_NAMES[builder](**kwargs):
            continue
        for n in args.chains or chain_counts:
            case = builder(n, twin_mod=twin_mod, **kwargs)
            row = measure(case, args.repeats, args.min_block_s)
            row["jax_peak_frac"] = row["jax_gflops"] / peak
            if args.memory:
                row["jax_mib"] = compiled_bytes(case) / 2**20
            row["load"] = load()
            rows.append(row)
            compiled = (f", torch.compile {row['compiled_chain_steps_s']:.1f} (ratio {row['ratio_compiled']:.2f})"
                        if args.torch_compile else "")
            print(f"{case.workload} ×{n}: gcnjax {row['jax_chain_steps_s']:.1f} chain-steps/s, torch "
                  f"{row['twin_chain_steps_s']:.1f}, ratio {row['ratio']:.2f}{compiled} (load {row['load']})",
                  flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes, under a minute or two")
    size.add_argument("--full", action="store_true", help="the real sizes (K = 100, 64 chains, ...)")
    parser.add_argument("--device", default=None, help="label of the machine in the table (default: jax's device)")
    parser.add_argument("--out", default=None, help="directory for bench.csv and bench.md")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-block-s", type=float, default=0.5,
                        help="each timing is a block of consecutive calls lasting at least this long (at most 100 "
                             "calls); 0 times single calls")
    parser.add_argument("--only", default=None, help="run only workloads whose name contains this")
    parser.add_argument("--chains", default=None, type=_counts,
                        help="comma-separated chain counts for every workload run, in place of the mode's "
                             "(e.g. --only 'texture_langevin 64' --chains 1,100,1000,10000)")
    parser.add_argument("--steps", default=None, type=_positive,
                        help="Langevin steps per call (K) for every workload run, in place of the mode's")
    parser.add_argument("--memory", action="store_true",
                        help="add the device memory of one gcnjax call (XLA's buffer assignment; one more "
                             "compile per row)")
    parser.add_argument("--no-twin", action="store_true", help="gcnjax only (no torch)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also time the twin with its net through torch.compile (a third column set)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the twin (default: torch's own choice, one per core). "
                             "On an oversubscribed CPU 1 thread ran 13x faster than 2 (RESULTS.md)")
    parser.add_argument("--float32", action="store_true",
                        help="both frameworks in full float32: jax's matmul and conv precision 'highest', torch's "
                             "TF32 off in cuDNN and matmuls (on a GPU each framework's default lets some or all "
                             "of them run in TF32; a CPU computes float32 either way)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    if args.float32:
        jax.config.update("jax_default_matmul_precision", "highest")

    twin_mod, torch_version = None, "not installed"
    if not args.no_twin:
        try:
            import torch

            from experiments.benchmarks import torch_twin as T
            variants = ("twin", "compiled") if args.torch_compile else ("twin",)
            twin_mod, torch_version = (T, torch, variants), torch.__version__
            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
            if args.float32:
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
        except ImportError:
            print("torch is not installed (pip install 'gcnjax[bench]'): timing gcnjax only.", file=sys.stderr)
    device = args.device or f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"
    header = [
        f"mode: {mode}; device: {device}; CPU: {cpu_model()}, {os.cpu_count()} cores; "
        f"jax {jax.__version__}, jaxlib {jax.lib.__version__ if hasattr(jax.lib, '__version__') else '?'}, "
        f"torch {torch_version}" + (f" ({twin_mod[1].get_num_threads()} threads)" if twin_mod else ""),
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; load average at start: {load()}; precision: "
        + ("float32 pinned in both (--float32)" if args.float32 else "each framework's default"),
    ]
    print("\n".join(header), flush=True)
    peak = matmul_peak()
    print(f"float32 matmul peak (jax, 2048²): {peak:.1f} GFLOP/s", flush=True)
    rows = []
    # Ctrl-C (or `timeout -s INT`, a time-limited machine) ends the measuring
    # and still writes the rows measured so far.
    interrupted = False
    try:
        _measure_rows(args, mode, twin_mod, peak, rows)
    except KeyboardInterrupt:
        interrupted = True
        print(f"interrupted: writing the {len(rows)} rows measured", file=sys.stderr, flush=True)
    # The peak is measured again at the end and the larger kept: under load
    # either measurement alone can catch a busy moment.
    peak_end = 0.0 if interrupted else matmul_peak()
    if peak_end > peak:
        for row in rows:
            row["jax_peak_frac"] = row["jax_gflops"] / peak_end
        peak = peak_end
    table = markdown(rows)
    footer = (f"matmul peak (larger of start and end) {peak:.1f} GFLOP/s; load average at end: {load()}"
              + ("; interrupted: the rows above are those measured before it" if interrupted else ""))
    print("\n" + table + "\n\n" + footer)
    out = args.out or os.path.join("runs", f"bench-{mode}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "bench.md"), "w") as fh:
        fh.write("\n\n".join(["\n".join(header), table, footer]) + "\n")
    with open(os.path.join(out, "bench.csv"), "w", newline="") as fh:
        keys = list(rows[0]) if rows else []
        writer = csv.DictWriter(fh, fieldnames=keys + ["device", "peak_gflops"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "device": device, "peak_gflops": peak})
    print(f"wrote {out}/bench.md and bench.csv")


if __name__ == "__main__":
    main()
