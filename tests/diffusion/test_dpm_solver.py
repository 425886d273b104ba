"""DPM-Solver++(2M) and the public single-step API.

Independent references: the closed-form mixture denoiser of analytic.py (the sampler
must reproduce the data's moments), and diffusers' DPMSolverMultistepScheduler fed
identical model outputs on the same discrete 1000-step schedule.

Tolerances (N = 20,000 samples): a mean's standard error is sqrt(var / N) ~ 0.004 and
a variance's relative one sqrt(2 / N) ~ 0.01; the bounds add the discretisation error
at 10 and 20 steps, which the test also compares with DDIM's at the same steps.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import (DiscreteSchedule, SamplerSettings, ddim_step, get_schedule,
                                  sample, step, t_to_timestep, timestep_to_t)
from imagen_jax.diffusion.schedules import alpha_sigma
from tests.diffusion.analytic import mixture_denoiser

N = 20_000
MIX_W, MIX_MU, MIX_SD = [0.3, 0.7], [-0.6, 0.6], [0.1, 0.1]
MIX_MEAN = 0.3 * -0.6 + 0.7 * 0.6
MIX_VAR = 0.37 - MIX_MEAN**2


def _mixture_errors(sampler: str, steps: int) -> tuple[float, float, float]:
    """(|mean error|, |relative variance error|, |fraction in the upper mode - 0.7|)."""
    x = np.asarray(sample(mixture_denoiser(MIX_W, MIX_MU, MIX_SD), get_schedule("cosine"),
                          (N, 1), jax.random.PRNGKey(1),
                          SamplerSettings(sampler=sampler, steps=steps)), np.float64)[:, 0]
    return abs(x.mean() - MIX_MEAN), abs(x.var() / MIX_VAR - 1), abs((x > 0).mean() - 0.7)


# Measured (seed 1): relative variance error 0.020 at 10 steps and 0.0005 at 20, against
# DDIM's 0.103 and 0.055; mean error 0.003 and 0.002 (its standard error is 0.004). The
# width of each narrow mode (std 0.1) is not reproduced at 10-20 steps by either
# sampler (25-35% off for DPM-Solver++, 19-22% for DDIM; 4% and 9% at 50 steps).
@pytest.mark.parametrize("steps, var_tol", [(10, 0.04), (20, 0.015)])
def test_dpmpp_2m_reproduces_a_gaussian_mixture(steps, var_tol):
    mean_err, var_err, mode_err = _mixture_errors("dpmpp_2m", steps)
    assert mean_err < 4.5 * math.sqrt(MIX_VAR / N), mean_err
    assert var_err < var_tol, var_err
    assert mode_err < 4.5 * math.sqrt(0.21 / N), mode_err
    # The second-order solver's variance is closer than DDIM's (first order shrinks it).
    assert var_err < 0.5 * _mixture_errors("ddim", steps)[1]


def test_dpmpp_2m_is_one_compiled_loop():
    den = mixture_denoiser(MIX_W, MIX_MU, MIX_SD)

    def hlo(steps):
        fn = jax.jit(lambda key: sample(den, get_schedule("cosine"), (4, 1), key,
                                        SamplerSettings(sampler="dpmpp_2m", steps=steps)))
        return fn.lower(jax.random.PRNGKey(0)).as_text()

    short, long = hlo(5), hlo(200)
    main = long[long.index("func.func public @main"):long.index("func.func private")]
    assert main.count("stablehlo.while") == 1
    assert abs(len(long) - len(short)) < 100


def _diffusers_scheduler(steps: int, thresholding: bool):
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        algorithm_type="dpmsolver++", solver_order=2, prediction_type="epsilon",
        timestep_spacing="trailing", final_sigmas_type="zero", lower_order_final=True,
        thresholding=thresholding, dynamic_thresholding_ratio=0.995, sample_max_value=1e6)
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("steps, threshold", [(10, "none"), (20, "none"), (10, "dynamic")])
def test_step_for_step_against_diffusers(steps, threshold):
    """Identical model outputs into diffusers' DPMSolverMultistepScheduler (dpmsolver++,
    order 2, trailing spacing) and into `step`: the same sample after every step."""
    import torch

    scheduler = _diffusers_scheduler(steps, threshold == "dynamic")
    schedule = DiscreteSchedule("linear", 1000)
    ts = [float(timestep_to_t(int(t))) for t in scheduler.timesteps]
    assert ts == pytest.approx([k / steps for k in range(steps, 0, -1)])  # our grid
    rng = np.random.default_rng(0)
    x_theirs = torch.from_numpy(rng.standard_normal((2, 8, 8, 3)).astype(np.float32))
    x_ours = jnp.asarray(x_theirs.numpy())
    scale = 3.0 if threshold == "dynamic" else 1.0  # outputs large enough to threshold
    prev_x0 = t_prev = None
    for i, timestep in enumerate(scheduler.timesteps):
        eps = scale * rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
        x_theirs = scheduler.step(torch.from_numpy(eps), timestep, x_theirs).prev_sample
        t_now = ts[i]
        t_next = ts[i + 1] if i + 1 < steps else 0.0
        x_ours, prev_x0 = step("dpmpp_2m", jnp.asarray(eps), x_ours, t_now, t_next,
                               schedule=schedule, threshold=threshold, prev_x0=prev_x0,
                               t_prev=t_prev)
        t_prev = t_now
        np.testing.assert_allclose(np.asarray(x_ours), x_theirs.numpy(), rtol=1e-4,
                                   atol=1e-4, err_msg=f"step {i} (timestep {int(timestep)})")


def test_sample_loop_matches_diffusers_with_a_model():
    """The whole compiled loop against diffusers driven by the same (closed-form) model."""
    import torch

    steps = 20  # divides 1000: diffusers' trailing timesteps are then our grid
    scheduler = _diffusers_scheduler(steps, thresholding=False)
    schedule = DiscreteSchedule("linear", 1000)
    den = mixture_denoiser(MIX_W, MIX_MU, MIX_SD)
    key = jax.random.PRNGKey(3)
    ours = sample(den, schedule, (64, 1), key, SamplerSettings(sampler="dpmpp_2m",
                                                               steps=steps))
    # The same initial noise: sample() draws it from split(key)[0].
    x = torch.from_numpy(np.array(jax.random.normal(jax.random.split(key)[0], (64, 1))))
    for timestep in scheduler.timesteps:
        logsnr = schedule(float(timestep_to_t(int(timestep))))
        eps = den(jnp.asarray(x.numpy()), jnp.full((64,), logsnr))
        x = scheduler.step(torch.from_numpy(np.asarray(eps)), timestep, x).prev_sample
    np.testing.assert_allclose(np.asarray(ours), x.numpy(), rtol=1e-4, atol=1e-4)


def test_step_api_matches_the_update_formulas():
    schedule = get_schedule("cosine")
    rng = np.random.default_rng(1)
    x, eps, noise = (jnp.asarray(rng.standard_normal((3, 4)), jnp.float32) for _ in range(3))
    logsnr_t, logsnr_s = schedule(0.6), schedule(0.5)
    alpha, sigma = alpha_sigma(logsnr_t)
    x0 = (x - sigma * eps) / alpha
    got = step("ddim", eps, x, 0.6, 0.5, schedule=schedule, noise=noise, eta=0.3)
    np.testing.assert_allclose(got.x_next, ddim_step(x0, eps, logsnr_t, logsnr_s, noise, 0.3),
                               rtol=1e-6)
    np.testing.assert_allclose(got.x0, x0, rtol=1e-6)
    # DPM-Solver++ at first order (no previous step) is DDIM with eta = 0.
    first = step("dpmpp_2m", eps, x, 0.6, 0.5, schedule=schedule).x_next
    np.testing.assert_allclose(first, step("ddim", eps, x, 0.6, 0.5, schedule=schedule).x_next,
                               rtol=1e-5, atol=1e-6)
    # A step to t = 0 returns the x0 estimate in every sampler.
    for sampler in ("ddpm", "ddim", "dpmpp_2m"):
        np.testing.assert_array_equal(
            step(sampler, eps, x, 0.6, 0.0, schedule=schedule, noise=noise).x_next, x0)
    with pytest.raises(ValueError, match="needs noise="):
        step("ddpm", eps, x, 0.6, 0.5, schedule=schedule)
    with pytest.raises(ValueError, match="t_next < t_now"):
        step("ddim", eps, x, 0.5, 0.6, schedule=schedule)


def test_the_step_api_drives_the_same_trajectory_as_sample():
    """DDPM one step at a time, noise passed in as sample() draws it, equals sample()."""
    schedule, steps, key = get_schedule("cosine"), 8, jax.random.PRNGKey(5)
    den = mixture_denoiser(MIX_W, MIX_MU, MIX_SD)
    ref = sample(den, schedule, (16, 1), key, SamplerSettings(sampler="ddpm", steps=steps))
    init_key, step_key = jax.random.split(key)
    x = jax.random.normal(init_key, (16, 1))
    for k in range(steps, 0, -1):
        noise = jax.random.normal(jax.random.fold_in(step_key, k), x.shape)
        eps = den(x, jnp.full((16,), schedule(k / steps)))
        x = step("ddpm", eps, x, k / steps, (k - 1) / steps, schedule=schedule,
                 noise=noise).x_next
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_timestep_mapping():
    assert float(timestep_to_t(999)) == 1.0 and float(timestep_to_t(0)) == 1e-3
    idx = np.arange(1000)
    np.testing.assert_array_equal(t_to_timestep(timestep_to_t(idx)), idx)
    # The discrete schedule at t = (n + 1) / N is log(abar_n / (1 - abar_n)).
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    sched = DiscreteSchedule("linear", 1000)
    for n in (0, 10, 500, 999):
        assert float(sched(float(timestep_to_t(n)))) == pytest.approx(
            math.log(abar[n] / (1 - abar[n])), rel=1e-5, abs=1e-5)
    with pytest.raises(ValueError):
        timestep_to_t(1000)
    with pytest.raises(ValueError):
        t_to_timestep(0.0)


def test_resampling_is_refused_with_the_multistep_solver():
    with pytest.raises(ValueError, match="resample_rounds"):
        SamplerSettings(sampler="dpmpp_2m", resample_rounds=2)
    with pytest.raises(ValueError, match="strength"):
        SamplerSettings(strength=0.0)
