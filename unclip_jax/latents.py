"""Operations in CLIP's embedding space (unCLIP section 3): spherical interpolation
and text diffs. Pure functions on [.., E] vectors; they work on unit vectors and
return unit vectors."""

from __future__ import annotations

import jax.numpy as jnp

from unclip_jax.clip import normalize


def slerp(a: jnp.ndarray, b: jnp.ndarray, t: float | jnp.ndarray) -> jnp.ndarray:
    # a, b: [..., E]; t: a scalar.
    """Spherical interpolation from a (t = 0) to b (t = 1) of the normalised inputs.

    Nearly parallel inputs fall back to normalised linear interpolation, where the
    sin ratio would divide by ~0.
    """
    a, b = normalize(a), normalize(b)
    t = jnp.asarray(t, jnp.float32)
    if t.ndim:
        raise ValueError(f"slerp takes one scalar t, got shape {t.shape}")
    dot = jnp.clip(jnp.sum(a * b, axis=-1, keepdims=True), -1.0, 1.0)
    omega = jnp.arccos(dot)
    sin = jnp.sin(omega)
    safe = sin > 1e-4
    wa = jnp.where(safe, jnp.sin((1 - t) * omega) / jnp.where(safe, sin, 1.0), 1 - t)
    wb = jnp.where(safe, jnp.sin(t * omega) / jnp.where(safe, sin, 1.0), t)
    return normalize(wa * a + wb * b)


def text_diff(z_t_target: jnp.ndarray, z_t_source: jnp.ndarray) -> jnp.ndarray:
    """z_d = normalise(z_t - z_t0): the direction from the source caption to the target."""
    return normalize(normalize(z_t_target) - normalize(z_t_source))


def apply_text_diff(z_i: jnp.ndarray, z_d: jnp.ndarray, thetas: jnp.ndarray) -> jnp.ndarray:
    """slerp(z_i, z_d, theta) for each theta: [T, E] for z_i [E] (paper: 0.25-0.50)."""
    return jnp.stack([slerp(z_i, z_d, theta) for theta in jnp.asarray(thetas)])
