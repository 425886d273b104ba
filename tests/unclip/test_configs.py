"""configs/unclip.py: every stage builds and initialises; paper sizes match Table 3."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import pytest

from configs import unclip
from imagen_jax.train.validate import ConfigError, validate_config
from imagen_jax.stage_registry import build_stage

# Table 3 of the paper (U-App. C), in parameters; the issue allows +-15%.
PAPER_SIZES = {"prior": 1.0e9, "decoder64": 3.5e9, "upsample256": 700e6, "upsample1024": 300e6}


def _count(stage, text_len: int) -> int:
    variables = jax.eval_shape(lambda: stage.init(jax.random.PRNGKey(0), text_len))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(variables)["params"]))


@pytest.mark.parametrize("name", PAPER_SIZES)
def test_paper_sizes(name):
    config = unclip.get_config(f"paper,{name}")
    count = _count(build_stage(config), config.text.max_length)
    assert abs(count / PAPER_SIZES[name] - 1) <= 0.15, f"{name}: {count / 1e6:.0f}M parameters"


def test_paper_clip_is_vit_h16():
    config = unclip.get_config("paper,clip")
    count = _count(build_stage(config), 77)
    # ViT-H/16 image tower (~630M) + 1024-wide 24-block text tower (~350M).
    assert 0.9e9 < count < 1.1e9, count


@pytest.mark.parametrize("name", unclip.STAGES)
def test_tiny_stages_validate_and_build(name):
    config = unclip.get_config(f"tiny,{name}")
    if name in ("prior", "decoder64"):
        with pytest.raises(ConfigError, match="config.clip"):
            validate_config(config, device_count=1)
        config.clip.workdir = "/some/clip/run"
    validate_config(config, device_count=1)
    _count(build_stage(config), config.text.max_length)


def test_bad_args_and_widths_are_named():
    with pytest.raises(ValueError, match="unknown config arg"):
        unclip.get_config("tiny,decoder128")
    config = unclip.get_config("tiny,prior")
    config.clip.workdir = "/x"
    config.model.embed_dim = 7
    with pytest.raises(ConfigError, match="config.model.embed_dim 7"):
        validate_config(config, device_count=1)
