"""Attention layers of the U-Nets: image self-attention with text in its keys,
text cross-attention, and attention pooling of the text sequence.

Imagen (App. D.3.1) conditions on the whole T5 sequence by concatenating the text
tokens to the keys and values of each self-attention layer; the SR1024 model keeps
only cross-attention. Both are one layer here with a `mode`: 'self' (image keys),
'cross' (text keys), 'self_cross' (both, concatenated). Text goes through a
LayerNorm inside every layer that reads it (Imagen section 2.5). All attention runs
through `attend` below: plain softmax attention while the score tensor is small, and
query-blocked attention, recomputed in the backward pass, once it is not.

The text mask must have at least one valid token per row: the U-Net prepends a
learned null token, so an empty prompt (all-padding) attends to that token alone
rather than producing a softmax over nothing.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.nn.partitioning import DenseGeneral, group_norm, layer_norm, param_with_axes

ATTENTION_MODES = ("none", "self", "cross", "self_cross")

# Above this many bytes of float32 scores [B, heads, queries, keys], attention runs a
# block of queries at a time. Why: at 1024 image tokens (the 64 px model's 32 px
# level) the scores are 136 MB per layer, and every softmax pass over them (mask,
# max, exp, sum, and as many again in the backward) streams main memory; a block's
# scores stay in cache. The blocks are rematerialised in the backward pass, so the
# saved activations shrink from the scores to q, k, v. Measured on the 2-core dev
# machine, one such layer (batch 4, 8 heads of 32): forward + backward 560-670 ms with
# jax.nn.dot_product_attention, 330-410 ms in blocks of 128 queries (17 MB of scores).
# Blocks split the query axis only, so batch and head shardings pass through.
ATTENTION_BLOCK_BYTES = 32 << 20


def _softmax_attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray,
                       bias: jnp.ndarray) -> jnp.ndarray:
    """softmax(q k^T / sqrt(d) + bias) v for q [B, T, N, D], k, v [B, S, N, D] and a
    bias [B, S] (0 or -1e30); scores and softmax in float32.

    Heads go first before the products (transposing q, k, v, not the scores), and the
    softmax's normalisation divides the [.., T, D] output rather than the [.., T, S]
    probabilities: one pass fewer over the largest tensor."""
    qh, kh, vh = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))  # [B, N, *, D]
    scale = np.float32(1.0 / np.sqrt(q.shape[-1]))
    scores = jnp.einsum("bntd,bnsd->bnts", qh, kh, preferred_element_type=jnp.float32)
    scores = scores * scale + bias[:, None, None, :]
    weights = jnp.exp(scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True)))
    out = jnp.einsum("bnts,bnsd->bntd", weights.astype(v.dtype), vh,
                     preferred_element_type=jnp.float32)
    out = out / weights.sum(axis=-1, keepdims=True)
    return jnp.swapaxes(out, 1, 2).astype(v.dtype)


def attend(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, mask: jnp.ndarray,
           block_bytes: int | None = None) -> jnp.ndarray:
    """Multi-head attention of q [B, T, N, D] over k, v [B, S, N, D]; mask [B, S] is
    True for keys to attend to (at least one per row). Queries go in blocks when the
    scores would exceed `block_bytes` (ATTENTION_BLOCK_BYTES by default)."""
    b, t, n, _ = q.shape
    bias = jnp.where(mask, 0.0, -1e30).astype(jnp.float32)
    per_query = b * n * k.shape[1] * 4
    budget = ATTENTION_BLOCK_BYTES if block_bytes is None else block_bytes
    block = t
    while block % 2 == 0 and block * per_query > budget:
        block //= 2
    if block == t:
        return _softmax_attention(q, k, v, bias)
    blocked = jax.checkpoint(lambda qb: _softmax_attention(qb, k, v, bias))
    q_blocks = jnp.moveaxis(q.reshape(b, t // block, block, *q.shape[2:]), 1, 0)
    out = jax.lax.map(blocked, q_blocks)  # [T / block, B, block, N, D]
    return jnp.moveaxis(out, 0, 1).reshape(q.shape[:3] + v.shape[-1:])


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
        mask = jnp.concatenate(masks, axis=1)
        out = attend(q, k.astype(q.dtype), v.astype(q.dtype), mask)
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
        pooled = attend(q, k, v, text_mask.astype(bool))[:, 0]
        return DenseGeneral(self.features, axis=(-2, -1), names=("heads", "kv", "embed"),
                            name="out", dtype=self.dtype)(pooled)
