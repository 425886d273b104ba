"""The smoke sampling path end to end: untrained tiny model -> PNG files."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from imagen_jax.diffusion import SamplerSettings
from imagen_jax.sample import smoke_sample

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_sample_writes_png_grid_and_progress(tmp_path):
    out = str(tmp_path / "grid.png")
    info = smoke_sample(out, batch=4, size=16, guidance=3.0, show_progress=False,
                        settings=SamplerSettings(steps=6, threshold="dynamic"))
    grid = np.asarray(Image.open(info["paths"][0]))
    # 2x2 tiles of 16 px with 2 px padding.
    assert grid.shape == (2 * 18 + 2, 2 * 18 + 2, 3)
    frames = Image.open(info["paths"][1])
    assert frames.size == (8 * 18 + 2, 18 + 2)
    assert -1.0 <= info["min"] < info["max"] <= 1.0  # dynamic thresholding held the range
    assert grid[2:18, 2:18].std() > 0  # not a blank tile


def test_cli_reports_bad_flags_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "imagen_jax.sample", "--eta=2", f"--out={tmp_path}/x.png"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "error: eta must be in [0, 1], got 2.0"
    assert not os.path.exists(tmp_path / "x.png")
