"""The BigGAN/ADM residual block with scale-shift conditioning (Imagen Fig. A.27)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.nn.partitioning import Conv, Dense, group_norm


class ResNetBlock(nn.Module):
    """(GN -> swish -> conv3x3) twice, the second GN modulated by the embedding.

    The conditioning embedding (noise level + pooled text [+ augmentation level])
    gives a per-channel (scale, shift): h = GN(h) * (1 + scale) + shift, ADM's
    "scale-shift norm". A 1x1 conv matches channels on the shortcut. The last conv
    starts at zero so every block begins as the identity.
    `deterministic` is an attribute, not a call argument, so `nn.remat` can wrap
    the class with array-only inputs.
    """

    channels: int
    dropout: float = 0.0
    num_groups: int = 32
    deterministic: bool = True
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, emb: jnp.ndarray) -> jnp.ndarray:
        groups = min(self.num_groups, self.channels)
        h = nn.swish(group_norm(min(self.num_groups, x.shape[-1]), name="norm_0",
                                dtype=self.dtype)(x))
        h = Conv(self.channels, name="conv_0", dtype=self.dtype)(h)
        scale_shift = Dense(2 * self.channels, names=("embed", "conv_out"), name="emb_proj",
                            dtype=self.dtype)(nn.swish(emb))
        scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
        h = group_norm(groups, name="norm_1", dtype=self.dtype)(h) * (1.0 + scale) + shift
        h = nn.swish(h)
        h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
        h = Conv(self.channels, name="conv_1", kernel_init=nn.initializers.zeros_init(),
                 dtype=self.dtype)(h)
        if x.shape[-1] != self.channels:
            x = Conv(self.channels, (1, 1), name="shortcut", dtype=self.dtype)(x)
        return x + h
