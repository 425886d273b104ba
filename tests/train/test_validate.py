"""Each impossible config stops before compiling, naming the field."""

import pytest

from configs import imagen
from imagen_jax.train.validate import ConfigError, validate_config


def _config(stage="base64"):
    return imagen.get_config(f"tiny,{stage}")


def test_good_config_resolves_the_mesh():
    assert validate_config(_config(), device_count=8, process_count=1) == {
        "data": 8, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize("mutate, message", [
    (lambda c: setattr(c, "stage", "imagen.sr512"), r"config.stage: unknown stage"),
    (lambda c: c.mesh.update(data=3), r"config.mesh: .*needs 3 devices, have 8"),
    (lambda c: c.mesh.update(data=-1, fsdp=-1), r"config.mesh: .*only one axis may be -1"),
    (lambda c: setattr(c.train, "batch_size", 12),
     r"config.train.batch_size 12 is not divisible by the data-parallel size 8"),
    (lambda c: setattr(c.train, "nonfinite", "ignore"), r"config.train.nonfinite"),
    (lambda c: setattr(c.text.random_t5, "d_model", 64), r"config.text.random_t5.d_model"),
    (lambda c: setattr(c.train, "grad_accum_steps", 0), r"config.train.grad_accum_steps must"),
    (lambda c: setattr(c.train, "grad_accum_steps", -2), r"config.train.grad_accum_steps must"),
    (lambda c: setattr(c.train, "grad_accum_steps", 2),
     r"config.train.batch_size 8 does not split into config.train.grad_accum_steps=2"),
])
def test_base_config_errors(mutate, message):
    config = _config()
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, device_count=8, process_count=1)


def test_sr_factor_must_be_whole():
    config = _config("sr256")
    config.lowres_size = 12  # 32 / 12 is no whole factor
    with pytest.raises(ConfigError, match="config.lowres_size 12 does not divide"):
        validate_config(config, device_count=8, process_count=1)


def test_batch_must_split_over_processes():
    config = _config()
    config.mesh.update(data=1, fsdp=1, tensor=8)
    config.train.batch_size = 6
    with pytest.raises(ConfigError, match="not divisible by the 4 processes"):
        validate_config(config, device_count=8, process_count=4)
