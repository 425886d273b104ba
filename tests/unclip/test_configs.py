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


# What each tiny config promises: its image size and low-res input size (0: none),
# at CPU size (the paper's ratios: upsamplers 4x), 16 text tokens read by a 16-token
# CLIP, 32-wide embeddings, and few enough parameters (~0.1M) for seconds per train
# step on a CPU.
TINY = {"clip": (16, 0), "prior": (16, 0), "decoder64": (16, 0), "upsample256": (32, 8),
        "upsample1024": (64, 16)}
TINY_TEXT_LEN, TINY_EMBED, TINY_PARAMS = 16, 32, (20e3, 250e3)


def _shapes(stage, text_len: int) -> dict[str, tuple]:
    variables = jax.eval_shape(lambda: stage.init(jax.random.PRNGKey(0), text_len))
    flat = jax.tree_util.tree_flatten_with_path(nn.unbox(variables)["params"])[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): x.shape for path, x in flat}


@pytest.mark.parametrize("name", unclip.STAGES)
def test_tiny_stages_validate_and_build(name):
    config = unclip.get_config(f"tiny,{name}")
    if name in ("prior", "decoder64"):
        with pytest.raises(ConfigError, match="config.clip"):
            validate_config(config, device_count=1)
        config.clip.workdir = "/some/clip/run"
    validate_config(config, device_count=1)
    stage = build_stage(config)
    image, lowres = TINY[name]
    assert config.image_size == config.data.resolution == image
    assert config.lowres_size == lowres
    assert config.text.max_length == TINY_TEXT_LEN
    assert config.clip.embed_dim == TINY_EMBED
    shapes = _shapes(stage, config.text.max_length)
    count = sum(math.prod(s) for s in shapes.values())
    assert TINY_PARAMS[0] <= count <= TINY_PARAMS[1], f"{name}: {count:,} parameters"
    if name == "clip":  # 16 px in 4 px patches (+ the class token), 16 text positions
        assert stage.image_size == image
        assert shapes["vision/position_embedding"] == ((image // 4) ** 2 + 1, TINY_EMBED)
        assert shapes["text/position_embedding"] == (TINY_TEXT_LEN, TINY_EMBED)
    elif name == "prior":  # reads the caption's 16 CLIP token states, emits a z_i
        assert stage.prior.max_text_len == TINY_TEXT_LEN
        assert stage.prior.embed_dim == TINY_EMBED
    else:
        assert stage.image_size == image
        if name == "decoder64":  # conditioned on a CLIP image embedding
            assert stage.embed_dim == TINY_EMBED
        else:
            assert stage.lowres_size == lowres and stage.scale == 4
            assert stage.train_crop == image // 4  # trains on quarter-size crops


def test_bad_args_and_widths_are_named():
    with pytest.raises(ValueError, match="unknown config arg"):
        unclip.get_config("tiny,decoder128")
    config = unclip.get_config("tiny,prior")
    config.clip.workdir = "/x"
    config.model.embed_dim = 7
    with pytest.raises(ConfigError, match="config.model.embed_dim 7"):
        validate_config(config, device_count=1)
