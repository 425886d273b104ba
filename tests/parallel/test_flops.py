"""The analytic FLOP count (imagen_jax/parallel/flops.py) against closed forms: matmuls,
convolutions, and loop bodies counted once per iteration (XLA's cost analysis counts
a while loop's body once)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from imagen_jax.parallel.flops import count_flops


def _sds(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_batched_matmul_is_2mnk_per_batch():
    f = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)  # noqa: E731
    assert count_flops(f, _sds(4, 8, 16), _sds(4, 16, 32)) == 2 * 4 * 8 * 16 * 32


@pytest.mark.parametrize("groups", [1, 3])
def test_convolution_counts_its_window_and_groups(groups):
    f = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups)
    x, w = _sds(2, 10, 10, 6), _sds(3, 3, 6 // groups, 9)
    assert count_flops(f, x, w) == 2 * 2 * 10 * 10 * 9 * (6 // groups) * 9


def test_a_scan_body_counts_once_per_iteration_and_grad_adds_the_backward():
    m = _sds(8, 8)
    scanned = lambda m: jax.lax.scan(lambda c, _: (c @ m, None), m, None, length=7)[0]  # noqa
    assert count_flops(scanned, m) == 7 * 2 * 8 ** 3
    # lax.map (the blocked attention's loop) is a scan too.
    mapped = lambda m: jax.lax.map(lambda row: row @ m, jnp.ones((5, 8)))  # noqa: E731
    assert count_flops(mapped, m) == 5 * 2 * 8 * 8
    # Forward + backward of x @ w: the forward and two matmuls for the gradients.
    assert count_flops(jax.grad(lambda w: jnp.sum(jnp.ones((8, 8)) @ w)), m) == 2 * 2 * 8 ** 3
