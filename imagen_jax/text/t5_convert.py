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

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from imagen_jax.nn.t5 import T5Config, T5Encoder
from imagen_jax.text.checkpoint import Checkpoint, open_checkpoint, take

Path = tuple[str, ...]
# Flax path -> (HF tensor name, HF shape, HF array -> Flax array)
Table = dict[Path, tuple[str, tuple[int, ...], Callable[[np.ndarray], np.ndarray]]]

_PARAM_DTYPES = {np.dtype(np.float32): np.dtype(np.float32),
                 np.dtype(jnp.bfloat16): np.dtype(ml_dtypes.bfloat16)}
_EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight")


def expected_param_shapes(config: T5Config) -> dict[Path, tuple[int, ...]]:
    """Shape of every `T5Encoder` parameter, from an abstract init (no FLOPs, no memory)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    variables = jax.eval_shape(T5Encoder(config).init, jax.random.PRNGKey(0), ids,
                               jnp.ones((1, 1), bool))
    params = nn.meta.unbox(variables["params"])
    return {path: tuple(leaf.shape)
            for path, leaf in flax.traverse_util.flatten_dict(params).items()}


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


def _param_dtype(dtype: Any) -> np.dtype:
    if dtype is None:  # jnp.dtype(None) would quietly mean float64
        raise ValueError("dtype must be float32 or bfloat16, got None")
    try:
        key = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}") from err
    if key not in _PARAM_DTYPES:
        raise ValueError(f"dtype must be float32 or bfloat16, got {key.name}")
    return _PARAM_DTYPES[key]


def convert_t5_encoder(checkpoint: Checkpoint, config: T5Config, dtype: Any = jnp.float32
                       ) -> dict[str, Any]:
    """Flax params (a plain nested dict) for `T5Encoder(config)` from an HF checkpoint."""
    np_dtype = _param_dtype(dtype)
    embedding_name = _embedding_name(checkpoint)
    table = conversion_table(config, embedding_name)
    expected = expected_param_shapes(config)
    if set(table) != set(expected):
        # The table and the module disagree: a bug here, not in the checkpoint.
        raise RuntimeError("T5 conversion table does not match T5Encoder parameters: "
                           f"{sorted(set(table) ^ set(expected))[:4]}")

    used = {embedding_name} | {name for name, _, _ in table.values()}
    unused = sorted(n for n in checkpoint
                    if n.startswith("encoder.") and n not in used and n not in _EMBEDDING_NAMES)
    if unused:
        raise ValueError(f"{checkpoint.directory}: {len(unused)} encoder tensor(s) that "
                         f"config.json does not account for (e.g. {unused[0]}); config and "
                         "weights disagree")

    flat = {}
    for path, (name, hf_shape, to_flax) in table.items():
        array = to_flax(take(checkpoint, name, hf_shape, source=checkpoint.directory))
        if tuple(array.shape) != expected[path]:
            raise RuntimeError(f"{name}: converted to {tuple(array.shape)}, but "
                               f"{'/'.join(path)} expects {expected[path]}")
        flat[path] = jnp.asarray(np.ascontiguousarray(array.astype(np_dtype)))
    return flax.traverse_util.unflatten_dict(flat)


def load_t5_encoder(path: str | os.PathLike, dtype: Any = jnp.float32
                    ) -> tuple[T5Config, dict[str, Any]]:
    """Loads a local HF T5 directory (config.json + safetensors) as `(config, params)`.

    `dtype` (float32 or bfloat16) is the dtype of the returned params and also the
    compute dtype set in the returned config; use `dataclasses.replace(config,
    dtype=...)` to compute in another. Apply with
    `T5Encoder(config).apply({"params": params}, ids, mask)`.
    """
    np_dtype = _param_dtype(dtype)
    checkpoint = open_checkpoint(path)
    try:
        config = T5Config.from_hf_dict(checkpoint.config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{os.path.join(checkpoint.directory, 'config.json')}: {err}") from err
    config = dataclasses.replace(config, dtype=jnp.dtype(np_dtype))
    return config, convert_t5_encoder(checkpoint, config, np_dtype)
