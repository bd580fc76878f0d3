"""How fast a long Langevin chain runs: scan loop vs chunked unroll vs full unroll.

    python experiments/benchmarks/langevin_chunk.py [--net shortrun|texture] [--size 64] [--chains 8] [--steps 100]
        [--filters 64] [--chunks 1 5 10 25 100]

Times ``gcnjax.langevin.sample`` on the short-run net for a plain scan loop
(``unroll=1``) and scans over Python-unrolled blocks of ``chunk`` steps,
interleaving the repetitions so that load from other processes hits all
variants alike; prints compile seconds and chain-steps per second.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import descriptor as D
from gcnjax import presets


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--filters", type=int, default=64)
    p.add_argument("--chunks", type=int, nargs="*", default=[1, 5, 10, 25])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--net", choices=["shortrun", "texture"], default="shortrun")
    p.add_argument("--size", type=int, default=32, help="image side (texture net)")
    a = p.parse_args()
    config = presets.shortrun(a.filters) if a.net == "shortrun" else presets.texture()
    size = 32 if a.net == "shortrun" else a.size
    net = D.make_net(config)
    params = net.init(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    energy_fn = D.make_energy_fn(net.apply, params, config.sigma)
    x0 = jax.random.uniform(jax.random.key(1), (a.chains, size, size, 3), minval=-1, maxval=1)
    runs, compile_s = {}, {}
    for c in a.chunks:
        # chunk 1: the plain scan loop; chunk >= steps: the whole chain unrolled
        f = jax.jit(lambda k, x, c=c: D.langevin.sample(
            k, energy_fn, x, n_steps=a.steps, step_size=config.langevin.step_size,
            noise_scale=config.langevin.noise_scale, chunk=c if 1 < c < a.steps else None,
            unroll=True if c >= a.steps else 1)[0])
        t0 = time.perf_counter(); jax.block_until_ready(f(jax.random.key(0), x0)); compile_s[c] = time.perf_counter() - t0
        runs[c] = f
        print(f"chunk {c}: first call {compile_s[c]:.1f}s", flush=True)
    times = {c: [] for c in a.chunks}
    for r in range(a.repeats):
        for c in a.chunks:
            t0 = time.perf_counter(); jax.block_until_ready(runs[c](jax.random.key(r), x0)); times[c].append(time.perf_counter() - t0)
    print("| chunk | first call s | chain-steps/s | vs loop |\n|---|---|---|---|")
    base = a.chains * a.steps / np.median(times[a.chunks[0]])
    for c in a.chunks:
        rate = a.chains * a.steps / np.median(times[c])
        print(f"| {c} | {compile_s[c]:.1f} | {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
