"""The sharded == unsharded check of tests/parallel/test_equivalence.py, for the
unCLIP stages: one Adam step on a (data 2, fsdp 2, tensor 2) mesh of the 8
fake devices equals the single-device step. For CLIP this also shows that the
contrastive loss sees the global batch: a per-device similarity matrix would give
a different loss."""

from __future__ import annotations

import numpy as np
import pytest

from configs import unclip
from tests.parallel.test_equivalence import (BATCH, MESHES, _assert_matches_reference,
                                             _sharded_step, make_case)
from imagen_jax.stage_registry import build_stage

L = 5


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
    return make_case(stage, _batch(request.param, stage), text_len=L)


@pytest.mark.parametrize("mesh_name", ["mixed222"])  # data x fsdp x tensor at once
def test_unclip_step_matches_single_device(case, mesh_name):
    new_state, loss, _, _ = _sharded_step(case, MESHES[mesh_name])
    _assert_matches_reference(case, new_state, loss)
