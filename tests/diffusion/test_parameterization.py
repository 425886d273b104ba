import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import parameterization as P
from imagen_jax.diffusion.schedules import alpha_sigma

LOGSNRS = [-10.0, -3.0, 0.0, 2.5, 10.0]


@pytest.fixture
def x0_eps():
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    with jax.enable_x64(True):
        yield (jax.random.uniform(k1, (4, 8, 8, 3), jnp.float64, -1, 1),
               jax.random.normal(k2, (4, 8, 8, 3), jnp.float64))


@pytest.mark.parametrize("kind", P.PREDICTIONS)
@pytest.mark.parametrize("logsnr", LOGSNRS)
def test_prediction_round_trips_to_x0_and_eps(x0_eps, kind, logsnr):
    with jax.enable_x64(True):
        x0, eps = x0_eps
        alpha, sigma = alpha_sigma(jnp.float64(logsnr))
        z = P.q_sample(x0, eps, alpha, sigma)
        pred = P.from_x0_eps(kind, x0, eps, alpha, sigma)
        x0_back, eps_back = P.to_x0_eps(kind, pred, z, alpha, sigma)
        np.testing.assert_allclose(x0_back, x0, atol=1e-6)
        np.testing.assert_allclose(eps_back, eps, atol=1e-6)


@pytest.mark.parametrize("src", P.PREDICTIONS)
@pytest.mark.parametrize("dst", P.PREDICTIONS)
def test_conversion_between_any_two_parameterisations(x0_eps, src, dst):
    with jax.enable_x64(True):
        x0, eps = x0_eps
        alpha, sigma = alpha_sigma(jnp.float64(1.3))
        z = P.q_sample(x0, eps, alpha, sigma)
        pred_src = P.from_x0_eps(src, x0, eps, alpha, sigma)
        pred_dst = P.from_x0_eps(dst, *P.to_x0_eps(src, pred_src, z, alpha, sigma), alpha, sigma)
        np.testing.assert_allclose(pred_dst, P.target(dst, x0, eps, alpha, sigma), atol=1e-6)


def test_v_matches_its_definition_and_float32_is_close():
    x0 = jnp.array([0.3, -0.9]); eps = jnp.array([1.2, 0.4])
    alpha, sigma = alpha_sigma(jnp.float32(0.7))
    np.testing.assert_allclose(P.target("v", x0, eps, alpha, sigma),
                               alpha * eps - sigma * x0, rtol=1e-7)
    # v round trips are a rotation: well conditioned even in float32.
    z = P.q_sample(x0, eps, alpha, sigma)
    x0_back, eps_back = P.to_x0_eps("v", P.target("v", x0, eps, alpha, sigma), z, alpha, sigma)
    np.testing.assert_allclose(x0_back, x0, atol=1e-6)
    np.testing.assert_allclose(eps_back, eps, atol=1e-6)


def test_unknown_prediction_is_a_value_error():
    with pytest.raises(ValueError, match="unknown prediction 'score'"):
        P.target("score", 0.0, 0.0, 1.0, 0.0)
