"""Classifier-free guidance (Ho & Salimans 2021), in Imagen's convention.

    pred = w * pred(z, c) + (1 - w) * pred(z, null)

so w = 1 is plain conditional sampling, w = 0 is unconditional, and w > 1
extrapolates away from the unconditional prediction. (GLIDE/lucidrains write
uncond + s * (cond - uncond); it is the same formula with s = w.)

The conditional and unconditional predictions come from ONE forward pass over a
doubled batch [cond; uncond]: one compiled call, twice the batch, which keeps
the accelerator busy instead of running two half-sized calls.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from imagen_jax.checks import is_real

# model_fn(z, logsnr, cond) -> prediction, for a batch whose conditioning is `cond`.
ConditionalModelFn = Callable[[jnp.ndarray, jnp.ndarray, Any], jnp.ndarray]
# denoise_fn(z, logsnr) -> prediction: what the samplers consume.
DenoiseFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def check_guidance(weight: float) -> float:
    """`weight` as a float; ValueError unless it is a finite real number >= 0.

    Checked before sampling compiles: NaN or inf would turn every pixel NaN without
    an error (the sampler is one compiled loop), and w < 0 pushes away from the
    prompt beyond the unconditional model, which no guidance setting is meant to do.
    """
    if not is_real(weight) or not math.isfinite(weight) or weight < 0:
        raise ValueError(f"guidance must be a finite number >= 0 (1 = no guidance, "
                         f"0 = unconditional), got {weight!r}")
    return float(weight)


def guided_prediction(cond_pred: jnp.ndarray, uncond_pred: jnp.ndarray,
                      guidance_weight: float | jnp.ndarray) -> jnp.ndarray:
    """w * cond + (1 - w) * uncond."""
    return uncond_pred + guidance_weight * (cond_pred - uncond_pred)


def classifier_free_guidance(model_fn: ConditionalModelFn, cond: Any, uncond: Any,
                             guidance_weight: float | jnp.ndarray) -> DenoiseFn:
    """Wraps a conditional model into a guided denoise_fn(z, logsnr).

    `cond` and `uncond` are pytrees with matching structure whose leaves have the
    batch as their leading axis (e.g. text embeddings and their mask, with the
    null condition zeroed). They are concatenated along that axis so that the
    model runs once on 2B examples.
    """

    def denoise_fn(z: jnp.ndarray, logsnr: jnp.ndarray) -> jnp.ndarray:
        batch = z.shape[0]
        both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)
        pred = model_fn(jnp.concatenate([z, z], axis=0),
                        jnp.concatenate([logsnr, logsnr], axis=0), both)
        return guided_prediction(pred[:batch], pred[batch:], guidance_weight)

    return denoise_fn


def negative_condition(uncond: dict, negative: dict | None) -> dict:
    """The unconditional half of guidance with a negative prompt in place of null.

    `negative` holds, for some keys of `uncond`, the negative prompt's encoding (e.g.
    its text embeddings and mask); the guided prediction then extrapolates away from
    that prompt instead of from no prompt: w * pred(z, c) + (1 - w) * pred(z, c_neg).
    None or {} keeps the null condition, so the result is today's, bit for bit.
    """
    if not negative:
        return uncond
    out = dict(uncond)
    for name, value in negative.items():
        if name not in uncond:
            raise ValueError(f"negative condition {name!r} is not an input of this model; "
                             f"it reads {sorted(uncond)}")
        if tuple(value.shape) != tuple(uncond[name].shape):
            raise ValueError(f"negative {name} has shape {tuple(value.shape)}, the prompt's "
                             f"has {tuple(uncond[name].shape)}")
        out[name] = value.astype(uncond[name].dtype)
    return out


def null_condition(cond: Any) -> Any:
    """The unconditional input of classifier-free guidance: every leaf zeroed (False
    in boolean masks), which is what a dropped condition is in training."""
    return jax.tree.map(jnp.zeros_like, cond)


def drop_condition(cond: Any, key: jax.Array, prob: float) -> Any:
    """Classifier-free guidance training (Imagen section 4.1, p = 0.1): each example's
    condition is replaced by `null_condition` with probability `prob`, one draw per
    example for every leaf of `cond` together (batch-first arrays; boolean masks
    become False, other leaves zero)."""
    leaves = jax.tree.leaves(cond)
    if not leaves:
        return cond
    keep = jax.random.bernoulli(key, 1.0 - prob, (leaves[0].shape[0],))

    def apply(x: jnp.ndarray) -> jnp.ndarray:
        k = keep.reshape((-1,) + (1,) * (x.ndim - 1))
        return x & k if x.dtype == jnp.bool_ else x * k

    return jax.tree.map(apply, cond)
