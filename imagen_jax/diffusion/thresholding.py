"""Static and dynamic thresholding of the predicted x0 (Imagen section 2.3).

Large guidance weights push x0 predictions outside the data range [-1, 1]; the
sampler then drifts to saturated images. Static thresholding clips to [-1, 1].
Dynamic thresholding picks, *per sample*, s = max(1, percentile(|x0|, p)) and
maps x0 -> clip(x0, -s, s) / s, pulling saturated pixels inwards while leaving a
sample that is already in range untouched (s = 1).
"""

from __future__ import annotations

import jax.numpy as jnp

THRESHOLDS = ("none", "static", "dynamic")


def check_percentile(percentile: float) -> None:
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")


def check_threshold(kind: str) -> None:
    if kind not in THRESHOLDS:
        raise ValueError(f"unknown threshold {kind!r}; expected one of {THRESHOLDS}")


def static_threshold(x0: jnp.ndarray) -> jnp.ndarray:
    """Clips x0 to the data range [-1, 1]."""
    return jnp.clip(x0, -1.0, 1.0)


def dynamic_threshold_scale(x0: jnp.ndarray, percentile: float = 99.5) -> jnp.ndarray:
    """Per-sample s = max(1, p-th percentile of |x0|), shaped [B, 1, ..., 1]."""
    check_percentile(percentile)
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.percentile(flat, percentile, axis=1)
    s = jnp.maximum(s, 1.0)
    return s.reshape((-1,) + (1,) * (x0.ndim - 1))


def dynamic_threshold(x0: jnp.ndarray, percentile: float = 99.5) -> jnp.ndarray:
    """Imagen's dynamic thresholding, one scale per sample in the batch."""
    s = dynamic_threshold_scale(x0, percentile)
    # clip(x0 / s, -1, 1) is clip(x0, -s, s) / s, but stays inside [-1, 1] even where
    # a backend divides by multiplying with a rounded 1/s (XLA:CPU's legacy emitters
    # gave -1.0000001 for x0 = -s).
    return jnp.clip(x0 / s, -1.0, 1.0)


def apply_threshold(x0: jnp.ndarray, kind: str, percentile: float = 99.5) -> jnp.ndarray:
    """Applies threshold `kind` ('none', 'static' or 'dynamic') to x0."""
    check_threshold(kind)
    if kind == "static":
        return static_threshold(x0)
    if kind == "dynamic":
        return dynamic_threshold(x0, percentile)
    return x0
