"""Config sections into library objects, and the config checks that more than one
stage family needs. Every error names the config field it is about."""

from __future__ import annotations

from typing import Any, TypeVar

from imagen_jax.checks import check_aug_level
from imagen_jax.diffusion import SamplerSettings, check_guidance

T = TypeVar("T")
# config.sample's fields that SamplerSettings takes (guidance, aug_level and best_of
# are arguments of a stage's sample function instead).
SAMPLER_FIELDS = ("sampler", "steps", "eta", "threshold", "percentile")


class ConfigError(ValueError):
    """A config field holds a value the run cannot use."""


def dataclass_from_section(cls: type[T], section: Any, where: str = "config.model") -> T:
    """`cls(**section)`, with lists as tuples (configs spell tuples as lists in JSON);
    an unknown or missing key is a ValueError naming the section."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in section.to_dict().items()}
    try:
        return cls(**fields)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def sampler_settings(sample: Any, prediction: str | None = None,
                     **overrides: Any) -> SamplerSettings:
    """SamplerSettings from config.sample; an override that is not None replaces the
    config's value (command-line options). `prediction` is the stage's parameterisation."""
    unknown = set(overrides) - set(SAMPLER_FIELDS)
    if unknown:
        raise TypeError(f"sampler_settings: unknown overrides {sorted(unknown)}")
    values = {name: sample[name] if overrides.get(name) is None else overrides[name]
              for name in SAMPLER_FIELDS}
    if prediction is not None:
        values["prediction"] = prediction
    return SamplerSettings(**values)


def check_sample_section(sample: Any) -> None:
    """config.sample: the defaults of every later sampling run of a stage."""
    try:
        sampler_settings(sample)
        check_guidance(sample.guidance)
        check_aug_level(sample.aug_level)
    except ValueError as e:
        raise ConfigError(f"config.sample: {e}") from None
    if sample.get("best_of", 1) < 1:
        raise ConfigError(f"config.sample.best_of must be at least 1, got {sample.best_of}")


FROZEN_DTYPES = ("float32", "bfloat16")


def check_frozen_dtype(section: Any, where: str) -> None:
    """A frozen encoder's `dtype` field (absent: float32, as older configs had it)."""
    dtype = section.get("dtype", "float32")
    if dtype not in FROZEN_DTYPES:
        raise ConfigError(f"{where}.dtype: {dtype!r} is not one of {FROZEN_DTYPES}")


def check_super_resolution(config: Any) -> None:
    """A stage conditioned on a low-resolution image: whole upscaling factor, crops
    that keep it whole."""
    low = config.lowres_size
    if low <= 0 or config.image_size % low:
        raise ConfigError(f"config.lowres_size {low} does not divide config.image_size "
                          f"{config.image_size}: the SR factor must be a whole number")
    crop = config.diffusion.train_crop
    if crop and (crop > config.image_size or crop % (config.image_size // low)):
        raise ConfigError(f"config.diffusion.train_crop {crop} must be at most image_size "
                          f"and divisible by the SR factor {config.image_size // low}")

