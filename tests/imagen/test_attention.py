"""`attend` equals jax.nn.dot_product_attention (values and gradients), blocked or not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.nn.attention import attend


def _inputs(b=2, t=16, s=21, n=2, d=8, seed=0):
    kq, kk, kv, kg = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(kq, (b, t, n, d))
    k = jax.random.normal(kk, (b, s, n, d))
    v = jax.random.normal(kv, (b, s, n, d))
    # the last keys are 'text': row 0 keeps 2 of them, row 1 keeps all
    mask = jnp.concatenate([jnp.ones((b, t), bool),
                            jnp.arange(s - t)[None] < jnp.array([[2], [s - t]])], axis=1)
    return q, k, v, mask, jax.random.normal(kg, (b, t, n, d))


def _reference(q, k, v, mask):
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])


@pytest.mark.parametrize("block_bytes,blocks", [(None, 1), (2 * 2 * 21 * 4 * 4, 4),
                                                (1, 16)])
def test_attend_matches_reference_and_gradients(block_bytes, blocks):
    q, k, v, mask, g = _inputs()
    fn = jax.jit(lambda q, k, v: attend(q, k, v, mask, block_bytes=block_bytes))
    jaxpr = str(jax.make_jaxpr(fn)(q, k, v))
    assert ("scan" in jaxpr) == (blocks > 1)  # the blocked path is the one taken
    ours, ours_vjp = jax.vjp(fn, q, k, v)
    ref, ref_vjp = jax.vjp(lambda q, k, v: _reference(q, k, v, mask), q, k, v)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    for name, a, r in zip("qkv", ours_vjp(g), ref_vjp(g)):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


def test_masked_keys_have_no_influence():
    q, k, v, mask, _ = _inputs()
    out = attend(q, k, v, mask, block_bytes=1)
    k2 = jnp.where(mask[..., None, None], k, 1e3)  # change only masked keys and values
    v2 = jnp.where(mask[..., None, None], v, -1e3)
    np.testing.assert_allclose(attend(q, k2, v2, mask, block_bytes=1), out, atol=1e-6)


def test_bfloat16_inputs_keep_their_dtype():
    q, k, v, mask, _ = _inputs()
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    out = attend(q, k, v, mask)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), _reference(q, k, v, mask).astype(
        jnp.float32), atol=3e-2)
