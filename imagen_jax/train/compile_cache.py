"""XLA's persistent compilation cache for training runs, and a count of what compiled.

A paper-size train step takes minutes to compile for a TPU (docs/tpu_compile.md).
Without a persistent cache that time is paid again by every restart after a
preemption and by every host of a pod; with one, a restarted run, and every host
that shares the directory, loads the executable instead. `python -m imagen_jax.main`
keeps the cache in WORKDIR/compilation_cache unless told otherwise
(`--compilation_cache=DIR`, or `none`), and says at the end how many programs it
compiled and how many it loaded from the cache.
"""

from __future__ import annotations

import dataclasses
import os

import jax
from jax import monitoring

CACHE_SUBDIR = "compilation_cache"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # jax._src.dispatch
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def cache_dir_for(workdir: str, flag: str | None) -> str | None:
    """The cache directory a run uses: `flag` if given ('none': no cache), else the
    environment's JAX_COMPILATION_CACHE_DIR if set, else WORKDIR/compilation_cache."""
    if flag:
        return None if flag.lower() == "none" else flag
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(workdir, CACHE_SUBDIR)


def enable(cache_dir: str | None) -> None:
    """Points JAX's persistent cache at `cache_dir` (None disables it). Every program is
    cached, however fast it compiles, so a second start compiles nothing at all; set
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS to keep only slow ones."""
    if cache_dir is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@dataclasses.dataclass
class CompileCount:
    """Programs XLA compiled in this process (and their seconds), and programs loaded
    from the persistent cache instead, counted from JAX's monitoring events."""

    compiled: int = 0
    compile_s: float = 0.0
    cache_hits: int = 0
    _hit_pending: bool = False

    def start(self) -> "CompileCount":
        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)
        return self

    def _on_event(self, event: str, **kwargs) -> None:
        if event == _CACHE_HIT:
            self.cache_hits += 1
            self._hit_pending = True

    def _on_duration(self, event: str, seconds: float, **kwargs) -> None:
        # JAX times every request for an executable with this event, cache hits included
        # (the hit is recorded first, inside the timed call): only the others compiled.
        if event == _BACKEND_COMPILE:
            if self._hit_pending:
                self._hit_pending = False
            else:
                self.compiled += 1
                self.compile_s += seconds

    def summary(self, cache_dir: str | None) -> str:
        where = f"the cache {cache_dir}" if cache_dir else "no cache (disabled)"
        return (f"compilation: {self.compiled} programs compiled in {self.compile_s:.1f} s, "
                f"{self.cache_hits} loaded from {where}")
