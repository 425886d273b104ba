"""A few-layer convolutional denoiser: the smallest model the cascade code runs.

It exists so that the diffusion machinery (samplers, guidance, thresholding, the
sampling CLI) can be exercised end to end in seconds on a CPU. It is not the
Efficient U-Net; it has no attention and no text cross-attention. Conditioning
is an optional vector per example (a pooled text embedding, say), added to the
noise-level embedding; the null condition for classifier-free guidance is zeros.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.nn.embeddings import NoiseLevelEmbedding


class ResidualConvBlock(nn.Module):
    """GroupNorm -> swish -> conv3x3, plus a per-channel shift from the embedding."""

    channels: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, emb: jnp.ndarray) -> jnp.ndarray:
        h = nn.GroupNorm(num_groups=min(8, self.channels))(x)
        h = nn.swish(h)
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(nn.swish(emb))[:, None, None, :]
        return x + h


class TinyConvDenoiser(nn.Module):
    """z [B, H, W, C], logsnr [B], cond [B, D] or None -> prediction [B, H, W, C]."""

    channels: int = 32
    num_blocks: int = 3

    @nn.compact
    def __call__(self, z: jnp.ndarray, logsnr: jnp.ndarray,
                 cond: jnp.ndarray | None = None) -> jnp.ndarray:
        emb = NoiseLevelEmbedding(4 * self.channels)(logsnr)
        if cond is not None:
            emb = emb + nn.Dense(emb.shape[-1], name="cond_proj")(cond)
        h = nn.Conv(self.channels, (3, 3), name="conv_in")(z)
        for _ in range(self.num_blocks):
            h = ResidualConvBlock(self.channels)(h, emb)
        h = nn.swish(nn.GroupNorm(num_groups=min(8, self.channels))(h))
        return nn.Conv(z.shape[-1], (3, 3), name="conv_out")(h)
