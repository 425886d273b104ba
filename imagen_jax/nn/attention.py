"""Attention layers of the U-Nets: image self-attention with text in its keys,
text cross-attention, and attention pooling of the text sequence.

Imagen (App. D.3.1) conditions on the whole T5 sequence by concatenating the text
tokens to the keys and values of each self-attention layer; the SR1024 model keeps
only cross-attention. Both are one layer here with a `mode`: 'self' (image keys),
'cross' (text keys), 'self_cross' (both, concatenated). Text goes through a
LayerNorm inside every layer that reads it (Imagen section 2.5). All attention runs
through `jax.nn.dot_product_attention`, which picks a fused kernel where one exists.

The text mask must have at least one valid token per row: the U-Net prepends a
learned null token, so an empty prompt (all-padding) attends to that token alone
rather than producing a softmax over nothing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.nn.partitioning import DenseGeneral, group_norm, layer_norm, param_with_axes

ATTENTION_MODES = ("none", "self", "cross", "self_cross")


def _heads(hidden: int, head_dim: int) -> int:
    if hidden % head_dim:
        raise ValueError(f"attention width {hidden} is not a multiple of head_dim {head_dim}")
    return hidden // head_dim


class ImageTextAttention(nn.Module):
    """Residual attention over image tokens [B, H, W, C], optionally with text keys.

    hidden = hidden_mult * C split into heads of `head_dim`; the output projects
    back to C and is added to the input.
    """

    mode: str
    head_dim: int = 64
    hidden_mult: int = 1
    num_groups: int = 32
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, text: jnp.ndarray, text_mask: jnp.ndarray) -> jnp.ndarray:
        if self.mode not in ATTENTION_MODES[1:]:
            raise ValueError(f"unknown attention mode {self.mode!r}; expected one of "
                             f"{ATTENTION_MODES[1:]}")
        b, h, w, c = x.shape
        hidden = self.hidden_mult * c
        heads = _heads(hidden, self.head_dim)
        proj = dict(features=(heads, self.head_dim), names=("embed", "heads", "kv"),
                    dtype=self.dtype)
        xn = group_norm(min(self.num_groups, c), name="norm", dtype=self.dtype)(x)
        xn = xn.reshape(b, h * w, c)
        q = DenseGeneral(**proj, name="query")(xn)
        keys, values, masks = [], [], []
        if self.mode in ("self", "self_cross"):
            keys.append(DenseGeneral(**proj, name="key")(xn))
            values.append(DenseGeneral(**proj, name="value")(xn))
            masks.append(jnp.ones((b, h * w), bool))
        if self.mode in ("cross", "self_cross"):
            tn = layer_norm(name="text_norm", dtype=self.dtype)(text)
            text_proj = dict(proj, names=("text_embed", "heads", "kv"))
            keys.append(DenseGeneral(**text_proj, name="text_key")(tn))
            values.append(DenseGeneral(**text_proj, name="text_value")(tn))
            masks.append(text_mask.astype(bool))
        k = jnp.concatenate(keys, axis=1)
        v = jnp.concatenate(values, axis=1)
        mask = jnp.concatenate(masks, axis=1)[:, None, None, :]
        out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask)
        out = DenseGeneral(c, axis=(-2, -1), names=("heads", "kv", "embed"), name="out",
                           kernel_init=nn.initializers.zeros_init(), dtype=self.dtype)(out)
        return x + out.reshape(b, h, w, c).astype(x.dtype)


class AttentionPool(nn.Module):
    """Pools masked text [B, L, D] to [B, features] with a learned query (Imagen 2.5)."""

    features: int
    head_dim: int = 64
    dtype: Any = None

    @nn.compact
    def __call__(self, text: jnp.ndarray, text_mask: jnp.ndarray) -> jnp.ndarray:
        heads = _heads(self.features, self.head_dim)
        tn = layer_norm(name="text_norm", dtype=self.dtype)(text)
        proj = dict(features=(heads, self.head_dim), names=("text_embed", "heads", "kv"),
                    dtype=self.dtype)
        k = DenseGeneral(**proj, name="key")(tn)
        v = DenseGeneral(**proj, name="value")(tn)
        query = self.param("query", param_with_axes(nn.initializers.normal(0.02),
                                                    ("heads", "kv")),
                           (heads, self.head_dim))
        q = jnp.broadcast_to(query.astype(k.dtype), (text.shape[0], 1, heads, self.head_dim))
        mask = text_mask.astype(bool)[:, None, None, :]
        pooled = jax.nn.dot_product_attention(q, k, v, mask=mask)[:, 0]
        return DenseGeneral(self.features, axis=(-2, -1), names=("heads", "kv", "embed"),
                            name="out", dtype=self.dtype)(pooled)
