"""The frozen text encoder Imagen conditions on: prompts -> (embeddings, mask).

Imagen keeps T5 frozen (the paper's finding: scaling the frozen text encoder helps
more than scaling the U-Net), so the forward is wrapped in `jax.lax.stop_gradient`
and no gradient ever reaches these params. Embeddings at padded positions are
zeroed, so an empty prompt yields all-zero embeddings with an all-False mask: the
null condition that classifier-free guidance uses.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.nn.t5 import T5Config, T5Encoder
from imagen_jax.text.t5_convert import load_t5_encoder
from imagen_jax.text.tokenizer import Tokenizer


def _frozen_forward(module: T5Encoder, params: Any, ids: jnp.ndarray,
                    mask: jnp.ndarray) -> jnp.ndarray:
    hidden = module.apply({"params": params}, ids, mask, deterministic=True)
    hidden = jnp.where(mask[..., None], hidden.astype(jnp.float32), 0.0)
    return jax.lax.stop_gradient(hidden)


class TextEncoder:
    """Tokenizer + T5 encoder; `encoder(prompts) -> (emb [B, L, D] float32, mask [B, L] bool)`."""

    def __init__(self, config: T5Config, params: Any, tokenizer: Tokenizer) -> None:
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} pieces but the T5 encoder "
                             f"embeds only {config.vocab_size} ids")
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        module = self._module = T5Encoder(config)
        # Compiled once per batch shape; params are an argument, not baked-in constants.
        self._forward = jax.jit(lambda params, ids, mask: _frozen_forward(module, params, ids,
                                                                          mask))

    @property
    def max_length(self) -> int:
        return self.tokenizer.max_length

    @property
    def dim(self) -> int:
        return self.config.d_model

    def apply(self, params: Any, ids: jnp.ndarray | np.ndarray,
              mask: jnp.ndarray | np.ndarray) -> jnp.ndarray:
        """The jitted, frozen forward on token ids: [B, L] ids and mask -> [B, L, D] float32."""
        ids, mask = jnp.asarray(ids), jnp.asarray(mask)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise ValueError(f"ids and mask must both be [batch, length], got {ids.shape} and "
                             f"{mask.shape}")
        return self._forward(params, ids.astype(jnp.int32), mask.astype(bool))

    def prepare(self, params: Any, batch: dict) -> dict:
        """The trainer's hook, traced inside the train step: 'text_ids' -> 'text'."""
        if "text_ids" not in batch:  # cached embeddings already in the batch
            return batch
        batch = dict(batch)
        batch["text"] = _frozen_forward(self._module, params, batch.pop("text_ids"),
                                        batch["text_mask"].astype(bool))
        return batch

    def abstract_params(self) -> Any:
        """The params' shapes with their logical axis names (the trainer shards the
        frozen encoder from these, like a U-Net's params)."""
        ids = jax.ShapeDtypeStruct((1, self.max_length), jnp.int32)
        mask = jax.ShapeDtypeStruct((1, self.max_length), jnp.bool_)
        return jax.eval_shape(self._module.init, jax.random.PRNGKey(0), ids, mask)["params"]

    def __call__(self, prompts: str | Sequence[str]) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Encodes prompts (a str is a batch of one) to (embeddings, mask)."""
        batch = self.tokenizer.encode(prompts)
        mask = jnp.asarray(batch.mask)
        return self.apply(self.params, batch.ids, mask), mask

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, max_length: int = 128,
                        dtype: Any = jnp.float32) -> "TextEncoder":
        """Loads a local HF T5 directory: config.json, safetensors weights, spiece.model."""
        tokenizer = Tokenizer.from_pretrained_dir(path, max_length)
        config, params = load_t5_encoder(path, dtype=dtype)
        return cls(config, params, tokenizer)

    @classmethod
    def random(cls, config: T5Config, tokenizer: Tokenizer, seed: int = 0,
               dtype: Any = jnp.float32) -> "TextEncoder":
        """Randomly initialised encoder in `dtype` (params and compute), for tests and
        offline demos; the draw is the same float32 one for every dtype."""
        ids = jnp.zeros((1, tokenizer.max_length), jnp.int32)
        variables = jax.jit(T5Encoder(config).init)(jax.random.PRNGKey(seed), ids, ids != 0)
        params = jax.tree.map(lambda x: x.astype(dtype), nn.meta.unbox(variables["params"]))
        return cls(dataclasses.replace(config, dtype=jnp.dtype(dtype)), params, tokenizer)
