"""XLA:CPU settings chosen by measurement, applied when gcnjax is imported.

jaxlib 0.10 hands every 2-D convolution on the CPU to YNNPACK (the
``__ynn_fusion`` custom fusions of the compiled HLO), whose kernels ran
slower than XLA's own for the convs of our nets on the x86 CPUs we measured
(experiments/benchmarks/RESULTS.md, "Kernel choices"); so :func:`apply_cpu_defaults`
(run by ``import gcnjax``) adds
``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` to
``XLA_FLAGS``, which keeps convolutions out of YNNPACK.

XLA reads ``XLA_FLAGS`` once, when jax starts its first backend: import
gcnjax before the first jax computation (importing jax itself is fine).
Nothing is changed

* for a flag that ``XLA_FLAGS`` already sets (the user's choice wins);
* when ``GCNJAX_XLA_DEFAULTS=0`` is set;
* for jaxlib versions other than those in :data:`TESTED_JAXLIB`: XLA aborts
  the process on a flag it does not know, so a flag is only ever passed to
  a jaxlib it was measured on.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Dict, Optional, Tuple

__all__ = ["CPU_FLAGS", "TESTED_JAXLIB", "apply_cpu_defaults"]

# flag name -> value
CPU_FLAGS: Dict[str, str] = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
# (major, minor) versions of jaxlib the flags were measured on.
TESTED_JAXLIB: Tuple[Tuple[int, int], ...] = ((0, 10),)


def _jaxlib_version() -> Optional[Tuple[int, int]]:
    try:
        major, minor = metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def apply_cpu_defaults(environ=os.environ) -> Tuple[str, ...]:
    """Adds :data:`CPU_FLAGS` to ``environ["XLA_FLAGS"]`` (see the module
    docstring for when it does nothing); returns the flags added."""
    if environ.get("GCNJAX_XLA_DEFAULTS", "1") == "0" or _jaxlib_version() not in TESTED_JAXLIB:
        return ()
    current = environ.get("XLA_FLAGS", "")
    added = tuple(f"--{name}={value}" for name, value in CPU_FLAGS.items() if name not in current)
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
