"""The XLA:CPU flags are a program's choice: importing the library leaves XLA_FLAGS
alone, every entry point adds them before JAX starts its backend, and a flag the
user set is never overridden."""

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from imagen_jax.xla_flags import CPU_FLAGS, add_default_xla_flags

FLAG = "xla_cpu_experimental_ynn_fusion_type"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every program: a file with an `if __name__ == "__main__":` block under these folders.
PROGRAM_DIRS = ("imagen_jax", "unclip_jax", "benchmarks")
ENTRY_POINTS = (
    "imagen_jax/main.py", "imagen_jax/sample.py", "imagen_jax/demo.py",
    "imagen_jax/evaluate/score_shapes.py", "imagen_jax/evaluate/drawbench.py",
    "imagen_jax/evaluate/clip_score.py", "benchmarks/fast_solver.py", "benchmarks/editing.py",
    "imagen_jax/data/embed_captions.py", "unclip_jax/generate.py", "unclip_jax/demo.py",
    "benchmarks/ablations.py", "benchmarks/input_pipeline.py", "benchmarks/learning_curve.py",
    "benchmarks/sampler_sweep.py", "benchmarks/sharding.py", "benchmarks/text_tokens.py", "benchmarks/unclip_diversity.py",
    "benchmarks/vs_imagen_pytorch.py", "benchmarks/step_profile.py", "benchmarks/backward_variants.py", "benchmarks/tpu_compile.py", "benchmarks/tpu_sampling.py",
)
NOT_JAX_PROGRAMS = {  # programs that start no JAX backend of their own
    "benchmarks/imagen_pytorch_peer.py": "PyTorch only, in its own virtual environment",
    "benchmarks/preemption_soak.py": "runs no computation itself; what it starts is "
                                     "`python -m imagen_jax.main`, an entry point",
}
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))


def test_appends_to_existing_flags_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    value = add_default_xla_flags(env)
    assert value == ("--xla_force_host_platform_device_count=8 "
                     f"--{FLAG}={CPU_FLAGS[FLAG]}")
    assert add_default_xla_flags(env) == value  # idempotent
    assert add_default_xla_flags({}) == f"--{FLAG}={CPU_FLAGS[FLAG]}"


def test_user_value_wins():
    env = {"XLA_FLAGS": f"--{FLAG}=+individual_convolution"}
    assert add_default_xla_flags(env) == f"--{FLAG}=+individual_convolution"


def _python(code: str, xla_flags: str | None) -> str:
    """Runs `code` in a fresh interpreter whose XLA_FLAGS is `xla_flags` (None: unset);
    returns its last line of output."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


IMPORT_EVERYTHING = """
import importlib, importlib.util, json, os, pkgutil, sys
# Third-party imports first: TensorFlow sets variables of its own (TF2_BEHAVIOR, ...).
import absl.app, flax, jax, ml_collections, optax, orbax.checkpoint, tensorflow
import tensorflow_datasets
from absl import flags
from jax._src import xla_bridge
before = dict(os.environ)

def load(name, path=None):
    defined = set(flags.FLAGS)
    if path is None:
        importlib.import_module(name)
    else:  # a script: as a module, not as __main__
        spec = importlib.util.spec_from_file_location(name, path)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    for flag in set(flags.FLAGS) - defined:  # the next program may define the same names
        delattr(flags.FLAGS, flag)
    assert not xla_bridge.backends_are_initialized(), f"importing {name} started JAX"

for package in ("imagen_jax", "unclip_jax"):
    load(package)
    for module in pkgutil.walk_packages([package], package + "."):
        load(module.name)
for path in SCRIPTS:
    load("script_" + path[:-3].replace("/", "_"), path)
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"XLA_FLAGS": os.environ.get("XLA_FLAGS"), "changed": changed}))
"""


def test_importing_the_library_changes_no_environment():
    """Importing every module of imagen_jax and unclip_jax, entry points included (as
    modules, not as __main__), and the benchmark scripts leaves XLA_FLAGS as it was
    (unset stays unset), changes no other environment variable (beyond what the
    third-party libraries set on their own import), and starts no JAX backend — so an
    entry point's own call, made after its imports, still reaches XLA."""
    scripts = [p for p in ENTRY_POINTS if p.startswith("benchmarks/")]
    out = json.loads(_python(f"SCRIPTS = {scripts!r}\n" + IMPORT_EVERYTHING, None))
    assert out == {"XLA_FLAGS": None, "changed": []}


def _main_block(tree: ast.Module) -> ast.If | None:
    """The module's last top-level `if __name__ == "__main__":` (benchmarks/sharding.py
    has two: the first sets its own flags before jax is imported, the last runs it)."""
    blocks = [node for node in tree.body if isinstance(node, ast.If)
              and ast.unparse(node.test) == "__name__ == '__main__'"]
    return blocks[-1] if blocks else None


def _programs() -> set[str]:
    found = set()
    for folder in PROGRAM_DIRS:
        for path in glob.glob(os.path.join(REPO, folder, "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as f:
                if _main_block(ast.parse(f.read())) is not None:
                    found.add(os.path.relpath(path, REPO))
    return found


def test_every_program_is_listed():
    assert _programs() == set(ENTRY_POINTS) | set(NOT_JAX_PROGRAMS)


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_entry_point_applies_the_flags_first(path):
    """The program's `__main__` block calls add_default_xla_flags() before anything
    else it calls (flag definitions, app.run, main)."""
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        block = _main_block(ast.parse(f.read()))
    calls = [ast.unparse(node.func) for stmt in block.body for node in ast.walk(stmt)
             if isinstance(node, ast.Call)]
    assert calls and calls[0] == "add_default_xla_flags", (path, calls)


def _imports(source: str) -> set[str]:
    """The modules a notebook cell imports."""
    return {alias.name if isinstance(node, ast.Import) else node.module
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_applies_the_flags_before_jax_starts(path):
    """A cell calls add_default_xla_flags() before any cell imports jax or a module
    of the project (other than imagen_jax.xla_flags itself)."""
    with open(path, encoding="utf-8") as f:
        cells = ["".join(c["source"]) for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    applies = next(i for i, s in enumerate(cells) if "add_default_xla_flags()" in s)
    starts_jax = next(i for i, s in enumerate(cells) if any(
        name.split(".")[0] in ("jax", "imagen_jax", "unclip_jax")
        for name in _imports(s) - {"imagen_jax.xla_flags"}))
    assert applies < starts_jax


CONVOLUTION_IN_YNNPACK = """
import jax, jax.numpy as jnp
x, w = jnp.ones((8, 32, 32, 64)), jnp.ones((3, 3, 64, 64))  # YNNPACK skips tiny convs
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
print(json.dumps({"XLA_FLAGS": os.environ.get("XLA_FLAGS"),
                  "ynn": "ynn" in conv.lower(x, w).compile().as_text()}))
"""

# The sample CLI's smoke path, run as `python -m imagen_jax.sample` runs it; then, in
# the same process (so on the backend the CLI started), the convolution above.
SAMPLE_CLI = """
import json, os, runpy, sys
sys.argv = ["imagen_jax.sample", "--out={out}", "--batch=1", "--size=8", "--steps=2",
            "--progress_png=false"]
try:
    runpy.run_module("imagen_jax.sample", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert not e.code, e.code
"""


def test_flag_reaches_xla_through_an_entry_point(tmp_path):
    """With only `import imagen_jax`, XLA keeps its default: the convolution is a
    YNNPACK fusion. After the sample CLI's start-up, in the CLI's own process, XLA
    compiles it itself (Eigen): the entry point's flag reached XLA. (That a user's
    own value wins: test_user_value_wins.)"""
    library = json.loads(_python("import json, os, imagen_jax\n" + CONVOLUTION_IN_YNNPACK, ""))
    assert library == {"XLA_FLAGS": "", "ynn": True}

    cli = json.loads(_python(SAMPLE_CLI.format(out=tmp_path / "a.png") + CONVOLUTION_IN_YNNPACK,
                             ""))
    assert cli == {"XLA_FLAGS": f"--{FLAG}={CPU_FLAGS[FLAG]}", "ynn": False}
    assert (tmp_path / "a.png").exists()  # the CLI really ran
