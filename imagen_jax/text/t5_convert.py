"""Hugging Face T5 checkpoint (safetensors) -> `imagen_jax.nn.t5.T5Encoder` params.

Reads the encoder of a `T5EncoderModel` or a full `T5ForConditionalGeneration`
checkpoint (decoder and lm_head tensors are ignored). Every parameter the Flax
module expects is looked up by its HF name, its stored shape checked, then
transposed / reshaped into the Flax layout:

  torch nn.Linear stores weight [out, in]; Flax kernels are [in, out], with the
  attention projections split per head: q/k/v [d_model, heads, d_kv] and
  o [heads, d_kv, d_model] (HF's `.view(..., heads, d_kv)` orders the heads first).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.nn.t5 import T5Config, T5Encoder
from imagen_jax.hf_checkpoint import (Checkpoint, check_model_type, convert_by_table,
                                        open_checkpoint, param_dtype, param_shapes)

Path = tuple[str, ...]
# Flax path -> (HF tensor name, HF shape, HF array -> Flax array)
Table = dict[Path, tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]]

_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight")
# config.json model_type values whose encoder is the T5 this converter reads (mT5 is
# T5 v1.1 with a larger vocabulary).
T5_MODEL_TYPES = ("t5", "mt5")


def expected_param_shapes(config: T5Config) -> dict[Path, tuple[int, ...]]:
    """Shape of every `T5Encoder` parameter, from an abstract init (no FLOPs, no memory)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return param_shapes(T5Encoder(config).init, jax.random.PRNGKey(0), ids,
                        jnp.ones((1, 1), bool))


def _linear(out_features: int, in_features: int, flax_shape: tuple[int, ...]
            ) -> tuple[tuple[int, ...], Callable[[np.ndarray], np.ndarray]]:
    """HF shape of a torch Linear weight, and its map to a (reshaped) Flax kernel."""
    return (out_features, in_features), lambda w: w.T.reshape(flax_shape)


def conversion_table(config: T5Config, embedding_name: str = "shared.weight") -> Table:
    """Where each Flax parameter comes from in an HF T5 checkpoint, and how."""
    c = config
    inner = c.num_heads * c.d_kv
    identity = lambda w: w  # noqa: E731 - a table entry, not a function worth a name
    table: Table = {
        ("token_embedder", "embedding"): (embedding_name, (c.vocab_size, c.d_model), identity),
        ("relative_position_bias", "embedding"): (
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            (c.relative_attention_num_buckets, c.num_heads), identity),
        ("final_norm", "scale"): ("encoder.final_layer_norm.weight", (c.d_model,), identity),
    }
    qkv_shape = (c.d_model, c.num_heads, c.d_kv)
    mlp_in = ("wi_0", "wi_1") if c.is_gated else ("wi",)
    for i in range(c.num_layers):
        layer, hf = f"layers_{i}", f"encoder.block.{i}.layer"
        for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v")):
            table[(layer, "attention", ours, "dense", "kernel")] = (
                f"{hf}.0.SelfAttention.{theirs}.weight", *_linear(inner, c.d_model, qkv_shape))
        table[(layer, "attention", "out", "dense", "kernel")] = (
            f"{hf}.0.SelfAttention.o.weight",
            *_linear(c.d_model, inner, (c.num_heads, c.d_kv, c.d_model)))
        table[(layer, "pre_attention_norm", "scale")] = (
            f"{hf}.0.layer_norm.weight", (c.d_model,), identity)
        for name in mlp_in:
            table[(layer, "mlp", name, "dense", "kernel")] = (
                f"{hf}.1.DenseReluDense.{name}.weight", *_linear(c.d_ff, c.d_model,
                                                                 (c.d_model, c.d_ff)))
        table[(layer, "mlp", "wo", "dense", "kernel")] = (
            f"{hf}.1.DenseReluDense.wo.weight", *_linear(c.d_model, c.d_ff, (c.d_ff, c.d_model)))
        table[(layer, "pre_mlp_norm", "scale")] = (f"{hf}.1.layer_norm.weight", (c.d_model,),
                                                   identity)
    return table


def _embedding_name(checkpoint: Checkpoint) -> str:
    # With tied embeddings safetensors keeps one copy, under either name.
    for name in _EMBEDDING_NAMES:
        if name in checkpoint:
            return name
    raise ValueError(f"{' / '.join(_EMBEDDING_NAMES)}: token embedding missing from "
                     f"{checkpoint.directory}")


def convert_t5_encoder(checkpoint: Checkpoint, config: T5Config, dtype: Any = jnp.float32
                       ) -> dict[str, Any]:
    """Flax params (a plain nested dict) for `T5Encoder(config)` from an HF checkpoint."""
    np_dtype = param_dtype(dtype)
    embedding_name = _embedding_name(checkpoint)
    table = conversion_table(config, embedding_name)
    expected = expected_param_shapes(config)
    return convert_by_table(checkpoint, table, expected, np_dtype, prefix="encoder.",
                            also_used=_EMBEDDING_NAMES)


def load_t5_encoder(path: str | os.PathLike, dtype: Any = jnp.float32
                    ) -> tuple[T5Config, dict[str, Any]]:
    """Loads a local HF T5 directory (config.json + safetensors) as `(config, params)`.

    `dtype` (float32 or bfloat16) is the dtype of the returned params and also the
    compute dtype set in the returned config; use `dataclasses.replace(config,
    dtype=...)` to compute in another. Apply with
    `T5Encoder(config).apply({"params": params}, ids, mask)`.
    """
    np_dtype = param_dtype(dtype)
    checkpoint = open_checkpoint(path)
    check_model_type(checkpoint, T5_MODEL_TYPES)
    try:
        config = T5Config.from_hf_dict(checkpoint.config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{os.path.join(checkpoint.directory, 'config.json')}: {err}") from err
    config = dataclasses.replace(config, dtype=jnp.dtype(np_dtype))
    return config, convert_t5_encoder(checkpoint, config, np_dtype)
