"""DDPM ancestral and DDIM samplers, each one `lax.scan` over the steps.

Both walk a uniform time grid t_k = k / steps from t = 1 (noise) to t = 0 and
share one step body: predict, convert to (x0, eps), threshold x0, then move from
t to s < t. The denoiser sees log-SNR, not t, so any schedule (continuous or a
discrete table) works with any step count.

Everything is written in log-SNR to stay stable near t = 0, where sigma is tiny:
with lambda_t < lambda_s and r = -expm1(lambda_t - lambda_s) = sigma_{t|s}^2 / sigma_t^2,
  DDPM posterior q(z_s | z_t, x0):  mean = e^{lambda_t - lambda_s} (alpha_s / alpha_t) z_t
                                           + alpha_s r x0,   var = r sigma_s^2
  DDIM (eta):  z_s = alpha_s x0 + sigma_s sqrt(1 - eta^2 r) eps + eta sigma_s sqrt(r) noise
DDIM with eta = 1 is algebraically the DDPM ancestral step (a test checks this).
The final step returns the (thresholded) x0 estimate rather than z at t = 0.

The functions are pure and traceable: run them under `jax.jit` with the model
parameters as an argument (see `imagen_jax.sample`), never closed over as
constants. Per-step Python only runs if a `progress` callback is given, through
`jax.debug.callback`, for a progress bar.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from imagen_jax.diffusion import parameterization, thresholding
from imagen_jax.diffusion.guidance import DenoiseFn
from imagen_jax.diffusion.schedules import Schedule, alpha_sigma

SAMPLERS = ("ddpm", "ddim")


def check_steps(steps: int) -> int:
    """`steps` unchanged; ValueError unless it is a positive int (not a bool or float)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample; validated on construction so that bad input fails early.

    sampler: 'ddpm' (ancestral) or 'ddim'. eta: DDIM stochasticity in [0, 1]
    (ignored by 'ddpm'). prediction: what the model outputs ('eps', 'v', 'x0').
    threshold: 'none', 'static' or 'dynamic' with `percentile` in (0, 100].
    """

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    prediction: str = "eps"
    threshold: str = "none"
    percentile: float = 99.5

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; expected one of {SAMPLERS}")
        check_steps(self.steps)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        parameterization.check_prediction(self.prediction)
        thresholding.check_threshold(self.threshold)
        thresholding.check_percentile(self.percentile)


def _batch_shape(x: jnp.ndarray) -> tuple[int, ...]:
    return (-1,) + (1,) * (x.ndim - 1)


def _predict_x0_eps(denoise_fn: DenoiseFn, z: jnp.ndarray, logsnr: jnp.ndarray,
                    settings: SamplerSettings) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Model prediction at (z, logsnr) as (thresholded x0, consistent eps)."""
    alpha, sigma = alpha_sigma(logsnr)
    pred = denoise_fn(z, jnp.full((z.shape[0],), logsnr, z.dtype))
    x0, eps = parameterization.to_x0_eps(settings.prediction, pred, z, alpha, sigma)
    if settings.threshold != "none":
        x0 = thresholding.apply_threshold(x0, settings.threshold, settings.percentile)
        eps = parameterization.eps_from_x0(x0, z, alpha, sigma)
    return x0, eps


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


def sample(denoise_fn: DenoiseFn, schedule: Schedule, shape: tuple[int, ...],
           key: jax.Array, settings: SamplerSettings = SamplerSettings(), *,
           z_init: jnp.ndarray | None = None, return_intermediates: bool = False,
           progress: Callable[[int], None] | None = None):
    """Draws samples of `shape` by running the reverse process from t = 1 to 0.

    Args:
      denoise_fn: (z [B, ...], logsnr [B]) -> prediction of kind settings.prediction;
        wrap a conditional model with `classifier_free_guidance` for CFG.
      schedule: log-SNR schedule (see `schedules.get_schedule`).
      shape: output shape, batch first.
      key: PRNG key; the result is a deterministic function of it.
      settings: sampler, steps, eta, prediction, thresholding.
      z_init: start from this z_1 instead of fresh noise (e.g. a DDIM inversion).
      return_intermediates: also return the x0 estimate of every step, [steps, *shape].
      progress: called with the number of finished steps, for a progress bar.

    Returns:
      x0 samples, or (x0, intermediates) if return_intermediates.
    """
    steps = settings.steps
    init_key, step_key = jax.random.split(key)
    z = jax.random.normal(init_key, shape) if z_init is None else z_init
    if tuple(z.shape) != tuple(shape):
        raise ValueError(f"z_init has shape {tuple(z.shape)}, expected {tuple(shape)}")

    def body(z, k):
        # k runs steps, steps-1, ..., 1: move from t = k/steps to s = (k-1)/steps.
        logsnr_t = schedule(k / steps)
        logsnr_s = schedule((k - 1) / steps)
        x0, eps = _predict_x0_eps(denoise_fn, z, logsnr_t, settings)
        noise = jax.random.normal(jax.random.fold_in(step_key, k), z.shape, z.dtype)
        if settings.sampler == "ddpm":
            z_next = ddpm_step(z, x0, logsnr_t, logsnr_s, noise)
        else:
            z_next = ddim_step(x0, eps, logsnr_t, logsnr_s, noise, settings.eta)
        if progress is not None:
            jax.debug.callback(progress, steps - k + 1, ordered=True)
        return z_next, (x0 if return_intermediates else None)

    ks = jnp.arange(steps, 0, -1)
    # The last step's x0 estimate is the output; its z at t = 0 is discarded.
    z, x0s = jax.lax.scan(body, z, ks[:-1])
    x0, _ = _predict_x0_eps(denoise_fn, z, schedule(1 / steps), settings)
    if progress is not None:
        jax.debug.callback(progress, steps, ordered=True)
    if return_intermediates:
        trajectory = x0[None] if x0s is None else jnp.concatenate([x0s, x0[None]], axis=0)
        return x0, trajectory
    return x0


def ddim_invert(denoise_fn: DenoiseFn, schedule: Schedule, x0: jnp.ndarray,
                steps: int, prediction: str = "eps") -> jnp.ndarray:
    """Deterministic DDIM encoding x0 -> z_1, the inverse of DDIM with eta = 0.

    Runs the eta = 0 update forwards in time on the same grid the sampler uses,
    so `sample(..., z_init=ddim_invert(...))` with the same steps reconstructs x0
    up to the discretisation error of the probability-flow ODE. No thresholding:
    it would make the map non-invertible.
    """
    settings = SamplerSettings(sampler="ddim", steps=steps, eta=0.0, prediction=prediction)

    def body(z, k):
        # k runs 1, ..., steps: move from t = (k-1)/steps up to t = k/steps,
        # mirroring the sampler's grid (whose last step maps z_{1/steps} to x0).
        logsnr_from = schedule((k - 1) / steps)
        x0_hat, eps = _predict_x0_eps(denoise_fn, z, logsnr_from, settings)
        alpha, sigma = alpha_sigma(schedule(k / steps))
        return alpha * x0_hat + sigma * eps, None

    alpha0, _ = alpha_sigma(schedule(0.0))  # z at t = 0 is the image, scaled by ~1.
    z, _ = jax.lax.scan(body, alpha0 * x0, jnp.arange(1, steps + 1))
    return z
