"""Text -> 64 -> 256 -> 1024: sampling through a cascade of stages.

The prompts are encoded once; each stage samples with its own steps, guidance
weight, thresholding and (super-resolution stages) augmentation level, and hands
its images to the next stage as the low-res input. Any number of stages works:
one base stage alone, or a base followed by one or more SR stages.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from imagen_jax.diffusion import SamplerSettings, check_guidance
from imagen_jax.checks import check_aug_level
from imagen_jax.stages import BaseStage, SuperResolutionStage

# prompts -> (embeddings [B, L, D], mask [B, L]); e.g. imagen_jax.text.TextEncoder.
TextEncodeFn = Callable[[Sequence[str]], tuple[jnp.ndarray, jnp.ndarray]]


@dataclasses.dataclass(frozen=True)
class StageSampling:
    """How one stage of the cascade samples."""

    settings: SamplerSettings = SamplerSettings(sampler="ddim", steps=50, threshold="dynamic")
    guidance: float = 5.0
    aug_level: float = 0.0  # SR stages only: noise-conditioning augmentation at sampling

    def __post_init__(self) -> None:
        check_guidance(self.guidance)
        check_aug_level(self.aug_level)


@dataclasses.dataclass
class CascadeStage:
    stage: BaseStage
    params: Any
    sampling: StageSampling = StageSampling()
    # The encoder this stage was trained with, if it differs from the cascade's.
    text_encoder: TextEncodeFn | None = None


class Cascade:
    """A base stage followed by any number of super-resolution stages."""

    def __init__(self, text_encoder: TextEncodeFn, stages: Sequence[CascadeStage]):
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        if isinstance(stages[0].stage, SuperResolutionStage):
            raise ValueError("the first stage of a cascade must be a base (text -> image) stage")
        for i, s in enumerate(stages[1:], start=1):
            if not isinstance(s.stage, SuperResolutionStage):
                raise ValueError(f"stage {i} must be a super-resolution stage")
        self.text_encoder = text_encoder
        self.stages = list(stages)

    def __call__(self, prompts: Sequence[str], key: jax.Array,
                 progress: Callable[[str], None] | None = None) -> list[jnp.ndarray]:
        """Returns the images of every stage, lowest resolution first, in [-1, 1]."""
        shared = self.text_encoder(prompts)
        outputs = []
        images = None
        for i, entry in enumerate(self.stages):
            key, stage_key = jax.random.split(key)
            text, mask = entry.text_encoder(prompts) if entry.text_encoder else shared
            kwargs = dict(settings=entry.sampling.settings, guidance=entry.sampling.guidance)
            if images is not None:
                kwargs.update(lowres=images, aug_level=entry.sampling.aug_level)
            images = entry.stage.sample(entry.params, text, mask, stage_key, **kwargs)
            outputs.append(images)
            if progress is not None:
                progress(f"stage {i}: {images.shape[1]}x{images.shape[2]}")
        return outputs
