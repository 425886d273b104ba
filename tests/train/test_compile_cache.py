"""The persistent compilation cache `python -m imagen_jax.main` uses, and its count of
what compiled (the whole command's second start is checked in
tests/train/test_preemption_soak.py: a restart of the same config compiles nothing)."""

from __future__ import annotations

import os
import subprocess
import sys

from imagen_jax.train.compile_cache import cache_dir_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PROGRAM = """
import sys
import jax, jax.numpy as jnp
from imagen_jax.train import compile_cache
cache = None if sys.argv[1] == "none" else sys.argv[1]
compile_cache.enable(cache)
count = compile_cache.CompileCount().start()
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
jax.jit(lambda x: jnp.cos(x) @ x)(jnp.ones((4, 4))).block_until_ready()
print(count.summary(cache))
"""


def _start(cache: str) -> str:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)  # main's own default
    out = subprocess.run([sys.executable, "-c", _PROGRAM, cache], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return out.strip().splitlines()[-1]


def test_a_second_start_loads_every_program_from_the_cache(tmp_path):
    cache = str(tmp_path / "cache")
    first, second = _start(cache), _start(cache)
    assert first.startswith("compilation: ") and " 0 loaded" in first, first
    assert not first.startswith("compilation: 0 programs"), first
    assert second.startswith("compilation: 0 programs compiled"), second
    assert os.listdir(cache)
    # Disabled: every start compiles, nothing is loaded.
    for line in (_start("none"), _start("none")):
        assert not line.startswith("compilation: 0 programs") and "0 loaded from no cache" in line


def test_the_cache_directory_default_and_overrides(monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert cache_dir_for("/runs/a", None) == "/runs/a/compilation_cache"
    assert cache_dir_for("gs://b/run", None) == "gs://b/run/compilation_cache"
    assert cache_dir_for("/runs/a", "/shared/xla") == "/shared/xla"
    assert cache_dir_for("/runs/a", "none") is None
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/env/cache")
    assert cache_dir_for("/runs/a", None) == "/env/cache"
    assert cache_dir_for("/runs/a", "/flag") == "/flag"
