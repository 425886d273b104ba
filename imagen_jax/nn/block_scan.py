"""A U-Net level's run of identical res blocks as one `lax.scan` (`scan_blocks`).

An Efficient U-Net repeats the same block (same widths, same attention) up to 8
times per level; unrolled, XLA compiles every copy, and the paper models' TPU
compiles take tens of minutes (docs/tpu_compile.md). Scanned, the block is
compiled once per run, maxtext's `scan_layers` idea. Unlike `nn.scan`, the
weights stay where the unrolled model keeps them (`down_2_res_0`, `down_2_res_1`,
...): the scan stacks them on the fly, so a checkpoint is the same with or without
scanning and the two give the same function (tests/imagen/test_block_scan.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from imagen_jax.nn.attention import ImageTextAttention
from imagen_jax.nn.resblock import ResNetBlock


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def scan_res_blocks(unet: Any, prefix: str, level: int, run: Sequence[int], h, emb, text,
                    text_mask, deterministic: bool, skips: list, skip_scale: float):
    """Blocks `run` of `unet` (a bound UNet in apply) on h: what the unrolled loop of
    `UNet._blocks` computes for them, popping one skip per block while any remain.
    Returns h and every block's output."""
    cfg = unet.config
    dtype = jnp.dtype(cfg.dtype)
    params = unet.variables["params"]
    names = [f"{prefix}_res_{j}" for j in run]
    attend = cfg.attention[level] != "none"
    in_body = attend and cfg.attention_per_res_block
    stacked = {"res": _stack([params[n] for n in names])}
    if in_body:
        stacked["attn"] = _stack([params[f"{prefix}_attn_{j}"] for j in run])
    xs: dict = {"params": stacked}
    if skips:
        xs["skip"] = jnp.stack([skips.pop() for _ in run])
    use_dropout = cfg.dropout > 0 and not deterministic
    if use_dropout:
        xs["key"] = jax.random.split(unet.make_rng("dropout"), len(run))

    res = ResNetBlock(cfg.channels[level], cfg.dropout, cfg.num_groups, deterministic, dtype,
                      parent=None)
    attn = ImageTextAttention(cfg.attention[level], cfg.attention_head_dim,
                              cfg.attention_hidden_mult, cfg.num_groups, dtype, parent=None)

    def res_apply(p, x, emb, key):
        rngs = {"dropout": key} if key is not None else None
        return res.apply({"params": p}, x, emb, rngs=rngs)

    if cfg.remat:  # as nn.remat(ResNetBlock) in the unrolled model
        res_apply = jax.checkpoint(res_apply)

    def body(x, item):
        if "skip" in item:
            x = jnp.concatenate([x, item["skip"] * skip_scale], axis=-1)
        x = res_apply(item["params"]["res"], x, emb, item.get("key"))
        if in_body:
            x = attn.apply({"params": item["params"]["attn"]}, x, text, text_mask)
        return x, x

    h, outputs = jax.lax.scan(body, h, xs)
    if attend and not in_body:  # attention after the level's last block only
        h = attn.apply({"params": params[f"{prefix}_attn"]}, h, text, text_mask)
        outputs = outputs.at[-1].set(h)
    return h, list(outputs)
