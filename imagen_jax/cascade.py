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
from imagen_jax.text.tokenizer import check_prompts

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
    """A base stage followed by any number of super-resolution stages; or, with
    `from_image`, super-resolution stages only, which upsample a given image."""

    def __init__(self, text_encoder: TextEncodeFn, stages: Sequence[CascadeStage],
                 from_image: bool = False):
        if not stages:
            raise ValueError("a cascade needs at least one stage")
        if isinstance(stages[0].stage, SuperResolutionStage) and not from_image:
            raise ValueError("the first stage of a cascade must be a base (text -> image) stage "
                             "(or upsample a given image: from_image=True)")
        for i, s in enumerate(stages):
            if (i > 0 or from_image) and not isinstance(s.stage, SuperResolutionStage):
                raise ValueError(f"stage {i} must be a super-resolution stage")
        self.text_encoder = text_encoder
        self.stages = list(stages)
        self.from_image = from_image

    def __call__(self, prompts: Sequence[str], key: jax.Array,
                 progress: Callable[[str], None] | None = None,
                 negative_prompts: Sequence[str] | None = None,
                 lowres: jnp.ndarray | None = None,
                 first_stage_edits: dict | None = None) -> list[jnp.ndarray]:
        """Returns the images of every stage, lowest resolution first, in [-1, 1].

        `negative_prompts` (one per prompt) take the null condition's place in every
        stage's guidance: sampling moves away from them. '' is the null condition.
        `lowres` [B, h, w, 3]: the image a `from_image` cascade upsamples.
        `first_stage_edits`: image-to-image or inpainting of the first stage
        (init_image, inpaint_image, inpaint_mask; see `BaseStage.sample`).
        """
        if self.from_image != (lowres is not None):
            raise ValueError("a cascade of super-resolution stages only needs lowres= (the "
                             "image to upsample)" if self.from_image else
                             "lowres= is for a cascade built with from_image=True")
        if negative_prompts is not None:
            negative_prompts = check_prompts(negative_prompts)  # a str is one prompt
        if negative_prompts is not None and len(negative_prompts) != len(prompts):
            raise ValueError(f"{len(negative_prompts)} negative prompt(s) for "
                             f"{len(prompts)} prompt(s): give one per prompt")
        if negative_prompts is not None and not any(p.strip() for p in negative_prompts):
            negative_prompts = None  # all blank: the null condition, the same program
        shared = self.text_encoder(prompts)
        shared_negative = (self.text_encoder(negative_prompts)
                           if negative_prompts is not None else None)
        outputs = []
        images = lowres
        for i, entry in enumerate(self.stages):
            key, stage_key = jax.random.split(key)
            text, mask = entry.text_encoder(prompts) if entry.text_encoder else shared
            kwargs = dict(settings=entry.sampling.settings, guidance=entry.sampling.guidance)
            if negative_prompts is not None:
                kwargs["negative_text"], kwargs["negative_mask"] = (
                    entry.text_encoder(negative_prompts) if entry.text_encoder
                    else shared_negative)
            if images is not None:
                kwargs.update(lowres=images, aug_level=entry.sampling.aug_level)
            if i == 0 and first_stage_edits:
                kwargs.update(first_stage_edits)
            images = entry.stage.sample(entry.params, text, mask, stage_key, **kwargs)
            outputs.append(images)
            if progress is not None:
                progress(f"stage {i}: {images.shape[1]}x{images.shape[2]}")
        return outputs
