"""gcnjax: generative ConvNets (descriptors, generators) in JAX.

Pure functions for energies, Langevin sampling and learning; Flax modules
for the papers' nets; Optax for every update.
"""

from gcnjax import data, descriptor, generator, langevin, nets, train

__version__ = "0.1.0"

__all__ = ["data", "descriptor", "generator", "langevin", "nets", "train", "__version__"]
