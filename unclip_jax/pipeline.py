"""The unCLIP stack at sampling time, and its latent-space operations.

    text -> CLIP text (z_t, token states) -> prior -> z_i -> decoder 64 -> upsamplers

Operations (paper section 3):
  - `generate`: the whole stack from captions, optionally away from negative prompts
    (the prior and the decoder guide away from their encodings, and the decoder from
    the prior's embedding of them, instead of from the null condition).
  - `invert` / `reconstruct`: DDIM inversion (eta = 0) of an image under the decoder
    to the x_T from which (z_i, x_T) decodes back to it: the bipartite latent.
  - `variations`: decode an image's bipartite latent (z_i, x_T) with DDIM eta > 0,
    as the paper does (eta = 0 would give the image back); noise='fresh' decodes z_i
    from fresh noise instead.
  - `interpolate`: slerp between two images' z_i, with x_T fixed, slerped or fresh.
  - `text_diff`: move an image's z_i toward a caption change, z_d = norm(z_t - z_t0),
    decoding slerp(z_i, z_d, theta) from the image's inverted x_T (fixed for every
    theta; DDIM eta = 0), so theta = 0 gives the image back; or from fresh noise.

Every stage comes from its training workdir (`load_pipeline`); the CLIP is the one
the decoder was trained on (its config's `clip` section).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.config_sections import sampler_settings
from imagen_jax.diffusion import SamplerSettings, check_guidance, check_steps
from imagen_jax.text.tokenizer import check_prompts
from unclip_jax.clip import normalize
from unclip_jax.conditioning import FrozenCLIP, load_frozen_clip
from unclip_jax.latents import apply_text_diff, slerp, text_diff
from unclip_jax.stages import DecoderStage, PriorStage, UpsamplerStage

INTERPOLATE_NOISE = ("fixed", "slerp", "fresh")
EDIT_NOISE = ("inverted", "fresh")  # variations' and text diffs' x_T


@dataclasses.dataclass
class TrainedStage:
    """A trained stage, its params, and how to sample it."""

    stage: Any
    params: Any
    settings: SamplerSettings
    guidance: float = 1.0

    def __post_init__(self) -> None:
        check_guidance(self.guidance)


@dataclasses.dataclass
class UnclipPipeline:
    clip: FrozenCLIP
    prior: TrainedStage | None
    decoder: TrainedStage
    upsamplers: list[TrainedStage] = dataclasses.field(default_factory=list)
    best_of: int = 2
    # The decoder also reads the caption when one is given (paper: dropped 50% in
    # training, so it works with and without).
    decode_with_caption: bool = True

    # -- building blocks ---------------------------------------------------------------

    def _caption(self, prompts: Sequence[str] | None, batch: int):
        prompts = [""] * batch if prompts is None or not self.decode_with_caption \
            else check_prompts(prompts)
        _, states, mask = self.clip.encode_prompts(prompts)
        return states, mask

    def _encode(self, prompts: Sequence[str]) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """(z_t, token states, mask) of prompts, with the null condition (all zeros, as
        a dropped caption in training) for blank ones: a blank negative prompt is no
        negative prompt."""
        prompts = check_prompts(prompts)
        z_t, states, mask = self.clip.encode_prompts(prompts)
        blank = jnp.asarray([not p.strip() for p in prompts])
        zero = lambda x: jnp.where(blank.reshape((-1,) + (1,) * (x.ndim - 1)),  # noqa: E731
                                   jnp.zeros_like(x), x)
        return zero(z_t), zero(states), zero(mask)

    def image_embeds_from_text(self, prompts: Sequence[str], key: jax.Array,
                               negative_prompts: Sequence[str] | None = None) -> jnp.ndarray:
        """Unit z_i [B, E] sampled by the prior (best-of-n by similarity to z_t), guided
        away from `negative_prompts` (one per prompt) if given."""
        if self.prior is None:
            raise ValueError("this pipeline has no prior; load one to generate from text")
        # check_prompts: a str is one prompt (list() would split it into characters).
        z_t, states, mask = self.clip.encode_prompts(check_prompts(prompts))
        negative = {}
        if negative_prompts is not None:
            neg_z, neg_states, neg_mask = self._encode(negative_prompts)
            negative = dict(negative_text=neg_states, negative_mask=neg_mask,
                            negative_text_embed=neg_z)
        p = self.prior
        return p.stage.sample(p.params, states, mask, z_t, key, settings=p.settings,
                              guidance=p.guidance, best_of=self.best_of, **negative)

    def image_embeds_from_images(self, images: jnp.ndarray) -> jnp.ndarray:
        return normalize(self.clip.encode_images(images))

    def decode(self, image_embed: jnp.ndarray, key: jax.Array, *,
               prompts: Sequence[str] | None = None, z_init: jnp.ndarray | None = None,
               upsample: bool = True, settings: SamplerSettings | None = None,
               negative: dict | None = None, **edits: Any) -> list[jnp.ndarray]:
        """Images for z_i [B, E]: [decoder output, upsampled ...]. `negative`: the
        decoder's negative_text / negative_mask / negative_image_embed; `edits`:
        init_image, inpaint_image, inpaint_mask (see `BaseStage.sample`)."""
        d = self.decoder
        text, mask = self._caption(prompts, image_embed.shape[0])
        key, *up_keys = jax.random.split(key, 1 + len(self.upsamplers))
        if z_init is not None:
            edits["z_init"] = z_init
        images = d.stage.sample(d.params, text, mask, key, image_embed=image_embed,
                                settings=settings or d.settings, guidance=d.guidance,
                                **(negative or {}), **edits)
        outputs = [images]
        if upsample:
            for up, k in zip(self.upsamplers, up_keys):
                images = up.stage.upsample(up.params, images, k, settings=up.settings)
                outputs.append(images)
        return outputs

    def upsample(self, images: jnp.ndarray, key: jax.Array, aug_level: float = 0.0
                 ) -> list[jnp.ndarray]:
        """A user's images [B, h, w, 3] through every upsampler: [each stage's output]."""
        from imagen_jax.checks import check_aug_level
        check_aug_level(aug_level)
        outputs = []
        for up, k in zip(self.upsamplers, jax.random.split(key, len(self.upsamplers))):
            images = up.stage.upsample(up.params, images, k, settings=up.settings,
                                       aug_level=aug_level)
            outputs.append(images)
        return outputs

    # -- operations ----------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], key: jax.Array,
                 negative_prompts: Sequence[str] | None = None) -> list[jnp.ndarray]:
        """text -> prior -> decoder -> upsamplers; one image per prompt per stage.

        `negative_prompts` (one per prompt; '' = none): the prior guides away from
        their CLIP encodings, and the decoder from their captions and from the
        prior's image embeddings of them (sampled with their own key), in place of
        the null condition.
        """
        prior_key, decode_key = jax.random.split(key)
        negative = None
        if negative_prompts is not None:
            negative_prompts = check_prompts(negative_prompts)
            if len(negative_prompts) != len(check_prompts(prompts)):
                raise ValueError(f"{len(negative_prompts)} negative prompt(s) for "
                                 f"{len(prompts)} prompt(s): give one per prompt")
            if not any(p.strip() for p in negative_prompts):
                negative_prompts = None  # all blank: the null condition, the same program
        z_i = self.image_embeds_from_text(prompts, prior_key, negative_prompts)
        if negative_prompts is not None:
            negative = self._decoder_negative(negative_prompts,
                                              jax.random.fold_in(prior_key, 1))
        return self.decode(z_i, decode_key, prompts=prompts, negative=negative)

    def _decoder_negative(self, negative_prompts: list[str], key: jax.Array) -> dict:
        """The decoder's unconditional half for negative prompts: their captions and the
        prior's z_i for them (zeros, the null condition, for blank ones)."""
        blank = jnp.asarray([not p.strip() for p in negative_prompts])[:, None]
        z_neg = jnp.where(blank, 0.0, self.image_embeds_from_text(negative_prompts, key))
        negative = {"negative_image_embed": z_neg}
        if self.decode_with_caption:
            _, states, mask = self._encode(negative_prompts)
            negative.update(negative_text=states, negative_mask=mask)
        return negative

    def variations(self, images: jnp.ndarray, num: int, key: jax.Array, *,
                   noise: str = "inverted", eta: float = 0.5, steps: int | None = None
                   ) -> list[jnp.ndarray]:
        """`num` decodings of each image: [B * num, ...] ordered image by image.

        noise='inverted' (the paper's variations): each image's bipartite latent (z_i,
        x_T from DDIM inversion) decoded with DDIM `eta` > 0, which moves away from the
        image as eta grows (eta = 0 reconstructs it). noise='fresh': z_i decoded from
        fresh noise with the decoder's own sampler.
        """
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int (variations per image), got {num!r}")
        if noise not in EDIT_NOISE:
            raise ValueError(f"noise must be one of {EDIT_NOISE}, got {noise!r}")
        if noise == "fresh":
            z_i = jnp.repeat(self.image_embeds_from_images(images), num, axis=0)
            return self.decode(z_i, key)
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"eta must be in (0, 1] for variations from the inverted "
                             f"latent (0 gives the image back), got {eta}")
        x_t, z_i = self.invert(images, steps)
        settings = dataclasses.replace(self._ddim(steps), eta=float(eta))
        return self.decode(jnp.repeat(z_i, num, axis=0), key,
                           z_init=jnp.repeat(x_t, num, axis=0), settings=settings)

    def _ddim(self, steps: int | None) -> SamplerSettings:
        s = self.decoder.settings
        return SamplerSettings(sampler="ddim", steps=s.steps if steps is None else steps, eta=0.0,
                               prediction=s.prediction, threshold="none")

    def invert(self, images: jnp.ndarray, steps: int | None = None
               ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(x_T, z_i) such that decoding z_i from x_T with DDIM (eta = 0, same steps,
        no thresholding, decoder guidance) reconstructs `images` (at the decoder's size)."""
        d = self.decoder
        z_i = self.image_embeds_from_images(images)
        size = d.stage.image_size
        if images.shape[1:3] != (size, size):
            images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]),
                                      "bicubic", antialias=True)
        text, mask = self._caption(None, images.shape[0])
        x_t = d.stage.invert(d.params, images, text, mask, z_i, steps=self._ddim(steps).steps,
                             guidance=float(d.guidance))
        return x_t, z_i

    def reconstruct(self, x_t: jnp.ndarray, z_i: jnp.ndarray, steps: int | None = None,
                    key: jax.Array | None = None) -> jnp.ndarray:
        """The deterministic decoding of an inversion (decoder size, no upsampling)."""
        key = jax.random.PRNGKey(0) if key is None else key  # unused by eta = 0
        return self.decode(z_i, key, z_init=x_t, upsample=False, settings=self._ddim(steps))[0]

    def interpolate(self, image_a: jnp.ndarray, image_b: jnp.ndarray, frames: int,
                    key: jax.Array, noise: str = "fixed") -> list[jnp.ndarray]:
        """`frames` decodings along slerp(z_a, z_b, t), t = 0 .. 1.

        noise: 'fixed' (one x_T for every frame), 'slerp' (x_T interpolated between
        two draws as well) or 'fresh' (independent noise per frame).
        """
        if noise not in INTERPOLATE_NOISE:
            raise ValueError(f"noise must be one of {INTERPOLATE_NOISE}, got {noise!r}")
        if frames < 2:
            raise ValueError(f"frames must be at least 2, got {frames}")
        z = self.image_embeds_from_images(jnp.stack([image_a, image_b]))
        ts = np.linspace(0.0, 1.0, frames)
        z_i = jnp.stack([slerp(z[0], z[1], t) for t in ts])
        z_init = None
        noise_key, decode_key = jax.random.split(key)
        shape = self.decoder.stage.output_shape(1, {})[1:]
        if noise == "fixed":
            z_init = jnp.broadcast_to(jax.random.normal(noise_key, shape), (frames,) + shape)
        elif noise == "slerp":
            a, b = jax.random.normal(noise_key, (2, int(np.prod(shape))))
            scale = np.sqrt(np.prod(shape))  # slerp works on unit vectors; noise has norm ~sqrt(n)
            z_init = jnp.stack([slerp(a, b, t) * scale for t in ts]).reshape((frames,) + shape)
        return self.decode(z_i, decode_key, z_init=z_init)

    def text_diff(self, image: jnp.ndarray, source: str, target: str, thetas: Sequence[float],
                  key: jax.Array, *, noise: str = "inverted", steps: int | None = None
                  ) -> tuple[list[jnp.ndarray], jnp.ndarray]:
        """Decodings of slerp(z_i, z_d, theta) for each theta, with one fixed x_T.

        noise='inverted' (the paper's text diffs): x_T is the image's DDIM inversion and
        every theta decodes with DDIM eta = 0 under the inversion's settings, so theta = 0
        reconstructs the image (up to the inversion error). noise='fresh': one fresh x_T
        and the decoder's own sampler. Returns (images per stage, edited z_i [T, E]).
        """
        if noise not in EDIT_NOISE:
            raise ValueError(f"noise must be one of {EDIT_NOISE}, got {noise!r}")
        shape = self.decoder.stage.output_shape(1, {})[1:]
        settings = None
        # The image first: a malformed one is refused before anything else runs.
        if noise == "inverted":
            x_t, z_i = self.invert(image[None], steps)
            z_i, x_t, settings = z_i[0], x_t[0], self._ddim(steps)
        else:
            z_i = self.image_embeds_from_images(image[None])[0]
        noise_key, decode_key = jax.random.split(key)
        if noise == "fresh":
            x_t = jax.random.normal(noise_key, shape)
        z_t, _, _ = self.clip.encode_prompts([target, source])
        edited = apply_text_diff(z_i, text_diff(z_t[0], z_t[1]), jnp.asarray(thetas))
        z_init = jnp.broadcast_to(x_t, (len(thetas),) + shape)
        return self.decode(edited, decode_key, z_init=z_init, settings=settings), edited


def _load_trained(workdir: str, steps: int | None, guidance: float | None,
                  dtype: str = "float32") -> tuple[Any, TrainedStage]:
    from imagen_jax.stages import with_sampling_dtype
    from imagen_jax.train.trained import load_trained_stage

    config, stage, params = load_trained_stage(workdir)
    stage, params = with_sampling_dtype(stage, params, dtype)
    # sampler_settings keeps steps=0 (an error to report, not a request for the default).
    return config, TrainedStage(stage, params,
                                sampler_settings(config.sample, config.diffusion.prediction,
                                                 steps=steps),
                                config.sample.guidance if guidance is None else guidance)


def load_pipeline(decoder: str, *, prior: str | None = None, upsamplers: Sequence[str] = (),
                  decoder_steps: int | None = None, prior_steps: int | None = None,
                  upsampler_steps: int | None = None, decoder_guidance: float | None = None,
                  prior_guidance: float | None = None, best_of: int | None = None,
                  dtype: str = "float32") -> UnclipPipeline:
    """The stack from training workdirs (decoder required; prior for text; upsamplers);
    `dtype` 'bfloat16' samples every stage in bfloat16 (`with_sampling_dtype`)."""
    for steps in (decoder_steps, prior_steps, upsampler_steps):
        if steps is not None:
            check_steps(steps)  # here, before any workdir is read
    for guidance in (decoder_guidance, prior_guidance):
        if guidance is not None:
            check_guidance(guidance)
    dec_config, dec = _load_trained(decoder, decoder_steps, decoder_guidance, dtype)
    if not isinstance(dec.stage, DecoderStage):
        raise ValueError(f"{decoder} holds a {dec_config.stage!r} run, not unclip.decoder64")
    clip = load_frozen_clip(dec_config.clip, dec_config.text.max_length)
    pri, pri_best = None, 2
    if prior:
        pri_config, pri = _load_trained(prior, prior_steps, prior_guidance, dtype)
        if not isinstance(pri.stage, PriorStage):
            raise ValueError(f"{prior} holds a {pri_config.stage!r} run, not unclip.prior")
        pri_best = pri_config.sample.best_of
    ups = []
    for path in upsamplers:
        up_config, up = _load_trained(path, upsampler_steps, None, dtype)
        if not isinstance(up.stage, UpsamplerStage):
            raise ValueError(f"{path} holds a {up_config.stage!r} run, not an unCLIP upsampler")
        ups.append(up)
    return UnclipPipeline(clip, pri, dec, ups, best_of=pri_best if best_of is None else best_of)
