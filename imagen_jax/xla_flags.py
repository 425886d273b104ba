"""XLA:CPU settings the project adds to XLA_FLAGS before JAX starts its backend.

On CPU, jaxlib 0.10 hands convolutions to YNNPACK by default. On the 2-core AVX2
machines this project is developed and tested on, XLA's Eigen convolution is 2.4x
faster (one 3x3 conv, 8 x 32x32 x 64: 4.1 vs 10.1 ms) and the matched base U-Net train step
1.3-1.7x faster (64 px batch 4 and 32 px batch 8), so convolutions are taken out of YNNPACK;
matmuls, elementwise ops and reductions keep XLA's defaults.

XLA reads XLA_FLAGS once, when the first computation initialises the backend, so
this runs on `import imagen_jax`; imported after JAX has already run something, it
changes nothing. A flag the user has set (any value) is left as it is, which is also
how to opt out: XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=..." . The flag
exists in the jaxlib versions setup.py allows (a flag XLA does not know aborts it at
start-up, so widen that range only after checking).
"""

from __future__ import annotations

import os
from typing import MutableMapping

# flag -> value; '-individual_convolution' removes one entry from YNNPACK's default list.
CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}


def add_default_xla_flags(environ: MutableMapping[str, str] = os.environ) -> str:
    """Append CPU_FLAGS that XLA_FLAGS does not already set; returns the new value."""
    present = environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in CPU_FLAGS.items()
             if f"--{name}=" not in present]
    if extra:
        environ["XLA_FLAGS"] = " ".join([present, *extra]).strip()
    return environ.get("XLA_FLAGS", "")
