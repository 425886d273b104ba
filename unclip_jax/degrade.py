"""Corruptions of the upsamplers' conditioning image (unCLIP section 2.1, App. C).

  64 -> 256:   Gaussian blur (kernel 3, sigma 0.6), the paper's setting.
  256 -> 1024: a BSR-style degradation (Zhang et al. 2021 / latent diffusion), random
               per image: blur (sigma ~ U(0.2, 1.5)), additive Gaussian noise
               (sigma ~ U(0, 0.05) in [-1, 1] units) and JPEG-like quantisation
               (8x8 block DCT coefficients rounded to a step ~ U(0.02, 0.12)).

The ranges beyond "blur" and "BSR" are not in the paper ([?] in PAPERS.md); these
are mild versions of BSRGAN's. Everything is traceable and per-example random, so
it runs inside the jitted train step. Images are NHWC in [-1, 1].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

DEGRADATIONS = ("none", "blur", "bsr")


def gaussian_kernel(sigma: jnp.ndarray, size: int) -> jnp.ndarray:
    """A normalised 1-D Gaussian of `size` taps (odd) for a scalar sigma."""
    x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    k = jnp.exp(-0.5 * jnp.square(x / jnp.maximum(sigma, 1e-3)))
    return k / jnp.sum(k)


def _blur_one(image: jnp.ndarray, sigma: jnp.ndarray, size: int) -> jnp.ndarray:
    """Separable blur of one [H, W, C] image, reflect-padded."""
    k = gaussian_kernel(sigma, size)
    pad = size // 2
    x = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w, _ = image.shape
    x = sum(k[i] * x[i:i + h] for i in range(size))
    return sum(k[i] * x[:, i:i + w] for i in range(size))


def gaussian_blur(images: jnp.ndarray, sigma: float | jnp.ndarray, size: int = 3) -> jnp.ndarray:
    """Blurs [B, H, W, C] with per-image (or one) sigma."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (images.shape[0],))
    return jax.vmap(lambda im, s: _blur_one(im, s, size))(images, sigma)


def _dct_matrix(n: int = 8) -> jnp.ndarray:
    """Orthonormal DCT-II matrix (rows are basis functions)."""
    k = jnp.arange(n)[:, None]
    i = jnp.arange(n)[None, :]
    m = jnp.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    return m.at[0].set(m[0] / math.sqrt(2.0))


def jpeg_like(images: jnp.ndarray, step: jnp.ndarray) -> jnp.ndarray:
    """Rounds 8x8 block DCT coefficients to multiples of `step` [B] (sides % 8 == 0)."""
    b, h, w, c = images.shape
    if h % 8 or w % 8:
        raise ValueError(f"JPEG-like quantisation needs sides divisible by 8, got {h}x{w}")
    d = _dct_matrix(8)
    blocks = images.reshape(b, h // 8, 8, w // 8, 8, c)
    coef = jnp.einsum("ki,bxiyjc,lj->bxkylc", d, blocks, d)
    s = step[:, None, None, None, None, None]
    coef = jnp.round(coef / s) * s
    out = jnp.einsum("ki,bxkylc,lj->bxiyjc", d, coef, d)
    return out.reshape(b, h, w, c)


def bsr_degrade(images: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """Random blur + noise + JPEG-like quantisation of each image in [B, H, W, C]."""
    b = images.shape[0]
    k_sigma, k_noise_level, k_noise, k_q = jax.random.split(key, 4)
    x = gaussian_blur(images, jax.random.uniform(k_sigma, (b,), minval=0.2, maxval=1.5), 5)
    level = jax.random.uniform(k_noise_level, (b, 1, 1, 1), maxval=0.05)
    x = x + level * jax.random.normal(k_noise, x.shape)
    if x.shape[1] % 8 == 0 and x.shape[2] % 8 == 0:
        x = jpeg_like(x, jax.random.uniform(k_q, (b,), minval=0.02, maxval=0.12))
    return jnp.clip(x, -1.0, 1.0)


def degrade(images: jnp.ndarray, kind: str, key: jax.Array) -> jnp.ndarray:
    """The named corruption ('none', 'blur' or 'bsr') of a conditioning image."""
    if kind == "none":
        return images
    if kind == "blur":
        return gaussian_blur(images, 0.6, 3)
    if kind == "bsr":
        return bsr_degrade(images, key)
    raise ValueError(f"unknown degradation {kind!r}; expected one of {DEGRADATIONS}")
