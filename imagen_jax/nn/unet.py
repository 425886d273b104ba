"""The Efficient U-Net of Imagen (App. B.1, Figs. A.27-A.30), one class for all stages.

Layout, level by level (lists in `UNetConfig` have one entry per level):

    x ─ conv_in ─ DBlock_0 ─ DBlock_1 ─ ... ─ DBlock_n ─┐
                     │skip      │skip            │skip  │
    out ◄ conv_out ─ UBlock_0 ◄ UBlock_1 ◄ ... ◄ UBlock_n ◄┘

  DBlock: [strided conv3x3 if stride > 1] -> ResNetBlock x N -> [attention]
  UBlock: concat(input, skip / sqrt(2)) -> ResNetBlock x N -> [attention]
          -> [nearest upsample + conv3x3 if stride > 1]

which is the paper's "downsample before the convs in a DBlock, upsample after them
in a UBlock", with skip connections scaled by 1/sqrt(2) and per-level block
counts (more blocks at low resolution). With strides (1, 2, 2, 2) and attention
after every res block (`attention_per_res_block`) the same class gives the
ADM-style base 64x64 model.

Conditioning (CombineEmbs): an embedding of the noise level, plus an attention-
pooled text embedding, plus (SR stages) an embedding of the noise-augmentation
level, feeds every ResNetBlock's scale-shift norm. The text sequence is read by
attention layers at the levels configured ('self_cross' concatenates it to the
keys of image self-attention; 'cross' attends to text only). SR stages also get
the low-resolution image, resized to the output size and concatenated to z.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.nn.attention import ATTENTION_MODES, AttentionPool, ImageTextAttention
from imagen_jax.nn.block_scan import scan_res_blocks
from imagen_jax.nn.embeddings import NoiseLevelEmbedding, text_position_embedding
from imagen_jax.nn.partitioning import Conv, group_norm, param_with_axes
from imagen_jax.nn.resblock import ResNetBlock

SKIP_SCALE = 1.0 / math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Architecture of one U-Net; tuples have one entry per resolution level."""

    channels: tuple[int, ...] = (32, 64)
    num_res_blocks: tuple[int, ...] = (1, 1)
    strides: tuple[int, ...] = (1, 2)
    attention: tuple[str, ...] = ("none", "self_cross")
    attention_per_res_block: bool = False  # ADM: after every res block; Efficient: once
    # 'level': one skip per level, the DBlock's output (Efficient U-Net, Fig. A.29).
    # 'res_block': ADM's layout: the level's input and every down res block's output
    # are skips, and the up path has one res block per skip (num_res_blocks + 1).
    skip_connections: str = "level"
    attention_head_dim: int = 64
    attention_hidden_mult: int = 1  # the SR models' attention is 2x wider than the block
    cond_dim: int = 128  # width of the noise-level / pooled-text embedding
    text_dim: int = 32  # width of the incoming text embeddings (4096 for T5-XXL)
    # Add a fixed sinusoid of each token's index to the text before the U-Net reads it.
    # Off for a pretrained T5, whose outputs already carry context and order; on for the
    # offline demo's random frozen T5, whose outputs are nearly order-free bags of words
    # (docs/text_tokens.md), so "a red circle above a blue square" and "a blue circle
    # above a red square" would look almost the same to cross-attention.
    text_positions: bool = False
    in_channels: int = 3
    out_channels: int = 3
    lowres_cond: bool = False  # SR: concatenate the resized low-res image to z
    noise_aug_cond: bool = False  # SR: condition on the augmentation level
    dropout: float = 0.0
    num_groups: int = 32
    remat: bool = False
    # Run each level's identical res blocks as one lax.scan (imagen_jax/nn/block_scan.py):
    # the same function and weights, compiled once per level instead of once per block.
    scan_blocks: bool = False
    dtype: str = "float32"  # compute dtype; parameters stay float32

    def __post_init__(self):
        n = len(self.channels)
        for field in ("num_res_blocks", "strides", "attention"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"UNetConfig.{field} has {len(getattr(self, field))} entries; "
                                 f"channels has {n} (one per level)")
        for mode in self.attention:
            if mode not in ATTENTION_MODES:
                raise ValueError(f"UNetConfig.attention: unknown mode {mode!r}; "
                                 f"expected one of {ATTENTION_MODES}")
        for s in self.strides:
            if s not in (1, 2, 4):
                raise ValueError(f"UNetConfig.strides: {s} not in (1, 2, 4)")
        if min(self.channels) <= 0 or min(self.num_res_blocks) <= 0:
            raise ValueError("UNetConfig.channels and num_res_blocks must be positive")
        if self.skip_connections not in ("level", "res_block"):
            raise ValueError(f"UNetConfig.skip_connections: unknown {self.skip_connections!r}; "
                             "expected 'level' or 'res_block'")
        if self.noise_aug_cond and not self.lowres_cond:
            raise ValueError("UNetConfig.noise_aug_cond needs lowres_cond=True")

    @property
    def downsample_factor(self) -> int:
        """Image sides must be divisible by this."""
        return math.prod(self.strides)


class UNet(nn.Module):
    """(z, logsnr, text, text_mask[, lowres, aug_logsnr]) -> prediction, all NHWC."""

    config: UNetConfig

    @nn.compact
    def __call__(self, z: jnp.ndarray, logsnr: jnp.ndarray, text: jnp.ndarray,
                 text_mask: jnp.ndarray, lowres: jnp.ndarray | None = None,
                 aug_logsnr: jnp.ndarray | None = None,
                 deterministic: bool = True,
                 extra_emb: jnp.ndarray | None = None) -> jnp.ndarray:
        """`extra_emb` [B, cond_dim] is added to the conditioning embedding: the hook
        through which unCLIP's decoder adds its projected CLIP image embedding."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        b, height, width, _ = z.shape
        if height % cfg.downsample_factor or width % cfg.downsample_factor:
            raise ValueError(f"image size {height}x{width} is not divisible by the U-Net's "
                             f"downsampling factor {cfg.downsample_factor}")
        if cfg.lowres_cond != (lowres is not None):
            raise ValueError("this U-Net " + ("needs" if cfg.lowres_cond else "takes no")
                             + " low-res conditioning image")

        # Text: a learned null token first, always valid, so that an empty prompt
        # (all padding) still gives attention something to attend to.
        null = self.param("null_text", param_with_axes(nn.initializers.normal(0.02),
                                                       (None, "text_embed")),
                          (1, cfg.text_dim))
        text = text.astype(jnp.float32)
        if cfg.text_positions:
            text = text + text_position_embedding(text.shape[1], cfg.text_dim)[None]
        text = jnp.concatenate([jnp.broadcast_to(null, (b, 1, cfg.text_dim)), text],
                               axis=1).astype(dtype)
        text_mask = jnp.concatenate([jnp.ones((b, 1), bool), text_mask.astype(bool)], axis=1)

        # CombineEmbs: noise level + pooled text (+ augmentation level).
        emb = NoiseLevelEmbedding(cfg.cond_dim, name="noise_embedding")(logsnr)
        emb = emb + AttentionPool(cfg.cond_dim, min(64, cfg.cond_dim), dtype=dtype,
                                  name="text_pool")(text, text_mask)
        if cfg.noise_aug_cond:
            if aug_logsnr is None:
                raise ValueError("this U-Net needs aug_logsnr (the augmentation level)")
            emb = emb + NoiseLevelEmbedding(cfg.cond_dim, name="aug_embedding")(aug_logsnr)
        if extra_emb is not None:
            if extra_emb.shape != emb.shape:
                raise ValueError(f"extra_emb has shape {extra_emb.shape}, expected {emb.shape}")
            emb = emb + extra_emb.astype(emb.dtype)

        h = z
        if cfg.lowres_cond:
            up = jax.image.resize(lowres, (b, height, width, lowres.shape[-1]), "bilinear")
            h = jnp.concatenate([z, up.astype(z.dtype)], axis=-1)
        h = Conv(cfg.channels[0], name="conv_in", dtype=dtype)(h.astype(dtype))

        skips: list[list[jnp.ndarray]] = []
        for i in range(len(cfg.channels)):
            h, level_skips = self._dblock(i, h, emb, text, text_mask, deterministic)
            skips.append(level_skips)
        for i in reversed(range(len(cfg.channels))):
            out_channels = cfg.channels[max(i - 1, 0)]
            h = self._ublock(i, h, skips[i], emb, text, text_mask, out_channels, deterministic)

        h = nn.swish(group_norm(min(cfg.num_groups, h.shape[-1]), name="norm_out",
                                dtype=dtype)(h))
        out = Conv(cfg.out_channels, name="conv_out", kernel_init=nn.initializers.zeros_init(),
                   dtype=dtype)(h)
        return out.astype(jnp.float32)

    def _res_block(self, channels: int, name: str, deterministic: bool) -> nn.Module:
        cfg = self.config
        cls = nn.remat(ResNetBlock) if cfg.remat else ResNetBlock
        return cls(channels, cfg.dropout, cfg.num_groups, deterministic,
                   jnp.dtype(cfg.dtype), name=name)

    def _attention(self, level: int, name: str) -> nn.Module:
        cfg = self.config
        return ImageTextAttention(cfg.attention[level], cfg.attention_head_dim,
                                  cfg.attention_hidden_mult, cfg.num_groups,
                                  jnp.dtype(cfg.dtype), name=name)

    def _res_and_attention(self, prefix: str, level: int, j: int, h, emb, text, text_mask,
                           deterministic: bool, num_blocks: int | None = None):
        """Res block j of a level, followed by attention where configured."""
        cfg = self.config
        h = self._res_block(cfg.channels[level], f"{prefix}_res_{j}", deterministic)(h, emb)
        last = j == (num_blocks or cfg.num_res_blocks[level]) - 1
        if cfg.attention[level] != "none" and (cfg.attention_per_res_block or last):
            suffix = f"_{j}" if cfg.attention_per_res_block else ""
            h = self._attention(level, f"{prefix}_attn{suffix}")(h, text, text_mask)
        return h

    def _dblock(self, level: int, h, emb, text, text_mask, deterministic: bool):
        """Returns the block output and its skips (one, or one per res block)."""
        cfg = self.config
        stride = cfg.strides[level]
        if stride > 1:  # Efficient U-Net: downsample before the convolutions
            h = Conv(cfg.channels[level], strides=(stride, stride), name=f"down_{level}",
                     dtype=jnp.dtype(cfg.dtype))(h)
        level_input = h
        h, outputs = self._blocks(f"down_{level}", level, h, emb, text, text_mask,
                                  deterministic, [], cfg.num_res_blocks[level])
        return h, ([level_input] + outputs if cfg.skip_connections == "res_block" else [h])

    def _ublock(self, level: int, h, skips, emb, text, text_mask, out_channels: int,
                deterministic: bool):
        cfg = self.config
        num_blocks = max(cfg.num_res_blocks[level], len(skips))
        h, _ = self._blocks(f"up_{level}", level, h, emb, text, text_mask, deterministic,
                            list(skips), num_blocks)
        stride = cfg.strides[level]
        if stride > 1:  # ... and upsample after them
            b, hh, ww, c = h.shape
            h = jax.image.resize(h, (b, hh * stride, ww * stride, c), "nearest")
            h = Conv(out_channels, name=f"upsample_{level}", dtype=jnp.dtype(cfg.dtype))(h)
        return h

    def _blocks(self, prefix: str, level: int, h, emb, text, text_mask, deterministic: bool,
                skips: list, num_blocks: int):
        """Res blocks j = 0..num_blocks-1 of one side of a level (each followed by
        attention where configured); while `skips` remain, the last is concatenated
        before a block ('level': the first block only; 'res_block': every one).
        Returns h and every block's output.

        With `scan_blocks`, a run of identical blocks (same input and output widths)
        is one `lax.scan` over their stacked weights: XLA compiles the block once
        instead of once per block. The weights keep their per-block names, so
        checkpoints are the same either way (`init` always builds them unrolled).
        """
        outputs = []
        start = self._scan_start(level, h, skips, num_blocks)
        for j in range(num_blocks):
            if j == start:
                h, scanned = scan_res_blocks(self, prefix, level, range(j, num_blocks), h, emb,
                                             text, text_mask, deterministic, skips, SKIP_SCALE)
                return h, outputs + scanned
            if skips:
                h = jnp.concatenate([h, skips.pop() * SKIP_SCALE], axis=-1)
            h = self._res_and_attention(prefix, level, j, h, emb, text, text_mask,
                                        deterministic, num_blocks)
            outputs.append(h)
        return h, outputs

    def _scan_start(self, level: int, h, skips: list, num_blocks: int) -> int | None:
        """The first block of the run [start, num_blocks) that `scan_res_blocks` can run
        as one loop, or None (scanning off, initialising, or no run of 2+ blocks)."""
        cfg = self.config
        if not cfg.scan_blocks or self.is_initializing():
            return None
        width = cfg.channels[level]
        consumed = [j < len(skips) for j in range(num_blocks)]  # blocks that take a skip
        popped = list(reversed(skips))  # block j takes popped[j]
        for start in (0, 1):
            run = range(start, num_blocks)
            if len(run) < 2 or len({consumed[j] for j in run}) != 1:
                continue
            if consumed[start] and len({popped[j].shape for j in run}) != 1:
                continue
            if start == 0 and h.shape[-1] != width:
                continue  # the first block changes the width: run it unrolled
            return start
        return None


def count_params(config: UNetConfig, image_size: int, text_len: int = 8) -> int:
    """Parameter count from shapes alone (`jax.eval_shape`): nothing is materialised."""
    variables = jax.eval_shape(lambda: init_unet(config, jax.random.PRNGKey(0), image_size,
                                                 text_len=text_len))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nn.unbox(variables)))


def init_unet(config: UNetConfig, key: jax.Array, image_size: int, batch: int = 1,
              text_len: int = 8) -> Any:
    """`UNet(config).init` on dummy inputs of the right shapes (boxed variables)."""
    z = jnp.zeros((batch, image_size, image_size, config.in_channels))
    text = jnp.zeros((batch, text_len, config.text_dim))
    mask = jnp.ones((batch, text_len), bool)
    lowres = (jnp.zeros((batch, image_size // 4, image_size // 4, config.in_channels))
              if config.lowres_cond else None)
    aug = jnp.zeros((batch,)) if config.noise_aug_cond else None
    return UNet(config).init(key, z, jnp.zeros((batch,)), text, mask, lowres, aug)
