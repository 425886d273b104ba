"""Config validation: every impossible combination stops before anything compiles,
with one line that names the field."""

from __future__ import annotations

from typing import Any

import jax

from imagen_jax.parallel.mesh import mesh_shape

KNOWN_STAGES = ("imagen.base64", "imagen.sr256", "imagen.sr1024")


class ConfigError(ValueError):
    """A config field holds a value the run cannot use."""


def validate_config(config: Any, device_count: int | None = None,
                    process_count: int | None = None) -> dict[str, int]:
    """Checks `config`; returns the resolved mesh sizes. Raises ConfigError."""
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    if config.stage not in KNOWN_STAGES:
        raise ConfigError(f"config.stage: unknown stage {config.stage!r}; known: {KNOWN_STAGES}")
    try:
        sizes = mesh_shape(config.mesh, device_count)
    except ValueError as e:
        raise ConfigError(f"config.mesh: {e}") from None
    batch = config.train.batch_size
    data_parallel = sizes["data"] * sizes["fsdp"]
    if batch <= 0 or batch % data_parallel:
        raise ConfigError(f"config.train.batch_size {batch} is not divisible by the "
                          f"data-parallel size {data_parallel} (mesh data x fsdp)")
    if batch % process_count:
        raise ConfigError(f"config.train.batch_size {batch} is not divisible by the "
                          f"{process_count} processes")
    if config.train.steps <= 0:
        raise ConfigError(f"config.train.steps must be positive, got {config.train.steps}")
    if config.train.nonfinite not in ("error", "skip"):
        raise ConfigError(f"config.train.nonfinite must be 'error' or 'skip', got "
                          f"{config.train.nonfinite!r}")
    if config.stage != "imagen.base64":
        low = config.lowres_size
        if low <= 0 or config.image_size % low:
            raise ConfigError(f"config.lowres_size {low} does not divide config.image_size "
                              f"{config.image_size}: the SR factor must be a whole number")
        crop = config.diffusion.train_crop
        if crop and (crop > config.image_size or crop % (config.image_size // low)):
            raise ConfigError(f"config.diffusion.train_crop {crop} must be at most image_size "
                              f"and divisible by the SR factor {config.image_size // low}")
    if not config.text.checkpoint and config.text.random_t5.d_model != config.model.text_dim:
        raise ConfigError(f"config.text.random_t5.d_model {config.text.random_t5.d_model} != "
                          f"config.model.text_dim {config.model.text_dim}")
    if config.data.name == "shapes_captions" and config.data.resolution < config.image_size:
        raise ConfigError(f"config.data.resolution {config.data.resolution} is below "
                          f"config.image_size {config.image_size}")
    return sizes
