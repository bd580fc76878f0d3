"""The theory check of "A Theory of Generative ConvNet": local minima auto-encode.

With ReLU and the Gaussian reference, E(x) = ||x||²/(2σ²) − f(x) is piecewise
quadratic; noise-free gradient descent on E converges to a local minimum
where x = σ²∇f(x). This takes a learned descriptor run, descends from noise
images of growing scale and from the run's synthesized images, and reports
the residual ||x − σ²∇f(x)|| / ||x|| and the number of distinct activation
patterns reached (the same as ``gcnjax theory``).

    python experiments/autoencoding_theory.py --run runs/textures/ivy --out runs/theory
"""

import argparse
from pathlib import Path

from gcnjax.synthesis import check_run_autoencoding


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished descriptor run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--noise-starts", type=int, default=6)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    result = check_run_autoencoding(args.run, args.out, n_noise_starts=args.noise_starts, n_steps=args.steps,
                                    overwrite=True)
    print(f"largest residual {result['max_residual']:.2e}, median {result['median_residual']:.2e}; "
          f"{result['distinct_patterns']} distinct activation patterns from {result['n_starts']} starts")
    print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
