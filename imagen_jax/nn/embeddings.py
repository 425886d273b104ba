"""Embeddings of scalar conditioning (noise level, augmentation level) and of token positions."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.nn.partitioning import Dense


def sinusoidal_embedding(x: jnp.ndarray, dim: int, max_period: float = 10_000.0) -> jnp.ndarray:
    """Transformer-style sin/cos features of a [B] scalar, shaped [B, dim]."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = x.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def text_position_embedding(length: int, dim: int) -> jnp.ndarray:
    """Fixed sin/cos codes of token indices 0..length-1, shaped [length, dim]: what a
    set-reader of text (cross-attention, attention pooling) needs to tell word order
    when the encoder's outputs carry none (a random frozen T5; docs/text_tokens.md)."""
    return sinusoidal_embedding(jnp.arange(length), dim)


class NoiseLevelEmbedding(nn.Module):
    """Embeds a log-SNR [B] into [B, features]: sinusoids, then a two-layer MLP (ADM).

    log-SNR spans about [-20, 20]; it is squashed to [0, 1000] (the range DDPM
    timestep indices have) so the sinusoid frequencies resolve the whole range.
    """

    features: int
    sinusoid_dim: int = 256

    @nn.compact
    def __call__(self, logsnr: jnp.ndarray) -> jnp.ndarray:
        position = 500.0 * (1.0 - jnp.tanh(logsnr.astype(jnp.float32) / 20.0))
        h = sinusoidal_embedding(position, self.sinusoid_dim)
        h = Dense(self.features, names=("embed", "mlp"), name="dense_0")(h)
        return Dense(self.features, names=("mlp", "embed"), name="dense_1")(nn.swish(h))
