import functools
import math

import flax.linen as nn
import jax
import pytest

from configs import imagen
from imagen_jax.stage_registry import build_stage
from imagen_jax.stages import BaseStage, SuperResolutionStage

# The paper's sizes (Imagen section 2.5 / App. F): base 2B, 64->256 600M, 256->1024 400M.
PAPER_SIZES = {"base64": 2.0e9, "sr256": 600e6, "sr1024": 400e6}
# What each config promises: image size, low-res input size (0: none), the crop the
# 256->1024 stage trains on, text length (T5 tokens) and width, parameter range.
# 'paper': the paper's resolutions, 128 tokens of T5-XXL (4096 wide), the sizes above
# +-15%; 'tiny': the same ratios at CPU size, 16 tokens of a 32-wide random T5, and
# few enough parameters (~0.1M) for seconds per train step on a CPU.
PROMISES = {
    "paper": {stage: dict(image=image, lowres=lowres, crop=crop, text_len=128,
                          text_dim=imagen.T5_XXL_DIM,
                          params=(0.85 * PAPER_SIZES[stage], 1.15 * PAPER_SIZES[stage]))
              for stage, (image, lowres, crop) in {"base64": (64, 0, 0), "sr256": (256, 64, 0),
                                                    "sr1024": (1024, 256, 256)}.items()},
    "tiny": {stage: dict(image=image, lowres=lowres, crop=crop, text_len=16, text_dim=32,
                         params=(50e3, 250e3))
             for stage, (image, lowres, crop) in {"base64": (16, 0, 0), "sr256": (32, 8, 0),
                                                   "sr1024": (64, 16, 32)}.items()},
}


@functools.cache
def _built(variant: str, stage: str):
    """(config, stage, parameter count): the count from an abstract init at the
    stage's image size and the config's text length (nothing is materialised)."""
    config = imagen.get_config(f"{variant},{stage}")
    built = build_stage(config)
    variables = jax.eval_shape(lambda: built.init(jax.random.PRNGKey(0),
                                                  config.text.max_length))
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(variables)["params"]))
    return config, built, n


@pytest.mark.parametrize("stage", sorted(PAPER_SIZES))
def test_paper_config_parameter_counts_within_15_percent(stage):
    _, _, n = _built("paper", stage)
    print(f"{stage}: {n / 1e6:.1f}M parameters (paper {PAPER_SIZES[stage] / 1e6:.0f}M)")
    assert abs(n / PAPER_SIZES[stage] - 1) <= 0.15


@pytest.mark.parametrize("stage", sorted(PAPER_SIZES))
@pytest.mark.parametrize("variant", imagen.VARIANTS)
def test_every_config_builds_its_stage(variant, stage):
    config, built, n = _built(variant, stage)
    want = PROMISES[variant][stage]
    assert config.stage == f"imagen.{stage}" and config.variant == variant
    assert type(built) is (BaseStage if stage == "base64" else SuperResolutionStage)
    assert built.image_size == config.image_size == config.data.resolution == want["image"]
    if stage == "base64":
        assert config.lowres_size == 0
    else:  # the previous stage's output, upscaled 4x (on a crop for 256->1024)
        assert built.lowres_size == config.lowres_size == want["lowres"]
        assert built.scale == 4 and (built.train_crop or 0) == want["crop"]
    assert config.text.max_length == want["text_len"]
    assert built.unet.text_dim == want["text_dim"]
    if variant == "tiny":  # the offline random T5 feeds the U-Net its own width
        assert config.text.random_t5.d_model == want["text_dim"]
    low, high = want["params"]
    assert low <= n <= high, f"{variant},{stage}: {n:,} parameters, want [{low:,.0f}, {high:,.0f}]"


def test_unknown_config_arg_names_it():
    with pytest.raises(ValueError, match=r"unknown config arg\(s\) \['huge'\]"):
        imagen.get_config("huge,base64")


def test_bad_model_field_names_it():
    config = imagen.get_config("tiny,base64")
    config.model.strides = (1, 2, 2)
    with pytest.raises(ValueError, match="UNetConfig.strides"):
        build_stage(config)


def test_demo_configs_validate_and_chain():
    from configs import imagen_demo
    from imagen_jax.train.validate import validate_config

    base, sr = imagen_demo.get_config("base"), imagen_demo.get_config("sr")
    for config in (base, sr):
        validate_config(config, device_count=1)
        build_stage(config)
    assert sr.lowres_size == base.image_size  # the SR stage takes the base stage's output
    with pytest.raises(ValueError, match="unknown stage 'sr256'"):
        imagen_demo.get_config("sr256")
