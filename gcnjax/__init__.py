"""gcnjax: generative ConvNets (descriptors, generators) in JAX.

Pure functions for energies, Langevin sampling and learning; Flax modules
for the papers' nets; Optax for every update.
"""

from gcnjax import xla_flags

# Before any submodule can start a jax backend: XLA reads XLA_FLAGS once.
xla_flags.apply_cpu_defaults()

from gcnjax import data, descriptor, generator, langevin, nets, train  # noqa: E402

__version__ = "0.1.0"

__all__ = ["data", "descriptor", "generator", "langevin", "nets", "train", "xla_flags", "__version__"]
