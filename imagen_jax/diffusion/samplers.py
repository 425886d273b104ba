"""The samplers (DDPM ancestral, DDIM, DPM-Solver++ 2M), each one `lax.scan` over
the steps, with image-to-image and inpainting in the same loop.

All walk a uniform time grid t_k = k / steps from t = 1 (noise) to t = 0 and share
one step body: predict, convert to (x0, eps), threshold x0, then move from t to
s < t with the update of `solvers.py` (where the math is). The denoiser sees
log-SNR, not t, so any schedule (continuous or a discrete table) works with any
step count. The final step returns the (thresholded) x0 estimate rather than z at
t = 0 (every sampler's step to noise level zero).

Editing (DALL-E 2's and diffusers' image-to-image and inpainting):
  - image-to-image (SDEdit, Meng et al. 2022): `init_image` noised to t = strength
    (on the grid: k_start = round(strength * steps) steps are run); strength 1 is
    text-to-image from the same noise (the start is the noise itself).
  - inpainting / outpainting: `known` images and a `mask` (1 = generate, 0 = keep):
    after every step the kept pixels of z_s are replaced by the known image's
    forward-noised copy at s, and the output keeps them exactly. With
    `resample_rounds` r > 1 (RePaint, Lugmayr et al. 2022, jump length 1) each step
    is redone r times, z_s noised back to t in between, so the generated region
    harmonises with the kept one.

The functions are pure and traceable: run them under `jax.jit` with the model
parameters as an argument (see `imagen_jax.sample`), never closed over as
constants. Per-step Python only runs if a `progress` callback is given, through
`jax.debug.callback`, for a progress bar.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from imagen_jax.checks import is_real
from imagen_jax.diffusion import parameterization, thresholding
from imagen_jax.diffusion.guidance import DenoiseFn
from imagen_jax.diffusion.schedules import Schedule, alpha_sigma
from imagen_jax.diffusion.solvers import check_sampler, ddim_step, ddpm_step, dpmpp_2m_step


def check_steps(steps: int) -> int:
    """`steps` unchanged; ValueError unless it is a positive int (not a bool or float)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def check_strength(strength: float) -> float:
    """`strength` as a float; ValueError unless it is in (0, 1]."""
    if not is_real(strength) or not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1] (1 = start from pure noise), got "
                         f"{strength!r}")
    return float(strength)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample; validated on construction so that bad input fails early.

    sampler: 'ddpm' (ancestral), 'ddim' or 'dpmpp_2m' (DPM-Solver++ 2M). eta: DDIM
    stochasticity in [0, 1] (DDIM only). prediction: what the model outputs ('eps',
    'v', 'x0'). threshold: 'none', 'static' or 'dynamic' with `percentile` in (0, 100].
    strength: image-to-image only, in (0, 1]. resample_rounds: inpainting only, the
    RePaint rounds per step (1 = none; DDPM and DDIM).
    """

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    prediction: str = "eps"
    threshold: str = "none"
    percentile: float = 99.5
    strength: float = 1.0
    resample_rounds: int = 1

    def __post_init__(self):
        check_sampler(self.sampler)
        check_steps(self.steps)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        parameterization.check_prediction(self.prediction)
        thresholding.check_threshold(self.threshold)
        thresholding.check_percentile(self.percentile)
        check_strength(self.strength)
        if isinstance(self.resample_rounds, bool) or not isinstance(self.resample_rounds, int) \
                or self.resample_rounds < 1:
            raise ValueError(f"resample_rounds must be a positive integer, got "
                             f"{self.resample_rounds!r}")
        if self.resample_rounds > 1 and self.sampler == "dpmpp_2m":
            raise ValueError("resample_rounds > 1 (RePaint) needs sampler 'ddpm' or 'ddim': "
                             "a multistep solver has no single previous step to redo")

    @property
    def start_step(self) -> int:
        """k_start: image-to-image runs the grid's last k_start of `steps` steps."""
        return max(1, min(self.steps, round(self.strength * self.steps)))


class Inpaint(NamedTuple):
    """What inpainting keeps: `image` [B, H, W, C] in [-1, 1] and `mask` broadcastable
    to it, 1 where the sampler generates and 0 where the image is kept."""

    image: jnp.ndarray
    mask: jnp.ndarray


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


def _keep_known(z: jnp.ndarray, inpaint: Inpaint | None, logsnr: jnp.ndarray,
                key: jax.Array) -> jnp.ndarray:
    """z with its kept pixels replaced by the known image forward-noised to `logsnr`."""
    if inpaint is None:
        return z
    alpha, sigma = alpha_sigma(logsnr)
    noised = alpha * inpaint.image + sigma * jax.random.normal(key, z.shape, z.dtype)
    return inpaint.mask * z + (1.0 - inpaint.mask) * noised


def _renoise(z_s: jnp.ndarray, logsnr_s: jnp.ndarray, logsnr_t: jnp.ndarray,
             key: jax.Array) -> jnp.ndarray:
    """A draw of z_t ~ q(z_t | z_s), t later than s: RePaint's step back."""
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    alpha_t, sigma_t = alpha_sigma(logsnr_t)
    ratio = alpha_t / alpha_s
    var = jnp.maximum(sigma_t**2 - ratio**2 * sigma_s**2, 0.0)
    return ratio * z_s + jnp.sqrt(var) * jax.random.normal(key, z_s.shape, z_s.dtype)


def _start(shape: tuple[int, ...], key: jax.Array, settings: SamplerSettings,
           z_init: jnp.ndarray | None, init_image: jnp.ndarray | None,
           t_start: jnp.ndarray) -> jnp.ndarray:
    """z at the first step: the noise (given or drawn), or with an init image and
    strength < 1, that image noised to t_start."""
    z = jax.random.normal(key, shape) if z_init is None else z_init
    if tuple(z.shape) != tuple(shape):
        raise ValueError(f"z_init has shape {tuple(z.shape)}, expected {tuple(shape)}")
    if init_image is None or settings.strength == 1.0:
        return z
    if tuple(init_image.shape) != tuple(shape):
        raise ValueError(f"init_image has shape {tuple(init_image.shape)}, expected "
                         f"{tuple(shape)}")
    alpha, sigma = alpha_sigma(t_start)
    return alpha * init_image + sigma * z


def sample(denoise_fn: DenoiseFn, schedule: Schedule, shape: tuple[int, ...],
           key: jax.Array, settings: SamplerSettings = SamplerSettings(), *,
           z_init: jnp.ndarray | None = None, init_image: jnp.ndarray | None = None,
           inpaint: Inpaint | None = None, return_intermediates: bool = False,
           progress: Callable[[int], None] | None = None):
    """Draws samples of `shape` by running the reverse process from t = 1 to 0.

    Args:
      denoise_fn: (z [B, ...], logsnr [B]) -> prediction of kind settings.prediction;
        wrap a conditional model with `classifier_free_guidance` for CFG.
      schedule: log-SNR schedule (see `schedules.get_schedule`).
      shape: output shape, batch first.
      key: PRNG key; the result is a deterministic function of it (and z_init).
      settings: sampler, steps, eta, prediction, thresholding, strength, resampling.
      z_init: the initial noise instead of a draw from `key` (e.g. a DDIM inversion,
        or noise shared with another run); with `init_image`, the noise it is mixed with.
      init_image: image-to-image from this image, noised to t = settings.strength.
      inpaint: keep `inpaint.image` where `inpaint.mask` is 0 (inpainting/outpainting).
      return_intermediates: also return the x0 estimate of every step run, [k, *shape].
      progress: called with the number of finished steps, for a progress bar.

    Returns:
      x0 samples, or (x0, intermediates) if return_intermediates.
    """
    steps = settings.steps
    k_start = settings.start_step if init_image is not None else steps
    init_key, step_key = jax.random.split(key)
    known_key = jax.random.fold_in(init_key, 1)  # inpainting's noise, apart from the rest
    z = _start(shape, init_key, settings, z_init, init_image, schedule(k_start / steps))
    multistep = settings.sampler == "dpmpp_2m"

    def advance(z, x0_prev, k, noise_key):
        """One step from t = k/steps to s = (k-1)/steps: (z_s, x0 at t)."""
        logsnr_t = schedule(k / steps)
        logsnr_s = schedule((k - 1) / steps)
        x0, eps = _predict_x0_eps(denoise_fn, z, logsnr_t, settings)
        if multistep:
            # The first step has no previous one (its t_prev is clipped to t: h_prev = 0).
            z_next = dpmpp_2m_step(z, x0, logsnr_t, logsnr_s, x0_prev,
                                   schedule(jnp.minimum((k + 1) / steps, k_start / steps)),
                                   first_order=k == k_start)
        else:
            noise = jax.random.normal(noise_key, z.shape, z.dtype)
            if settings.sampler == "ddpm":
                z_next = ddpm_step(z, x0, logsnr_t, logsnr_s, noise)
            else:
                z_next = ddim_step(x0, eps, logsnr_t, logsnr_s, noise, settings.eta)
        z_next = _keep_known(z_next, inpaint, logsnr_s, jax.random.fold_in(known_key, k))
        return z_next, x0

    def body(carry, k):
        # k runs k_start, ..., 2: move from t = k/steps to s = (k-1)/steps.
        z, x0_prev = carry
        step_noise = jax.random.fold_in(step_key, k)
        z_next, x0 = advance(z, x0_prev, k, step_noise)
        if settings.resample_rounds > 1:
            def again(r, z_s):
                round_key = jax.random.fold_in(step_noise, r)
                z_t = _renoise(z_s, schedule((k - 1) / steps), schedule(k / steps),
                               jax.random.fold_in(round_key, 0))
                return advance(z_t, x0_prev, k, jax.random.fold_in(round_key, 1))[0]
            z_next = jax.lax.fori_loop(1, settings.resample_rounds, again, z_next)
        if progress is not None:
            jax.debug.callback(progress, k_start - k + 1, ordered=True)
        return (z_next, x0 if multistep else x0_prev), (x0 if return_intermediates else None)

    ks = jnp.arange(k_start, 0, -1)
    # The last step's x0 estimate is the output; its z at t = 0 is discarded. The x0
    # carry feeds DPM-Solver++'s second order; the other samplers pass it through.
    x0_init = jnp.zeros(shape, z.dtype) if multistep else jnp.zeros((), z.dtype)
    (z, _), x0s = jax.lax.scan(body, (z, x0_init), ks[:-1])
    x0, _ = _predict_x0_eps(denoise_fn, z, schedule(1 / steps), settings)
    if inpaint is not None:
        x0 = inpaint.mask * x0 + (1.0 - inpaint.mask) * inpaint.image
    if progress is not None:
        jax.debug.callback(progress, k_start, ordered=True)
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
