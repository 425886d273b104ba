"""Every unCLIP stage trains on the shapes set through imagen_jax's one trainer, and
its loss goes down: CLIP first, then the prior and decoder on that frozen CLIP, and
the two upsamplers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import unclip
from imagen_jax.train.trainer import train

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


def _train_losses(config, workdir: str) -> np.ndarray:
    losses = []
    train(config, workdir, devices=ONE,
          on_step=lambda step, m: losses.append(float(jax.device_get(m["loss"]))))
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    return np.asarray(losses)


def _assert_decreases(losses: np.ndarray, name: str) -> None:
    first, last = losses[:6].mean(), losses[-6:].mean()
    assert last < 0.85 * first, f"{name}: loss {first:.4f} -> {last:.4f}"


@pytest.fixture(scope="module")
def clip_run(data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("clip"))
    config = _config(data_dir, "clip")
    return workdir, _train_losses(config, workdir)


def test_clip_trains_contrastively(clip_run):
    _assert_decreases(clip_run[1], "clip")


@pytest.mark.parametrize("stage", ["prior", "decoder64"])
def test_prior_and_decoder_train_on_the_frozen_clip(clip_run, data_dir, tmp_path, stage):
    losses = _train_losses(_config(data_dir, stage, clip_run[0]), str(tmp_path))
    _assert_decreases(losses, stage)


@pytest.mark.parametrize("stage", ["upsample256", "upsample1024"])
def test_upsamplers_train(data_dir, tmp_path, stage):
    _assert_decreases(_train_losses(_config(data_dir, stage), str(tmp_path)), stage)
