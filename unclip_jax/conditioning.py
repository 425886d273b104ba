"""The frozen CLIP that the prior and the decoder condition on (unCLIP section 2:
CLIP stays frozen while they train).

`FrozenCLIP.prepare(params, batch)` is the trainer's conditioning hook (the role the
frozen T5 plays for Imagen): inside the jitted train step it turns a batch of
images and caption ids into

    image_embed [B, E]   z_i, the CLIP image embedding (the prior's target, the
                         decoder's condition)
    text_embed  [B, E]   z_t, the CLIP text embedding
    text        [B, L, W], text_mask [B, L]   CLIP's token states: the "encoded
                         text" the prior and decoder read

under `stop_gradient`. CLIP comes from a trained `unclip.clip` run's workdir (the
offline default: its EMA weights, config and caption vocabulary) or from a local
Hugging Face CLIPModel directory (its tokenizer.json, or a SentencePiece
spiece.model).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from imagen_jax.config_sections import dataclass_from_section
from imagen_jax.image_io import check_images
from imagen_jax.text.tokenizer import Tokenizer
from unclip_jax.clip import CLIP, CLIPConfig


class FrozenCLIP:
    def __init__(self, config: CLIPConfig, params: Any, tokenizer: Tokenizer) -> None:
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but CLIP embeds "
                             f"only {config.vocab_size} ids")
        if tokenizer.max_length > config.max_length:
            raise ValueError(f"tokenizer max_length {tokenizer.max_length} exceeds CLIP's "
                             f"{config.max_length} positions")
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.module = CLIP(config)
        self._images = jax.jit(lambda p, x: self.encode_images_with(p, x))
        self._text = jax.jit(lambda p, ids, m: self.encode_text_with(p, ids, m))

    def encode_images_with(self, params: Any, images: jnp.ndarray) -> jnp.ndarray:
        z = self.module.apply({"params": params}, images, method=CLIP.encode_image)
        return jax.lax.stop_gradient(z)

    def encode_text_with(self, params: Any, ids: jnp.ndarray, mask: jnp.ndarray
                         ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """(z_t [B, E], token states [B, L, W] zeroed at padding, mask [B, L])."""
        mask = mask.astype(bool)
        z_t, states = self.module.apply({"params": params}, ids, mask, method=CLIP.encode_text)
        states = jnp.where(mask[..., None], states, 0.0)
        return jax.lax.stop_gradient(z_t), jax.lax.stop_gradient(states), mask

    def abstract_params(self) -> Any:
        """The params' shapes with their logical axis names (the trainer shards the
        frozen CLIP from these)."""
        side = self.config.image_size
        images = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
        ids = jax.ShapeDtypeStruct((1, self.tokenizer.max_length), jnp.int32)
        mask = jax.ShapeDtypeStruct((1, self.tokenizer.max_length), jnp.bool_)
        return jax.eval_shape(self.module.init, jax.random.PRNGKey(0), images, ids,
                              mask)["params"]

    def prepare(self, params: Any, batch: dict) -> dict:
        """The trainer's hook (traced in the step): adds z_i, z_t and the token states."""
        batch = dict(batch)
        if "text_ids" in batch:
            ids = batch.pop("text_ids")
            batch["text_embed"], batch["text"], batch["text_mask"] = self.encode_text_with(
                params, ids, batch["text_mask"])
        if "images" in batch:
            batch["image_embed"] = self.encode_images_with(params, batch["images"])
        return batch

    def encode_prompts(self, prompts: str | Sequence[str]
                       ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """(z_t, token states, mask) for prompts."""
        tokens = self.tokenizer.encode(prompts)
        return self._text(self.params, jnp.asarray(tokens.ids), jnp.asarray(tokens.mask))

    def encode_images(self, images: jnp.ndarray) -> jnp.ndarray:
        """z_i [B, E] for images [B, H, W, 3] in [-1, 1] (any size: CLIP resizes)."""
        check_images(images)  # before the jitted tower: one clear line, not an XLA shape error
        return self._images(self.params, jnp.asarray(images, jnp.float32))


def clip_config_from_run(config: Any) -> CLIPConfig:
    """The CLIPConfig an `unclip.clip` run config describes."""
    return dataclass_from_section(CLIPConfig, config.model)


def load_frozen_clip(clip: Any, max_length: int) -> FrozenCLIP:
    """The CLIP a config's `clip` section names: `clip.workdir` (a trained unclip.clip
    run) or `clip.checkpoint` (a local HF CLIPModel directory with its tokenizer), its
    params in `clip.dtype`."""
    from imagen_jax.train.run_config import load_config
    from imagen_jax.train.trained import load_trained_stage

    if bool(clip.workdir) == bool(clip.checkpoint):
        raise ValueError("config.clip: set exactly one of clip.workdir (a trained unclip.clip "
                         "run) and clip.checkpoint (a Hugging Face CLIP directory)")
    dtype = jnp.dtype(clip.get("dtype", "float32"))
    if clip.checkpoint:
        from unclip_jax.clip_convert import load_clip
        config, params = load_clip(clip.checkpoint, dtype=dtype)
        from imagen_jax.text.hf_tokenizer import tokenizer_from_dir
        return FrozenCLIP(config, params, tokenizer_from_dir(clip.checkpoint, max_length))
    if load_config(clip.workdir).stage != "unclip.clip":
        raise ValueError(f"config.clip.workdir {clip.workdir} holds a "
                         f"{load_config(clip.workdir).stage!r} run, not unclip.clip")
    _, stage, params = load_trained_stage(clip.workdir)
    tokenizer = Tokenizer(os.path.join(clip.workdir, "spiece.model"), max_length)
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    return FrozenCLIP(dataclasses.replace(stage.clip, dtype=dtype.name), params, tokenizer)


def load_clip_for_scoring(directory: str) -> FrozenCLIP:
    """The frozen CLIP in `directory`: a trained unclip.clip run, or a Hugging Face
    CLIPModel directory (its config.json has a text_config). The unclip.clip stage's
    `image_text_scorer` (imagen_jax.evaluate.clip_score)."""
    import json

    import ml_collections

    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory} has no config.json: give a trained unclip.clip "
                                "run or a Hugging Face CLIPModel directory")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    is_hf = "text_config" in config
    section = ml_collections.ConfigDict({"workdir": "" if is_hf else directory,
                                         "checkpoint": directory if is_hf else "",
                                         "dtype": "float32"})
    max_length = (config["text_config"].get("max_position_embeddings", 77) if is_hf
                  else config["text"]["max_length"])
    return load_frozen_clip(section, max_length)


def weightless_clip(config: Any) -> FrozenCLIP:
    """The frozen CLIP of the config's variant (configs/unclip.py's clip stage: ViT-H/16
    for 'paper'), without weights, in config.clip.dtype: for compiling the prior's and
    the decoder's steps from shapes (imagen_jax/train/aot.py)."""
    import types

    from configs import unclip
    run = unclip.get_config(f"{config.get('variant', 'paper')},clip")
    clip = dataclasses.replace(dataclass_from_section(CLIPConfig, run.model),
                               dtype=config.clip.get("dtype", "float32"))
    return FrozenCLIP(clip, None, types.SimpleNamespace(vocab_size=clip.vocab_size,
                                                        max_length=config.text.max_length))
