"""Every unCLIP stage trains on the shapes set through imagen_jax's one trainer, and
its loss goes down: CLIP first, then the prior and decoder on that frozen CLIP, and
the two upsamplers. The trained runs then drive the command-line pipeline."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from configs import unclip
from imagen_jax import image_io
from imagen_jax.train.trainer import train
from unclip_jax import generate

ONE = jax.devices()[:1]
STEPS = 30


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir: str, stage: str, clip_workdir: str = ""):
    c = unclip.get_config(f"tiny,{stage}")
    c.data.data_dir = data_dir
    c.data.num_train, c.data.num_test, c.data.shuffle_buffer = 64, 8, 64
    c.train.steps, c.train.warmup_steps, c.train.batch_size = STEPS, 2, 16
    c.train.learning_rate = 3e-3
    c.checkpoint.every_steps = STEPS
    c.checkpoint.async_save = False
    c.log.every_steps = 10
    c.log.progress_bar = False
    c.mesh.update(data=1)
    c.clip.workdir = clip_workdir
    return c


def _train(data_dir, stage, workdir, clip_workdir="") -> np.ndarray:
    losses = []
    train(_config(data_dir, stage, clip_workdir), workdir, devices=ONE,
          on_step=lambda step, m: losses.append(float(jax.device_get(m["loss"]))))
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    return np.asarray(losses)


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """{stage: (workdir, losses)} for every stage, CLIP first."""
    out = {}
    for stage in unclip.STAGES:
        workdir = str(tmp_path_factory.mktemp(stage))
        clip = out["clip"][0] if stage in ("prior", "decoder64") else ""
        out[stage] = (workdir, _train(data_dir, stage, workdir, clip))
    return out


@pytest.mark.parametrize("stage", unclip.STAGES)
def test_stage_loss_decreases(runs, stage):
    losses = runs[stage][1]
    first, last = losses[:6].mean(), losses[-6:].mean()
    assert last < 0.85 * first, f"{stage}: loss {first:.4f} -> {last:.4f}"


def test_generate_cli_modes_write_pngs(runs, tmp_path):
    decoder, prior, up = runs["decoder64"][0], runs["prior"][0], runs["upsample256"][0]
    opts = dict(decoder=decoder, prior=prior, upsamplers=(up,), steps=6)
    paths = generate.run("sample", generate.GenerateOptions(
        **opts, out_dir=str(tmp_path / "s"), prompts=("one red circle", "two blue squares")))
    assert [os.path.basename(p) for p in paths] == ["sample_16.png", "sample_64.png"]
    assert len(os.listdir(tmp_path / "s" / "images")) == 3  # 2 PNGs + captions.jsonl

    image = str(tmp_path / "in.png")
    image_io.save_png(np.random.default_rng(0).uniform(-1, 1, (16, 16, 3)), image)
    paths = generate.run("textdiff", generate.GenerateOptions(
        **opts, out_dir=str(tmp_path / "t"), images=(image,), source="one red circle",
        target="one blue square", thetas=(0.0, 0.25, 0.5)))
    with open(tmp_path / "t" / "textdiff.json", encoding="utf-8") as f:
        cos = json.load(f)["cosine_to_target"]
    assert cos[0] < cos[1] < cos[2]
    generate.run("invert", generate.GenerateOptions(**opts, out_dir=str(tmp_path / "i"),
                                                    images=(image,)))
    with np.load(tmp_path / "i" / "inversion.npz", allow_pickle=False) as saved:
        assert saved["x_t"].shape == (1, 16, 16, 3) and saved["z_i"].shape == (1, 32)
    with pytest.raises(ValueError, match="--images: expected 2"):
        generate.run("interpolate", generate.GenerateOptions(
            **opts, out_dir=str(tmp_path / "x"), images=(image,)))
