"""What benchmarks/sharding.py measures: each stage's step as abstract pieces, and
the sharding strategies' mesh shapes.

A `Workload` holds a stage's step function with its parameters, state and batch
as shapes only (`jax.eval_shape`), so paper-size models are lowered without any
weight being allocated.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

IMAGEN_STAGES = ("base64", "sr256", "sr1024")
UNCLIP_STAGES = ("prior", "decoder64", "upsample256")
STAGES = ("t5",) + IMAGEN_STAGES + UNCLIP_STAGES


def strategies(n: int) -> dict[str, dict[str, int]]:
    """Mesh shapes over n devices. Hybrids put 2 devices on the second axis: data x
    FSDP = 2 FSDP groups of n/2 (e.g. two slices), FSDP x tensor = tensor pairs."""
    out = {"data": {"data": n}, "fsdp": {"fsdp": n}, "tensor": {"tensor": n}}
    if n >= 4 and n % 2 == 0:
        out["data x fsdp"] = {"data": 2, "fsdp": n // 2}
        out["fsdp x tensor"] = {"fsdp": n // 2, "tensor": 2}
    return out


@dataclasses.dataclass
class Workload:
    """One stage's step as abstract pieces: the function, its state and batch shapes."""

    name: str
    boxed: Any  # eval_shape of the init: params with logical names
    step: Any  # (state, batch) -> outputs
    make_state: Any  # abstract params -> abstract state (None: the state is the params)
    batch: dict  # name -> ShapeDtypeStruct (global shapes)
    param_dtype: Any = None  # cast params to this (frozen bf16 T5)
    abstract_state: Any = None  # make_state(params), cached by state_bytes_at


def _sds(shape: Any, dtype: Any = jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), dtype)


def _config(stage: str, size: str):
    from configs import imagen, unclip
    module = imagen if stage in IMAGEN_STAGES else unclip
    config = module.get_config(f"{size},{stage}")
    if stage in UNCLIP_STAGES:
        config.clip.workdir = "/unused"  # the frozen CLIP is not part of these steps
    return config


def _t5_workload(size: str, batch: int) -> Workload:
    from configs import imagen
    from imagen_jax.nn.t5 import T5_V1_1_XXL, T5Config, T5Encoder

    if size == "paper":
        cfg, length, dtype = T5Config(**T5_V1_1_XXL, dtype=jnp.bfloat16), 128, jnp.bfloat16
    else:
        text = imagen.get_config("tiny,base64").text
        cfg, length, dtype = T5Config(**text.random_t5.to_dict()), text.max_length, None
    module = T5Encoder(cfg)
    ids = _sds((batch, length), jnp.int32)
    boxed = jax.eval_shape(module.init, jax.random.PRNGKey(0), ids, ids)
    step = lambda params, b: module.apply({"params": params}, b["text_ids"], b["text_mask"])
    return Workload("t5", boxed["params"], step, None,
                    {"text_ids": ids, "text_mask": _sds((batch, length), jnp.int32)}, dtype)


def _stage_batch(stage: str, config: Any, batch: int) -> dict:
    side = config.diffusion.train_crop or config.image_size
    if stage in IMAGEN_STAGES:
        length, width = config.text.max_length, config.model.text_dim
        out = {"images": _sds((batch, side, side, 3)), "text": _sds((batch, length, width)),
               "text_mask": _sds((batch, length), jnp.int32)}
        if config.lowres_size:
            low = side * config.lowres_size // config.image_size
            out["lowres"] = _sds((batch, low, low, 3))
        return out
    if stage.startswith("upsample"):  # images only: the degraded low-res is made in the step
        return {"images": _sds((batch, side, side, 3))}
    length, width, dim = config.text.max_length, config.clip.text_width, config.clip.embed_dim
    out = {"text": _sds((batch, length, width)), "text_mask": _sds((batch, length), jnp.int32),
           "text_embed": _sds((batch, dim)), "image_embed": _sds((batch, dim))}
    if stage == "decoder64":
        out["images"] = _sds((batch, side, side, 3))
    return out


def _train_workload(stage: str, size: str, batch: int) -> Workload:
    from imagen_jax.train.optimizer import make_optimizer
    from imagen_jax.stage_registry import build_stage
    from imagen_jax.train.state import create_state, train_step

    config = _config(stage, size)
    model = build_stage(config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), config.text.max_length))
    tx = make_optimizer(config.train)
    step = functools.partial(train_step, loss_fn=model.loss, optimizer=tx,
                             ema_decay=config.train.ema_decay, skip_nonfinite=False)
    make_state = lambda p: jax.eval_shape(lambda q: create_state(q, tx, jax.random.PRNGKey(0)),
                                          p)
    return Workload(stage, boxed["params"], lambda s, b: step(s, b), make_state,
                    _stage_batch(stage, config, batch))


def workload(stage: str, size: str, batch: int) -> Workload:
    """`stage`'s step at `size` ('tiny' or 'paper') for a global batch of `batch`."""
    return _t5_workload(size, batch) if stage == "t5" else _train_workload(stage, size, batch)


def abstract_params(w: Workload) -> Any:
    """The workload's parameters as ShapeDtypeStructs (logical names dropped), cast to
    its `param_dtype` where it has one."""
    return _unbox(w.boxed, w.param_dtype)


def _unbox(boxed: Any, dtype: Any = None) -> Any:
    def leaf(x):
        value = x.value if isinstance(x, nn.LogicallyPartitioned) else x
        return _sds(value.shape, dtype or value.dtype)
    return jax.tree.map(leaf, boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
