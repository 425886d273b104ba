import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.diffusion import thresholding as T


def _batch_with_different_ranges():
    base = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 3), minval=-1, maxval=1)
    # Sample 0 stays inside [-0.5, 0.5]; sample 1 spans [-3, 3]; sample 2 spans [-1.5, 1.5].
    return base * jnp.array([0.5, 3.0, 1.5])[:, None, None, None]


def test_dynamic_threshold_is_per_sample():
    x0 = _batch_with_different_ranges()
    out = np.asarray(T.dynamic_threshold(x0, 99.5))
    flat = np.abs(np.asarray(x0).reshape(3, -1))
    s = np.maximum(np.percentile(flat, 99.5, axis=1), 1.0)  # independent numpy reference
    want = np.clip(np.asarray(x0), -s[:, None, None, None], s[:, None, None, None])
    want = want / s[:, None, None, None]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    # The in-range sample is untouched although its batch-mates are far out of range:
    # one s for the whole batch would have shrunk it by ~3x.
    np.testing.assert_array_equal(out[0], np.asarray(x0[0]))
    assert s[1] > 2.5 and 1.0 < s[2] < 1.6
    assert np.abs(out).max() <= 1.0 + 1e-6
    # Each sample's own extreme pixels saturate at exactly +-1 after dividing by s.
    assert np.abs(out[1]).max() == pytest.approx(1.0) and np.abs(out[2]).max() == pytest.approx(1.0)


def test_scale_never_below_one():
    for seed in range(5):
        x = jax.random.normal(jax.random.PRNGKey(seed), (8, 4, 4, 3)) * (0.1 + seed)
        s = T.dynamic_threshold_scale(x, 90.0)
        assert s.shape == (8, 1, 1, 1)
        assert float(s.min()) >= 1.0
    small = jnp.full((2, 4, 4, 3), 0.25)
    np.testing.assert_array_equal(T.dynamic_threshold(small), small)


def test_percentile_100_is_the_max_and_static_clips():
    x = jnp.array([[[[-4.0, 2.0, 0.5]]]])
    np.testing.assert_allclose(T.dynamic_threshold(x, 100.0), x / 4.0)
    np.testing.assert_array_equal(T.static_threshold(x), jnp.array([[[[-1.0, 1.0, 0.5]]]]))
    np.testing.assert_array_equal(T.apply_threshold(x, "none"), x)


@pytest.mark.parametrize("bad", [0.0, -5.0, 100.5, 250.0])
def test_percentile_outside_range_is_a_value_error(bad):
    with pytest.raises(ValueError, match="percentile must be in \\(0, 100\\]"):
        T.dynamic_threshold(jnp.ones((1, 2, 2, 1)), bad)


def test_unknown_threshold_kind():
    with pytest.raises(ValueError, match="unknown threshold 'soft'"):
        T.apply_threshold(jnp.ones((1, 2)), "soft")
