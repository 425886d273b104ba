"""Config validation: every impossible combination stops before anything compiles,
with one line that names the field."""

from __future__ import annotations

import math
from typing import Any

import jax

from imagen_jax.checks import is_real
from imagen_jax.diffusion import SamplerSettings, check_guidance
from imagen_jax.parallel.mesh import mesh_shape
from imagen_jax.stages import check_aug_level

KNOWN_STAGES = ("imagen.base64", "imagen.sr256", "imagen.sr1024", "unclip.clip",
                "unclip.prior", "unclip.decoder64", "unclip.upsample256",
                "unclip.upsample1024")
# Stages that condition on a low-resolution image (config.lowres_size).
SUPER_RESOLUTION_STAGES = ("imagen.sr256", "imagen.sr1024", "unclip.upsample256",
                           "unclip.upsample1024")


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
    _validate_numbers(config)
    if config.stage != "unclip.clip":  # CLIP is trained, never sampled
        _validate_sample(config.sample)
    if config.stage in SUPER_RESOLUTION_STAGES:
        low = config.lowres_size
        if low <= 0 or config.image_size % low:
            raise ConfigError(f"config.lowres_size {low} does not divide config.image_size "
                              f"{config.image_size}: the SR factor must be a whole number")
        crop = config.diffusion.train_crop
        if crop and (crop > config.image_size or crop % (config.image_size // low)):
            raise ConfigError(f"config.diffusion.train_crop {crop} must be at most image_size "
                              f"and divisible by the SR factor {config.image_size // low}")
    if config.stage.startswith("unclip."):
        _validate_unclip(config)
    elif not config.text.checkpoint and config.text.random_t5.d_model != config.model.text_dim:
        raise ConfigError(f"config.text.random_t5.d_model {config.text.random_t5.d_model} != "
                          f"config.model.text_dim {config.model.text_dim}")
    if config.data.name == "shapes_captions" and config.data.resolution < config.image_size:
        raise ConfigError(f"config.data.resolution {config.data.resolution} is below "
                          f"config.image_size {config.image_size}")
    return sizes


def _validate_unclip(config: Any) -> None:
    """Widths that must agree between an unCLIP stage and the CLIP it conditions on."""
    kind = config.stage.split(".")[1]
    if kind in ("prior", "decoder64"):
        if bool(config.clip.workdir) == bool(config.clip.checkpoint):
            raise ConfigError("config.clip: set exactly one of clip.workdir (a trained "
                              "unclip.clip run) and clip.checkpoint (a Hugging Face CLIP dir)")
        text_dim = config.model.text_dim if kind == "prior" else (
            config.model.text_dim if not config.caption.layers else config.clip.text_width)
        if kind == "decoder64" and config.caption.layers and \
                config.caption.width != config.model.text_dim:
            raise ConfigError(f"config.caption.width {config.caption.width} != "
                              f"config.model.text_dim {config.model.text_dim}")
        if text_dim != config.clip.text_width:
            raise ConfigError(f"config.model.text_dim {text_dim} != config.clip.text_width "
                              f"{config.clip.text_width} (the CLIP token states it reads)")
    if kind == "prior" and config.model.embed_dim != config.clip.embed_dim:
        raise ConfigError(f"config.model.embed_dim {config.model.embed_dim} != "
                          f"config.clip.embed_dim {config.clip.embed_dim}")
    if kind == "clip" and config.model.max_length < config.text.max_length:
        raise ConfigError(f"config.text.max_length {config.text.max_length} exceeds "
                          f"config.model.max_length {config.model.max_length}")


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


def _validate_sample(sample: Any) -> None:
    """config.sample: the defaults of every later sampling run of this stage."""
    try:
        SamplerSettings(sampler=sample.sampler, steps=sample.steps, eta=sample.eta,
                        threshold=sample.threshold, percentile=sample.percentile)
        check_guidance(sample.guidance)
        check_aug_level(sample.aug_level)
    except ValueError as e:
        raise ConfigError(f"config.sample: {e}") from None
    if sample.get("best_of", 1) < 1:
        raise ConfigError(f"config.sample.best_of must be at least 1, got {sample.best_of}")

