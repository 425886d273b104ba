"""The sharded == unsharded check of tests/parallel/test_equivalence.py for the unCLIP
stages: the trainer's own step (imagen_jax/train/sharded.py) on data-parallel, FSDP,
tensor-parallel and mixed meshes of the 8 fake devices equals the one-device step.
For CLIP this also shows that the contrastive loss sees the global batch: a
per-device similarity matrix would give a different loss."""

from __future__ import annotations

import numpy as np
import pytest

from configs import unclip
from imagen_jax.stage_registry import build_stage
from tests.parallel.test_equivalence import (BATCH, MESHES, TEXT_LEN, assert_matches_reference,
                                             assert_sharded_as_laid_out, make_case, trainer_step)

L = TEXT_LEN


def _batch(stage_name: str, stage) -> dict:
    rng = np.random.default_rng(1)
    mask = np.arange(L)[None, :] < rng.integers(1, L + 1, (BATCH, 1))
    if stage_name == "clip":
        s = stage.image_size
        return {"images": rng.uniform(-1, 1, (BATCH, s, s, 3)).astype(np.float32),
                "text_ids": np.where(mask, rng.integers(3, 100, (BATCH, L)), 0).astype(np.int32),
                "text_mask": mask}
    if stage_name == "upsample256":  # images only: blur-degraded low-res made in the step
        s = stage.image_size
        return {"images": rng.uniform(-1, 1, (BATCH, s, s, 3)).astype(np.float32)}
    cfg = unclip.get_config(f"tiny,{stage_name}")
    batch = {"text": rng.standard_normal((BATCH, L, cfg.clip.text_width)).astype(np.float32),
             "text_mask": mask,
             "text_embed": rng.standard_normal((BATCH, cfg.clip.embed_dim)).astype(np.float32),
             "image_embed": rng.standard_normal((BATCH, cfg.clip.embed_dim)).astype(np.float32)}
    if stage_name == "decoder64":
        s = stage.image_size
        batch["images"] = rng.uniform(-1, 1, (BATCH, s, s, 3)).astype(np.float32)
    return batch


@pytest.fixture(scope="module", params=["clip", "prior", "decoder64", "upsample256"])
def case(request):
    config = unclip.get_config(f"tiny,{request.param}")
    config.clip.workdir = "/unused"
    stage = build_stage(config)
    return make_case(stage, _batch(request.param, stage))


@pytest.mark.parametrize("mesh_name", MESHES)
def test_unclip_trainer_step_matches_single_device(case, mesh_name):
    new_state, loss, shardings, old_state = trainer_step(case.stage, case.batch, case.start,
                                                         MESHES[mesh_name])
    assert_matches_reference(case, new_state, loss)
    assert_sharded_as_laid_out(new_state, shardings, old_state)
