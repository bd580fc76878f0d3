"""Replay an ABP run from one of its checkpoints, one iteration at a time, to
see where a spike of its training error starts: in the inference of the
latents or in the learning step.

    python experiments/abp_spikes.py --run runs/abp64-select/select/defaults --data runs/abp64-select/split/train \\
        --start 200 --iterations 25

The run's own state, batches and step are used, so the replay repeats the
run (its logged gradient norms, to every digit). Per iteration, on the
batch: the error of g(z) (mean squared, in the model's units, as the run
logs it) at the warm-started latents before inference and after it (the
same params: what inference did), the largest
s = δ²/2 · (λmax(JᵀJ)/σ² + 1) over the batch's latents with the number of
them above 2 (J = ∂g/∂z at the latent; the Langevin drift is gradient
descent on E(z | x) = ||x − g(z)||²/(2σ²) + ||z||²/2 with step δ²/2, which
overshoots along the top direction of its Hessian where s > 2; λmax by
power iteration with forward- and reverse-mode products), and the norm of
the learning gradient. ``--data`` is the run's training images in their
order (a run learned with ``--validation`` holds out the last ones: give
the training part alone).

Any field of the run's config can be changed for the replay with its flag
(the flags of ``gcnjax abp train``): ``--learning-rate 5e-4`` replays the
same iterations of a run learned at 1e-3 with half the step, from the same
state. A change that
gives the optimizer state another structure (``--optimizer``,
``--max-grad-norm`` on a run learned without it) cannot start from the
checkpoint and is refused, and so is another ``--beta2``: Adam divides its
second moment by 1 − β2^t, and the checkpoint's moment was summed with the
run's β2 (after 200 iterations, 1 − 0.999^200 = 0.18 against
1 − 0.99^200 = 0.87: the switch alone would more than double every step).
"""

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gcnjax import abp
from gcnjax import data as gdata
from gcnjax import generator as G
from gcnjax import options
from gcnjax.train import Checkpointer


def curvature_ratio(net, params, z, sigma: float, step_size: float, iterations: int = 20):
    """s = step · (λmax(JᵀJ)/σ² + 1) at each row of ``z``."""
    def top(z1):
        g = lambda v: net.apply(params, v[None])[0]

        def power(v, _):
            _, jv = jax.jvp(g, (z1,), (v,))
            w = jax.vjp(g, z1)[1](jv)[0]
            norm = jnp.linalg.norm(w)
            return w / norm, norm

        return jax.lax.scan(power, jnp.ones_like(z1) / np.sqrt(z1.size), None, length=iterations)[1][-1]

    return step_size * (jax.vmap(top)(z) / sigma ** 2 + 1.0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path, help="a generator run with checkpoints")
    p.add_argument("--data", required=True, type=Path, help="the run's training images (a folder, in order)")
    p.add_argument("--start", required=True, type=int, help="the checkpoint's iteration")
    p.add_argument("--iterations", type=int, default=25)
    options.add_config_flags(p, G.GeneratorConfig, title="a field of the run's config to change for the replay")
    args = p.parse_args()

    payload = json.loads((args.run / "config.json").read_text())
    config = G.GeneratorConfig.from_dict(payload["config"])
    scale = abp.ObservationScale.from_dict(payload.get("pixel_scale"))
    net = G.make_net(config)
    shape = tuple(payload["observed_shape"])
    x = jnp.asarray(scale.to_model(gdata.load_images(args.data, size=shape[1:3])), jnp.float32)
    if x.shape != shape:
        raise SystemExit(f"--data gives images of shape {x.shape}; the run learned from {shape}.")
    state = Checkpointer(args.run / "checkpoints").restore(
        G.init_state(jax.random.key(config.seed), config, net, x.shape[0], x.shape[1:]), args.start)
    replay = options.apply_config_flags(config, args)
    if replay.beta2 != config.beta2:
        raise SystemExit(f"--beta2 {replay.beta2} cannot replay a run learned with beta2 = {config.beta2}: the "
                         "checkpoint's second moment carries the run's bias correction. Learn a run with it instead.")
    optimizer = G.make_optimizer(replay, x.shape[0])
    if jax.tree.structure(optimizer.init(state.params)) != jax.tree.structure(state.opt_state):
        raise SystemExit("the changed config's optimizer keeps another state than the run's checkpoint: "
                         "replay it with the run's optimizer and max_grad_norm.")
    config = replay
    step = G.make_train_step(config, net.apply, optimizer)
    batches = G.make_batches(x, config.batch_size, seed=config.seed)

    @jax.jit
    def diagnose(params, xb, before, after):
        error = lambda z: jnp.mean(jnp.square(xb - net.apply(params, z)), axis=(1, 2, 3))  # as the run logs it
        return curvature_ratio(net, params, before, config.sigma, config.langevin.step_size), error(before), error(after)

    print("iteration | error before inference | after | worse x2 | s > 2 | largest s | learning gradient norm")
    for i in range(args.start, args.start + args.iterations):
        indices, xb, _ = batches(i)
        before, params = jnp.array(state.latents[indices]), jax.tree.map(jnp.copy, state.params)
        state, metrics = step(state, (indices, xb, None))  # donates the old state
        s, e0, e1 = map(np.asarray, diagnose(params, xb, before, state.latents[indices]))
        print(f"{i + 1} | {e0.mean():.4f} | {e1.mean():.4f} | {int(np.sum(e1 > 2 * e0))} | {int(np.sum(s > 2))} | "
              f"{s.max():.2f} | {float(metrics['grad_norm']):.0f}", flush=True)


if __name__ == "__main__":
    main()
