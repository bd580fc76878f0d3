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

__all__ = ["CPU_FLAGS", "TESTED_JAXLIB", "add_flags", "apply_cpu_defaults"]

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


def add_flags(flags: Dict[str, str], environ=os.environ) -> Tuple[str, ...]:
    """Adds ``--name=value`` for each item of ``flags`` to
    ``environ["XLA_FLAGS"]``, after what is there, except a flag that
    ``XLA_FLAGS`` already names (the user's choice wins); nothing at all for
    jaxlib versions other than :data:`TESTED_JAXLIB` (XLA aborts the process
    on a flag it does not know). Returns the flags added."""
    if _jaxlib_version() not in TESTED_JAXLIB:
        return ()
    current = environ.get("XLA_FLAGS", "").split()
    named = {flag.split("=")[0] for flag in current}
    added = tuple(f"--{name}={value}" for name, value in flags.items() if f"--{name}" not in named)
    if added:
        environ["XLA_FLAGS"] = " ".join([*current, *added])
    return added


def apply_cpu_defaults(environ=os.environ) -> Tuple[str, ...]:
    """Adds :data:`CPU_FLAGS` to ``environ["XLA_FLAGS"]`` (:func:`add_flags`;
    nothing when ``GCNJAX_XLA_DEFAULTS=0``); returns the flags added."""
    if environ.get("GCNJAX_XLA_DEFAULTS", "1") == "0":
        return ()
    return add_flags(CPU_FLAGS, environ)
