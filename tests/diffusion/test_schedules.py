import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import schedules
from imagen_jax.diffusion.parameterization import q_sample

ALL = [schedules.get_schedule(name, resolution=256) for name in schedules.SCHEDULE_NAMES]
T = jnp.linspace(0.0, 1.0, 1001)


@pytest.mark.parametrize("schedule", ALL, ids=schedules.SCHEDULE_NAMES)
def test_alpha_squared_plus_sigma_squared_is_one(schedule):
    alpha, sigma = schedules.alpha_sigma(schedule(T))
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)


@pytest.mark.parametrize("schedule", ALL, ids=schedules.SCHEDULE_NAMES)
def test_logsnr_decreases_from_clean_to_noise(schedule):
    logsnr = np.asarray(schedule(T))
    assert np.all(np.diff(logsnr) <= 1e-5)
    assert logsnr[0] > 5.0 and logsnr[-1] < -5.0


def test_cosine_is_nichol_cosine_between_its_bounds():
    # alpha^2(t) = cos^2(pi u / 2) for u the time rescaled to the log-SNR bounds.
    sched = schedules.CosineSchedule()
    u_min = 2 / math.pi * math.atan(math.exp(-10.0))
    u_max = 2 / math.pi * math.atan(math.exp(10.0))
    u = u_min + np.asarray(T, np.float64) * (u_max - u_min)
    alpha, _ = schedules.alpha_sigma(sched(T))
    np.testing.assert_allclose(alpha**2, np.cos(np.pi * u / 2) ** 2, atol=2e-6)
    assert float(sched(0.0)) == pytest.approx(20.0, abs=5e-3)
    assert float(sched(1.0)) == pytest.approx(-20.0, abs=5e-3)


def test_shifted_cosine_is_cosine_plus_two_log_ratio():
    base, shifted = schedules.CosineSchedule(), schedules.shifted_cosine(256)
    np.testing.assert_allclose(shifted(T) - base(T), 2 * math.log(64 / 256), atol=1e-5)
    np.testing.assert_allclose(schedules.shifted_cosine(64)(T), base(T), atol=1e-6)


def test_continuous_linear_tracks_the_discrete_1000_step_table():
    # log abar_n = sum log(1 - beta_i) ~ -sum beta_i; the continuous limit must agree
    # with the discrete product up to the second-order term sum beta_i^2 / 2.
    betas = np.linspace(1e-4, 0.02, 1000)
    log_abar = np.cumsum(np.log1p(-betas))
    t = np.arange(1, 1001) / 1000
    logsnr = np.asarray(schedules.LinearSchedule()(jnp.asarray(t)), np.float64)
    log_abar_cont = -np.logaddexp(0.0, -logsnr)  # log sigmoid(logsnr)
    second_order = 0.5 * np.cumsum(betas**2)
    np.testing.assert_array_less(np.abs(log_abar_cont - log_abar), second_order + 0.02)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_discrete_schedule_hits_table_values_on_its_grid(kind):
    sched = schedules.DiscreteSchedule(betas=kind, num_steps=1000)
    if kind == "linear":
        betas = np.linspace(1e-4, 0.02, 1000)
    else:
        grid = np.arange(1001) / 1000
        abar = np.cos((grid + 0.008) / 1.008 * np.pi / 2) ** 2
        betas = np.clip(1 - abar[1:] / abar[:-1], 0, 0.999)
    abar = np.cumprod(1 - betas)
    n = np.array([1, 10, 250, 500, 999, 1000])
    got = np.asarray(sched(jnp.asarray(n / 1000.0)))
    want = np.minimum(np.log(abar[n - 1] / (1 - abar[n - 1])), 20.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_discrete_betas_rescale_for_other_step_counts():
    assert schedules.discrete_betas("linear", 500)[-1] == pytest.approx(0.04)
    assert schedules.discrete_betas("cosine", 1000).max() <= 0.999


@pytest.mark.parametrize("logsnr", [-4.0, 0.0, 3.0])
def test_q_sample_has_the_forward_process_moments(logsnr):
    alpha, sigma = schedules.alpha_sigma(jnp.float32(logsnr))
    x0 = jnp.array([0.7, -0.2, 0.0])
    eps = jax.random.normal(jax.random.PRNGKey(0), (200_000, 3))
    z = q_sample(x0, eps, alpha, sigma)
    se = float(sigma) / math.sqrt(200_000)
    np.testing.assert_allclose(z.mean(0), alpha * x0, atol=5 * se)
    np.testing.assert_allclose(z.var(0), sigma**2, rtol=0.02)


def test_unknown_schedule_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="unknown schedule name 'cosinus'"):
        schedules.get_schedule("cosinus")
    with pytest.raises(ValueError, match="resolution"):
        schedules.get_schedule("shifted_cosine")
    with pytest.raises(ValueError, match="unknown discrete beta schedule"):
        schedules.discrete_betas("quadratic")
    with pytest.raises(ValueError, match="logsnr_min"):
        schedules.CosineSchedule(logsnr_min=5.0, logsnr_max=-5.0)
