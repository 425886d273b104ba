"""imagen_jax/colab_install.py, the notebooks' install step, without pip or a network:
the jax pin read from setup.py, the runtime detected, the pip command per runtime.
tests/test_notebooks.py runs it for real, in the notebooks' install cell."""

import fnmatch
import importlib.metadata
import os
import sys
from pathlib import Path

import pytest

from imagen_jax import colab_install

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_jax_pin_is_read_from_setup_py():
    setup_py = (REPO_ROOT / "setup.py").read_text(encoding="utf-8")
    # install_requires' requirement, not the test extra's jax[tpu] one (nor jaxlib).
    assert colab_install.jax_requirement(setup_py) == ">=0.10,<0.11"
    assert colab_install.jax_requirement('REQ = ["jaxlib>=1", "jax == 0.10.2"]') == "==0.10.2"
    with pytest.raises(SystemExit, match="setup.py names no `jax` requirement"):
        colab_install.jax_requirement('REQ = ["jaxlib>=1", "jax[tpu]>=1"]')


def test_the_installed_jax_offers_the_extras_it_installs():
    # A jax release within the pin that dropped an extra would make the install fail.
    extras = importlib.metadata.metadata("jax").get_all("Provides-Extra")
    assert {e for e in colab_install.JAX_EXTRA.values() if e} <= set(extras), extras


def _files(*paths):
    return lambda pattern: [p for p in paths if fnmatch.fnmatch(p, pattern)]


@pytest.mark.parametrize("env, files, nvidia, runtime", [
    ({"COLAB_TPU_ADDR": "10.0.0.2:8470"}, (), False, "tpu"),
    ({"TPU_NAME": "local"}, (), True, "tpu"),
    ({}, ("/dev/accel0",), False, "tpu"),  # TPU v2-v4 VM
    ({}, ("/dev/vfio/vfio", "/dev/vfio/0"), False, "tpu"),  # v5e and later
    ({}, ("/dev/vfio/vfio",), True, "gpu"),  # the VFIO driver alone is no TPU
    ({}, (), True, "gpu"),
    ({}, ("/dev/vfio/vfio",), False, "cpu"),
    ({"COLAB_TPU_ADDR": ""}, (), False, "cpu"),
])
def test_the_runtime_is_detected(env, files, nvidia, runtime):
    assert colab_install.detect_runtime(env, _files(*files), lambda: nvidia) == runtime


@pytest.mark.parametrize("runtime, jax", [
    ("tpu", ["jax[tpu]>=0.10,<0.11"]), ("gpu", ["jax[cuda12]>=0.10,<0.11"]), ("cpu", [])])
def test_one_pip_resolve_installs_the_project_and_its_accelerator_jax(runtime, jax):
    command = colab_install.pip_command(Path("/content/imagen-jax"), runtime, ">=0.10,<0.11", "py")
    assert command == ["py", "-m", "pip", "install", "-q", "-e", "/content/imagen-jax"] + jax


def test_installed_from_is_where_imagen_jax_is_imported_from(tmp_path):
    assert colab_install.installed_from(REPO_ROOT)  # the suite imports this checkout's
    assert not colab_install.installed_from(tmp_path)


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"ran {args}")


def test_install_from_where_it_is_installed_does_nothing(monkeypatch, capsys):
    monkeypatch.setattr(colab_install.subprocess, "run", _no_subprocess)
    colab_install.install(REPO_ROOT)
    assert capsys.readouterr().out == f"imagen-jax: already installed from {REPO_ROOT}; nothing to do\n"


@pytest.mark.parametrize("returncode", [0, 1])
def test_install_on_a_tpu(tmp_path, monkeypatch, capsys, returncode):
    (tmp_path / "setup.py").write_text('INSTALL_REQUIRES = ["jax>=0.10,<0.11"]\n', encoding="utf-8")
    ran = []
    monkeypatch.setattr(colab_install, "detect_runtime", lambda: "tpu")
    monkeypatch.setattr(colab_install.subprocess, "run",
                        lambda command: ran.append(command) or type("R", (), {"returncode": returncode}))
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = os.path.realpath(tmp_path)
    if returncode:
        with pytest.raises(SystemExit, match=r"^imagen-jax: `pip install -q -e .* jax\[tpu\]>=0\.10,<0\.11` failed"):
            colab_install.install(tmp_path)
    else:
        colab_install.install(tmp_path)
        assert capsys.readouterr().out.splitlines() == [
            f"imagen-jax: TPU runtime: installed {root} and jax[tpu]>=0.10,<0.11",
            # This process imported jax (as Colab's kernel has not): it runs the old one.
            "imagen-jax: jax was imported before this install: restart the runtime "
            "(Runtime > Restart session), then run the notebook again"]
        assert sys.path[0] == root  # importable in the running kernel at once
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", "-e", root, "jax[tpu]>=0.10,<0.11"]]
