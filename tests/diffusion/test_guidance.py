import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import SamplerSettings, classifier_free_guidance, sample
from imagen_jax.diffusion.schedules import CosineSchedule


def _counting_model():
    """A conditional 'model' whose output depends on z, logsnr and cond, counting calls."""
    calls = []

    def model_fn(z, logsnr, cond):
        calls.append(z.shape[0])
        return 0.3 * z + 0.01 * logsnr[:, None] + cond

    return model_fn, calls


def _inputs():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return (jax.random.normal(k1, (4, 5)), jax.random.normal(k2, (4,)),
            jax.random.normal(k3, (4, 5)))


@pytest.mark.parametrize("w, expect", [(0.0, "uncond"), (1.0, "cond")])
def test_w0_is_unconditional_and_w1_is_conditional(w, expect):
    model_fn, _ = _counting_model()
    z, logsnr, cond = _inputs()
    uncond = jnp.zeros_like(cond)
    guided = classifier_free_guidance(model_fn, cond, uncond, w)(z, logsnr)
    want = model_fn(z, logsnr, cond if expect == "cond" else uncond)
    np.testing.assert_allclose(guided, want, rtol=1e-6, atol=1e-6)


def test_guidance_extrapolates_and_uses_one_doubled_forward():
    model_fn, calls = _counting_model()
    z, logsnr, cond = _inputs()
    uncond = jnp.zeros_like(cond)
    guided = classifier_free_guidance(model_fn, cond, uncond, 4.0)(z, logsnr)
    assert calls == [8]  # one call, batch 2B
    c, u = model_fn(z, logsnr, cond), model_fn(z, logsnr, uncond)
    np.testing.assert_allclose(guided, 4.0 * c + (1 - 4.0) * u, rtol=1e-5, atol=1e-5)


def test_guidance_works_on_pytree_conditions_inside_the_sampler():
    # cond = (embedding, mask); w = 1 sampling equals sampling the conditional model.
    def model_fn(z, logsnr, cond):
        emb, mask = cond
        return 0.5 * z + (emb * mask).sum(-1, keepdims=True)

    emb = jax.random.normal(jax.random.PRNGKey(1), (3, 6))
    mask = jnp.array([[1, 1, 0, 0, 0, 0]] * 3, jnp.float32)
    cond, uncond = (emb, mask), (jnp.zeros_like(emb), mask)
    settings = SamplerSettings(steps=10, threshold="dynamic")
    key = jax.random.PRNGKey(2)
    guided = sample(classifier_free_guidance(model_fn, cond, uncond, 1.0), CosineSchedule(),
                    (3, 4), key, settings)
    plain = sample(lambda z, l: model_fn(z, l, cond), CosineSchedule(), (3, 4), key, settings)
    np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-5)
