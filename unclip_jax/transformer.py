"""The pre-LayerNorm transformer unCLIP uses three times: CLIP's image and text
towers and the diffusion prior.

    x -> x + Attention(LN(x), mask) -> x + MLP(LN(x))     (per block)

This is CLIP's block exactly (biases on every projection, LayerNorm eps 1e-5 unless
config.json says otherwise, quick-GELU in OpenAI's checkpoints), so Hugging Face
CLIP weights load into it one to one. Parameters carry the logical axis names of
`imagen_jax.nn.partitioning` (embed / heads / kv / mlp / norm), so the same rules
table shards it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.nn.partitioning import Dense, DenseGeneral, layer_norm
from imagen_jax.parallel.activations import shard_residual

ACTIVATIONS = ("quick_gelu", "gelu")
LN_EPS = 1e-5  # CLIP's default LayerNorm epsilon (transformers' CLIPTextConfig)


def activation(name: str, x: jnp.ndarray) -> jnp.ndarray:
    if name == "quick_gelu":  # OpenAI CLIP: x * sigmoid(1.702 x)
        return x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":  # exact (erf) GELU, as torch's default
        return jax.nn.gelu(x, approximate=False)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    width: int
    layers: int
    heads: int
    mlp_dim: int | None = None  # default 4 * width
    activation: str = "quick_gelu"
    dropout: float = 0.0
    dtype: str = "float32"
    layer_norm_eps: float = LN_EPS

    def __post_init__(self):
        if not self.layer_norm_eps > 0:
            raise ValueError(f"transformer layer_norm_eps must be positive, got "
                             f"{self.layer_norm_eps}")
        if self.width <= 0 or self.layers <= 0 or self.heads <= 0:
            raise ValueError(f"transformer width/layers/heads must be positive, got "
                             f"{self.width}/{self.layers}/{self.heads}")
        if self.width % self.heads:
            raise ValueError(f"transformer width {self.width} is not divisible by "
                             f"{self.heads} heads")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; expected one of "
                             f"{ACTIVATIONS}")

    @property
    def hidden(self) -> int:
        return self.mlp_dim or 4 * self.width


class SelfAttention(nn.Module):
    heads: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
        width = x.shape[-1]
        head_dim = width // self.heads
        proj = dict(features=(self.heads, head_dim), names=("embed", "heads", "kv"),
                    use_bias=True, dtype=self.dtype)
        q = DenseGeneral(**proj, name="query")(x)
        k = DenseGeneral(**proj, name="key")(x)
        v = DenseGeneral(**proj, name="value")(x)
        out = jax.nn.dot_product_attention(q, k, v, mask=mask)
        return DenseGeneral(width, axis=(-2, -1), names=("heads", "kv", "embed"),
                            use_bias=True, name="out", dtype=self.dtype)(out)


class Block(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None,
                 deterministic: bool = True) -> jnp.ndarray:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        h = layer_norm("norm_1", dtype, cfg.layer_norm_eps)(x)
        h = SelfAttention(cfg.heads, dtype, name="attention")(h, mask)
        x = x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        h = layer_norm("norm_2", dtype, cfg.layer_norm_eps)(x)
        h = Dense(cfg.hidden, names=("embed", "mlp"), name="fc1", dtype=dtype)(h)
        h = Dense(x.shape[-1], names=("mlp", "embed"), name="fc2",
                  dtype=dtype)(activation(cfg.activation, h))
        return x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class Transformer(nn.Module):
    """`layers` blocks over [B, L, width]; mask broadcastable to [B, heads, L, L]."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray | None = None,
                 deterministic: bool = True) -> jnp.ndarray:
        if x.shape[-1] != self.config.width:
            raise ValueError(f"transformer input width {x.shape[-1]} != config width "
                             f"{self.config.width}")
        # The residual stream stays split by batch between blocks (activations.py).
        x = shard_residual(x)
        for i in range(self.config.layers):
            x = shard_residual(Block(self.config, name=f"layers_{i}")(x, mask, deterministic))
        return x


def causal_mask(length: int, valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """[B or 1, 1, L, L] bool: position i attends to j <= i (and j valid, if given).

    Every row keeps at least its own position, so no softmax runs over nothing.
    """
    mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
    if valid is not None:
        mask = mask & valid.astype(bool)[:, None, None, :]
        mask = mask | jnp.eye(length, dtype=bool)[None, None]
    return mask
