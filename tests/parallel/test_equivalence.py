"""Sharded and unsharded training give the same numbers.

One Adam step of the tiny stages, run on one device and on data-parallel, FSDP,
tensor-parallel and mixed meshes of the 8 fake CPU devices, with parameters and
optimiser state placed by `param_shardings` / `state_shardings`, the batch by
`shard_batch_tree`, and the step jitted with explicit in/out shardings and the
state donated (`jit_sharded_step`). Loss, updated parameters and optimiser state
must agree to float32 reduction-order noise, and the outputs must really be
sharded as specified.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import imagen
from imagen_jax.parallel import (jit_sharded_step, make_mesh, optimizer_step, param_shardings,
                                 shard_batch_tree, sharded_init, state_shardings)
from imagen_jax.stages import BaseStage, stage_from_config

# Halves XLA's compile time on CPU (most of this file's run time); the SPMD
# partitioning under test is unaffected.
FAST = {"xla_backend_optimization_level": 0}
STEP_KEY = jax.random.key(7)
BATCH = 8
RTOL, ATOL = 1e-5, 1e-6

MESHES = {
    "data8": {"data": 8},
    "fsdp8": {"fsdp": 8},
    "tensor8": {"tensor": 8},
    "mixed222": {"data": 2, "fsdp": 2, "tensor": 2},
}
CONV = ("down_1_res_0", "conv_0", "conv", "kernel")  # [3, 3, 32, 32]
QUERY = ("down_1_attn", "query", "dense", "kernel")  # [32, 2 heads, 16]
EXPECTED_SPECS = {
    "data8": {CONV: P(None, None, None, None), QUERY: P(None, None, None)},
    "fsdp8": {CONV: P(None, None, "fsdp", None), QUERY: P("fsdp", None, None)},
    "tensor8": {CONV: P(None, None, None, "tensor"), QUERY: P(None, None, None)},
    "mixed222": {CONV: P(None, None, "fsdp", "tensor"), QUERY: P("fsdp", "tensor", None)},
}


@dataclasses.dataclass
class Case:
    stage: BaseStage
    abstract: Any  # boxed eval_shape of stage.init
    init_params: Any  # numpy, straight from stage.init
    params: Any  # numpy, the step's starting point
    batch: dict
    tx: optax.GradientTransformation
    step: Callable
    ref_state: Any  # numpy (params, opt_state) after the single-device step
    ref_loss: float


def _leaf(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def make_case(stage: Any, batch: dict, text_len: int = 8) -> Case:
    """The single-device reference step of `stage` on `batch` (numpy)."""
    key = jax.random.key(0)
    abstract = jax.eval_shape(lambda k: stage.init(k, text_len), key)
    init_params = jax.device_get(jax.jit(lambda k: nn.unbox(stage.init(k, text_len))["params"])(
        key))
    # Each res block's last conv and the output conv start at zero, so at init the
    # gradient reaches only the last layers; a small perturbation makes every
    # parameter's gradient (and so every sharded matmul/conv backward) non-trivial.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype),
                          init_params)
    # Adam's first step is lr * g / (|g| + eps): with the default eps=1e-8 an element
    # whose gradient is at rounding-noise level flips sign between summation orders,
    # which tests Adam, not sharding. eps=1e-3 keeps the update a smooth function of g.
    tx = optax.adam(1e-2, eps=1e-3)
    step = optimizer_step(stage.loss, tx)
    ref_state, metrics = jax.jit(step, compiler_options=FAST)(
        (params, tx.init(params)), batch, STEP_KEY)
    return Case(stage, abstract, init_params, params, batch, tx, step,
                jax.device_get(ref_state), float(metrics["loss"]))


def _make_case(config_arg: str) -> Case:
    stage = stage_from_config(imagen.get_config(config_arg))
    rng = np.random.default_rng(0)
    size = stage.image_size
    batch = {"images": rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32),
             "text": rng.standard_normal((BATCH, 5, stage.unet.text_dim)).astype(np.float32),
             "text_mask": np.arange(5)[None, :] < rng.integers(1, 6, (BATCH, 1))}
    return make_case(stage, batch)


@pytest.fixture(scope="module")
def base_case() -> Case:
    return _make_case("tiny,base64")


@pytest.fixture(scope="module")
def sr_case() -> Case:
    return _make_case("tiny,sr256")


def _sharded_step(case: Case, mesh_shape: dict):
    """The step on `mesh_shape`: returns (new state, loss, param shardings, old state)."""
    mesh = make_mesh(mesh_shape)
    p_sh = param_shardings(case.abstract, mesh)["params"]
    abstract_state = jax.eval_shape(lambda p: (p, case.tx.init(p)), case.params)
    s_sh = state_shardings(abstract_state, case.params, p_sh, mesh)
    b_sh = shard_batch_tree(case.batch, mesh)
    state = jax.device_put((case.params, case.tx.init(case.params)), s_sh)
    batch = jax.device_put(case.batch, b_sh)
    step = jit_sharded_step(case.step, mesh, s_sh, b_sh, num_replicated_args=1,
                            compiler_options=FAST)
    new_state, metrics = step(state, batch, STEP_KEY)
    return new_state, float(metrics["loss"]), p_sh, state


def _assert_matches_reference(case: Case, new_state, loss: float) -> None:
    np.testing.assert_allclose(loss, case.ref_loss, rtol=RTOL)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL),
                 jax.device_get(new_state), case.ref_state)
    # The step did something: parameters moved by ~lr, far beyond the tolerance.
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(case.ref_state[0]), jax.tree.leaves(case.params)))
    assert moved > 1e-3


@pytest.mark.parametrize("mesh_name", MESHES)
def test_base_step_matches_single_device(base_case, mesh_name):
    new_state, loss, p_sh, old_state = _sharded_step(base_case, MESHES[mesh_name])
    _assert_matches_reference(base_case, new_state, loss)
    new_params, opt_state = new_state
    # Outputs are sharded as specified: every leaf, and two spelled out.
    assert jax.tree.leaves(jax.tree.map(lambda a, s: a.sharding == s, new_params, p_sh)) \
        == [True] * len(jax.tree.leaves(p_sh))
    for path, spec in EXPECTED_SPECS[mesh_name].items():
        assert _leaf(new_params, path).sharding.spec == spec
        assert _leaf(opt_state[0].mu, path).sharding.spec == spec
    # The state was donated: its buffers now belong to the new state.
    assert all(x.is_deleted() for x in jax.tree.leaves(old_state[0]))


def test_sr_step_matches_single_device_fsdp(sr_case):
    new_state, loss, p_sh, _ = _sharded_step(sr_case, MESHES["fsdp8"])
    _assert_matches_reference(sr_case, new_state, loss)
    kernel = new_state[0]["conv_in"]["conv"]["kernel"]  # [3, 3, 6 (z + low-res), 16]
    assert kernel.shape == (3, 3, 6, 16) and kernel.sharding.spec == P(None, None, None, None)
    assert new_state[0]["down_0"]["conv"]["kernel"].sharding.spec == P(None, None, "fsdp", None)


def test_sharded_init_matches_unsharded(base_case):
    mesh = make_mesh(MESHES["mixed222"])
    variables, shardings = sharded_init(base_case.stage.init, jax.random.key(0), mesh)
    params = variables["params"]
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), base_case.init_params)
    assert jax.tree.structure(shardings) == jax.tree.structure(variables)
    for array, sharding in zip(jax.tree.leaves(variables), jax.tree.leaves(shardings)):
        assert array.sharding == sharding
    # Each device holds only its shard: [3, 3, 32, 32] split (fsdp=2, tensor=2).
    kernel = _leaf(params, CONV)
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 16, 16)}
