"""Sharded and unsharded training give the same numbers, through the trainer's own code.

The state is laid out, initialised and stepped by imagen_jax/train/sharded.py
(`state_layout`, `init_state`, `jit_train_step`): the functions
`imagen_jax.train.trainer` calls. One step of each tiny stage runs on a one-device
mesh (the reference) and on data-parallel, FSDP, tensor-parallel and mixed meshes
of the 8 fake CPU devices. Loss, parameters, EMA and optimiser state must agree to
float32 reduction-order noise, the outputs must really be sharded as specified, and
the old state must have been donated. This file covers Imagen's stages;
tests/unclip/test_sharding.py the unCLIP ones, with the same helpers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import imagen
from imagen_jax.parallel import DEFAULT_RULES, make_mesh
from imagen_jax.stage_registry import Stage, build_stage
from imagen_jax.train.sharded import init_state, jit_train_step, state_layout
from imagen_jax.train.state import TrainState

# Halves XLA's compile time on CPU (most of this file's run time); the SPMD
# partitioning under test is unaffected.
FAST = {"xla_backend_optimization_level": 0}
BATCH = 8
TEXT_LEN = 5
# Summation order differs between layouts (an all-reduce over 8 shards vs one sum):
# the gradient agrees to ~1e-5 relative, and the update lr * g / (|g| + eps) passes
# that on to ~2e-6 absolute (seen on CLIP under fsdp=8). 1e-5 is still 100x below
# the >1e-3 the step must move the parameters (checked below).
RTOL, ATOL = 1e-5, 1e-5
# Adam's first step is lr * g / (|g| + eps): with the default eps=1e-8 an element
# whose gradient is at rounding-noise level flips sign between summation orders,
# which tests Adam, not sharding. eps=1e-3 keeps the update a smooth function of g.
OPTIMIZER = optax.adam(1e-2, eps=1e-3)
EMA_DECAY = 0.9

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
    stage: Stage
    batch: dict
    start: TrainState  # numpy: the step's starting point
    ref_state: TrainState  # numpy: after the one-device step
    ref_loss: float


def _leaf(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def _layout(stage: Stage, mesh) -> Any:
    return state_layout(stage, OPTIMIZER, mesh, DEFAULT_RULES, TEXT_LEN)[1]


def trainer_step(case_stage: Stage, batch: dict, start: TrainState, mesh_shape: dict,
                 devices=None) -> tuple[TrainState, float, Any, TrainState]:
    """The trainer's jitted step on a mesh: (new state, loss, state shardings, old state)."""
    mesh = make_mesh(mesh_shape, devices)
    shardings = _layout(case_stage, mesh)
    step = jit_train_step(case_stage, OPTIMIZER, mesh, DEFAULT_RULES, shardings, batch,
                          ema_decay=EMA_DECAY, compiler_options=FAST)
    state = jax.device_put(start, shardings)
    new_state, metrics = step(state, batch, None)
    assert bool(metrics["finite"])
    return new_state, float(metrics["loss"]), shardings, state


def make_case(stage: Stage, batch: dict) -> Case:
    """The trainer's init and step of `stage` on one device, the reference."""
    one = jax.devices()[:1]
    mesh = make_mesh({"data": 1}, one)
    init = init_state(stage, OPTIMIZER, jax.random.PRNGKey(0), mesh, _layout(stage, mesh), TEXT_LEN)
    init = jax.device_get(init)
    # Each res block's last conv and the output conv start at zero, so at init the
    # gradient reaches only the last layers; a small perturbation makes every
    # parameter's gradient (and so every sharded matmul/conv backward) non-trivial.
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(x.dtype),
                          init.params)
    start = init.replace(params=params, ema_params=params, opt_state=OPTIMIZER.init(params))
    start = jax.device_get(start)
    ref_state, loss, _, _ = trainer_step(stage, batch, start, {"data": 1}, one)
    return Case(stage, batch, start, jax.device_get(ref_state), loss)


def assert_matches_reference(case: Case, new_state: TrainState, loss: float) -> None:
    np.testing.assert_allclose(loss, case.ref_loss, rtol=RTOL)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL),
                 jax.device_get(new_state), case.ref_state)
    assert int(new_state.step) == int(case.start.step) + 1
    # The step did something: parameters moved by ~lr, far beyond the tolerance.
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(case.ref_state.params), jax.tree.leaves(case.start.params)))
    assert moved > 1e-3


def assert_sharded_as_laid_out(new_state: TrainState, shardings: Any, old_state: TrainState
                               ) -> None:
    """Every output leaf has the layout's sharding; the old state's buffers were donated."""
    placed = jax.tree.leaves(jax.tree.map(lambda a, s: a.sharding == s, new_state, shardings))
    assert placed == [True] * len(placed)
    assert all(x.is_deleted() for x in jax.tree.leaves(old_state.params))


def imagen_batch(stage: Stage) -> dict:
    rng = np.random.default_rng(0)
    size = stage.image_size
    return {"images": rng.uniform(-1, 1, (BATCH, size, size, 3)).astype(np.float32),
            "text": rng.standard_normal((BATCH, TEXT_LEN, stage.unet.text_dim)).astype(np.float32),
            "text_mask": np.arange(TEXT_LEN)[None, :] < rng.integers(1, TEXT_LEN + 1, (BATCH, 1))}


@pytest.fixture(scope="module", params=["base64", "sr256"])
def case(request) -> Case:
    stage = build_stage(imagen.get_config(f"tiny,{request.param}"))
    return make_case(stage, imagen_batch(stage))


@pytest.mark.parametrize("mesh_name", MESHES)
def test_trainer_step_matches_single_device(case, mesh_name):
    new_state, loss, shardings, old_state = trainer_step(case.stage, case.batch, case.start,
                                                         MESHES[mesh_name])
    assert_matches_reference(case, new_state, loss)
    assert_sharded_as_laid_out(new_state, shardings, old_state)
    params, mu = new_state.params, new_state.opt_state[0].mu
    if "lowres_size" not in dataclasses.asdict(case.stage):
        for path, spec in EXPECTED_SPECS[mesh_name].items():  # two spelled out
            assert _leaf(params, path).sharding.spec == spec
            assert _leaf(mu, path).sharding.spec == spec
            assert _leaf(new_state.ema_params, path).sharding.spec == spec
    elif mesh_name == "fsdp8":  # SR: [3, 3, 6 (z + low-res), 16] is not divisible by 8
        kernel = params["conv_in"]["conv"]["kernel"]
        assert kernel.shape == (3, 3, 6, 16) and kernel.sharding.spec == P(None, None, None, None)
        assert params["down_0"]["conv"]["kernel"].sharding.spec == P(None, None, "fsdp", None)


def test_trainer_init_sharded_matches_unsharded():
    """init_state on the mixed mesh builds the same state, each device only its shard."""
    stage = build_stage(imagen.get_config("tiny,base64"))
    mesh = make_mesh(MESHES["mixed222"])
    shardings = _layout(stage, mesh)
    state = init_state(stage, OPTIMIZER, jax.random.PRNGKey(0), mesh, shardings, TEXT_LEN)
    one = make_mesh({"data": 1}, jax.devices()[:1])
    reference = init_state(stage, OPTIMIZER, jax.random.PRNGKey(0), one, _layout(stage, one),
                           TEXT_LEN)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(reference))
    for array, sharding in zip(jax.tree.leaves(state), jax.tree.leaves(shardings)):
        assert array.sharding == sharding
    # Each device holds only its shard: [3, 3, 32, 32] split (fsdp=2, tensor=2).
    kernel = _leaf(state.params, CONV)
    assert {s.data.shape for s in kernel.addressable_shards} == {(3, 3, 16, 16)}
