"""Suite-wide JAX settings, applied before any test module builds a computation."""

import atexit
import json
import os
import shutil
import tempfile

# The CPU backend only. libtpu is installed (the test extra: tests compile for TPU
# topologies through it, imagen_jax/train/aot.py), and jax would otherwise try to start
# a TPU runtime in every process, printing libtpu's complaints about a missing chip.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Eight CPU devices for the sharding tests (meshes of 8, (4, 2), ...). Must be set
# before jax initialises its backend; everything else still runs on device 0.
# The suite is almost all XLA compilation of small programs, so two flags trade run
# speed for compile speed: the CPU backend's LLVM optimisations off (~25% faster
# compiles), and XLA:CPU's older loop emitters instead of its MLIR fusion emitters
# (a sharded tiny train step: 14 -> 8 s to compile). What runs computes the same
# functions. Processes a test launches get the same flags (tests/xla_env.py).
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 "
                      f"{FAST_COMPILE_FLAGS}")

# One persistent compilation cache for the whole session: set here, in the pytest
# process that starts the xdist workers, it is inherited by both workers and by every
# process a test launches (notebook kernels, CLI runs), so a program compiled once is
# a cache hit everywhere else (a resumed run recompiles what the first run compiled;
# the CLI tests compile the trainer's programs again).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="imagen_jax_xla_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
# Every program, however quick to compile: each process a test launches (soak starts,
# multi-host processes, CLI runs) otherwise recompiles the same few hundred small ones.
# Fresh-clone runs of the same tests: 923 s of pytest with 0 here, 956 s with 1 s
# (the cache then holds ~4.5 GB, in a temporary directory removed at exit).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

# The suite is a program too: the XLA:CPU convolution flag every entry point applies
# (imagen_jax/xla_flags.py), for this process and the ones its tests launch.
from imagen_jax.xla_flags import add_default_xla_flags  # noqa: E402

add_default_xla_flags()

import jax  # noqa: E402
import pytest  # noqa: E402

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
# (launch/test.sh: -n 2 --dist loadfile --no-loadscope-reorder). Files are handed out
# in collection order, so the longest go first; otherwise one of them ends up alone at
# the end. How long a file takes is measured, not kept by hand: tests/durations.json
# holds each file's seconds (setup + call + teardown of all its tests, on one worker
# of a 2-worker run), written by a whole-suite run with IMAGEN_JAX_RECORD_DURATIONS=1:
#     IMAGEN_JAX_RECORD_DURATIONS=1 bash launch/test.sh
# A file it does not list (new, renamed) runs first: its length is unknown, and a long
# file started last is what leaves one worker idle, while a short one started first
# costs nothing (the measured files behind it still go longest first).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DURATIONS = os.path.join(_REPO, "tests", "durations.json")
RECORD = os.environ.get("IMAGEN_JAX_RECORD_DURATIONS") == "1"


def _recorded() -> dict[str, float]:
    try:
        with open(DURATIONS, encoding="utf-8") as f:
            return json.load(f)["seconds"]
    except FileNotFoundError:
        return {}


def _relative(config, path: str) -> str:
    """A test file's path relative to the repository, not to pytest's rootdir."""
    return os.path.relpath(os.path.join(str(config.rootpath), path), _REPO)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (skipped by default)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow(reason): a long end-to-end test whose proof faster tests in the "
        "default run also give (the reason names them); skipped unless --slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--slow"):
        for item in items:
            marker = item.get_closest_marker("slow")
            if marker is not None:  # skipped, not deselected: -rs lists it with its reason
                item.add_marker(pytest.mark.skip(
                    reason=f"slow, run with --slow; {marker.kwargs.get('reason', '')}"))
    seconds = _recorded()

    def rank(item):
        path = _relative(config, str(item.path))
        return (0, 0.0) if path not in seconds else (1, -seconds[path])
    items.sort(key=rank)  # stable: the order within each file, and of unlisted files, kept


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report):
    # Under xdist the workers' reports reach this hook in the controller too; only the
    # controller (or a run without xdist) writes the file, at the end.
    if RECORD:
        path = report.nodeid.split("::", 1)[0]
        _measured[path] = _measured.get(path, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not RECORD or hasattr(config, "workerinput") or not _measured:
        return
    option = config.option
    # Only whole files: a -k / -m / --lf / --deselect or node-id run times parts of them.
    if (option.keyword or option.markexpr or getattr(option, "lf", False) or option.deselect
            or any("::" in arg for arg in config.args)
            or exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)):
        print(f"\n{DURATIONS} not written: only a whole-suite run records durations")
        return
    seconds = {path: s for path, s in _recorded().items()  # files this run did not have
               if os.path.exists(os.path.join(_REPO, path))}
    seconds.update({_relative(config, path): round(s, 1) for path, s in _measured.items()})
    with open(DURATIONS, "w", encoding="utf-8") as f:
        json.dump({"about": "seconds per test file (setup + call + teardown of its tests) "
                            "on one worker of `bash launch/test.sh`; tests/conftest.py "
                            "orders the files by it. Rewritten by a whole-suite run with "
                            "IMAGEN_JAX_RECORD_DURATIONS=1.",
                   "seconds": dict(sorted(seconds.items()))}, f, indent=1)
        f.write("\n")
    print(f"\nwrote {DURATIONS} ({len(seconds)} files, {sum(seconds.values()):.0f} s)")
