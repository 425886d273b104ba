"""One reverse step of each sampler, and the public single-step API `step`.

Every update moves z from time t to an earlier time s (t > s, log-SNR lambda_t <
lambda_s) given the model's (x0, eps) at (z, t). Written in log-SNR to stay stable
near t = 0, where sigma is tiny; with r = -expm1(lambda_t - lambda_s) = sigma_{t|s}^2 /
sigma_t^2:
  DDPM posterior q(z_s | z_t, x0):  mean = e^{lambda_t - lambda_s} (alpha_s / alpha_t) z_t
                                           + alpha_s r x0,   var = r sigma_s^2
  DDIM (eta):  z_s = alpha_s x0 + sigma_s sqrt(1 - eta^2 r) eps + eta sigma_s sqrt(r) noise
  DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), h = (lambda_s - lambda_t) / 2 in
  half-log-SNR units:
      z_s = (sigma_s / sigma_t) z_t - alpha_s expm1(-h) D,
      D = x0 (first order), or (1 + 1/(2 q)) x0 - 1/(2 q) x0_prev with q = h_prev / h,
      where x0_prev and h_prev belong to the step before (from t_prev to t).
DDIM with eta = 1 is algebraically the DDPM step; DPM-Solver++ at first order is
DDIM with eta = 0. Moving to s = 0 (noise level zero) returns x0 in every sampler.

Continuous t and discrete timesteps: a discrete N-step beta table (N = 1000 in DDPM,
diffusers and imagen-pytorch) is `schedules.DiscreteSchedule`, whose timestep index
n = 0 .. N-1 (alphas_cumprod[n] in diffusers) sits at t = (n + 1) / N
(`timestep_to_t`, `t_to_timestep`); t = 0 is the clean image. The samplers' grid
t_k = k / steps then visits diffusers' "trailing" timesteps: for 10 steps of 1000,
999, 899, ..., 99.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from imagen_jax.diffusion import parameterization, thresholding
from imagen_jax.diffusion.schedules import Schedule, alpha_sigma

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")


def timestep_to_t(index: int | np.ndarray, num_timesteps: int = 1000) -> np.ndarray:
    """Continuous t of a discrete timestep index n in [0, N): t = (n + 1) / N."""
    index = np.asarray(index)
    if np.any(index < 0) or np.any(index >= num_timesteps):
        raise ValueError(f"timestep index must be in [0, {num_timesteps}), got {index}")
    return (index + 1.0) / num_timesteps


def t_to_timestep(t: float | np.ndarray, num_timesteps: int = 1000) -> np.ndarray:
    """The discrete timestep index n = round(t N) - 1 of continuous t in (0, 1]."""
    t = np.asarray(t, np.float64)
    if np.any(t <= 0) or np.any(t > 1):
        raise ValueError(f"t must be in (0, 1] to have a timestep index, got {t}")
    return np.rint(t * num_timesteps).astype(np.int64) - 1


def ddpm_step(z: jnp.ndarray, x0: jnp.ndarray, logsnr_t: jnp.ndarray,
              logsnr_s: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    """One ancestral step z_t -> z_s ~ q(z_s | z_t, x0)."""
    alpha_t, _ = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    r = -jnp.expm1(logsnr_t - logsnr_s)
    mean = jnp.exp(logsnr_t - logsnr_s) * (alpha_s / alpha_t) * z + alpha_s * r * x0
    return mean + jnp.sqrt(r) * sigma_s * noise


def ddim_step(x0: jnp.ndarray, eps: jnp.ndarray, logsnr_t: jnp.ndarray,
              logsnr_s: jnp.ndarray, noise: jnp.ndarray, eta: float) -> jnp.ndarray:
    """One DDIM step from t to s; eta = 0 is deterministic."""
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    r = -jnp.expm1(logsnr_t - logsnr_s)
    return (alpha_s * x0 + sigma_s * jnp.sqrt(1.0 - eta**2 * r) * eps
            + eta * sigma_s * jnp.sqrt(r) * noise)


def dpmpp_2m_step(z: jnp.ndarray, x0: jnp.ndarray, logsnr_t: jnp.ndarray,
                  logsnr_s: jnp.ndarray, x0_prev: jnp.ndarray | None = None,
                  logsnr_prev: jnp.ndarray | None = None,
                  first_order: jnp.ndarray | bool = False) -> jnp.ndarray:
    """One DPM-Solver++(2M) step from t to s; first order without a previous step
    (x0_prev None) or where `first_order` is true (a traced flag inside a scan)."""
    alpha_t, sigma_t = alpha_sigma(logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    h = 0.5 * (logsnr_s - logsnr_t)
    d = x0
    if x0_prev is not None:
        h_prev = 0.5 * (logsnr_t - logsnr_prev)
        # A repeated time (h_prev = 0) has no slope to extrapolate: first order there.
        q = jnp.where(h_prev > 0, h_prev / h, 1.0)
        second = (1.0 + 0.5 / q) * x0 - (0.5 / q) * x0_prev
        d = jnp.where(jnp.logical_or(first_order, h_prev <= 0), x0, second)
    # sigma_s / sigma_t and e^{-h} computed so that s -> 0 (sigma_s -> 0) gives x0.
    return (sigma_s / sigma_t) * z - alpha_s * jnp.expm1(-h) * d


class StepOutput(NamedTuple):
    """`step`'s result: z at t_next, and the x0 estimate at t_now (thresholded as
    asked): pass it as `prev_x0` to the next DPM-Solver++ step."""

    x_next: jnp.ndarray
    x0: jnp.ndarray


def step(sampler: str, model_output: jnp.ndarray, x_t: jnp.ndarray, t_now: float,
         t_next: float, *, schedule: Schedule, prediction: str = "eps",
         noise: jnp.ndarray | None = None, eta: float = 0.0, threshold: str = "none",
         percentile: float = 99.5, prev_x0: jnp.ndarray | None = None,
         t_prev: float | None = None) -> StepOutput:
    """One reverse step from t_now to t_next < t_now (continuous times in [0, 1]).

    Args:
      sampler: 'ddpm', 'ddim' or 'dpmpp_2m'.
      model_output: the model's prediction at (x_t, t_now), of kind `prediction`
        ('eps', 'v' or 'x0'); with guidance, the guided prediction.
      x_t: the current sample [B, ...].
      schedule: the log-SNR schedule the model was trained with.
      noise: standard normal noise of x_t's shape; needed by 'ddpm' and by 'ddim'
        with eta > 0 (never drawn inside, so a step is a pure function).
      threshold, percentile: 'none', 'static' or 'dynamic' thresholding of x0.
      prev_x0, t_prev: the previous step's x0 and time, for DPM-Solver++'s second
        order (without them the step is first order, as the first step is).
    Returns:
      StepOutput(x_next, x0). t_next = 0 returns x0 itself as x_next.
    """
    check_sampler(sampler)
    parameterization.check_prediction(prediction)
    if not 0.0 <= t_next < t_now <= 1.0:
        raise ValueError(f"need 0 <= t_next < t_now <= 1, got t_now={t_now}, t_next={t_next}")
    if (sampler == "ddpm" or (sampler == "ddim" and eta > 0)) and noise is None:
        raise ValueError(f"sampler {sampler!r} (eta={eta}) needs noise= (standard normal, "
                         "x_t's shape)")
    logsnr_t, logsnr_s = schedule(t_now), schedule(t_next)
    alpha, sigma = alpha_sigma(logsnr_t)
    x0, eps = parameterization.to_x0_eps(prediction, model_output, x_t, alpha, sigma)
    if threshold != "none":
        x0 = thresholding.apply_threshold(x0, threshold, percentile)
        eps = parameterization.eps_from_x0(x0, x_t, alpha, sigma)
    if t_next == 0.0:
        return StepOutput(x0, x0)
    noise = jnp.zeros_like(x_t) if noise is None else noise
    if sampler == "ddpm":
        x_next = ddpm_step(x_t, x0, logsnr_t, logsnr_s, noise)
    elif sampler == "ddim":
        x_next = ddim_step(x0, eps, logsnr_t, logsnr_s, noise, eta)
    else:
        logsnr_prev = None if t_prev is None else schedule(t_prev)
        x_next = dpmpp_2m_step(x_t, x0, logsnr_t, logsnr_s,
                               prev_x0 if t_prev is not None else None, logsnr_prev)
    return StepOutput(x_next, x0)
