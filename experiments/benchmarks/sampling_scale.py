"""Sampling at scale on this machine: a streamed `gcnjax sample` job against the best in-memory call, and
gcnjax's MALA against BlackJAX's on the same energy.

    python -m experiments.benchmarks.sampling_scale --chains 100000 --out runs/bench-sampling

1. A 64×64 texture descriptor run (the `texture` preset's net, one learning iteration on scikit-image's
   brick: the speed of a chain does not depend on what the net learned).
2. The best in-memory call: one jit'd call of the run's chains (no trace), K = 10 steps, at each of
   ``--in-memory`` chain counts; chain-steps per second, the median of ``--repeats`` calls.
3. The streamed job: ``gcnjax sample --chains N --steps 10`` in a subprocess of its own (its peak
   resident memory is its own), blocks of ``--block`` chains, with its energy and projection traces;
   chain-steps per second after the first block (which compiles), and the ratio to the best of (2).
4. gcnjax's MALA (``langevin.sample(mala=True)``) against ``blackjax.mala`` (a ``lax.scan`` of its
   step, vmapped over the chains) on the run's log-density: same chains, steps and step size.

Prints markdown rows for experiments/benchmarks/RESULTS.md and writes them to OUT/sampling.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import cli, langevin, sampling


def _median_rate(fn, args, chain_steps, repeats):
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return chain_steps / float(np.median(times))


def _streamed(args, run, job, best, rows):
    """The streamed job, in a process of its own (its peak memory is its own)."""
    argv = [sys.executable, "-m", "gcnjax.cli", "sample", "--run", str(run), "--chains", str(args.chains),
            "--steps", str(args.steps), "--block", str(args.block), "--out", str(job), "--overwrite", "--quiet"]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - t0
    summary = json.loads((job / "summary.json").read_text())
    rate = summary["chain_steps_per_second"]
    rows.append(f"| `gcnjax sample`, blocks of {args.block}, to disk | {args.chains:,} | {args.steps} | {rate:.1f} | "
                f"{rate / best:.2f} | {summary['peak_memory_gib']:.2f} GiB peak RSS; {wall:.0f} s wall; samples "
                f"{(job / 'samples.npy').stat().st_size / 2**30:.1f} GiB on disk |")
    print(rows[-1], flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", type=int, default=100_000, help="chains of the streamed job")
    p.add_argument("--block", type=int, default=256, help="chains per block of the streamed job")
    p.add_argument("--in-memory", default="64,256,1024", help="chain counts of the in-memory calls")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mala-chains", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only-mala", action="store_true", help="only the MALA rows (4)")
    p.add_argument("--out", type=Path, default=Path("runs/bench-sampling"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; {jax.devices()[0].device_kind}, "
          f"jax {jax.__version__}", flush=True)

    run = args.out / "texture64"
    if not (run / "params.msgpack").is_file():
        assert cli.main(["descriptor", "--data", "skimage:brick", "--image-size", "64", "--iterations", "1",
                         "--chains", "1", "--steps", "1", "--quiet", "--overwrite", "--out", str(run)]) == 0
    rows = []

    # 2. The best in-memory call.
    plain = sampling.load_chains(run, sampling.SampleSettings(steps=args.steps, trace_points=0))
    best = 0.0
    for n in [] if args.only_mala else [int(c) for c in args.in_memory.split(",")]:
        fn = jax.jit(lambda params, key, n=n: plain.draw(params, key, n).x)
        rate = _median_rate(fn, (plain.params, jax.random.key(0)), n * args.steps, args.repeats)
        best = max(best, rate)
        rows.append(f"| in-memory call, {n} chains | {n} | {args.steps} | {rate:.1f} | | |")
        print(rows[-1], flush=True)

    # 3. The streamed job, in a process of its own.
    job = args.out / "job"
    if args.only_mala:
        job = None
    for _ in [] if job is None else [0]:
        _streamed(args, run, job, best, rows)

    # 4. gcnjax's MALA against BlackJAX's.    # 4. gcnjax's MALA against BlackJAX's.
    import blackjax

    logdensity, chains = sampling.logdensity_fn(run)
    n, step = args.mala_chains, 1e-3
    x0 = jnp.zeros((n, *chains.shape))
    def ours_with(unroll):
        return jax.jit(lambda key, x: langevin.sample(key, lambda xi: -logdensity(xi), x, n_steps=args.steps,
                                                      step_size=step, mala=True, unroll=unroll)[0])
    mala = blackjax.mala(logdensity, step_size=step)

    def chain(key, x):
        def one(state, k):
            return mala.step(k, state)[0], None
        return jax.lax.scan(one, mala.init(x), jax.random.split(key, args.steps))[0].position

    theirs = jax.jit(lambda key, x: jax.vmap(chain)(jax.random.split(key, n), x))
    # Interleaved, so that load from elsewhere hits all three alike.
    calls = {"loop": ours_with(1), "unrolled": ours_with(True), "blackjax": theirs}
    rates = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            rates[name].append(_median_rate(fn, (jax.random.key(0), x0), n * args.steps, 1))
    rate = {name: float(np.median(r)) for name, r in rates.items()}
    rows.append(f"| MALA: gcnjax `langevin.sample(mala=True)`, a scan loop as BlackJAX's | {n} | {args.steps} | "
                f"{rate['loop']:.1f} | {rate['loop'] / rate['blackjax']:.2f} × BlackJAX | |")
    rows.append(f"| MALA: gcnjax, unrolled (`LangevinConfig`'s default for K ≤ 20) | {n} | {args.steps} | "
                f"{rate['unrolled']:.1f} | {rate['unrolled'] / rate['blackjax']:.2f} × BlackJAX | |")
    rows.append(f"| MALA: `blackjax.mala` (scan of its step, vmapped) | {n} | {args.steps} | {rate['blackjax']:.1f} | "
                "| |")
    print("\n".join(rows[-3:]), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    table = ["| what | chains | K | chain-steps/s | ratio | memory, time |", "|---|---|---|---|---|---|", *rows]
    (args.out / "sampling.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
