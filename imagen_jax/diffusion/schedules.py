"""Noise schedules, expressed as log-SNR functions of continuous time t in [0, 1].

Every schedule is a frozen (hashable) dataclass whose ``__call__`` maps t to
log-SNR lambda(t) = log(alpha^2 / sigma^2), decreasing from clean (t=0) to pure
noise (t=1). The variance-preserving process then has alpha^2 = sigmoid(lambda)
and sigma^2 = sigmoid(-lambda), so alpha^2 + sigma^2 = 1 by construction.

Why log-SNR rather than betas: continuous-time training (Imagen App. A) samples
t ~ U(0, 1) and needs lambda(t) everywhere, and samplers with any step count only
ever need lambda at the step boundaries. Discrete 1000-step beta schedules are
offered as a view (`DiscreteSchedule`) that interpolates its log-SNR table, so
the same samplers and losses serve both.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

# Bounds keep alpha and sigma away from exactly 0 so that eps <-> x0 conversions
# stay finite; exp(-20) ~ 2e-9 is far below float32 image precision.
LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def alpha_sigma(logsnr: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Returns (alpha, sigma) of the variance-preserving process at `logsnr`."""
    logsnr = jnp.asarray(logsnr)
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def _check_bounds(logsnr_min: float, logsnr_max: float) -> None:
    if not logsnr_min < logsnr_max:
        raise ValueError(
            f"logsnr_min must be below logsnr_max, got {logsnr_min} and {logsnr_max}")


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
    """Nichol & Dhariwal's cosine schedule in continuous time.

    alpha^2(t) = cos^2(pi t / 2) gives lambda(t) = -2 log tan(pi t / 2); the time
    axis is rescaled so that lambda runs exactly from logsnr_max to logsnr_min.
    `shift` adds a constant to lambda: the "shifted cosine" of simple diffusion
    (Hoogeboom et al. 2023), shift = 2 log(base_resolution / resolution), which
    keeps a high-resolution image as noisy as a 64x64 one at the same t.
    """

    logsnr_min: float = LOGSNR_MIN
    logsnr_max: float = LOGSNR_MAX
    shift: float = 0.0

    def __post_init__(self):
        _check_bounds(self.logsnr_min, self.logsnr_max)

    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        t_min = math.atan(math.exp(-0.5 * self.logsnr_max))
        t_max = math.atan(math.exp(-0.5 * self.logsnr_min))
        angle = t_min + jnp.asarray(t) * (t_max - t_min)
        return -2.0 * jnp.log(jnp.tan(angle)) + self.shift


def shifted_cosine(resolution: int, base_resolution: int = 64) -> CosineSchedule:
    """The cosine schedule shifted for `resolution` relative to `base_resolution`."""
    if resolution <= 0 or base_resolution <= 0:
        raise ValueError(
            f"resolution and base_resolution must be positive, got {resolution}, "
            f"{base_resolution}")
    return CosineSchedule(shift=2.0 * math.log(base_resolution / resolution))


@dataclasses.dataclass(frozen=True)
class LinearSchedule:
    """The DDPM linear beta schedule (1e-4 -> 0.02 over 1000 steps), made continuous.

    Discrete alpha_bar_n = prod(1 - beta_i) ~ exp(-sum beta_i); letting the step
    count go to infinity with beta(t) = N * (beta_start + t (beta_end - beta_start))
    gives log alpha_bar(t) = -integral_0^t beta(s) ds (the VP-SDE of Song et al.
    2021 with beta_min = 0.1, beta_max = 20). Then lambda = -log(expm1(integral)).
    Imagen's 256->1024 stage uses this schedule in continuous time.
    """

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000
    logsnr_min: float = LOGSNR_MIN
    logsnr_max: float = LOGSNR_MAX

    def __post_init__(self):
        _check_bounds(self.logsnr_min, self.logsnr_max)
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(
                f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")

    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        t = jnp.asarray(t)
        b0 = self.num_steps * self.beta_start
        b1 = self.num_steps * self.beta_end
        integral = b0 * t + 0.5 * (b1 - b0) * t * t
        # expm1(0) = 0 at t = 0: the clip maps the resulting +inf to logsnr_max.
        logsnr = -jnp.log(jnp.expm1(jnp.maximum(integral, 1e-30)))
        return jnp.clip(logsnr, self.logsnr_min, self.logsnr_max)


def discrete_betas(kind: str, num_steps: int = 1000) -> np.ndarray:
    """The classic discrete beta tables: 'linear' (Ho et al.) or 'cosine' (Nichol)."""
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if kind == "linear":
        scale = 1000.0 / num_steps  # keeps the total noise fixed as in improved-DDPM
        return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)
    if kind == "cosine":
        s = 0.008
        steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        alpha_bar = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
        betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
        return np.clip(betas, 0.0, 0.999)
    raise ValueError(f"unknown discrete beta schedule {kind!r}; expected 'linear' or 'cosine'")


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete N-step beta schedule viewed as a function of continuous t.

    Step n (1-based) sits at t = n / N with lambda_n = log(abar_n / (1 - abar_n));
    between steps lambda is interpolated linearly, and t = 0 maps to logsnr_max.
    A sampler with N steps therefore visits exactly the table's values.
    """

    betas: str = "linear"
    num_steps: int = 1000
    logsnr_max: float = LOGSNR_MAX

    def logsnr_table(self) -> np.ndarray:
        alpha_bar = np.cumprod(1.0 - discrete_betas(self.betas, self.num_steps))
        table = np.log(alpha_bar) - np.log1p(-alpha_bar)
        return np.concatenate([[self.logsnr_max], np.minimum(table, self.logsnr_max)])

    def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
        table = self.logsnr_table()
        grid = np.linspace(0.0, 1.0, self.num_steps + 1)
        return jnp.interp(jnp.asarray(t), grid, table.astype(np.float32))


Schedule = CosineSchedule | LinearSchedule | DiscreteSchedule

SCHEDULE_NAMES = ("cosine", "shifted_cosine", "linear", "discrete_linear", "discrete_cosine")


def get_schedule(name: str, *, resolution: int | None = None,
                 num_steps: int = 1000) -> Schedule:
    """Builds a schedule by name; `resolution` is required for 'shifted_cosine'."""
    if name == "cosine":
        return CosineSchedule()
    if name == "shifted_cosine":
        if resolution is None:
            raise ValueError("schedule 'shifted_cosine' needs resolution=")
        return shifted_cosine(resolution)
    if name == "linear":
        return LinearSchedule(num_steps=num_steps)
    if name in ("discrete_linear", "discrete_cosine"):
        return DiscreteSchedule(betas=name.split("_")[1], num_steps=num_steps)
    raise ValueError(f"unknown schedule name {name!r}; expected one of {SCHEDULE_NAMES}")
