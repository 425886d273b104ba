import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import losses
from imagen_jax.diffusion.schedules import CosineSchedule

SCHEDULE = CosineSchedule()


def _x0(batch=64):
    return jax.random.uniform(jax.random.PRNGKey(3), (batch, 8, 8, 3), minval=-1, maxval=1)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_oracle_model_has_zero_loss(prediction):
    # The oracle knows x0, so from z it recovers eps exactly and returns the target
    # computed from first principles: a wrong forward process or target would show.
    x0 = _x0()

    def oracle(z, logsnr):
        a = jnp.sqrt(jax.nn.sigmoid(logsnr))[:, None, None, None]
        s = jnp.sqrt(jax.nn.sigmoid(-logsnr))[:, None, None, None]
        eps = (z - a * x0) / s
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]

    with jax.enable_x64(True):
        loss, aux = losses.diffusion_loss(oracle, x0.astype(jnp.float64), jax.random.PRNGKey(0),
                                          SCHEDULE, prediction)
    assert float(loss) < 1e-10
    assert aux["mse"].shape == (64,) and aux["t"].shape == (64,)


def test_predicting_zero_noise_costs_unit_variance():
    loss, _ = losses.diffusion_loss(lambda z, l: jnp.zeros_like(z), _x0(512),
                                    jax.random.PRNGKey(0), SCHEDULE, "eps")
    assert float(loss) == pytest.approx(1.0, abs=0.02)


def test_min_snr_weights_closed_form():
    logsnr = jnp.log(jnp.array([10.0, 1.0, 0.1]))
    np.testing.assert_allclose(losses.min_snr_weight(logsnr, "eps", 5.0), [0.5, 1.0, 1.0],
                               rtol=1e-6)
    np.testing.assert_allclose(losses.min_snr_weight(logsnr, "v", 5.0),
                               [5 / 11, 0.5, 0.1 / 1.1], rtol=1e-6)
    np.testing.assert_allclose(losses.min_snr_weight(logsnr, "x0", 5.0), [5.0, 1.0, 0.1],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="min_snr_gamma"):
        losses.min_snr_weight(logsnr, "eps", 0.0)


def test_min_snr_weighting_changes_the_loss_and_has_gradients():
    x0 = _x0(16)

    def loss_fn(scale, gamma):
        return losses.diffusion_loss(lambda z, l: scale * z, x0, jax.random.PRNGKey(5),
                                     SCHEDULE, "eps", min_snr_gamma=gamma)[0]

    plain, weighted = loss_fn(0.5, None), loss_fn(0.5, 1.0)
    assert float(weighted) < float(plain)  # weights are <= 1 for eps, < 1 where SNR > 1
    grad = jax.grad(loss_fn)(0.5, 5.0)
    assert np.isfinite(grad) and grad != 0
