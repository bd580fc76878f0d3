"""How fast the descriptor's Langevin chain runs, by scan ``unroll``.

Times ``gcnjax.langevin.sample`` on the texture net (the authors' layers)
for several ``unroll`` values and chain counts, in one process so that the
ratios are comparable, and prints a markdown table of chain-steps per second
(compile time apart).

    python experiments/benchmarks/langevin_unroll.py [--size 128] [--steps 10] [--repeats 5]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import descriptor as D
from gcnjax import presets
from gcnjax.langevin import LangevinConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--chains", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--unroll", type=int, nargs="*", default=[1, 2, 5, 10])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    config = presets.texture()
    net = D.make_net(config)
    shape = (args.size, args.size, 3)
    params = net.init(jax.random.key(0), jnp.zeros((1, *shape)))
    energy_fn = D.make_energy_fn(net.apply, params, config.sigma)
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}; texture net, {args.size}x{args.size}x3, "
          f"{args.steps} steps per call")
    print("| chains | unroll | compile s | chain-steps/s | vs unroll=1 |")
    print("|---|---|---|---|---|")
    for n in args.chains:
        x0 = 10 * jax.random.normal(jax.random.key(1), (n, *shape))
        base = None
        for unroll in args.unroll:
            sampler = LangevinConfig.from_delta(0.3, args.steps, unroll=unroll)
            run = jax.jit(lambda key, x, sampler=sampler: sampler.run(key, energy_fn, x)[0])
            t0 = time.perf_counter()
            jax.block_until_ready(run(jax.random.key(0), x0))
            compile_s = time.perf_counter() - t0
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(run(jax.random.key(r), x0))
                times.append(time.perf_counter() - t0)
            rate = n * args.steps / float(np.median(times))
            base = base or rate
            print(f"| {n} | {unroll} | {compile_s:.1f} | {rate:.1f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
