"""Helpers shared by tests that sample from stages with random weights."""

from __future__ import annotations

import flax.linen as nn
import jax


def random_params(stage, key, text_len: int = 8, scale: float = 0.03):
    """Init, then perturb: zero-initialised output layers would make the models trivial
    (a U-Net whose output conv is zero predicts eps = 0 whatever its inputs)."""
    params = jax.jit(lambda k: nn.unbox(stage.init(k, text_len))["params"])(key)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
