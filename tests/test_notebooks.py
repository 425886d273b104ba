"""Every notebook runs top to bottom on the CPU at tiny size (few train steps) and
shows what it promises: each stage trained, the sample grids inline, the scores."""

import base64
import glob
import io
import json
import os

import numpy as np
import pytest

from tests.xla_env import process_xla_flags

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "notebooks", "*.ipynb")))
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
    assert "ShapesBench, 16 held-out test prompts (64 px)" in printed, printed[-3000:]
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_shows_its_results(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

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
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed, images = _results(nb)
    EXPECTED[os.path.basename(path)](printed, images, workdir)
