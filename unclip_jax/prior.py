"""The diffusion prior of unCLIP (Ramesh et al. 2022, section 2.2): text -> CLIP image
embedding z_i.

A decoder-only transformer reads, in this order and under a causal mask,

    [encoded text tokens (L), z_t, timestep embedding, noised z_i, query]

and the output at the final query token is the prediction of the *clean* z_i (the
paper's x0 objective, MSE; `imagen_jax.diffusion` supplies the loss and samplers).
Padded text positions are masked out of the keys. Every input is projected to the
transformer width; each of the five slots gets a learned position embedding.

Scale: z_i enters the diffusion as a unit vector times `sqrt(embed_dim)`, so each
coordinate has variance ~1 like a [-1, 1] image pixel. (The paper multiplies its
CLIP's raw embeddings by 17.2 for the same reason; normalising first makes the
factor independent of the CLIP model.)
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.nn.embeddings import NoiseLevelEmbedding
from imagen_jax.nn.partitioning import Dense, layer_norm, param_with_axes
from unclip_jax.transformer import LN_EPS, Transformer, TransformerConfig, causal_mask

NUM_EXTRA_TOKENS = 4  # z_t, timestep, noised z_i, query


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    embed_dim: int = 32  # CLIP embedding width (z_i, z_t)
    text_dim: int = 32  # width of the CLIP text token states
    max_text_len: int = 16
    width: int = 64
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0
    dtype: str = "float32"

    def __post_init__(self):
        self.transformer  # noqa: B018 - validates width / heads

    @property
    def transformer(self) -> TransformerConfig:
        return TransformerConfig(self.width, self.layers, self.heads, activation="gelu",
                                 dropout=self.dropout, dtype=self.dtype)


class DiffusionPrior(nn.Module):
    """(z_noisy [B, E], logsnr [B], text [B, L, D], text_mask [B, L], z_t [B, E]) -> x0."""

    config: PriorConfig

    @nn.compact
    def __call__(self, z: jnp.ndarray, logsnr: jnp.ndarray, text: jnp.ndarray,
                 text_mask: jnp.ndarray, text_embed: jnp.ndarray,
                 deterministic: bool = True) -> jnp.ndarray:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        b, length, _ = text.shape
        if length > cfg.max_text_len:
            raise ValueError(f"text has {length} tokens; the prior was built for "
                             f"{cfg.max_text_len}")
        proj = lambda name: Dense(cfg.width, names=("mlp", "embed"), name=name,  # noqa: E731
                                  dtype=dtype)
        tokens = proj("text_in")(text.astype(jnp.float32))
        z_t = proj("text_embed_in")(text_embed.astype(jnp.float32))[:, None]
        time = NoiseLevelEmbedding(cfg.width, name="time_embedding")(logsnr)[:, None]
        z_noisy = proj("image_embed_in")(z.astype(jnp.float32))[:, None]
        query = self.param("query", param_with_axes(nn.initializers.normal(0.02), ("embed",)),
                           (cfg.width,))
        query = jnp.broadcast_to(query, (b, 1, cfg.width))
        x = jnp.concatenate([tokens, z_t, time.astype(tokens.dtype), z_noisy,
                             query.astype(tokens.dtype)], axis=1)
        pos = self.param("position_embedding",
                         param_with_axes(nn.initializers.normal(0.01), (None, "embed")),
                         (cfg.max_text_len + NUM_EXTRA_TOKENS, cfg.width))
        x = x + pos[:length + NUM_EXTRA_TOKENS].astype(x.dtype)
        valid = jnp.concatenate([text_mask.astype(bool),
                                 jnp.ones((b, NUM_EXTRA_TOKENS), bool)], axis=1)
        x = Transformer(cfg.transformer, name="transformer")(
            x, causal_mask(length + NUM_EXTRA_TOKENS, valid), deterministic)
        out = layer_norm("final_norm", dtype, LN_EPS)(x[:, -1])
        return Dense(cfg.embed_dim, names=("embed", "mlp"), name="out",
                     dtype=dtype)(out).astype(jnp.float32)
