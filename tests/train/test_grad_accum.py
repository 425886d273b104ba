"""Gradient accumulation equals the large batch: k micro-batches of B make one update
equal to one step on k*B, and the step, the schedule and the EMA advance once per
update (not once per micro-batch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from imagen_jax.train.optimizer import make_optimizer
from imagen_jax.train.state import create_state, micro_batches, train_step


def _train_section(optimizer: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        optimizer=optimizer, learning_rate=1e-2, warmup_steps=2, schedule="cosine", steps=10,
        final_lr_fraction=0.1, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01,
        grad_clip_norm=1.0, grad_accum_steps=1))


def _loss(params, batch, key):
    """A mean over examples, plus a draw from `key` that does not change the gradient."""
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    err = hidden @ params["w2"] - batch["y"]
    loss = jnp.mean(err ** 2)
    return loss, {"abs_err": jnp.mean(jnp.abs(err)), "noise": jax.random.uniform(key)}


def _params(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"w1": jnp.asarray(rng.normal(size=(6, 16)) * 0.5, jnp.float32),
            "b1": jnp.zeros((16,), jnp.float32),
            "w2": jnp.asarray(rng.normal(size=(16, 3)) * 0.5, jnp.float32)}


def _batches(n_updates: int, size: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": jnp.asarray(rng.normal(size=(size, 6)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(size, 3)), jnp.float32)}
            for _ in range(n_updates)]


def _run(optimizer_name: str, k: int, batches: list[dict]):
    tx = make_optimizer(_train_section(optimizer_name))
    state = create_state(_params(), tx, jax.random.PRNGKey(0))
    step = jax.jit(lambda s, b: train_step(s, b, loss_fn=_loss, optimizer=tx, ema_decay=0.9,
                                           skip_nonfinite=False, grad_accum_steps=k))
    losses = []
    for batch in batches:
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


@pytest.mark.parametrize("optimizer_name", ["adamw", "adafactor"])
def test_k_micro_batches_equal_one_step_on_the_whole_batch(optimizer_name):
    k, micro = 4, 4
    batches = _batches(3, k * micro)
    big, big_losses = _run(optimizer_name, 1, batches)
    acc, acc_losses = _run(optimizer_name, k, batches)
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5, atol=1e-6)
    for tree_big, tree_acc in ((big.params, acc.params), (big.ema_params, acc.ema_params)):
        for a, b in zip(jax.tree.leaves(tree_acc), jax.tree.leaves(tree_big)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # The update moved the weights (the comparison is not of two untouched states).
    assert float(jnp.abs(acc.params["w1"] - _params()["w1"]).max()) > 1e-3
    # One step per update: 3 updates with k = 4 count 3, for the state, the schedule
    # (the optimiser's own counter) and hence the EMA, which equals the big batch's.
    assert int(acc.step) == 3
    counts = [int(x) for x in jax.tree.leaves(acc.opt_state)
              if hasattr(x, "dtype") and x.dtype == jnp.int32 and x.ndim == 0]
    assert counts and set(counts) == {3}


def test_k_micro_batches_differ_from_one_micro_batch():
    """The accumulated step is not just the first micro-batch's step."""
    batches = _batches(2, 16)  # the first update's learning rate is 0 (warmup)
    acc, _ = _run("adamw", 4, batches)
    first = [{k: v[::4] for k, v in b.items()} for b in batches]
    one, _ = _run("adamw", 1, first)
    assert float(jnp.abs(acc.params["w2"] - one.params["w2"]).max()) > 1e-4


def test_micro_batch_j_takes_every_kth_example():
    batch = {"x": jnp.arange(12).reshape(12, 1)}
    split = micro_batches(batch, 3)["x"][:, :, 0]
    np.testing.assert_array_equal(np.asarray(split), [[0, 3, 6, 9], [1, 4, 7, 10],
                                                      [2, 5, 8, 11]])
    with pytest.raises(ValueError, match="does not split into 5 micro-batches"):
        micro_batches(batch, 5)


def test_accumulation_over_a_sharded_batch_equals_one_device():
    """On 8 devices (batch sharded over 'data'), k = 2 equals the unsharded k = 1 step."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batches = _batches(2, 32)
    sharded = [jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec(
        "data"))), b) for b in batches]
    big, _ = _run("adamw", 1, batches)
    acc, _ = _run("adamw", 2, sharded)
    for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(big.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
