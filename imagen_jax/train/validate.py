"""Config validation: every impossible combination stops before anything compiles,
with one line that names the field.

The checks here are the ones every stage shares (stage name, mesh, batch, steps,
numbers, data); each stage's own checks are its registered `check_config`, which
lives with its family."""

from __future__ import annotations

import math
from typing import Any

import jax

from imagen_jax.checks import is_real
from imagen_jax.config_sections import ConfigError
from imagen_jax.parallel.mesh import mesh_shape
from imagen_jax.stage_registry import lookup

__all__ = ["ConfigError", "validate_config"]


def validate_config(config: Any, device_count: int | None = None,
                    process_count: int | None = None) -> dict[str, int]:
    """Checks `config`; returns the resolved mesh sizes. Raises ConfigError."""
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    try:
        spec = lookup(config.stage)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        sizes = mesh_shape(config.mesh, device_count)
    except ValueError as e:
        raise ConfigError(f"config.mesh: {e}") from None
    batch = config.train.batch_size
    data_parallel = sizes["data"] * sizes["fsdp"]
    if batch <= 0 or batch % data_parallel:
        raise ConfigError(f"config.train.batch_size {batch} is not divisible by the "
                          f"data-parallel size {data_parallel} (mesh data x fsdp)")
    accum = config.train.get("grad_accum_steps", 1)
    if not (is_real(accum) and accum == int(accum) and accum >= 1):
        raise ConfigError(f"config.train.grad_accum_steps must be an int >= 1, got {accum!r}")
    if batch % (int(accum) * data_parallel):
        raise ConfigError(f"config.train.batch_size {batch} does not split into "
                          f"config.train.grad_accum_steps={accum} micro-batches divisible by "
                          f"the data-parallel size {data_parallel} (mesh data x fsdp)")
    if batch % process_count:
        raise ConfigError(f"config.train.batch_size {batch} is not divisible by the "
                          f"{process_count} processes")
    if config.train.steps <= 0:
        raise ConfigError(f"config.train.steps must be positive, got {config.train.steps}")
    if config.train.nonfinite not in ("error", "skip"):
        raise ConfigError(f"config.train.nonfinite must be 'error' or 'skip', got "
                          f"{config.train.nonfinite!r}")
    _validate_numbers(config)
    try:
        spec.check_config(config)
    except ConfigError:
        raise
    except ValueError as e:  # a family's check may raise plain ValueError naming the field
        raise ConfigError(str(e)) from None
    if config.data.name == "shapes_captions" and config.data.resolution < config.image_size:
        raise ConfigError(f"config.data.resolution {config.data.resolution} is below "
                          f"config.image_size {config.image_size}")
    return sizes


def _validate_numbers(config: Any) -> None:
    """Numbers that would otherwise fail only after compiling (a NaN learning rate
    is first seen as a non-finite loss; log.every_steps=0 divides by zero at step 1)."""
    rate = config.train.learning_rate
    if not (is_real(rate) and math.isfinite(rate) and rate > 0):
        raise ConfigError(f"config.train.learning_rate must be a finite number > 0, got {rate!r}")
    decay = config.train.ema_decay
    if not (is_real(decay) and 0.0 <= decay < 1.0):
        raise ConfigError(f"config.train.ema_decay must be in [0, 1), got {decay!r}")
    for field, value, minimum in (("train.warmup_steps", config.train.warmup_steps, 0),
                                  ("log.every_steps", config.log.every_steps, 1),
                                  ("log.sample_every_steps", config.log.sample_every_steps, 0)):
        if not (is_real(value) and value == int(value) and value >= minimum):
            raise ConfigError(f"config.{field} must be an int >= {minimum}, got {value!r}")
