"""Samplers against closed-form optimal denoisers (see analytic.py).

Tolerances: with N samples, a mean has standard error std / sqrt(N) and a standard
deviation about std / sqrt(2N); the bounds below are ~4.5 standard errors plus the
discretisation error measured for the step counts used (it shrinks with steps, and
one test checks that it does).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import SamplerSettings, ddim_invert, get_schedule, sample
from tests.diffusion.analytic import gaussian_denoiser, mixture_denoiser

MEAN = np.array([0.5, -0.3, 0.2, 0.0])
STD = np.array([0.5, 0.2, 0.8, 1.0])
N = 20_000
# A two-mode mixture: 30% at -0.6, 70% at +0.6, each with std 0.1.
MIX_W, MIX_MU, MIX_SD = [0.3, 0.7], [-0.6, 0.6], [0.1, 0.1]
MIX_MEAN = 0.3 * -0.6 + 0.7 * 0.6
MIX_VAR = 0.3 * (0.01 + 0.36) + 0.7 * (0.01 + 0.36) - MIX_MEAN**2


def _assert_gaussian_moments(x, rel_std_tol):
    x = np.asarray(x, np.float64)
    np.testing.assert_allclose(x.mean(0), MEAN, atol=4.5 / math.sqrt(N) + 0.005)
    np.testing.assert_allclose(x.std(0) / STD, 1.0, atol=rel_std_tol)


@pytest.mark.parametrize("schedule_name", ["cosine", "linear", "discrete_linear"])
def test_ddpm_reproduces_gaussian_data(schedule_name):
    settings = SamplerSettings(sampler="ddpm", steps=1000)
    x = sample(gaussian_denoiser(MEAN, STD), get_schedule(schedule_name), (N, 4),
               jax.random.PRNGKey(0), settings)
    _assert_gaussian_moments(x, rel_std_tol=0.03)


@pytest.mark.parametrize("schedule_name", ["cosine", "linear"])
def test_ddim_eta0_reproduces_gaussian_data(schedule_name):
    settings = SamplerSettings(sampler="ddim", steps=500, eta=0.0)
    x = sample(gaussian_denoiser(MEAN, STD), get_schedule(schedule_name), (N, 4),
               jax.random.PRNGKey(0), settings)
    _assert_gaussian_moments(x, rel_std_tol=0.03)


def test_ddim_error_shrinks_with_more_steps():
    def std_error(steps):
        x = sample(gaussian_denoiser(MEAN, STD), get_schedule("cosine"), (N, 4),
                   jax.random.PRNGKey(0), SamplerSettings(steps=steps))
        return np.abs(np.asarray(x).std(0) / STD - 1).max()

    coarse, fine = std_error(10), std_error(200)
    assert coarse > 0.05  # 10 DDIM steps visibly shrink the variance ...
    assert fine < coarse / 4  # ... and the error falls as the grid is refined.


@pytest.mark.parametrize("sampler, steps", [("ddpm", 1000), ("ddim", 200)])
def test_samplers_reproduce_a_gaussian_mixture(sampler, steps):
    x = np.asarray(sample(mixture_denoiser(MIX_W, MIX_MU, MIX_SD), get_schedule("cosine"),
                          (N, 1), jax.random.PRNGKey(1),
                          SamplerSettings(sampler=sampler, steps=steps)), np.float64)[:, 0]
    assert (x > 0).mean() == pytest.approx(0.7, abs=4.5 * math.sqrt(0.21 / N))
    assert x.mean() == pytest.approx(MIX_MEAN, abs=0.02)
    assert x.var() == pytest.approx(MIX_VAR, rel=0.03)
    assert x[x > 0].std() == pytest.approx(0.1, rel=0.08)
    assert x[x < 0].std() == pytest.approx(0.1, rel=0.08)


def test_ddim_eta0_is_deterministic():
    den = mixture_denoiser(MIX_W, MIX_MU, MIX_SD)
    sched, settings = get_schedule("cosine"), SamplerSettings(steps=30)
    a = sample(den, sched, (64, 1), jax.random.PRNGKey(7), settings)
    b = sample(den, sched, (64, 1), jax.random.PRNGKey(7), settings)
    np.testing.assert_array_equal(a, b)
    # With the starting noise fixed, the key only feeds per-step noise, which eta = 0
    # never uses: a different key must give the same images.
    z1 = jax.random.normal(jax.random.PRNGKey(0), (64, 1))
    c = sample(den, sched, (64, 1), jax.random.PRNGKey(1), settings, z_init=z1)
    d = sample(den, sched, (64, 1), jax.random.PRNGKey(2), settings, z_init=z1)
    np.testing.assert_array_equal(c, d)
    # ... while eta > 0 does use it.
    noisy = SamplerSettings(steps=30, eta=1.0)
    e = sample(den, sched, (64, 1), jax.random.PRNGKey(1), noisy, z_init=z1)
    f = sample(den, sched, (64, 1), jax.random.PRNGKey(2), noisy, z_init=z1)
    assert np.abs(np.asarray(e) - np.asarray(f)).max() > 1e-2


def test_ddim_eta1_equals_ddpm_ancestral_step_for_step():
    # Two formulas derived separately (posterior mean/variance vs DDIM's sigma_eta)
    # must agree exactly when fed the same noise.
    den = mixture_denoiser(MIX_W, MIX_MU, MIX_SD)
    for name in ["cosine", "linear"]:
        sched = get_schedule(name)
        a = sample(den, sched, (256, 1), jax.random.PRNGKey(3),
                   SamplerSettings(sampler="ddpm", steps=50))
        b = sample(den, sched, (256, 1), jax.random.PRNGKey(3),
                   SamplerSettings(sampler="ddim", steps=50, eta=1.0))
        np.testing.assert_allclose(a, b, atol=2e-4)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_parameterisations_sample_the_same_images(prediction):
    sched, key = get_schedule("cosine"), jax.random.PRNGKey(4)
    ref = sample(mixture_denoiser(MIX_W, MIX_MU, MIX_SD, "eps"), sched, (256, 1), key,
                 SamplerSettings(steps=40))
    got = sample(mixture_denoiser(MIX_W, MIX_MU, MIX_SD, prediction), sched, (256, 1), key,
                 SamplerSettings(steps=40, prediction=prediction))
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_ddim_inversion_round_trips_real_data():
    data = MEAN + STD * np.asarray(jax.random.normal(jax.random.PRNGKey(5), (2000, 4)))
    den, sched = gaussian_denoiser(MEAN, STD), get_schedule("cosine")
    z1 = ddim_invert(den, sched, jnp.asarray(data, jnp.float32), steps=200)
    # The latents of real data are standard normal ...
    np.testing.assert_allclose(np.asarray(z1).mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(np.asarray(z1).std(0), 1.0, atol=0.05)
    # ... and decoding them with DDIM (eta = 0, same grid) gives the data back.
    rec = np.asarray(sample(den, sched, data.shape, jax.random.PRNGKey(9),
                            SamplerSettings(steps=200), z_init=z1))
    err = np.abs(rec - data)
    assert err.mean() < 0.01 and err.max() < 0.08, (err.mean(), err.max())


def test_intermediates_and_progress():
    seen = []
    x0, traj = sample(gaussian_denoiser(MEAN, STD), get_schedule("cosine"), (8, 4),
                      jax.random.PRNGKey(0), SamplerSettings(steps=12, threshold="static"),
                      return_intermediates=True, progress=lambda n: seen.append(int(n)))
    assert traj.shape == (12, 8, 4)
    np.testing.assert_array_equal(traj[-1], x0)
    assert np.abs(np.asarray(traj)).max() <= 1.0  # every step's x0 was thresholded
    assert seen == list(range(1, 13))


def test_sampling_is_one_compiled_loop():
    # The steps run as one scan: the compiled program neither unrolls nor grows
    # with the step count (the PRNG contributes a few loops of its own).
    den = gaussian_denoiser(MEAN, STD)

    def hlo(steps):
        fn = jax.jit(lambda key: sample(den, get_schedule("cosine"), (4, 4), key,
                                        SamplerSettings(steps=steps)))
        return fn.lower(jax.random.PRNGKey(0)).as_text()

    short, long = hlo(5), hlo(500)
    assert long.count("stablehlo.while") == short.count("stablehlo.while")
    assert abs(len(long) - len(short)) < 100
    main = long[long.index("func.func public @main"):long.index("func.func private")]
    assert main.count("stablehlo.while") == 1
