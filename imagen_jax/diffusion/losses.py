"""The denoising loss: continuous-time, MSE on the chosen target.

Per example: t ~ U(0, 1), eps ~ N(0, I), z = alpha(t) x0 + sigma(t) eps, and the
model regresses `target(prediction)` from (z, logsnr(t)). Imagen trains the
eps-prediction MSE (App. A); unCLIP's prior regresses x0 directly.

Optional min-SNR-gamma weighting (Hang et al. 2023) caps the weight of low-noise
examples: expressed as an x0-space weight min(SNR, gamma), it becomes
min(SNR, gamma) / SNR for eps targets and min(SNR, gamma) / (SNR + 1) for v.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from imagen_jax.diffusion import parameterization
from imagen_jax.diffusion.schedules import Schedule, alpha_sigma

# model(z [B, ...], logsnr [B]) -> prediction [B, ...]; conditioning is closed over.
ModelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def min_snr_weight(logsnr: jnp.ndarray, prediction: str, gamma: float) -> jnp.ndarray:
    """Per-example loss weight of min-SNR-gamma for a `prediction` target."""
    parameterization.check_prediction(prediction)
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be positive, got {gamma}")
    snr = jnp.exp(logsnr)
    capped = jnp.minimum(snr, gamma)
    if prediction == "eps":
        return capped / snr
    if prediction == "v":
        return capped / (snr + 1.0)
    return capped


def diffusion_loss(model_fn: ModelFn, x0: jnp.ndarray, key: jax.Array,
                   schedule: Schedule, prediction: str = "eps",
                   min_snr_gamma: float | None = None) -> tuple[jnp.ndarray, dict]:
    """Mean denoising loss over the batch, and per-example diagnostics.

    Returns (loss, aux) where aux holds 't', 'logsnr' and the unweighted
    per-example 'mse' (useful to plot loss against noise level).
    """
    parameterization.check_prediction(prediction)
    t_key, eps_key = jax.random.split(key)
    batch = x0.shape[0]
    t = jax.random.uniform(t_key, (batch,))
    eps = jax.random.normal(eps_key, x0.shape, x0.dtype)
    logsnr = schedule(t)
    bshape = (-1,) + (1,) * (x0.ndim - 1)
    alpha, sigma = alpha_sigma(logsnr.reshape(bshape))
    z = parameterization.q_sample(x0, eps, alpha, sigma)
    pred = model_fn(z, logsnr)
    goal = parameterization.target(prediction, x0, eps, alpha, sigma)
    mse = jnp.mean(jnp.square(pred.astype(jnp.float32) - goal), axis=tuple(range(1, x0.ndim)))
    weight = 1.0 if min_snr_gamma is None else min_snr_weight(logsnr, prediction, min_snr_gamma)
    loss = jnp.mean(weight * mse)
    return loss, {"t": t, "logsnr": logsnr, "mse": mse}
