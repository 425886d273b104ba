"""Every notebook runs top to bottom on the CPU at tiny size (few train steps) and
shows what it promises: the install cell installed this repository into a fresh
environment, each stage trained, the sample grids inline, the scores."""

import base64
import glob
import io
import json
import os
import shutil
import site
import subprocess
import sys

import numpy as np
import pytest

from tests.xla_env import process_xla_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.ipynb")))
STEPS = 2


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ has no .ipynb"
    assert {os.path.basename(p) for p in NOTEBOOKS} == set(EXPECTED), \
        "a notebook without its expected results in tests/test_notebooks.py"


def _results(nb) -> tuple[str, list]:
    """(everything the code cells printed, the PNG images they displayed)."""
    from PIL import Image

    printed, images = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream" and out.name == "stdout":
                printed.append(out.text)
            elif out.output_type == "display_data" and "image/png" in out.get("data", {}):
                data = base64.b64decode(out.data["image/png"])
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return "".join(printed), images


def _grid_of_pictures(image, rows: int) -> None:
    """A labelled grid (imagen_jax.image_io.save_labelled_grid) of `rows` x 4 tiles:
    each image enlarged to 128 px with a 14 px label under it, 2 px apart, and the
    first tile a picture, not a flat colour."""
    assert image.shape == (rows * (128 + 14 + 2) + 2, 4 * (128 + 2) + 2, 3), image.shape
    assert float(image[2:130, 2:130].std()) > 0


def _trained(printed: str, stages: dict) -> None:
    for stage, steps in stages.items():
        assert f"[demo] {stage}: {steps} steps in " in printed, (stage, printed[-3000:])


def _imagen(printed: str, images: list, workdir: str) -> None:
    _trained(printed, {"base": STEPS, "sr": max(1, STEPS // 2)})
    # One labelled grid per stage of the cascade (the demo configs' sizes), shown.
    from configs import imagen_demo
    sizes = [imagen_demo.get_config(stage).image_size for stage in ("base", "sr")]
    grids = [line for line in printed.splitlines() if line.endswith(".png")]
    assert [os.path.basename(g) for g in grids] == [f"grid_{s}.png" for s in sizes], printed
    assert len(images) == 2
    for image in images:
        _grid_of_pictures(image, rows=4)  # the 16 demo prompts
    # ShapesBench scored 16 held-out prompts at the cascade's output size.
    assert "ShapesBench, final images, 16 held-out test prompts (64 px)" in printed, \
        printed[-3000:]
    assert "ShapesBench, base stage alone, 16 held-out test prompts (32 px" in printed
    assert any(line.split()[:2] == ["all", "16"] for line in printed.splitlines())
    with open(os.path.join(workdir, "shapesbench", "shapesbench.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["summary"]["all"]["n"] == 16 and len(report["rows"]) == 16


def _unclip(printed: str, images: list, workdir: str) -> None:
    _trained(printed, {stage: STEPS for stage in ("clip", "prior", "decoder", "upsampler")})
    # text -> image at both sizes, then the three latent operations' strips.
    from configs import unclip_demo
    for size in (unclip_demo.get_config(s).image_size for s in ("decoder", "upsampler")):
        assert os.path.exists(os.path.join(workdir, "samples", f"text_{size}.png"))
    for name in ("variations", "interpolation", "text diff"):
        assert name in printed.splitlines(), printed[-3000:]
        assert os.path.exists(os.path.join(workdir, "samples", f"{name}.png"))
    assert len(images) == 5
    for image in images:
        _grid_of_pictures(image, rows=1)  # 4 prompts, 4 variations, 4 frames, 4 edits


EXPECTED = {"imagen_colab_tpu.ipynb": _imagen, "unclip_colab_tpu.ipynb": _unclip}
# How each notebook's install cell gets the repository (IMAGEN_JAX_REPO): one a git
# URL, cloned as on Colab, the other a local path; both paths of the cell run.
REPO_AS = {"imagen_colab_tpu.ipynb": "git URL", "unclip_colab_tpu.ipynb": "local path"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> str:
    """A git repository holding this checkout's working tree (tracked files and untracked
    ones git does not ignore): the install cell installs what is here, committed or not
    (in CI, a fresh clone, that is HEAD)."""
    src = tmp_path_factory.mktemp("repository")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if os.path.isfile(os.path.join(REPO_ROOT, name)):  # not a tracked file deleted here
            os.makedirs(os.path.dirname(src / name), exist_ok=True)
            shutil.copy2(os.path.join(REPO_ROOT, name), src / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com",
           "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "working tree"]):
        subprocess.run(git + command, cwd=src, check=True)
    return str(src)


def _fresh_kernel(tmp_path, monkeypatch) -> tuple[str, str]:
    """(kernel name, site-packages) of a kernel whose Python is a new virtualenv: the
    suite's packages visible through a .pth file, imagen-jax not installed, so that the
    install cell installs it for real, there and not into the suite's environment (pip
    leaves a package it finds outside its environment in place)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "suite-packages.pth"), "w", encoding="utf-8") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    spec = tmp_path / "jupyter" / "kernels" / "fresh"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh environment", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # Offline: the suite's packages satisfy every requirement, so pip downloads nothing
    # (no index), and builds with the setuptools there. PIP_NO_BUILD_ISOLATION=false is
    # --no-build-isolation: pip takes the variable as the value of build_isolation.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "false")
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return "fresh", purelib


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_shows_its_results(path, repository, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    kernel, site_packages = _fresh_kernel(tmp_path, monkeypatch)
    if REPO_AS[os.path.basename(path)] == "git URL":
        monkeypatch.setenv("IMAGEN_JAX_REPO", f"file://{repository}")
        installed = os.path.realpath(tmp_path / "imagen-jax")  # cloned beside the notebook
    else:
        monkeypatch.setenv("IMAGEN_JAX_REPO", repository)
        installed = os.path.realpath(repository)
    # The kernel inherits the environment: one CPU device (not the suite's 8 fake
    # ones), 2 train steps, and a scratch workdir. A notebook at this size is almost
    # all compilation: the suite's compile-time XLA flags and the classic threefry
    # PRNG, as tests/conftest.py (the LLVM flag and the PRNG alone cut it by a third).
    workdir = str(tmp_path / "run")
    monkeypatch.setenv("XLA_FLAGS", process_xla_flags())
    monkeypatch.setenv("JAX_THREEFRY_PARTITIONABLE", "false")
    monkeypatch.setenv("NOTEBOOK_STEPS", str(STEPS))
    monkeypatch.setenv("NOTEBOOK_WORKDIR", workdir)
    nb = nbformat.read(path, as_version=4)
    # execute() raises CellExecutionError at the first cell that fails.
    NotebookClient(nb, timeout=900, kernel_name=kernel,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed, images = _results(nb)
    # Installed into the kernel's environment, on the CPU without an accelerator JAX.
    assert (f"imagen-jax: CPU runtime: installed {installed} (no accelerator build of JAX)"
            in printed.splitlines()), printed[:3000]
    assert glob.glob(os.path.join(site_packages, "imagen_jax-*")), os.listdir(site_packages)
    assert not glob.glob(os.path.join(site_packages, "jax*")), os.listdir(site_packages)
    EXPECTED[os.path.basename(path)](printed, images, workdir)


def _install_cell(path: str) -> str:
    nbformat = pytest.importorskip("nbformat")
    cell = nbformat.read(path, as_version=4).cells[1]
    assert cell.cell_type == "code" and "IMAGEN_JAX_REPO" in cell.source, cell.source
    return cell.source


def test_the_notebooks_share_one_install_cell():
    assert len({_install_cell(path) for path in NOTEBOOKS}) == 1


@pytest.mark.parametrize("repo, says", [
    ("", "imagen-jax: no checkout at {cwd} or above: set IMAGEN_JAX_REPO"),
    ("{cwd}", "imagen-jax: no checkout at {cwd}: set IMAGEN_JAX_REPO"),
    ("file:///nonexistent/imagen-jax", "imagen-jax: could not clone file:///nonexistent/imagen-jax"),
])
def test_install_cell_without_a_repository_says_how_to_set_it(repo, says, tmp_path):
    """Outside a checkout and without IMAGEN_JAX_REPO (Colab), or with one that is not
    the repository, the cell stops with one line, before any pip."""
    env = {k: v for k, v in os.environ.items() if k != "IMAGEN_JAX_REPO"}
    if repo:
        env["IMAGEN_JAX_REPO"] = repo.format(cwd=tmp_path)
    result = subprocess.run([sys.executable, "-c", _install_cell(NOTEBOOKS[0])], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr.splitlines()[-1].startswith(says.format(cwd=os.path.realpath(tmp_path))), \
        result.stderr
    assert not os.listdir(tmp_path)
