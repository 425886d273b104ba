"""The notebooks' install step (their second cell runs this file by path, before
anything of the project is installed, so it uses the standard library only).

`install(root)` installs the imagen-jax checkout at `root` (editable) and, on a TPU or
GPU runtime, the accelerator build of JAX within the project's `jax` requirement
(setup.py), in one pip resolve so that jax, jaxlib and the TPU/CUDA plugin match.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

# jax's extra for each runtime. CUDA 12 rather than 13: JAX's CUDA 12 wheels run on any
# driver that supports CUDA 12 or later, its CUDA 13 ones only on the newest drivers.
JAX_EXTRA: dict[str, str | None] = {"tpu": "tpu", "gpu": "cuda12", "cpu": None}

# setup.py's "jax>=0.10,<0.11" (install_requires), not the test extra's "jax[tpu]...".
_JAX_REQUIREMENT = re.compile(r"""["']jax\s*([<>=!~][^"';]*)["']""")


def jax_requirement(setup_py: str) -> str:
    """The version specifier of setup.py's `jax` requirement, e.g. ">=0.10,<0.11"."""
    match = _JAX_REQUIREMENT.search(setup_py)
    if match is None:
        raise SystemExit("imagen-jax: setup.py names no `jax` requirement")
    return match.group(1).replace(" ", "")


def _nvidia_smi_runs() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def detect_runtime(env: Mapping[str, str] = os.environ,
                   glob_: Callable[[str], list[str]] = glob.glob,
                   nvidia_smi_runs: Callable[[], bool] = _nvidia_smi_runs) -> str:
    """"tpu", "gpu" or "cpu". A TPU: Colab's or a TPU VM's variables, or the device files
    libtpu opens (/dev/accel* up to v4, /dev/vfio/<n> from v5e; /dev/vfio/vfio alone is
    only the VFIO driver, present on many hosts). A GPU: nvidia-smi runs."""
    if (env.get("COLAB_TPU_ADDR") or env.get("TPU_NAME")
            or glob_("/dev/accel*") or glob_("/dev/vfio/[0-9]*")):
        return "tpu"
    return "gpu" if nvidia_smi_runs() else "cpu"


def pip_command(root: Path, runtime: str, jax_spec: str,
                python: str = sys.executable) -> list[str]:
    """pip installing `root` (editable) and, on an accelerator, jax[extra]<jax_spec>."""
    command = [python, "-m", "pip", "install", "-q", "-e", str(root)]
    extra = JAX_EXTRA[runtime]
    return command + [f"jax[{extra}]{jax_spec}"] if extra else command


def installed_from(root: Path) -> bool:
    """Whether `import imagen_jax` loads root's copy already."""
    spec = importlib.util.find_spec("imagen_jax")
    return (spec is not None and spec.origin is not None
            and Path(spec.origin).resolve().parent.parent == root.resolve())


def install(root: str | os.PathLike[str]) -> None:
    """Install the checkout at `root` into this Python, once; one line says what was done."""
    root = Path(root).resolve()
    if installed_from(root):
        print(f"imagen-jax: already installed from {root}; nothing to do")
        return
    runtime = detect_runtime()
    command = pip_command(root, runtime, jax_requirement(
        (root / "setup.py").read_text(encoding="utf-8")))
    jax_was_imported = "jax" in sys.modules
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"imagen-jax: `pip {' '.join(command[3:])}` failed (pip's output is above)")
    # A running kernel does not read the .pth file pip just wrote: import from root now.
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    accelerator = f"and {command[-1]}" if JAX_EXTRA[runtime] else "(no accelerator build of JAX)"
    print(f"imagen-jax: {runtime.upper()} runtime: installed {root} {accelerator}")
    if jax_was_imported:
        print("imagen-jax: jax was imported before this install: restart the runtime "
              "(Runtime > Restart session), then run the notebook again")
