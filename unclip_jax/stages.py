"""unCLIP's stages, each trained by imagen_jax's one trainer (`config.stage`):

  unclip.clip          CLIP, contrastively (symmetric InfoNCE over the global batch)
  unclip.prior         diffusion prior: caption -> z_i (x0 objective)
  unclip.decoder64     z_i (+ caption) -> 64x64 image: imagen_jax's U-Net via
                       `unclip_jax.decoder`, CLIP embedding dropped 10%, caption 50%
  unclip.upsample256   64 -> 256, conditioning image blurred; no text, no attention
  unclip.upsample1024  256 -> 1024, conditioning image BSR-degraded

Like Imagen's stages, each owns `init`, `loss(params, batch, key)` and sampling;
the diffusion math, U-Net, super-resolution machinery and trainer all come from
imagen_jax. Prior and decoder batches carry the frozen CLIP's outputs
('image_embed', 'text_embed', 'text', 'text_mask'), which `FrozenCLIP.prepare`
adds inside the train step. Each stage is registered (bottom of this file) under
the name config.stage selects; see imagen_jax/stage_registry.py.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

from imagen_jax.config_sections import (ConfigError, check_frozen_dtype, check_sample_section,
                                        check_super_resolution, dataclass_from_section,
                                        sampler_settings)
from imagen_jax.diffusion import (SamplerSettings, check_guidance, classifier_free_guidance,
                                  ddim_invert, diffusion_loss, drop_condition, negative_condition,
                                  null_condition, sample as run_sampler)
from imagen_jax.diffusion.schedules import CosineSchedule, Schedule, get_schedule
from imagen_jax.nn.unet import UNetConfig
from imagen_jax.stage_registry import StageSpec, register
from imagen_jax.stages import (BaseStage, SamplingInputs, SuperResolutionStage, apply_model,
                               check_batch, downsample, edit_inputs, negative_prompt_condition)
from unclip_jax.clip import CLIP, CLIPConfig, contrastive_loss, normalize
from unclip_jax.conditioning import load_clip_for_scoring, weightless_clip
from unclip_jax.decoder import Decoder, DecoderConfig
from unclip_jax.degrade import DEGRADATIONS, degrade
from unclip_jax.prior import DiffusionPrior, PriorConfig
from unclip_jax.transformer import TransformerConfig

Batch = dict[str, jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class ClipStage:
    clip: CLIPConfig
    image_size: int = 32

    batch_keys = ("images", "text_ids", "text_mask")

    @property
    def model(self) -> CLIP:
        return CLIP(self.clip)

    def init(self, key: jax.Array, text_len: int = 8) -> Any:
        s = self.image_size
        return self.model.init(key, jnp.zeros((1, s, s, 3)), jnp.zeros((1, text_len), jnp.int32),
                               jnp.ones((1, text_len), bool))

    def loss(self, params, batch: Batch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        check_batch(batch, self.batch_keys)
        z_i, z_t, scale = self.model.apply({"params": params}, batch["images"],
                                           batch["text_ids"], batch["text_mask"])
        return contrastive_loss(z_i, z_t, scale)

    def preview(self, params, batch: Batch, key: jax.Array, sample: Any) -> None:
        return None  # CLIP makes no images


@dataclasses.dataclass(frozen=True)
class PriorStage:
    prior: PriorConfig
    schedule: Schedule = CosineSchedule()
    cond_drop_prob: float = 0.1  # caption and z_t dropped together (paper: 10%)

    batch_keys = ("image_embed", "text_embed", "text", "text_mask")

    def __post_init__(self):
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")

    @property
    def model(self) -> DiffusionPrior:
        return DiffusionPrior(self.prior)

    def init(self, key: jax.Array, text_len: int = 8) -> Any:
        e = self.prior.embed_dim
        return self.model.init(key, jnp.zeros((1, e)), jnp.zeros((1,)),
                               jnp.zeros((1, text_len, self.prior.text_dim)),
                               jnp.ones((1, text_len), bool), jnp.zeros((1, e)))

    def to_latent(self, image_embed: jnp.ndarray) -> jnp.ndarray:
        """CLIP z_i -> the diffusion's variable: unit vector * sqrt(E), so that its
        elements have the unit variance the noise schedule assumes."""
        return normalize(image_embed) * math.sqrt(self.prior.embed_dim)

    def _apply(self, params, z, logsnr, cond: dict, key: jax.Array | None = None):
        return apply_model(self.model, params, z, logsnr, cond["text"], cond["text_mask"],
                           cond["text_embed"], key=key)

    def loss(self, params, batch: Batch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        check_batch(batch, self.batch_keys)
        drop_key, loss_key, dropout_key = jax.random.split(key, 3)
        cond = drop_condition({"text": batch["text"], "text_mask": batch["text_mask"].astype(bool),
                               "text_embed": batch["text_embed"]}, drop_key, self.cond_drop_prob)
        key = dropout_key if self.prior.dropout > 0 else None
        model_fn = lambda z, logsnr: self._apply(params, z, logsnr, cond, key)  # noqa: E731
        loss, aux = diffusion_loss(model_fn, self.to_latent(batch["image_embed"]), loss_key,
                                   self.schedule, "x0")
        return loss, {"loss": loss, "mse": jnp.mean(aux["mse"])}

    @functools.partial(jax.jit, static_argnames=("self", "settings", "best_of"))
    def _sample_jit(self, params, text, text_mask, text_embed, key, guidance,
                    settings: SamplerSettings, best_of: int, negative: dict | None = None):
        b = text.shape[0]
        cond = {"text": text, "text_mask": text_mask.astype(bool), "text_embed": text_embed}
        uncond = negative_condition(null_condition(cond), negative)
        tile = lambda t: jax.tree.map(lambda x: jnp.concatenate([x] * best_of), t)  # noqa
        model_fn = lambda z, logsnr, c: self._apply(params, z, logsnr, c)  # noqa: E731
        denoise = classifier_free_guidance(model_fn, tile(cond), tile(uncond), guidance)
        z = run_sampler(denoise, self.schedule, (best_of * b, self.prior.embed_dim), key,
                        settings)
        candidates = normalize(z).reshape(best_of, b, -1)
        # Best-of-n (paper: n = 2): keep the candidate most similar to z_t.
        score = jnp.sum(candidates * normalize(text_embed)[None], axis=-1)
        return jnp.take_along_axis(candidates, jnp.argmax(score, 0)[None, :, None], 0)[0]

    def sample(self, params, text: jnp.ndarray, text_mask: jnp.ndarray,
               text_embed: jnp.ndarray, key: jax.Array, *,
               settings: SamplerSettings = SamplerSettings(sampler="ddpm", steps=64),
               guidance: float = 1.0, best_of: int = 2,
               negative_text: jnp.ndarray | None = None,
               negative_mask: jnp.ndarray | None = None,
               negative_text_embed: jnp.ndarray | None = None) -> jnp.ndarray:
        """Unit-norm z_i [B, E] for the caption's CLIP token states and z_t.

        A negative prompt (its CLIP token states, mask and z_t, all three) replaces
        the null condition in guidance.
        """
        if best_of < 1:
            raise ValueError(f"best_of must be at least 1, got {best_of}")
        check_guidance(guidance)
        negative = negative_prompt_condition(text, negative_text, negative_mask)
        if (negative is None) != (negative_text_embed is None):
            raise ValueError("a negative prompt for the prior needs negative_text=, "
                             "negative_mask= and negative_text_embed= together")
        if negative is not None:  # shapes are checked by negative_condition, by name
            negative["text_embed"] = negative_text_embed
        settings = dataclasses.replace(settings, prediction="x0", threshold="none")
        return self._sample_jit(params, text, text_mask, text_embed, key,
                                jnp.float32(guidance), settings, best_of, negative)

    def preview(self, params, batch: Batch, key: jax.Array, sample: Any) -> None:
        return None  # the prior samples embeddings, not images


@dataclasses.dataclass(frozen=True)
class DecoderStage(BaseStage):
    """CLIP image embedding (+ optional caption) -> image; imagen_jax's base stage with
    the U-Net wrapped by `unclip_jax.decoder.Decoder`."""

    embed_dim: int = 32
    num_tokens: int = 4
    image_embed_drop_prob: float = 0.1
    caption: TransformerConfig | None = None

    batch_keys = ("images", "text", "text_mask", "image_embed")

    @property
    def model(self) -> Decoder:
        return Decoder(DecoderConfig(self.unet, self.embed_dim, self.num_tokens, self.caption))

    @property
    def text_input_dim(self) -> int:
        """Width of the caption states the decoder reads (CLIP's text width)."""
        return self.caption_input_dim or self.unet.text_dim

    caption_input_dim: int = 0  # CLIP text width when a caption transformer sits between

    def _dummy_inputs(self, text_len: int) -> tuple:
        s = self.image_size
        return (jnp.zeros((1, s, s, self.unet.in_channels)), jnp.zeros((1,)),
                jnp.zeros((1, text_len, self.text_input_dim)), jnp.ones((1, text_len), bool),
                jnp.zeros((1, self.embed_dim)))

    def _cond_inputs(self, cond: dict) -> tuple:
        return (cond["text"], cond["text_mask"], cond["image_embed"])

    def _training_cond(self, batch: Batch, images: jnp.ndarray, key: jax.Array) -> dict:
        text_key, embed_key = jax.random.split(key)
        cond = super()._training_cond(batch, images, text_key)  # caption dropped w.p. 0.5
        cond["image_embed"] = drop_condition(batch["image_embed"], embed_key,
                                             self.image_embed_drop_prob)
        return cond

    def _sampling_cond(self, params, text, text_mask, inputs: SamplingInputs
                       ) -> tuple[dict, dict]:
        cond, uncond = super()._sampling_cond(params, text, text_mask, inputs)
        cond["image_embed"] = inputs["image_embed"]
        uncond["image_embed"] = null_condition(inputs["image_embed"])
        return cond, uncond

    def _preview_inputs(self, batch: Batch, sample: Any) -> dict:
        return {"image_embed": batch["image_embed"]}  # reconstructions from z_i

    def sample(self, params, text: jnp.ndarray, text_mask: jnp.ndarray, key: jax.Array, *,
               image_embed: jnp.ndarray | None = None,
               settings: SamplerSettings = SamplerSettings(threshold="dynamic"),
               guidance: float = 3.0, negative_text: jnp.ndarray | None = None,
               negative_mask: jnp.ndarray | None = None,
               negative_image_embed: jnp.ndarray | None = None, **edits: Any) -> jnp.ndarray:
        """Images for CLIP image embeddings [B, E] (and caption states, possibly empty).

        A negative prompt is its caption states (negative_text / negative_mask) and/or
        its image embedding (e.g. the prior's sample for it), guided away from in place
        of the null condition. `edits` as in `BaseStage.sample`: z_init starts the
        reverse process from given noise (e.g. a DDIM inversion), init_image is
        image-to-image, inpaint_image / inpaint_mask inpainting.
        """
        if image_embed is None:
            raise ValueError("decoder sampling needs image_embed= (CLIP image embeddings)")
        check_guidance(guidance)
        if image_embed.shape[0] != text.shape[0]:
            raise ValueError(f"image_embed has batch {image_embed.shape[0]}, text has "
                             f"{text.shape[0]}")
        negative = negative_prompt_condition(text, negative_text, negative_mask) or {}
        if negative_image_embed is not None:  # its shape is checked by negative_condition
            negative["image_embed"] = negative_image_embed
        inputs = SamplingInputs(image_embed=image_embed)
        inputs.update(edit_inputs(self.output_shape(text.shape[0], inputs), negative=negative,
                                  **edits))
        return self._sample_jit(params, text, text_mask, key, jnp.float32(guidance), inputs,
                                self._with_prediction(settings))

    @functools.partial(jax.jit, static_argnames=("self", "steps"))
    def invert(self, params, images: jnp.ndarray, text: jnp.ndarray, text_mask: jnp.ndarray,
               image_embed: jnp.ndarray, steps: int = 50, guidance: float = 1.0) -> jnp.ndarray:
        """DDIM inversion (eta = 0): the x_T from which `sample(z_init=x_T)` with the same
        steps and guidance, and no thresholding, reconstructs `images` under z_i."""
        cond, uncond = self._sampling_cond(params, text, text_mask,
                                           SamplingInputs(image_embed=image_embed))
        model_fn = lambda z, logsnr, c: self._apply(params, z, logsnr, c)  # noqa: E731
        denoise = classifier_free_guidance(model_fn, cond, uncond, guidance)
        return ddim_invert(denoise, self.schedule, images, steps, self.prediction)


@dataclasses.dataclass(frozen=True)
class UpsamplerStage(SuperResolutionStage):
    """Unconditional super-resolution (no caption, no attention) whose conditioning
    image is corrupted by `degradation` in training; trained on random crops a
    quarter of the output size (`train_crop`), applied at full size."""

    degradation: str = "blur"

    batch_keys = ("images",)

    def __post_init__(self):
        super().__post_init__()
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}; expected one of "
                             f"{DEGRADATIONS}")

    def _null_text(self, batch: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        return (jnp.zeros((batch, 1, self.unet.text_dim)), jnp.zeros((batch, 1), bool))

    def _training_cond(self, batch: Batch, images: jnp.ndarray, key: jax.Array) -> dict:
        degrade_key, level_key, noise_key = jax.random.split(key, 3)
        text, mask = self._null_text(images.shape[0])
        lowres = degrade(downsample(images, self.scale), self.degradation, degrade_key)
        level = jax.random.uniform(level_key, (images.shape[0],), maxval=self.max_aug_level)
        noised, aug_logsnr = self.augment_lowres(lowres, level, noise_key)
        return {"text": text, "text_mask": mask, "lowres": noised, "aug_logsnr": aug_logsnr}

    def upsample(self, params, lowres: jnp.ndarray, key: jax.Array, *,
                 settings: SamplerSettings = SamplerSettings(steps=27),
                 aug_level: float = 0.0) -> jnp.ndarray:
        """`lowres` [B, h, w, 3] -> [B, h*scale, w*scale, 3]; DDIM, no guidance."""
        text, mask = self._null_text(lowres.shape[0])
        return self.sample(params, text, mask, key, lowres=lowres, aug_level=aug_level,
                           settings=settings, guidance=1.0)

    def preview(self, params, batch: Batch, key: jax.Array, sample: Any) -> jnp.ndarray:
        """The batch's images, downsampled, then upsampled again."""
        return self.upsample(params, downsample(batch["images"], self.scale), key,
                             settings=sampler_settings(sample), aug_level=sample.aug_level)


def _schedule(config: Any) -> Schedule:
    return get_schedule(config.diffusion.schedule, resolution=max(config.image_size, 64))


def clip_stage_from_config(config: Any) -> ClipStage:
    from unclip_jax.conditioning import clip_config_from_run
    return ClipStage(clip_config_from_run(config), image_size=config.image_size)


def prior_stage_from_config(config: Any) -> PriorStage:
    return PriorStage(dataclass_from_section(PriorConfig, config.model),
                      schedule=_schedule(config), cond_drop_prob=config.diffusion.cond_drop_prob)


def _unet_fields(config: Any) -> dict:
    d = config.diffusion
    return dict(unet=dataclass_from_section(UNetConfig, config.model),
                image_size=config.image_size, schedule=_schedule(config),
                prediction=d.prediction, min_snr_gamma=d.min_snr_gamma or None)


def decoder_stage_from_config(config: Any) -> DecoderStage:
    d, cap = config.diffusion, config.caption
    caption = (TransformerConfig(cap.width, cap.layers, cap.heads, activation="gelu",
                                 dtype=config.model.get("dtype", "float32"))
               if cap.layers else None)
    return DecoderStage(**_unet_fields(config), cond_drop_prob=d.cond_drop_prob,
                        embed_dim=config.clip.embed_dim,
                        image_embed_drop_prob=d.image_embed_drop_prob, caption=caption,
                        caption_input_dim=config.clip.text_width if caption else 0)


def upsampler_stage_from_config(config: Any) -> UpsamplerStage:
    d = config.diffusion
    return UpsamplerStage(**_unet_fields(config), cond_drop_prob=1.0,
                          lowres_size=config.lowres_size, max_aug_level=d.max_aug_level,
                          train_crop=d.train_crop or None, degradation=d.degradation)


class TokenizerOnly:
    """The clip stage's conditioner: captions are tokenised, nothing is frozen."""

    params = None

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def prepare(self, params: Any, batch: dict) -> dict:
        return batch

    def abstract_params(self) -> None:
        return None


def clip_conditioner(config: Any, workdir: str, captions) -> TokenizerOnly:
    """CLIP trains on caption ids from the offline tokenizer of its captions."""
    from imagen_jax.text.from_config import offline_tokenizer
    return TokenizerOnly(offline_tokenizer(workdir, config.text.max_length,
                                           config.text.vocab_size, captions))


def frozen_clip_conditioner(config: Any, workdir: str, captions) -> Any:
    """The prior and the decoder read the frozen CLIP's embeddings of each batch."""
    from unclip_jax.conditioning import load_frozen_clip
    frozen = load_frozen_clip(config.clip, config.text.max_length)
    if frozen.config.embed_dim != config.clip.embed_dim:
        raise ValueError(f"config.clip.embed_dim {config.clip.embed_dim} != the CLIP "
                         f"checkpoint's {frozen.config.embed_dim}")
    return frozen


# -- config checks: widths that must agree between a stage and the CLIP it reads ------

def check_clip_config(config: Any) -> None:
    """CLIP is trained, never sampled: config.sample is not checked."""
    if config.model.max_length < config.text.max_length:
        raise ConfigError(f"config.text.max_length {config.text.max_length} exceeds "
                          f"config.model.max_length {config.model.max_length}")


def _check_clip_source(config: Any, text_dim: int) -> None:
    check_frozen_dtype(config.clip, "config.clip")
    if bool(config.clip.workdir) == bool(config.clip.checkpoint):
        raise ConfigError("config.clip: set exactly one of clip.workdir (a trained "
                          "unclip.clip run) and clip.checkpoint (a Hugging Face CLIP dir)")
    if text_dim != config.clip.text_width:
        raise ConfigError(f"config.model.text_dim {text_dim} != config.clip.text_width "
                          f"{config.clip.text_width} (the CLIP token states it reads)")


def check_prior_config(config: Any) -> None:
    check_sample_section(config.sample)
    _check_clip_source(config, config.model.text_dim)
    if config.model.embed_dim != config.clip.embed_dim:
        raise ConfigError(f"config.model.embed_dim {config.model.embed_dim} != "
                          f"config.clip.embed_dim {config.clip.embed_dim}")


def check_decoder_config(config: Any) -> None:
    check_sample_section(config.sample)
    if config.caption.layers and config.caption.width != config.model.text_dim:
        raise ConfigError(f"config.caption.width {config.caption.width} != "
                          f"config.model.text_dim {config.model.text_dim}")
    # With a caption transformer between, the decoder reads CLIP's states through it.
    _check_clip_source(config, config.clip.text_width if config.caption.layers
                       else config.model.text_dim)


def check_upsampler_config(config: Any) -> None:
    check_sample_section(config.sample)
    check_super_resolution(config)


register(StageSpec("unclip.clip", clip_stage_from_config, check_clip_config, clip_conditioner,
                   image_text_scorer=load_clip_for_scoring))
register(StageSpec("unclip.prior", prior_stage_from_config, check_prior_config,
                   frozen_clip_conditioner, weightless_clip))
register(StageSpec("unclip.decoder64", decoder_stage_from_config, check_decoder_config,
                   frozen_clip_conditioner, weightless_clip))
for _name in ("unclip.upsample256", "unclip.upsample1024"):  # images only: no conditioner
    register(StageSpec(_name, upsampler_stage_from_config, check_upsampler_config))
