"""Peak memory (RSS) of training the spatial-temporal descriptor on a
video of the paper's size: 100×100 pixels, 70 frames, 3 chains, 20 Langevin
steps per iteration, the ST (or another) variant.

    python experiments/stg_memory.py --variant st --iterations 3

The video is procedural (a travelling wave, 0..255): memory does not depend
on the pixels. Prints the step's compile+first-iteration time, the time per
iteration after it, and the peak resident set size of this process
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after each phase.
"""

import argparse
import json
import resource
import time

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="st", choices=["st", "fc_s", "fc_s_large"])
    ap.add_argument("--frames", type=int, default=70)
    ap.add_argument("--image-size", type=int, default=100)
    ap.add_argument("--chains", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from gcnjax import data as gdata
    from gcnjax import descriptor as D
    from gcnjax import presets
    from gcnjax.langevin import LangevinConfig

    before = peak_rss_mib()
    t, s = args.frames, args.image_size
    tt, yy, xx = np.meshgrid(np.arange(t), np.arange(s), np.arange(s), indexing="ij")
    video = 127.5 + 100 * np.sin(2 * np.pi * (xx / 17.0 + yy / 29.0 - tt / 9.0))
    video = np.repeat(video[..., None], 3, axis=-1).astype(np.float32)[None]
    config = presets.stg(args.variant, frames=t, image_size=s, n_chains=args.chains,
                            langevin=LangevinConfig.from_delta(0.3, args.steps))
    scale = gdata.PixelScale("minus_mean").fit(video)
    x = jnp.asarray(scale.to_model(video))
    net = D.make_net(config)
    state = D.init_state(jax.random.key(0), config, net, x)
    step = D.make_train_step(config, net.apply, D.make_optimizer(config, state.params, x.shape[1:-1]))
    t0 = time.perf_counter()
    state, m = step(state, x)
    jax.block_until_ready(m)
    first = time.perf_counter() - t0
    after_first = peak_rss_mib()
    t0 = time.perf_counter()
    for _ in range(args.iterations - 1):
        state, m = step(state, x)
    jax.block_until_ready(m)
    per_iter = (time.perf_counter() - t0) / max(1, args.iterations - 1)
    result = {
        "variant": args.variant, "video": [t, s, s, 3], "chains": args.chains, "langevin_steps": args.steps,
        "iterations": args.iterations, "compile_and_first_s": round(first, 1),
        "seconds_per_iteration": round(per_iter, 1), "peak_rss_mib_before": round(before),
        "peak_rss_mib_after_first": round(after_first), "peak_rss_mib": round(peak_rss_mib()),
        "f_data": float(m["f_data"]), "f_samples": float(m["f_samples"]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
