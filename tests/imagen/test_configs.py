import pytest

from configs import imagen
from imagen_jax.nn.unet import count_params
from imagen_jax.stage_registry import build_stage
from imagen_jax.stages import BaseStage, SuperResolutionStage

# The paper's sizes (Imagen section 2.5 / App. F): base 2B, 64->256 600M, 256->1024 400M.
PAPER_SIZES = {"base64": 2.0e9, "sr256": 600e6, "sr1024": 400e6}


@pytest.mark.parametrize("stage", sorted(PAPER_SIZES))
def test_paper_config_parameter_counts_within_15_percent(stage):
    config = imagen.get_config(f"paper,{stage}")
    built = build_stage(config)
    n = count_params(built.unet, 64 if stage == "base64" else 256,
                     text_len=config.text.max_length)
    print(f"{stage}: {n / 1e6:.1f}M parameters (paper {PAPER_SIZES[stage] / 1e6:.0f}M)")
    assert abs(n / PAPER_SIZES[stage] - 1) <= 0.15


@pytest.mark.parametrize("stage", sorted(PAPER_SIZES))
def test_every_config_builds_its_stage(stage):
    for variant in imagen.VARIANTS:
        config = imagen.get_config(f"{variant},{stage}")
        built = build_stage(config)
        assert config.stage == f"imagen.{stage}"
        want = BaseStage if stage == "base64" else SuperResolutionStage
        assert type(built) is want
    paper_sr1024 = build_stage(imagen.get_config("paper,sr1024"))
    assert paper_sr1024.train_crop == 256 and paper_sr1024.scale == 4


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
