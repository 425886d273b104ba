"""unCLIP's decoder (section 2.1): imagen_jax's U-Net conditioned on a CLIP image
embedding z_i, in the two ways GLIDE-style decoders take it:

  (a) a projection of z_i is added to the timestep embedding (the U-Net's
      `extra_emb`: it reaches every residual block's scale-shift norm), and
  (b) z_i is projected into `num_tokens` (4) extra context tokens, put in front of
      the caption's token sequence that the U-Net's attention layers read.

The caption sequence is optional: with none (or a dropped caption) the U-Net reads
the four z_i tokens and its own null token. z_i is used as a unit vector.

The caption arrives as the frozen CLIP's token states. GLIDE (and so the paper's
decoder) trains its own text transformer; `caption` adds one here (a projection,
transformer blocks and a LayerNorm over the states) when configured, which is how
the paper-size decoder reaches its ~3.5B parameters.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from imagen_jax.nn.partitioning import Dense, layer_norm
from imagen_jax.nn.unet import UNet, UNetConfig
from unclip_jax.clip import normalize
from unclip_jax.transformer import LN_EPS, Transformer, TransformerConfig


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    unet: UNetConfig
    embed_dim: int = 32  # CLIP embedding width
    num_tokens: int = 4  # the paper's 4 extra context tokens
    caption: TransformerConfig | None = None  # trainable caption transformer, or none

    def __post_init__(self):
        if self.caption is not None and self.caption.width != self.unet.text_dim:
            raise ValueError(f"caption transformer width {self.caption.width} != the U-Net's "
                             f"text_dim {self.unet.text_dim}")


class Decoder(nn.Module):
    """(z, logsnr, text [B, L, D], text_mask [B, L], image_embed [B, E]) -> prediction."""

    config: DecoderConfig

    @nn.compact
    def __call__(self, z: jnp.ndarray, logsnr: jnp.ndarray, text: jnp.ndarray,
                 text_mask: jnp.ndarray, image_embed: jnp.ndarray,
                 deterministic: bool = True) -> jnp.ndarray:
        cfg, unet = self.config, self.config.unet
        if image_embed.shape[-1] != cfg.embed_dim:
            raise ValueError(f"image_embed has width {image_embed.shape[-1]}, the decoder was "
                             f"built for CLIP embeddings of {cfg.embed_dim}")
        b = z.shape[0]
        # A dropped embedding is all zeros; normalising keeps it zero.
        z_i = normalize(image_embed.astype(jnp.float32))
        extra_emb = Dense(unet.cond_dim, names=("mlp", "embed"), name="image_embed_to_time")(z_i)
        tokens = Dense(cfg.num_tokens * unet.text_dim, names=("mlp", "text_embed"),
                       name="image_embed_to_tokens")(z_i).reshape(b, cfg.num_tokens,
                                                                 unet.text_dim)
        text = text.astype(jnp.float32)
        if cfg.caption is not None:
            valid = text_mask.astype(bool)[:, None, None, :]
            h = Dense(cfg.caption.width, names=("text_embed", "embed"), name="caption_in")(text)
            h = Transformer(cfg.caption, name="caption_transformer")(h, valid, deterministic)
            text = layer_norm("caption_norm", None, LN_EPS)(h).astype(jnp.float32)
        text = jnp.concatenate([tokens, text], axis=1)
        mask = jnp.concatenate([jnp.ones((b, cfg.num_tokens), bool), text_mask.astype(bool)],
                               axis=1)
        return UNet(unet, name="unet")(z, logsnr, text, mask, deterministic=deterministic,
                                       extra_emb=extra_emb)
