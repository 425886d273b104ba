"""T5 encoder (v1.0 ReLU and v1.1 gated-GELU) in Flax linen.

The math is Hugging Face's `T5EncoderModel`, so that converted checkpoints give the
same hidden states (tested to 1e-4 in float32 against `transformers`):

  * token embedding, not scaled by sqrt(d_model);
  * pre-norm blocks with T5's RMS layer norm (no mean subtraction, no bias, the
    variance accumulated in float32, a weight only);
  * self-attention whose q/k/v/o projections have no bias and whose logits are NOT
    scaled by 1/sqrt(d_kv) (T5 folds that scale into its initialisation);
  * one learned relative-position bias (bidirectional log buckets), computed once
    and added in every layer (HF computes it in block 0 and passes it down);
  * feed-forward `wo(act(wi x))`, or gated `wo(act(wi_0 x) * wi_1 x)` for v1.1;
  * residuals, dropout when not deterministic, a final RMS layer norm.

Parameter tree (the converter in `imagen_jax.text.t5_convert` writes exactly this):

  token_embedder/embedding                      [vocab, embed]
  relative_position_bias/embedding              [relpos_buckets, heads]
  layers_{i}/pre_attention_norm/scale           [norm]
  layers_{i}/attention/{query,key,value}/dense/kernel   [embed, heads, kv]
  layers_{i}/attention/out/dense/kernel         [heads, kv, embed]
  layers_{i}/pre_mlp_norm/scale                 [norm]
  layers_{i}/mlp/{wi | wi_0, wi_1}/dense/kernel [embed, mlp]
  layers_{i}/mlp/wo/dense/kernel                [mlp, embed]
  final_norm/scale                              [norm]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.nn.partitioning import Dense, DenseGeneral, param_with_axes
from imagen_jax.parallel.activations import shard_residual

# Activation names as Hugging Face's ACT2FN spells them. 'gelu' is the exact (erf)
# GELU; 'gelu_new' is the tanh approximation T5 v1.1 was trained with.
_ACTIVATIONS: dict[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}

_HF_REQUIRED_KEYS = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
_HF_OPTIONAL_KEYS = ("relative_attention_num_buckets", "relative_attention_max_distance",
                     "dropout_rate", "layer_norm_epsilon", "feed_forward_proj")


def parse_feed_forward_proj(value: str) -> tuple[bool, str]:
    """Splits HF's `feed_forward_proj` ('relu', 'gated-gelu', ...) into (gated, activation).

    As in `transformers.T5Config`, 'gated-gelu' means the tanh-approximated GELU
    ('gelu_new'), which is what the T5 v1.1 checkpoints were trained with.
    """
    if not isinstance(value, str):
        raise TypeError(f"feed_forward_proj must be a str, got {type(value).__name__}")
    parts = value.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    if len(parts) > 2 or (len(parts) == 2 and not gated):
        raise ValueError(f"unknown feed_forward_proj {value!r}: expected '<act>' or 'gated-<act>'")
    act = parts[-1]
    if value == "gated-gelu":
        act = "gelu_new"
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown feed_forward_proj {value!r}: activation {act!r} is not one of "
                         f"{sorted(_ACTIVATIONS)}")
    return gated, act


# T5 v1.1 XXL's encoder, Imagen's text encoder (HF google/t5-v1_1-xxl config.json):
# 4.76B parameters, 8.9 GiB in bfloat16.
T5_V1_1_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                   num_heads=64, feed_forward_proj="gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Hyper-parameters of a T5 encoder; field names follow HF's config.json."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    dtype: Any = jnp.float32  # compute dtype; parameters keep whatever dtype they are given

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
        if self.relative_attention_num_buckets < 4:
            # Bidirectional bucketing halves the buckets, then halves again into exact
            # and log-spaced ranges; fewer than 4 leaves one of them empty.
            raise ValueError("T5Config.relative_attention_num_buckets must be >= 4, got "
                             f"{self.relative_attention_num_buckets}")
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if not float(self.layer_norm_epsilon) > 0.0:
            raise ValueError(
                f"T5Config.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}")
        parse_feed_forward_proj(self.feed_forward_proj)
        try:
            jnp.dtype(self.dtype)
        except TypeError as err:
            raise TypeError(f"T5Config.dtype is not a dtype: {self.dtype!r}") from err

    @property
    def is_gated(self) -> bool:
        return parse_feed_forward_proj(self.feed_forward_proj)[0]

    @property
    def activation(self) -> str:
        return parse_feed_forward_proj(self.feed_forward_proj)[1]

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], dtype: Any = jnp.float32) -> "T5Config":
        """Reads the fields of a Hugging Face T5 `config.json` (other keys are ignored)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"T5 config must be a mapping, got {type(d).__name__}")
        missing = [k for k in _HF_REQUIRED_KEYS if k not in d]
        if missing:
            raise ValueError(f"T5 config.json lacks required key(s) {missing}")
        kwargs = {k: d[k] for k in _HF_REQUIRED_KEYS}
        kwargs.update({k: d[k] for k in _HF_OPTIONAL_KEYS if d.get(k) is not None})
        return cls(**kwargs, dtype=dtype)


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int,
                              max_distance: int) -> np.ndarray:
    """Bucket index [T, S] of (key position - query position), bidirectional.

    Exactly HF's `T5Attention._relative_position_bucket(bidirectional=True)`: half the
    buckets for keys after the query; within a half, exact buckets for distances
    below num_buckets/4 and log-spaced ones up to `max_distance` (the last bucket
    takes everything beyond). Computed in numpy float32 on the host: the shapes are
    static, and the truncation at bucket edges (e.g. distance 16 -> exactly 10) must
    round as PyTorch's float32 arithmetic does.
    """
    context = np.arange(query_length, dtype=np.int64)[:, None]
    memory = np.arange(key_length, dtype=np.int64)[None, :]
    relative = memory - context
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    is_small = distance < max_exact
    # max(distance, 1) only avoids log(0); those entries take the exact branch.
    scaled = (np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact))
              * np.float32(half - max_exact))
    if_large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return (buckets + np.where(is_small, distance, if_large)).astype(np.int32)


class RMSNorm(nn.Module):
    """T5 layer norm: x / rms(x) * scale, the statistic taken in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        scale = self.param("scale", param_with_axes(nn.initializers.ones_init(), ("norm",)),
                           (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(variance + self.epsilon)).astype(self.dtype)
        return scale.astype(self.dtype) * y


class RelativePositionBias(nn.Module):
    """Learned per-head bias [1, heads, T, S] from bucketed relative positions."""

    num_buckets: int
    max_distance: int
    num_heads: int
    init_stddev: float = 1.0

    @nn.compact
    def __call__(self, query_length: int, key_length: int) -> jnp.ndarray:
        table = self.param("embedding",
                           param_with_axes(nn.initializers.normal(self.init_stddev),
                                           ("relpos_buckets", "heads")),
                           (self.num_buckets, self.num_heads))
        buckets = relative_position_buckets(query_length, key_length, self.num_buckets,
                                            self.max_distance)
        # Kept in float32: it is added to float32 attention logits.
        values = jnp.take(table.astype(jnp.float32), jnp.asarray(buckets), axis=0)  # [T, S, N]
        return jnp.transpose(values, (2, 0, 1))[None]


class SelfAttention(nn.Module):
    """Multi-head self-attention without biases or logit scaling (T5)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jnp.ndarray, position_bias: jnp.ndarray, mask: jnp.ndarray,
                 deterministic: bool = True) -> jnp.ndarray:
        cfg = self.config
        # HF's T5 initialisation: the 1/sqrt(d_kv) logit scale lives in the query init.
        normal = nn.initializers.normal

        def projection(name: str, stddev: float) -> jnp.ndarray:
            return DenseGeneral((cfg.num_heads, cfg.d_kv), names=("embed", "heads", "kv"),
                                kernel_init=normal(stddev), dtype=cfg.dtype, name=name)(x)

        q = projection("query", (cfg.d_model * cfg.d_kv) ** -0.5)  # [B, L, N, H]
        k = projection("key", cfg.d_model ** -0.5)
        v = projection("value", cfg.d_model ** -0.5)
        if deterministic or cfg.dropout_rate == 0.0:
            out = jax.nn.dot_product_attention(q, k, v, bias=position_bias, mask=mask, scale=1.0)
        else:
            # jax.nn.dot_product_attention has no dropout on the attention weights,
            # which HF applies while training; spell the same math out here.
            logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
            logits = jnp.where(mask, logits + position_bias, jnp.finfo(jnp.float32).min)
            weights = jax.nn.softmax(logits, axis=-1)
            weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=False)
            out = jnp.einsum("bnts,bsnh->btnh", weights.astype(v.dtype), v)
        return DenseGeneral(cfg.d_model, names=("heads", "kv", "embed"), axis=(-2, -1),
                            kernel_init=normal((cfg.num_heads * cfg.d_kv) ** -0.5),
                            dtype=cfg.dtype, name="out")(out)


class FeedForward(nn.Module):
    """wo(act(wi x)) for T5 v1.0, wo(act(wi_0 x) * wi_1 x) for gated variants (v1.1)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
        cfg = self.config
        gated, act_name = parse_feed_forward_proj(cfg.feed_forward_proj)
        act = _ACTIVATIONS[act_name]

        def dense(features: int, names: tuple[str, str], name: str) -> Dense:
            # Unit-variance outputs for unit-variance inputs (HF's T5 initialisation).
            fan_in = cfg.d_model if names[0] == "embed" else cfg.d_ff
            return Dense(features, names=names, use_bias=False, dtype=cfg.dtype, name=name,
                         kernel_init=nn.initializers.normal(fan_in ** -0.5))

        if gated:
            h = act(dense(cfg.d_ff, ("embed", "mlp"), "wi_0")(x)) * dense(
                cfg.d_ff, ("embed", "mlp"), "wi_1")(x)
        else:
            h = act(dense(cfg.d_ff, ("embed", "mlp"), "wi")(x))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return dense(cfg.d_model, ("mlp", "embed"), "wo")(h)


class EncoderLayer(nn.Module):
    """One pre-norm T5 block: x + attn(norm(x)), then x + ff(norm(x))."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jnp.ndarray, position_bias: jnp.ndarray, mask: jnp.ndarray,
                 deterministic: bool = True) -> jnp.ndarray:
        cfg = self.config
        dropout = nn.Dropout(cfg.dropout_rate)
        h = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="pre_attention_norm")(x)
        h = SelfAttention(cfg, name="attention")(h, position_bias, mask, deterministic)
        x = x + dropout(h, deterministic=deterministic)
        h = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="pre_mlp_norm")(x)
        h = FeedForward(cfg, name="mlp")(h, deterministic)
        return x + dropout(h, deterministic=deterministic)


def _check_inputs(input_ids: jnp.ndarray, attention_mask: jnp.ndarray) -> None:
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    if not jnp.issubdtype(input_ids.dtype, jnp.integer):
        raise TypeError(f"input_ids must be integers, got {input_ids.dtype}")
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match "
                         f"input_ids shape {tuple(input_ids.shape)}")


class T5Encoder(nn.Module):
    """T5 encoder stack: `(input_ids [B, L], attention_mask [B, L]) -> [B, L, d_model]`."""

    config: T5Config

    @nn.compact
    def __call__(self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray,
                 deterministic: bool = True) -> jnp.ndarray:
        cfg = self.config
        input_ids, attention_mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
        _check_inputs(input_ids, attention_mask)
        length = input_ids.shape[1]
        dropout = nn.Dropout(cfg.dropout_rate)

        x = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, name="token_embedder",
                     embedding_init=param_with_axes(nn.initializers.normal(1.0),
                                                    ("vocab", "embed")))(input_ids)
        # The residual stream stays split by batch (FSDP all-gathers each weight
        # rather than all-reducing activations split along 'embed'; activations.py).
        x = shard_residual(dropout(x, deterministic=deterministic))
        position_bias = RelativePositionBias(
            cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
            cfg.num_heads, cfg.d_model ** -0.5, name="relative_position_bias")(length, length)
        # Key padding mask [B, 1, 1, S]: padded keys get no weight; padded queries
        # still attend (to real keys), as in HF, so every position is defined.
        mask = attention_mask.astype(bool)[:, None, None, :]
        for i in range(cfg.num_layers):
            x = shard_residual(
                EncoderLayer(cfg, name=f"layers_{i}")(x, position_bias, mask, deterministic))
        x = RMSNorm(cfg.layer_norm_epsilon, cfg.dtype, name="final_norm")(x)
        return dropout(x, deterministic=deterministic)
