"""Model parameterisations: what the network predicts, and exact conversions.

With z = alpha * x0 + sigma * eps and alpha^2 + sigma^2 = 1:
  eps-prediction:  x0 = (z - sigma * eps) / alpha
  x0-prediction:   eps = (z - alpha * x0) / sigma
  v-prediction:    v = alpha * eps - sigma * x0  (Salimans & Ho 2022), so
                   x0 = alpha * z - sigma * v  and  eps = sigma * z + alpha * v.
`alpha` and `sigma` broadcast against z: pass them shaped [B, 1, ..., 1].
"""

from __future__ import annotations

import jax.numpy as jnp

PREDICTIONS = ("eps", "v", "x0")


def check_prediction(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction {kind!r}; expected one of {PREDICTIONS}")


def q_sample(x0: jnp.ndarray, eps: jnp.ndarray, alpha: jnp.ndarray,
             sigma: jnp.ndarray) -> jnp.ndarray:
    """Draws z_t ~ q(z_t | x0) given the noise: z_t = alpha * x0 + sigma * eps."""
    return alpha * x0 + sigma * eps


def target(kind: str, x0: jnp.ndarray, eps: jnp.ndarray, alpha: jnp.ndarray,
           sigma: jnp.ndarray) -> jnp.ndarray:
    """The regression target for a model that predicts `kind`."""
    check_prediction(kind)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    return alpha * eps - sigma * x0


def to_x0_eps(kind: str, pred: jnp.ndarray, z: jnp.ndarray, alpha: jnp.ndarray,
              sigma: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Converts a `kind` prediction at noisy z into the implied (x0, eps)."""
    check_prediction(kind)
    if kind == "eps":
        return (z - sigma * pred) / alpha, pred
    if kind == "x0":
        return pred, (z - alpha * pred) / sigma
    return alpha * z - sigma * pred, sigma * z + alpha * pred


def from_x0_eps(kind: str, x0: jnp.ndarray, eps: jnp.ndarray, alpha: jnp.ndarray,
                sigma: jnp.ndarray) -> jnp.ndarray:
    """The `kind` prediction that corresponds to (x0, eps); inverse of to_x0_eps."""
    return target(kind, x0, eps, alpha, sigma)


def eps_from_x0(x0: jnp.ndarray, z: jnp.ndarray, alpha: jnp.ndarray,
                sigma: jnp.ndarray) -> jnp.ndarray:
    """The noise implied by a (possibly thresholded) x0 estimate at z."""
    return (z - alpha * x0) / sigma
