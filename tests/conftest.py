"""Suite-wide JAX settings, applied before any test module builds a computation."""

import os
import tempfile

# Eight CPU devices for the sharding tests (meshes of 8, (4, 2), ...). Must be set
# before jax initialises its backend; everything else still runs on device 0.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

# On a 2-core CPU, XLA spends ~1 s compiling each random op of the partitionable
# threefry PRNG (jax's default), i.e. ~10 s to initialise even a tiny U-Net. The
# classic threefry generates the same kind of stream (still independent of how an
# array is sharded) and compiles ~5x faster. Tests only: the library keeps jax's
# default.
jax.config.update("jax_threefry_partitionable", False)

# Several tests compile the same train step (a resumed run recompiles what the first
# run compiled); a per-session persistent cache turns those into cache hits.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="imagen_jax_xla_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
