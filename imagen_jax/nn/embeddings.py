"""Embeddings of scalar conditioning (noise level) for the denoisers."""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp


def sinusoidal_embedding(x: jnp.ndarray, dim: int, max_period: float = 10_000.0) -> jnp.ndarray:
    """Transformer-style sin/cos features of a [B] scalar, shaped [B, dim]."""
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = x.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class NoiseLevelEmbedding(nn.Module):
    """Embeds log-SNR: sinusoidal features then a two-layer MLP (as in ADM).

    log-SNR spans about [-20, 20]; it is divided by `logsnr_scale` so that the
    sinusoid frequencies resolve the range the way timestep indices do in DDPM.
    """

    dim: int
    logsnr_scale: float = 0.05

    @nn.compact
    def __call__(self, logsnr: jnp.ndarray) -> jnp.ndarray:
        # Map log-SNR to roughly [0, 1000] like a DDPM timestep index.
        features = sinusoidal_embedding(500.0 * (1.0 - jnp.tanh(self.logsnr_scale * logsnr)),
                                        self.dim)
        h = nn.Dense(4 * self.dim, name="dense_0")(features)
        h = nn.swish(h)
        return nn.Dense(4 * self.dim, name="dense_1")(h)
