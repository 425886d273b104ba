"""Hugging Face CLIP checkpoint (safetensors) -> `unclip_jax.clip.CLIP` params.

Reads a local `CLIPModel` directory (config.json, model.safetensors or a sharded
index, optionally preprocessor_config.json for the pixel normalisation) through
`imagen_jax.hf_checkpoint`: safetensors only, every tensor's shape checked,
tensors the config does not account for refused, pickles never opened.

Layout changes: torch Linear [out, in] -> Flax [in, out] with q/k/v split per head
([W, heads, head_dim]) and the output projection [heads, head_dim, W]; the patch
convolution [W, 3, p, p] becomes a dense layer over row-major (p, p, 3) patches.
The text tower pools at the EOS id of config.json as transformers does (the first
EOS token, or the largest id for legacy configs whose eos_token_id is 2), and each
tower's LayerNorm epsilon is read from config.json (transformers' default 1e-5 when
absent): a checkpoint with another epsilon gives transformers' embeddings, not
silently different ones.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from imagen_jax.hf_checkpoint import (ConversionTable, check_model_type, convert_by_table,
                                        open_checkpoint, param_dtype, param_shapes)
from unclip_jax.clip import CLIP, OPENAI_MEAN, OPENAI_STD, CLIPConfig
from unclip_jax.transformer import LN_EPS

HF_CLIP_EOS = 49407  # transformers' CLIPTextConfig default eos_token_id

_BUFFERS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
_HF_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def _hf_activation(value: str, where: str) -> str:
    if value not in _HF_ACTIVATIONS:
        raise ValueError(f"{where}.hidden_act {value!r} is not supported; expected one of "
                         f"{sorted(_HF_ACTIVATIONS)}")
    return _HF_ACTIVATIONS[value]


def _eos_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"text_config.eos_token_id must be one integer id, got {value!r}")
    return value


def config_from_hf(hf: dict, preprocessor: dict | None = None, dtype: str = "float32"
                   ) -> CLIPConfig:
    """A `CLIPConfig` from a CLIPModel config.json (and preprocessor_config.json)."""
    try:
        text, vision = hf["text_config"], hf["vision_config"]
        t_act = _hf_activation(text.get("hidden_act", "quick_gelu"), "text_config")
        v_act = _hf_activation(vision.get("hidden_act", "quick_gelu"), "vision_config")
        if t_act != v_act:
            raise ValueError(f"text ({t_act}) and vision ({v_act}) activations differ")
        pre = preprocessor or {}
        return CLIPConfig(
            embed_dim=hf.get("projection_dim", 512),
            image_size=vision["image_size"], patch_size=vision["patch_size"],
            vision_width=vision["hidden_size"], vision_layers=vision["num_hidden_layers"],
            vision_heads=vision["num_attention_heads"],
            vision_mlp_dim=vision["intermediate_size"],
            vocab_size=text["vocab_size"], max_length=text["max_position_embeddings"],
            text_width=text["hidden_size"], text_layers=text["num_hidden_layers"],
            text_heads=text["num_attention_heads"], text_mlp_dim=text["intermediate_size"],
            activation=t_act,
            image_mean=tuple(pre.get("image_mean", OPENAI_MEAN)),
            image_std=tuple(pre.get("image_std", OPENAI_STD)),
            logit_scale_init=hf.get("logit_scale_init_value", 2.6592), dtype=dtype,
            text_layer_norm_eps=float(text.get("layer_norm_eps", LN_EPS)),
            vision_layer_norm_eps=float(vision.get("layer_norm_eps", LN_EPS)),
            eos_token_id=_eos_id(text.get("eos_token_id", HF_CLIP_EOS)))
    except KeyError as err:
        raise ValueError(f"CLIP config.json lacks {err}") from None


def expected_param_shapes(config: CLIPConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    s = config.image_size
    return param_shapes(CLIP(config).init, jax.random.PRNGKey(0), jnp.zeros((1, s, s, 3)),
                        jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool))


def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _transformer_table(table: ConversionTable, ours: tuple[str, ...], theirs: str,
                       width: int, heads: int, hidden: int, layers: int) -> None:
    head_dim = width // heads
    linear = lambda shape: (lambda w: w.T.reshape(shape))  # noqa: E731
    for i in range(layers):
        o, t = ours + (f"layers_{i}",), f"{theirs}.layers.{i}"
        for name, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            table[o + ("attention", name, "dense", "kernel")] = (
                f"{t}.self_attn.{hf}.weight", (width, width), linear((width, heads, head_dim)))
            table[o + ("attention", name, "dense", "bias")] = (
                f"{t}.self_attn.{hf}.bias", (width,), lambda b: b.reshape(heads, head_dim))
        table[o + ("attention", "out", "dense", "kernel")] = (
            f"{t}.self_attn.out_proj.weight", (width, width), linear((heads, head_dim, width)))
        table[o + ("attention", "out", "dense", "bias")] = (
            f"{t}.self_attn.out_proj.bias", (width,), _identity)
        for n, hf in (("norm_1", "layer_norm1"), ("norm_2", "layer_norm2")):
            table[o + (n, "scale")] = (f"{t}.{hf}.weight", (width,), _identity)
            table[o + (n, "bias")] = (f"{t}.{hf}.bias", (width,), _identity)
        table[o + ("fc1", "dense", "kernel")] = (f"{t}.mlp.fc1.weight", (hidden, width),
                                                 linear((width, hidden)))
        table[o + ("fc1", "dense", "bias")] = (f"{t}.mlp.fc1.bias", (hidden,), _identity)
        table[o + ("fc2", "dense", "kernel")] = (f"{t}.mlp.fc2.weight", (width, hidden),
                                                 linear((hidden, width)))
        table[o + ("fc2", "dense", "bias")] = (f"{t}.mlp.fc2.bias", (width,), _identity)


def conversion_table(c: CLIPConfig) -> ConversionTable:
    """Where each CLIP parameter comes from in an HF CLIPModel checkpoint, and how."""
    p, vw, tw = c.patch_size, c.vision_width, c.text_width
    norm = lambda ours, theirs, w: {  # noqa: E731
        ours + ("scale",): (f"{theirs}.weight", (w,), _identity),
        ours + ("bias",): (f"{theirs}.bias", (w,), _identity)}
    patch: Callable[[np.ndarray], np.ndarray] = (
        lambda w: w.transpose(2, 3, 1, 0).reshape(p * p * 3, vw))
    table: ConversionTable = {
        ("vision", "patch_embedding", "dense", "kernel"): (
            "vision_model.embeddings.patch_embedding.weight", (vw, 3, p, p), patch),
        ("vision", "class_embedding"): ("vision_model.embeddings.class_embedding", (vw,),
                                        _identity),
        ("vision", "position_embedding"): ("vision_model.embeddings.position_embedding.weight",
                                           (c.num_patches + 1, vw), _identity),
        **norm(("vision", "pre_norm"), "vision_model.pre_layrnorm", vw),
        **norm(("vision", "post_norm"), "vision_model.post_layernorm", vw),
        ("text", "token_embedding", "embedding"): (
            "text_model.embeddings.token_embedding.weight", (c.vocab_size, tw), _identity),
        ("text", "position_embedding"): ("text_model.embeddings.position_embedding.weight",
                                         (c.max_length, tw), _identity),
        **norm(("text", "final_norm"), "text_model.final_layer_norm", tw),
        ("visual_projection", "dense", "kernel"): ("visual_projection.weight",
                                                   (c.embed_dim, vw), lambda w: w.T),
        ("text_projection", "dense", "kernel"): ("text_projection.weight", (c.embed_dim, tw),
                                                 lambda w: w.T),
        ("logit_scale",): ("logit_scale", (), _identity),
    }
    _transformer_table(table, ("vision", "transformer"), "vision_model.encoder", vw,
                       c.vision_heads, c.vision.hidden, c.vision_layers)
    _transformer_table(table, ("text", "transformer"), "text_model.encoder", tw,
                       c.text_heads, c.text.hidden, c.text_layers)
    return table


def load_clip(path: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[CLIPConfig, dict]:
    """Loads a local HF CLIPModel directory as `(config, params)` for `CLIP(config)`."""
    np_dtype = param_dtype(dtype)
    checkpoint = open_checkpoint(path)
    check_model_type(checkpoint, ("clip",))
    pre_path = os.path.join(checkpoint.directory, "preprocessor_config.json")
    preprocessor = None
    if os.path.isfile(pre_path):
        with open(pre_path, encoding="utf-8") as f:
            preprocessor = json.load(f)
    try:
        config = config_from_hf(checkpoint.config, preprocessor,
                                dtype="bfloat16" if np_dtype.itemsize == 2 else "float32")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{os.path.join(checkpoint.directory, 'config.json')}: {err}") from None
    params = convert_by_table(checkpoint, conversion_table(config), expected_param_shapes(config),
                              np_dtype, also_used=_BUFFERS)
    return config, params
