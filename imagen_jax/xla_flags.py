"""XLA:CPU settings the project adds to XLA_FLAGS before JAX starts its backend.

On CPU, jaxlib 0.10 hands convolutions to YNNPACK by default. On the 2-core AVX2
machines this project is developed and tested on, XLA's Eigen convolution is 2.4x
faster (one 3x3 conv, 8 x 32x32 x 64: 4.1 vs 10.1 ms) and the matched base U-Net train step
1.3-1.7x faster (64 px batch 4 and 32 px batch 8), so convolutions are taken out of YNNPACK;
matmuls, elementwise ops and reductions keep XLA's defaults.

These are process-wide settings, so they belong to programs, not to the library:
`import imagen_jax` leaves XLA_FLAGS alone. Every entry point (the CLIs of
imagen_jax and unclip_jax, the scripts in benchmarks/, a cell near the top of each
notebook; tests/test_xla_flags.py keeps the list) calls `add_default_xla_flags()`
first thing in its `if __name__ == "__main__":` block. XLA reads XLA_FLAGS when the
first computation initialises the backend, not at `import jax`, so that is early
enough even in a module that imports jax at the top; called after JAX has already
run something, it changes nothing. Code that embeds the library may call it the
same way. A flag the user has set (any value) is left as it is, which is also how
to opt out: XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=..." . The flag
exists in the jaxlib versions setup.py allows (a flag XLA does not know aborts it
at start-up, so widen that range only after checking).
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
