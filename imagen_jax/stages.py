"""Imagen's stages: the text -> 64x64 base model and the super-resolution models.

A stage owns its U-Net, its training loss and its sampling function; the trainer
and the cascade know nothing else about it. Text arrives as precomputed frozen T5
embeddings ([B, L, D] plus a [B, L] mask): the encoder is never part of a stage's
parameters, so no gradient can reach it.

Batches are dicts: {'images': [B, H, W, 3] in [-1, 1], 'text': [B, L, D],
'text_mask': [B, L]}, plus for SR stages an optional 'lowres' [B, h, w, 3] (else
the stage downsamples 'images'). Parameters are the plain (unboxed) 'params'
collection. Each stage is registered (bottom of this file) under the name that
config.stage selects; see imagen_jax/stage_registry.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypedDict

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.checks import check_aug_level
from imagen_jax.config_sections import (ConfigError, check_frozen_dtype, check_sample_section,
                                        check_super_resolution, dataclass_from_section,
                                        sampler_settings)
from imagen_jax.diffusion import (Inpaint, SamplerSettings, check_guidance,
                                  classifier_free_guidance, diffusion_loss, drop_condition,
                                  negative_condition, null_condition, sample as run_sampler)
from imagen_jax.diffusion.schedules import CosineSchedule, Schedule, alpha_sigma, get_schedule
from imagen_jax.nn.unet import UNet, UNetConfig
from imagen_jax.stage_registry import StageSpec, register

Batch = dict[str, jnp.ndarray]


class SamplingInputs(TypedDict, total=False):
    """What a stage's sampler reads besides the text (a pytree argument of the jitted
    sampler, so its arrays are traced and its keys fixed per stage)."""

    lowres: jnp.ndarray  # SR: the image to upsample [B, h, w, C]
    aug_level: jnp.ndarray  # SR: noise-conditioning augmentation level in [0, 1]
    aug_key: jax.Array  # SR: the augmentation noise's key
    image_embed: jnp.ndarray  # unCLIP decoder: CLIP image embeddings [B, E]
    z_init: jnp.ndarray  # start of the reverse process instead of fresh noise
    negative: dict  # a negative prompt's condition, in place of null in guidance
    init_image: jnp.ndarray  # image-to-image: the image noised to t = strength
    inpaint_image: jnp.ndarray  # inpainting: the image whose unmasked pixels are kept
    inpaint_mask: jnp.ndarray  # inpainting: [B, H, W, 1], 1 = generate, 0 = keep


def edit_inputs(shape: tuple[int, ...], *, negative: dict | None = None,
                init_image: jnp.ndarray | None = None,
                inpaint_image: jnp.ndarray | None = None,
                inpaint_mask: jnp.ndarray | None = None,
                z_init: jnp.ndarray | None = None) -> SamplingInputs:
    """The sampler inputs of negative prompts, image-to-image and inpainting, checked
    against the output `shape` [B, H, W, C] (one line naming the bad argument)."""
    inputs = SamplingInputs()
    if negative:
        inputs["negative"] = negative
    for name, image in (("init_image", init_image), ("inpaint_image", inpaint_image),
                        ("z_init", z_init)):
        if image is not None:
            if tuple(image.shape) != tuple(shape):
                raise ValueError(f"{name} has shape {tuple(image.shape)}, the samples have "
                                 f"{tuple(shape)}")
            inputs[name] = jnp.asarray(image, jnp.float32)
    if (inpaint_image is None) != (inpaint_mask is None):
        raise ValueError("inpainting needs both inpaint_image= and inpaint_mask=")
    if inpaint_mask is not None:
        mask = jnp.asarray(inpaint_mask, jnp.float32)
        if mask.ndim == len(shape) - 1:
            mask = mask[..., None]
        if tuple(mask.shape) not in (tuple(shape[:-1]) + (1,), tuple(shape)):
            raise ValueError(f"inpaint_mask has shape {tuple(inpaint_mask.shape)}; expected "
                             f"{tuple(shape[:-1])} (1 = generate, 0 = keep)")
        inputs["inpaint_mask"] = mask
    return inputs


def negative_prompt_condition(text: jnp.ndarray, negative_text: jnp.ndarray | None,
                  negative_mask: jnp.ndarray | None) -> dict | None:
    """A negative prompt's encoding as the unconditional half's text (None: null)."""
    if negative_text is None and negative_mask is None:
        return None
    if negative_text is None or negative_mask is None:
        raise ValueError("a negative prompt needs both negative_text= and negative_mask=")
    if negative_text.shape != text.shape:
        raise ValueError(f"negative_text has shape {tuple(negative_text.shape)}, the prompt's "
                         f"text has {tuple(text.shape)} (encode both with the same encoder)")
    return {"text": negative_text, "text_mask": jnp.asarray(negative_mask).astype(bool)}


def random_crop(images: jnp.ndarray, size: int, key: jax.Array) -> jnp.ndarray:
    """An independent random size x size crop of each image in the batch."""
    b, h, w, c = images.shape
    if size > min(h, w):
        raise ValueError(f"crop size {size} is larger than the images ({h}x{w})")
    ky, kx = jax.random.split(key)
    ys = jax.random.randint(ky, (b,), 0, h - size + 1)
    xs = jax.random.randint(kx, (b,), 0, w - size + 1)
    crop = lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (size, size, c))
    return jax.vmap(crop)(images, ys, xs)


def downsample(images: jnp.ndarray, factor: int) -> jnp.ndarray:
    """Anti-aliased downsampling by an integer factor (how low-res inputs are made)."""
    b, h, w, c = images.shape
    return jax.image.resize(images, (b, h // factor, w // factor, c), "linear", antialias=True)


def apply_model(model: nn.Module, params: Any, *inputs: Any,
                key: jax.Array | None = None) -> jnp.ndarray:
    """`model` applied to `inputs`; with a key, in training mode (dropout on)."""
    rngs = {"dropout": key} if key is not None else None
    return model.apply({"params": params}, *inputs, deterministic=key is None, rngs=rngs)


def check_batch(batch: Batch, keys: tuple[str, ...]) -> None:
    """ValueError naming the keys a stage needs that `batch` lacks."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise ValueError(f"batch is missing {missing}; it has {sorted(batch)}")


@dataclasses.dataclass(frozen=True)
class BaseStage:
    """Text -> image at `image_size` (64 in the paper; any size the U-Net divides)."""

    unet: UNetConfig
    image_size: int = 64
    schedule: Schedule = CosineSchedule()
    prediction: str = "eps"
    cond_drop_prob: float = 0.1
    min_snr_gamma: float | None = None

    batch_keys = ("images", "text", "text_mask")  # what `loss` reads from a batch

    def __post_init__(self):
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        if self.image_size % self.unet.downsample_factor:
            raise ValueError(f"image_size {self.image_size} is not divisible by the U-Net's "
                             f"downsampling factor {self.unet.downsample_factor}")

    @property
    def model(self) -> UNet:
        return UNet(self.unet)

    def init(self, key: jax.Array, text_len: int = 8) -> Any:
        """Boxed variables (with logical axis names) for a batch of one."""
        return self.model.init(key, *self._dummy_inputs(text_len))

    def _dummy_inputs(self, text_len: int) -> tuple:
        s = self.image_size
        return (jnp.zeros((1, s, s, self.unet.in_channels)), jnp.zeros((1,)),
                jnp.zeros((1, text_len, self.unet.text_dim)), jnp.ones((1, text_len), bool))

    def _cond_inputs(self, cond: dict) -> tuple:
        """The model's inputs after (z, logsnr), from a condition dict."""
        return (cond["text"], cond["text_mask"], cond.get("lowres"), cond.get("aug_logsnr"))

    def _apply(self, params, z, logsnr, cond: dict, key: jax.Array | None = None):
        return apply_model(self.model, params, z, logsnr, *self._cond_inputs(cond), key=key)

    def _training_cond(self, batch: Batch, images: jnp.ndarray, key: jax.Array) -> dict:
        # The null condition equals what an empty prompt encodes to.
        return drop_condition({"text": batch["text"], "text_mask": batch["text_mask"].astype(bool)},
                              key, self.cond_drop_prob)

    def _training_images(self, batch: Batch, key: jax.Array) -> jnp.ndarray:
        return batch["images"]

    def loss(self, params, batch: Batch, key: jax.Array) -> tuple[jnp.ndarray, dict]:
        """Denoising loss on a batch; returns (loss, metrics)."""
        check_batch(batch, self.batch_keys)
        crop_key, cond_key, loss_key, dropout_key = jax.random.split(key, 4)
        images = self._training_images(batch, crop_key)
        cond = self._training_cond(batch, images, cond_key)
        use_dropout = self.unet.dropout > 0
        model_fn = lambda z, logsnr: self._apply(params, z, logsnr, cond,
                                                 dropout_key if use_dropout else None)
        loss, aux = diffusion_loss(model_fn, images, loss_key, self.schedule, self.prediction,
                                   self.min_snr_gamma)
        return loss, {"loss": loss, "mse": jnp.mean(aux["mse"])}

    def _sampling_cond(self, params, text, text_mask, inputs: SamplingInputs
                       ) -> tuple[dict, dict]:
        cond = {"text": text, "text_mask": text_mask.astype(bool)}
        return cond, null_condition(cond)

    def output_shape(self, batch: int, inputs: SamplingInputs) -> tuple[int, int, int, int]:
        s = self.image_size
        return (batch, s, s, self.unet.out_channels)

    @functools.partial(jax.jit, static_argnames=("self", "settings"))
    def _sample_jit(self, params, text, text_mask, key, guidance, inputs: SamplingInputs,
                    settings: SamplerSettings):
        cond, uncond = self._sampling_cond(params, text, text_mask, inputs)
        uncond = negative_condition(uncond, inputs.get("negative"))
        model_fn = lambda z, logsnr, c: self._apply(params, z, logsnr, c)
        denoise_fn = classifier_free_guidance(model_fn, cond, uncond, guidance)
        inpaint = (Inpaint(inputs["inpaint_image"], inputs["inpaint_mask"])
                   if "inpaint_image" in inputs else None)
        return run_sampler(denoise_fn, self.schedule, self.output_shape(text.shape[0], inputs),
                           key, settings, z_init=inputs.get("z_init"),
                           init_image=inputs.get("init_image"), inpaint=inpaint)

    def _with_prediction(self, settings: SamplerSettings) -> SamplerSettings:
        """`settings` with this stage's parameterisation (eps / v / x0)."""
        if settings.prediction == self.prediction:
            return settings
        return dataclasses.replace(settings, prediction=self.prediction)

    def preview(self, params, batch: Batch, key: jax.Array, sample: Any) -> jnp.ndarray:
        """Images for a prepared batch's captions, sampled as config.sample says."""
        return self.sample(params, batch["text"], batch["text_mask"], key,
                           settings=sampler_settings(sample), guidance=sample.guidance,
                           **self._preview_inputs(batch, sample))

    def _preview_inputs(self, batch: Batch, sample: Any) -> dict:
        """Keyword arguments of `sample` that `preview` takes from the batch."""
        return {}

    def sample(self, params, text: jnp.ndarray, text_mask: jnp.ndarray, key: jax.Array, *,
               settings: SamplerSettings = SamplerSettings(threshold="dynamic"),
               guidance: float = 5.0, negative_text: jnp.ndarray | None = None,
               negative_mask: jnp.ndarray | None = None, **edits: Any) -> jnp.ndarray:
        """Images [B, S, S, C] for text embeddings [B, L, D]; guidance w (1 = none).

        negative_text / negative_mask: a negative prompt's encoding (same encoder),
        guided away from instead of the null condition. `edits` (see `edit_inputs`):
        z_init (the initial noise), init_image (image-to-image, with
        settings.strength), inpaint_image and inpaint_mask (1 = generate, 0 = keep).
        """
        check_guidance(guidance)
        negative = negative_prompt_condition(text, negative_text, negative_mask)
        inputs = edit_inputs(self.output_shape(text.shape[0], SamplingInputs()),
                             negative=negative, **edits)
        return self._sample_jit(params, text, text_mask, key, jnp.float32(guidance),
                                inputs, self._with_prediction(settings))


@dataclasses.dataclass(frozen=True)
class SuperResolutionStage(BaseStage):
    """Low-res image + text -> image `image_size`, with noise-conditioning augmentation.

    Training (Imagen section 2.4): the low-res image (the batch's images downsampled
    to `lowres_size`) is corrupted by the forward process at an augmentation level
    a ~ U(0, max_aug_level) [the paper does not give the distribution; uniform as in
    lucidrains' implementation], and the model is told a (as its log-SNR). At sampling,
    the level is a user parameter (default 0: no corruption).

    `train_crop`: train on random crops of this side (the paper trains 256 -> 1024
    on 256 crops with the matching 64 low-res crops); the U-Net is fully
    convolutional, so sampling runs at the full `image_size`.
    """

    lowres_size: int = 16
    aug_schedule: Schedule = CosineSchedule()
    max_aug_level: float = 0.5
    train_crop: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.unet.lowres_cond or not self.unet.noise_aug_cond:
            raise ValueError("a super-resolution U-Net needs lowres_cond=True and "
                             "noise_aug_cond=True")
        if self.image_size % self.lowres_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of lowres_size "
                             f"{self.lowres_size}")
        if not 0.0 <= self.max_aug_level <= 1.0:
            raise ValueError(f"max_aug_level must be in [0, 1], got {self.max_aug_level}")
        if self.train_crop is not None and (self.train_crop % self.scale or
                                            self.train_crop % self.unet.downsample_factor):
            raise ValueError(f"train_crop {self.train_crop} must be divisible by the "
                             f"upscaling factor {self.scale} and the U-Net's "
                             f"{self.unet.downsample_factor}")

    @property
    def scale(self) -> int:
        return self.image_size // self.lowres_size

    def _dummy_inputs(self, text_len: int) -> tuple:
        low = self.lowres_size
        return super()._dummy_inputs(text_len) + (
            jnp.zeros((1, low, low, self.unet.in_channels)), jnp.zeros((1,)))

    def augment_lowres(self, lowres: jnp.ndarray, aug_level: jnp.ndarray,
                       key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Noises `lowres` to level(s) `aug_level` in [0, 1]; returns (noised, aug_logsnr)."""
        aug_level = jnp.broadcast_to(jnp.asarray(aug_level, jnp.float32), (lowres.shape[0],))
        aug_logsnr = self.aug_schedule(aug_level)
        alpha, sigma = alpha_sigma(aug_logsnr[:, None, None, None])
        noise = jax.random.normal(key, lowres.shape, lowres.dtype)
        return alpha * lowres + sigma * noise, aug_logsnr

    def _training_images(self, batch: Batch, key: jax.Array) -> jnp.ndarray:
        images = batch["images"]
        if self.train_crop is not None and images.shape[1] > self.train_crop:
            images = random_crop(images, self.train_crop, key)
        return images

    def _training_cond(self, batch: Batch, images: jnp.ndarray, key: jax.Array) -> dict:
        text_key, level_key, noise_key = jax.random.split(key, 3)
        cond = super()._training_cond(batch, images, text_key)
        if "lowres" in batch and batch["images"].shape == images.shape:
            lowres = batch["lowres"]  # made by the input pipeline from the same image
        else:  # no low-res in the batch, or the stage cropped the images itself
            lowres = downsample(images, self.scale)
        level = jax.random.uniform(level_key, (images.shape[0],), maxval=self.max_aug_level)
        cond["lowres"], cond["aug_logsnr"] = self.augment_lowres(lowres, level, noise_key)
        return cond

    def _sampling_cond(self, params, text, text_mask, inputs: SamplingInputs
                       ) -> tuple[dict, dict]:
        cond, uncond = super()._sampling_cond(params, text, text_mask, inputs)
        lowres, aug_logsnr = self.augment_lowres(inputs["lowres"], inputs["aug_level"],
                                                 inputs["aug_key"])
        for c in (cond, uncond):  # the low-res image conditions both halves of CFG
            c["lowres"], c["aug_logsnr"] = lowres, aug_logsnr
        return cond, uncond

    def output_shape(self, batch: int, inputs: SamplingInputs) -> tuple[int, int, int, int]:
        _, h, w, _ = inputs["lowres"].shape
        return (batch, h * self.scale, w * self.scale, self.unet.out_channels)

    def sample(self, params, text: jnp.ndarray, text_mask: jnp.ndarray, key: jax.Array, *,
               lowres: jnp.ndarray | None = None, aug_level: float = 0.0,
               settings: SamplerSettings = SamplerSettings(threshold="dynamic"),
               guidance: float = 5.0, negative_text: jnp.ndarray | None = None,
               negative_mask: jnp.ndarray | None = None, **edits: Any) -> jnp.ndarray:
        """Upsamples `lowres` [B, h, w, C] by `scale`, any h and w (fully convolutional).

        `aug_level` in [0, 1] corrupts the low-res input as in training (0 = clean;
        the paper finds 0.1-0.3 gives the best-looking samples). Negative prompts and
        `edits` (at the output size) as in `BaseStage.sample`.
        """
        if lowres is None:
            raise ValueError("super-resolution sampling needs lowres=")
        check_aug_level(aug_level)
        check_guidance(guidance)
        if lowres.shape[0] != text.shape[0]:
            raise ValueError(f"lowres has batch {lowres.shape[0]}, text has {text.shape[0]}")
        key, aug_key = jax.random.split(key)
        inputs = SamplingInputs(lowres=lowres, aug_level=jnp.float32(aug_level),
                                aug_key=aug_key)
        negative = negative_prompt_condition(text, negative_text, negative_mask)
        inputs.update(edit_inputs(self.output_shape(text.shape[0], inputs), negative=negative,
                                  **edits))
        return self._sample_jit(params, text, text_mask, key, jnp.float32(guidance), inputs,
                                self._with_prediction(settings))

    def _preview_inputs(self, batch: Batch, sample: Any) -> dict:
        lowres = batch["lowres"] if "lowres" in batch else downsample(batch["images"],
                                                                      self.scale)
        return {"lowres": lowres, "aug_level": sample.aug_level}


SAMPLING_DTYPES = ("float32", "bfloat16")


def with_sampling_dtype(stage: Any, params: Any, dtype: str) -> tuple[Any, Any]:
    """(stage, params) that sample in `dtype`: the network's activations (its config's
    compute dtype: the U-Net's, or the prior transformer's) and its floating-point
    parameters are cast; the sampler's own arithmetic (z, x0, each update) and the
    network's output stay float32. 'float32' returns them unchanged."""
    if dtype not in SAMPLING_DTYPES:
        raise ValueError(f"sampling dtype must be one of {SAMPLING_DTYPES}, got {dtype!r}")
    if dtype == "float32":
        return stage, params
    for field in ("unet", "prior"):  # the stage's network config, whichever it has
        config = getattr(stage, field, None)
        if config is not None and hasattr(config, "dtype"):
            stage = dataclasses.replace(stage, **{field: dataclasses.replace(config,
                                                                             dtype=dtype)})
    cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa
    return stage, jax.tree.map(cast, params)


def unbox(variables: Any) -> Any:
    """The plain 'params' collection of boxed `init` output."""
    return nn.unbox(variables)["params"]


def conditioner_from_config(config: Any, workdir: str, captions) -> Any:
    """The frozen T5 that turns caption ids into embeddings inside the train step (None
    when the data carries cached embeddings). `captions()` gives the offline
    vocabulary's corpus."""
    if config.data.embedding_cache:
        return None
    from imagen_jax.text.from_config import text_encoder_from_config
    return text_encoder_from_config(config.text, workdir, captions)


def weightless_text_encoder(config: Any) -> Any:
    """The frozen T5 the config names, without weights: T5 v1.1 XXL for a checkpoint
    (paper configs), the random T5's size offline; None with cached embeddings."""
    if config.data.embedding_cache:
        return None
    import types
    from imagen_jax.nn.t5 import T5_V1_1_XXL, T5Config
    from imagen_jax.text.encoder import TextEncoder
    text = config.text
    arch = T5_V1_1_XXL if text.checkpoint else text.random_t5.to_dict()
    t5 = T5Config(**arch, dtype=jnp.dtype(text.get("dtype", "float32")))
    return TextEncoder(t5, None, types.SimpleNamespace(vocab_size=t5.vocab_size,
                                                       max_length=text.max_length))


def _common_fields(config: Any) -> dict:
    d = config.diffusion
    return dict(unet=dataclass_from_section(UNetConfig, config.model),
                image_size=config.image_size,
                schedule=get_schedule(d.schedule, resolution=config.image_size),
                prediction=d.prediction, cond_drop_prob=d.cond_drop_prob,
                min_snr_gamma=d.min_snr_gamma or None)


def base_stage_from_config(config: Any) -> BaseStage:
    return BaseStage(**_common_fields(config))


def sr_stage_from_config(config: Any) -> SuperResolutionStage:
    d = config.diffusion
    return SuperResolutionStage(**_common_fields(config), lowres_size=config.lowres_size,
                                max_aug_level=d.max_aug_level, train_crop=d.train_crop or None)


def check_base_config(config: Any) -> None:
    check_sample_section(config.sample)
    check_frozen_dtype(config.text, "config.text")
    if not config.text.checkpoint and config.text.random_t5.d_model != config.model.text_dim:
        raise ConfigError(f"config.text.random_t5.d_model {config.text.random_t5.d_model} != "
                          f"config.model.text_dim {config.model.text_dim}")


def check_sr_config(config: Any) -> None:
    check_base_config(config)
    check_super_resolution(config)


register(StageSpec("imagen.base64", base_stage_from_config, check_base_config,
                   conditioner_from_config, weightless_text_encoder))
for _name in ("imagen.sr256", "imagen.sr1024"):
    register(StageSpec(_name, sr_stage_from_config, check_sr_config, conditioner_from_config,
                       weightless_text_encoder))
