"""Sampling at the scale of a prompts file (issue #21): batches written as they finish,
reruns that skip what is on disk, grids capped per page, and an output path that is
refused before any model is loaded.

A stand-in cascade replaces the trained stages (`load_cascade` monkeypatched): what is
tested is the batching and the files, not the models, and training even a tiny stage
costs tens of seconds here. That sample_to_files drives a real cascade:
tests/train/test_trainer.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from imagen_jax import image_io
from imagen_jax import sample_cascade
from imagen_jax.sample_cascade import image_filename, sample_to_files
from tests.hostile.helpers import refused

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = [f"prompt {i}" for i in range(7)]


class FakeCascade:
    """Two stages (4 px, then 8 px); each image's value is a function of its prompt and
    the batch key. Records every call: its prompts, key and the PNGs on disk then."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.calls: list[dict] = []

    def __call__(self, prompts, key, progress=None):
        self.calls.append({"prompts": list(prompts), "key": np.asarray(key),
                           "pngs": sorted(f for f in os.listdir(self.out_dir)
                                          if f[0].isdigit())})
        noise = float(jax.random.uniform(key))
        values = np.array([(int(p.split()[-1]) + noise) / 10 - 0.5 for p in prompts])
        outputs = []
        for side in (4, 8):
            outputs.append(np.broadcast_to(values[:, None, None, None],
                                           (len(prompts), side, side, 3)).astype(np.float32))
            if progress is not None:
                progress(f"stage {len(outputs) - 1}: {side}x{side}")
        return outputs


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """The stand-in cascade, returned by sample_cascade.load_cascade (counted)."""
    cascade = FakeCascade(str(tmp_path / "out"))
    cascade.loads = 0

    def load(workdirs, overrides, ema, from_image=False):
        cascade.loads += 1
        return cascade

    monkeypatch.setattr(sample_cascade, "load_cascade", load)
    return cascade


def _run(out_dir, prompts=PROMPTS, **kwargs):
    kwargs = {"batch_size": 3, "show_progress": False, **kwargs}
    return sample_to_files(["unused"], prompts, str(out_dir), **kwargs)


def _pngs(out_dir):
    return sorted(f for f in os.listdir(out_dir) if f[0].isdigit())


def test_prompts_are_sampled_in_batches_written_as_each_finishes(fake, tmp_path):
    out = tmp_path / "out"
    paths = _run(out)
    # 7 prompts in batches of 3: three calls, the last padded to 3 (one compile).
    assert [len(c["prompts"]) for c in fake.calls] == [3, 3, 3]
    assert fake.calls[2]["prompts"] == ["prompt 6"] * 3
    # Each batch's PNGs were on disk before the next batch was sampled.
    assert [len(c["pngs"]) for c in fake.calls] == [0, 3, 6]
    names = [image_filename(i, p) for i, p in enumerate(PROMPTS)]
    assert names[4] == "00004_prompt_4.png"
    assert _pngs(out) == names
    assert [os.path.basename(p) for p in paths[:7]] == names
    assert Image.open(out / names[0]).size == (8, 8)  # the final stage's images
    captions = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert captions == [{"file": n, "caption": p} for n, p in zip(names, PROMPTS)]
    # One page: each stage's grid under the name it had before pages existed.
    assert sorted(os.path.basename(p) for p in paths[7:]) == ["grid_4.png", "grid_8.png"]
    assert not [f for f in os.listdir(out) if "partial" in f]  # no temporary files left


def test_rerun_skips_written_prompts_and_keeps_their_images(fake, tmp_path, capsys):
    out = tmp_path / "out"
    _run(out)
    first = {n: np.asarray(Image.open(out / n)) for n in _pngs(out)}
    first_keys = [c["key"] for c in fake.calls]
    # A run killed during its second batch: batches 0 and 2 on disk, batch 1 missing.
    for i in (3, 4, 5):
        os.remove(out / image_filename(i, PROMPTS[i]))
    fake.calls.clear()
    capsys.readouterr()
    paths = _run(out)
    assert "skipping 4 prompts already written" in capsys.readouterr().out
    assert [c["prompts"] for c in fake.calls] == [PROMPTS[3:6]]  # only the missing batch
    np.testing.assert_array_equal(fake.calls[0]["key"], first_keys[1])  # with its own key
    assert [os.path.basename(p) for p in paths if p.endswith("_prompt_3.png")] == [
        "00003_prompt_3.png"]
    assert {n: np.asarray(Image.open(out / n)) for n in _pngs(out)}.keys() == first.keys()
    for name, pixels in first.items():  # the same images an uninterrupted run wrote
        np.testing.assert_array_equal(np.asarray(Image.open(out / name)), pixels)

    # One PNG of a batch missing: the batch is sampled whole (same images), only the
    # missing PNG is written; the others are left as they are.
    os.remove(out / image_filename(4, PROMPTS[4]))
    fake.calls.clear()
    written = [os.path.basename(p) for p in _run(out) if not os.path.basename(p).startswith(
        "grid")]
    assert [c["prompts"] for c in fake.calls] == [PROMPTS[3:6]]
    assert written == ["00004_prompt_4.png"]

    # Everything on disk: no stage is even loaded.
    fake.calls.clear()
    loads = fake.loads
    assert _run(out) == []
    assert fake.calls == [] and fake.loads == loads
    # --overwrite: every prompt again.
    _run(out, overwrite=True)
    assert sum(len(c["prompts"]) for c in fake.calls) == 9


def test_grids_are_capped_per_page(fake, tmp_path):
    out = tmp_path / "out"
    paths = _run(out, prompts=PROMPTS[:5], batch_size=2, per_grid=2)
    grids = sorted(os.path.basename(p) for p in paths if os.path.basename(p).startswith("grid"))
    # Pages named by their first prompt's index, beside that prompt's PNG.
    assert grids == [f"grid_{side}_{first:05d}.png" for side in (4, 8) for first in (0, 2, 4)]
    for name in grids:
        count = 1 if name.endswith("00004.png") else 2
        side = int(name.split("_")[1])
        height, width = image_io.labelled_grid_size(count, side)
        assert Image.open(out / name).size == (width, height)


def test_grid_pages_shrink_to_the_image_size_limit(fake, tmp_path, monkeypatch, capsys):
    # 8 px tiles are enlarged to 128 (+ label): 4 fit in 100,000 pixels, 5 or 6 do not.
    monkeypatch.setattr(image_io, "MAX_IMAGE_PIXELS", 100_000)
    assert image_io.max_grid_images(8, 6) == 4
    paths = _run(tmp_path / "out", batch_size=7, per_grid=6)
    assert "hold at most 4 prompts (image-size limit), not 6" in capsys.readouterr().out
    grids = [p for p in paths if os.path.basename(p).startswith("grid_8")]
    assert [os.path.basename(p) for p in grids] == ["grid_8_00000.png", "grid_8_00004.png"]
    for path in grids:
        width, height = Image.open(path).size
        assert width * height <= 100_000


def test_the_default_page_of_1024_px_images_is_within_the_limit():
    # The paper's final stage: 64 prompts per grid (8 x 8) fit; 100 would not.
    assert image_io.max_grid_images(1024, 64) == 64
    assert image_io.max_grid_images(1024, 100) < 100
    for count in (64, image_io.max_grid_images(1024, 1000)):
        height, width = image_io.labelled_grid_size(count, 1024)
        assert height * width <= image_io.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("make, kwargs, match", [
    pytest.param(lambda p: p.write_text("x") and p, {},
                 r" is an existing file, not a directory: give a directory you can write to",
                 id="out-dir-is-a-file"),
    pytest.param(lambda p: p.write_text("x") and p / "sub", {},
                 r"/sub cannot be created \(Not a directory\): give a directory",
                 id="parent-is-a-file"),
    pytest.param(lambda p: p, {"batch_size": 0},
                 r"^batch_size must be a positive integer, got 0$", id="zero-batch-size"),
    pytest.param(lambda p: p, {"per_grid": -1},
                 r"^per_grid must be a positive integer, got -1$", id="negative-per-grid"),
])
def test_bad_output_and_options_are_refused_before_loading(monkeypatch, tmp_path, make, kwargs,
                                                           match):
    def load(*args, **kwargs):
        raise AssertionError("a stage was loaded before the output directory was checked")

    monkeypatch.setattr(sample_cascade, "load_cascade", load)
    out = make(tmp_path / "out")
    refused(ValueError, match, _run, out, **kwargs)


def test_read_only_output_dir_is_refused(tmp_path, monkeypatch):
    """The check writes a file rather than asking os.access (which root, read-only
    mounts and ACLs fool); a write refused as on a read-only directory is one line."""
    import tempfile

    from imagen_jax.checks import check_output_dir

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    refused(ValueError, r"^--out_dir .*/ro is not writable \(Permission denied\): give a "
            "directory you can write to$", check_output_dir, str(tmp_path / "ro"), "--out_dir")


def test_cli_out_dir_that_is_a_file_is_one_line_before_any_model(tmp_path):
    """--workdir names no run at all: had a stage been loaded first, the error would be
    about the missing workdir, not about --out_dir."""
    out = tmp_path / "out.png"
    out.write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "imagen_jax.sample", f"--workdir={tmp_path / 'no_run'}",
         "--prompts=a red circle", f"--out_dir={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --out_dir {out} is an existing file, not a directory: give a directory you "
        "can write to (a new or existing directory, not a file name)")
    assert out.read_text() == "not a directory"
    assert not (tmp_path / "no_run").exists()


def test_unclip_generate_checks_out_dir_before_the_pipeline(tmp_path):
    from unclip_jax import generate

    out = tmp_path / "out"
    out.write_text("x")
    missing = str(tmp_path / "no_decoder")  # loading it would be a FileNotFoundError
    options = generate.GenerateOptions(decoder=missing, prompts=("a red circle",),
                                       out_dir=str(out))
    refused(ValueError, r"^--out_dir .*/out is an existing file, not a directory",
            generate.run, "sample", options)
    out.unlink()
    out.mkdir()
    (out / "images").write_text("x")  # where 'sample' writes its per-image PNGs
    refused(ValueError, r"^the images folder under --out_dir .*/out/images is an existing "
            "file", generate.run, "sample", options)
