"""The texture preset's wrapped (CIRCULAR) convs against zero (SAME) padding: the speed of one energy
gradient of 64 chains and of the preset's 10-step chain, on a 64×64×3 texture net with fresh weights.

    python -m experiments.benchmarks.texture_padding
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import presets, descriptor as D
base = dataclasses.replace(presets.texture(), image_size=(64, 64))
def bench(cfg, label, n=64):
    net = D.make_net(cfg)
    x = jnp.zeros((n, 64, 64, 3))
    params = net.init(jax.random.key(0), x[:1])
    e = D.make_energy_fn(net.apply, params, cfg.sigma)
    g = jax.jit(jax.vmap(jax.grad(e)))
    t0 = time.perf_counter(); jax.block_until_ready(g(x)); c = time.perf_counter() - t0
    ts = []
    for _ in range(5):
        t0 = time.perf_counter(); jax.block_until_ready(g(x)); ts.append(time.perf_counter() - t0)
    print(f"{label}: compile+first {c:.2f} s, gradient of {n} chains {np.median(ts)*1e3:.1f} ms", flush=True)
print([ (l.padding, l.stride) for l in base.layers])
bench(base, "preset (CIRCULAR)")
same = dataclasses.replace(base, layers=tuple(dataclasses.replace(l, padding="SAME") for l in base.layers))
bench(same, "SAME")

def chain(cfg, label, n=64):
    net = D.make_net(cfg)
    x = jnp.zeros((n, 64, 64, 3))
    params = net.init(jax.random.key(0), x[:1])
    e = D.make_energy_fn(net.apply, params, cfg.sigma)
    f = jax.jit(lambda k, x: cfg.langevin.run(k, e, x)[0])
    k = jax.random.key(1)
    jax.block_until_ready(f(k, x))
    ts = []
    for _ in range(3):
        t0 = time.perf_counter(); jax.block_until_ready(f(k, x)); ts.append(time.perf_counter() - t0)
    print(f"{label}: {n} chains x {cfg.langevin.n_steps} steps: {n * cfg.langevin.n_steps / np.median(ts):.1f} chain-steps/s", flush=True)
chain(base, "chain, preset (CIRCULAR)")
chain(same, "chain, SAME")
