"""CLIP (Radford et al. 2021) as unCLIP uses it: a ViT image tower, a causal text
transformer, linear projections into a shared embedding space and a learned
temperature.

    image [B, H, W, 3] in [-1, 1] -> patches -> [CLS] + pos -> LN -> transformer
          -> LN(CLS) -> projection -> z_i [B, E]
    ids [B, L], mask [B, L] -> tokens + pos -> causal transformer -> LN
          -> states [B, L, W] (the prior and decoder read these)
          -> state at the EOS token -> projection -> z_t [B, E]

The pooled EOS position follows transformers' CLIPTextTransformer: the first token
whose id is `eos_token_id` (legacy configs with eos_token_id 2: the largest id), or
the last valid position for the project's own SentencePiece CLIP (`eos_token_id`
None), whose tokenizer puts EOS there and nowhere else.

Layout and names follow Hugging Face's `CLIPModel`, so a local checkpoint loads
one to one (`unclip_jax.clip_convert`). Images come in the project's [-1, 1]
convention; the tower maps them to the checkpoint's normalisation (`image_mean`,
`image_std`) and resizes them to its `image_size`, so any generated image can be
embedded. Embeddings are returned unnormalised; `normalize` gives unit vectors.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.nn.partitioning import Dense, layer_norm, param_with_axes
from unclip_jax.transformer import LN_EPS, Transformer, TransformerConfig, causal_mask

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """The two towers' sizes (the defaults are the tests' tiny CLIP; a Hugging Face
    CLIPModel's come from `clip_convert.config_from_hf`)."""

    embed_dim: int = 32  # the shared space of z_i and z_t
    # image tower: a ViT over patch_size patches of an image_size square
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp_dim: int | None = None
    # text tower
    vocab_size: int = 128
    max_length: int = 16
    text_width: int = 32
    text_layers: int = 2
    text_heads: int = 2
    text_mlp_dim: int | None = None
    activation: str = "quick_gelu"
    # [0, 1] pixels -> (x - mean) / std, per channel; 0.5/0.5 maps [-1, 1] to itself
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP's initial temperature
    dtype: str = "float32"
    # From a checkpoint's config.json (text_config / vision_config.layer_norm_eps).
    text_layer_norm_eps: float = LN_EPS
    vision_layer_norm_eps: float = LN_EPS
    # The id the text tower pools at (transformers' rule); None: the last valid token.
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPConfig.image_size {self.image_size} is not divisible by "
                             f"patch_size {self.patch_size}")
        if self.embed_dim <= 0:
            raise ValueError(f"CLIPConfig.embed_dim must be positive, got {self.embed_dim}")
        # Validates widths, heads and activation early, with the field names.
        self.vision, self.text  # noqa: B018

    @property
    def vision(self) -> TransformerConfig:
        return TransformerConfig(self.vision_width, self.vision_layers, self.vision_heads,
                                 self.vision_mlp_dim, self.activation, dtype=self.dtype,
                                 layer_norm_eps=self.vision_layer_norm_eps)

    @property
    def text(self) -> TransformerConfig:
        return TransformerConfig(self.text_width, self.text_layers, self.text_heads,
                                 self.text_mlp_dim, self.activation, dtype=self.dtype,
                                 layer_norm_eps=self.text_layer_norm_eps)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def patchify(images: jnp.ndarray, patch: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C], patches in row-major order."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


class VisionTower(nn.Module):
    config: CLIPConfig

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        b, h, w, c = images.shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            images = jax.image.resize(images, (b, cfg.image_size, cfg.image_size, c), "bicubic",
                                      antialias=True)
        pixels = (images.astype(jnp.float32) + 1.0) / 2.0
        pixels = (pixels - jnp.asarray(cfg.image_mean)) / jnp.asarray(cfg.image_std)
        x = Dense(cfg.vision_width, names=("conv_in", "embed"), use_bias=False,
                  name="patch_embedding", dtype=dtype)(patchify(pixels, cfg.patch_size))
        cls = self.param("class_embedding", param_with_axes(nn.initializers.normal(0.02),
                                                            ("embed",)), (cfg.vision_width,))
        pos = self.param("position_embedding", param_with_axes(nn.initializers.normal(0.01),
                                                               (None, "embed")),
                         (cfg.num_patches + 1, cfg.vision_width))
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, cfg.vision_width)), x],
                            axis=1) + pos.astype(x.dtype)
        x = layer_norm("pre_norm", dtype, cfg.vision_layer_norm_eps)(x)
        x = Transformer(cfg.vision, name="transformer")(x)
        return layer_norm("post_norm", dtype, cfg.vision_layer_norm_eps)(x[:, 0])


class TextTower(nn.Module):
    """Returns (token states [B, L, W] after the final LN, pooled EOS state [B, W])."""

    config: CLIPConfig

    @nn.compact
    def __call__(self, ids: jnp.ndarray, mask: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        length = ids.shape[1]
        if length > cfg.max_length:
            raise ValueError(f"text has {length} tokens; this CLIP embeds at most "
                             f"{cfg.max_length} positions")
        x = nn.Embed(cfg.vocab_size, cfg.text_width, name="token_embedding", dtype=dtype,
                     embedding_init=param_with_axes(nn.initializers.normal(0.02),
                                                    ("vocab", "embed")))(ids)
        pos = self.param("position_embedding", param_with_axes(nn.initializers.normal(0.01),
                                                               (None, "embed")),
                         (cfg.max_length, cfg.text_width))
        x = x + pos[:length].astype(x.dtype)
        x = Transformer(cfg.text, name="transformer")(x, causal_mask(length))
        x = layer_norm("final_norm", dtype, cfg.text_layer_norm_eps)(x)
        eos = eos_position(ids, mask, cfg.eos_token_id)
        pooled = jnp.take_along_axis(x, eos[:, None, None], axis=1)[:, 0]
        return x, pooled


def eos_position(ids: jnp.ndarray, mask: jnp.ndarray, eos_token_id: int | None
                 ) -> jnp.ndarray:
    """[B] int: the position the text tower pools, as transformers chooses it.

    eos_token_id 2 (configs from before transformers PR #24773): the largest id, which
    is EOS in CLIP's vocabulary. Another id: its first occurrence (position 0 if the
    caption has none, as argmax over all-False gives). None (the project's SentencePiece
    CLIP): the last valid position, where its tokenizer puts EOS; 0 for an empty caption.
    """
    if eos_token_id is None:
        return jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=1) - 1, 0)
    if eos_token_id == 2:
        return jnp.argmax(ids.astype(jnp.int32), axis=-1)
    return jnp.argmax(ids == eos_token_id, axis=-1)


class CLIP(nn.Module):
    config: CLIPConfig

    def setup(self):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        self.vision = VisionTower(cfg)
        self.text = TextTower(cfg)
        self.visual_projection = Dense(cfg.embed_dim, names=("embed", "mlp"), use_bias=False,
                                       dtype=dtype)
        self.text_projection = Dense(cfg.embed_dim, names=("embed", "mlp"), use_bias=False,
                                     dtype=dtype)
        self.logit_scale = self.param(
            "logit_scale", param_with_axes(nn.initializers.constant(cfg.logit_scale_init), ()),
            ())

    def encode_image(self, images: jnp.ndarray) -> jnp.ndarray:
        """z_i [B, E] (unnormalised) for images [B, H, W, 3] in [-1, 1]."""
        return self.visual_projection(self.vision(images)).astype(jnp.float32)

    def encode_text(self, ids: jnp.ndarray, mask: jnp.ndarray
                    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(z_t [B, E] unnormalised, token states [B, L, W] float32)."""
        states, pooled = self.text(ids, mask)
        return (self.text_projection(pooled).astype(jnp.float32), states.astype(jnp.float32))

    def __call__(self, images: jnp.ndarray, ids: jnp.ndarray, mask: jnp.ndarray
                 ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """(z_i, z_t, logit_scale) - everything the contrastive loss needs."""
        z_t, _ = self.encode_text(ids, mask)
        return self.encode_image(images), z_t, self.logit_scale


def normalize(x: jnp.ndarray, eps: float = 1e-8) -> jnp.ndarray:
    """Unit vectors along the last axis."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def contrastive_loss(z_i: jnp.ndarray, z_t: jnp.ndarray, logit_scale: jnp.ndarray
                     ) -> tuple[jnp.ndarray, dict]:
    """Symmetric InfoNCE over the whole (global) batch: image i's caption is text i.

    Under jit with a batch sharded over devices and hosts, the [B, B] similarity
    matrix spans the global batch: every image is contrasted with every caption,
    not only those on its own device. The temperature is clipped at 100 as in CLIP.
    """
    scale = jnp.exp(jnp.minimum(logit_scale, math.log(100.0)))
    logits = scale * normalize(z_i) @ normalize(z_t).T
    labels = jnp.arange(logits.shape[0])
    log_p_text = jax.nn.log_softmax(logits, axis=1)  # image -> which caption
    log_p_image = jax.nn.log_softmax(logits, axis=0)  # caption -> which image
    loss_i = -jnp.mean(log_p_text[labels, labels])
    loss_t = -jnp.mean(log_p_image[labels, labels])
    loss = 0.5 * (loss_i + loss_t)
    accuracy = 0.5 * (jnp.mean(jnp.argmax(logits, 1) == labels)
                      + jnp.mean(jnp.argmax(logits, 0) == labels))
    return loss, {"loss": loss, "retrieval_accuracy": accuracy, "logit_scale": scale}
