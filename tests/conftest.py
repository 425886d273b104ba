"""Suite-wide JAX settings, applied before any test module builds a computation."""

import atexit
import os
import shutil
import tempfile

# Eight CPU devices for the sharding tests (meshes of 8, (4, 2), ...). Must be set
# before jax initialises its backend; everything else still runs on device 0.
# The suite is almost all XLA compilation of small programs: with the CPU backend's
# LLVM optimisations off it compiles ~25% faster, and what runs is unchanged.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_backend_optimization_level=0")

# One persistent compilation cache for the whole session: set here, in the pytest
# process that starts the xdist workers, it is inherited by both workers and by every
# process a test launches (notebook kernels, CLI runs), so a program compiled once is
# a cache hit everywhere else (a resumed run recompiles what the first run compiled;
# the CLI tests compile the trainer's programs again).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="imagen_jax_xla_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

# The suite is a program too: the XLA:CPU convolution flag every entry point applies
# (imagen_jax/xla_flags.py), for this process and the ones its tests launch.
from imagen_jax.xla_flags import add_default_xla_flags  # noqa: E402

add_default_xla_flags()

import jax  # noqa: E402

# On a 2-core CPU, XLA spends ~1 s compiling each random op of the partitionable
# threefry PRNG (jax's default), i.e. ~10 s to initialise even a tiny U-Net. The
# classic threefry generates the same kind of stream (still independent of how an
# array is sharded) and compiles ~5x faster. Tests only: the library keeps jax's
# default.
jax.config.update("jax_threefry_partitionable", False)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


# The suite runs on 2 pytest-xdist workers, one test file at a time each
# (launch/test.sh: -n 2 --dist loadfile --no-loadscope-reorder). Files are handed
# out in collection order, so the longest ones go first; otherwise one of them ends
# up alone at the end.
LONGEST_FIRST = (
    "tests/test_notebooks.py",
    "tests/unclip/test_training.py",
    "tests/train/test_trainer.py",
    "tests/parallel/test_multihost.py",
    "tests/train/test_preemption_soak.py",
    "tests/evaluate/test_runners.py",
    "tests/train/test_checkpoint_recovery.py",
    "tests/unclip/test_pipeline.py",
    "tests/unclip/test_sharding.py",
    "tests/parallel/test_equivalence.py",
)


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    def rank(item):
        # Relative to the repository, not pytest's rootdir (which is tests/ when the
        # command names only that directory and no ini file exists).
        path = os.path.relpath(str(item.path), _REPO)
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the order within each file is kept
