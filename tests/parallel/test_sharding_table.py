"""Golden sharding table (maxtext-style): exact PartitionSpecs of the tiny base U-Net.

Derived from shapes only (`jax.eval_shape`), so these tests compile nothing.
"""

import math

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import imagen
from imagen_jax.nn.partitioning import unannotated_leaves
from imagen_jax.parallel import (DEFAULT_RULES, batch_sharding, constrain_batch,
                                 logical_to_spec, make_mesh, param_shardings, replicated,
                                 shard_batch_tree, state_shardings)
from imagen_jax.stage_registry import build_stage

MESHES = {
    "data8": {"data": 8},
    "fsdp8": {"fsdp": 8},
    "tensor8": {"tensor": 8},
    "mixed222": {"data": 2, "fsdp": 2, "tensor": 2},
}

N = None
# path -> (shape, {mesh: spec}). Shapes are asserted too, so a change in the tiny
# config shows up here rather than as a puzzling spec.
GOLDEN = {
    # 3x3 conv, 32 -> 32 channels: conv_in on fsdp, conv_out on tensor.
    "down_1_res_0/conv_0/conv/kernel": ((3, 3, 32, 32), {
        "data8": P(N, N, N, N), "fsdp8": P(N, N, "fsdp", N), "tensor8": P(N, N, N, "tensor"),
        "mixed222": P(N, N, "fsdp", "tensor")}),
    # The first conv reads 3 RGB channels: 3 % 8 and 3 % 2 != 0, so that dimension
    # falls back to replicated.
    "conv_in/conv/kernel": ((3, 3, 3, 16), {
        "data8": P(N, N, N, N), "fsdp8": P(N, N, N, N), "tensor8": P(N, N, N, "tensor"),
        "mixed222": P(N, N, N, "tensor")}),
    # ... and the last one writes 3 channels.
    "conv_out/conv/kernel": ((3, 3, 16, 3), {
        "data8": P(N, N, N, N), "fsdp8": P(N, N, "fsdp", N), "tensor8": P(N, N, N, N),
        "mixed222": P(N, N, "fsdp", N)}),
    "conv_out/conv/bias": ((3,), {
        "data8": P(N), "fsdp8": P(N), "tensor8": P(N), "mixed222": P(N)}),
    # Attention query [embed, heads, kv]: 2 heads do not split 8 ways, but do 2 ways.
    "down_1_attn/query/dense/kernel": ((32, 2, 16), {
        "data8": P(N, N, N), "fsdp8": P("fsdp", N, N), "tensor8": P(N, N, N),
        "mixed222": P("fsdp", "tensor", N)}),
    # Attention output [heads, kv, embed]: Megatron's row split.
    "down_1_attn/out/dense/kernel": ((2, 16, 32), {
        "data8": P(N, N, N), "fsdp8": P(N, N, "fsdp"), "tensor8": P(N, N, N),
        "mixed222": P("tensor", N, "fsdp")}),
    "down_1_attn/text_key/dense/kernel": ((32, 2, 16), {
        "data8": P(N, N, N), "fsdp8": P("fsdp", N, N), "tensor8": P(N, N, N),
        "mixed222": P("fsdp", "tensor", N)}),
    "noise_embedding/dense_0/dense/kernel": ((256, 32), {
        "data8": P(N, N), "fsdp8": P("fsdp", N), "tensor8": P(N, "tensor"),
        "mixed222": P("fsdp", "tensor")}),
    "noise_embedding/dense_1/dense/kernel": ((32, 32), {
        "data8": P(N, N), "fsdp8": P(N, "fsdp"), "tensor8": P("tensor", N),
        "mixed222": P("tensor", "fsdp")}),
    "down_1_res_0/norm_0/scale": ((32,), {
        "data8": P(N), "fsdp8": P(N), "tensor8": P(N), "mixed222": P(N)}),
    "null_text": ((1, 32), {
        "data8": P(N, N), "fsdp8": P(N, "fsdp"), "tensor8": P(N, N), "mixed222": P(N, "fsdp")}),
    # One head: never split.
    "text_pool/query": ((1, 32), {
        "data8": P(N, N), "fsdp8": P(N, N), "tensor8": P(N, N), "mixed222": P(N, N)}),
}


@pytest.fixture(scope="module")
def base_abstract():
    stage = build_stage(imagen.get_config("tiny,base64"))
    return jax.eval_shape(stage.init, jax.random.key(0))


@pytest.fixture(scope="module")
def sr_abstract():
    stage = build_stage(imagen.get_config("tiny,sr256"))
    return jax.eval_shape(stage.init, jax.random.key(0))


def _leaf(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("mesh_name", MESHES)
def test_golden_param_specs(base_abstract, mesh_name):
    mesh = make_mesh(MESHES[mesh_name])
    shardings = param_shardings(base_abstract, mesh)["params"]
    for path, (shape, specs) in GOLDEN.items():
        assert _leaf(base_abstract["params"], path).value.shape == shape, path
        got = _leaf(shardings, path)
        assert got.mesh == mesh
        assert got.spec == specs[mesh_name], (path, got.spec, specs[mesh_name])


def _mesh_axes(entry):
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


@pytest.mark.parametrize("mesh_name", MESHES)
def test_every_spec_is_even_and_uses_each_axis_once(base_abstract, sr_abstract, mesh_name):
    mesh = make_mesh(MESHES[mesh_name])
    for abstract in (base_abstract, sr_abstract):
        shapes = nn.unbox(abstract)
        shardings = param_shardings(abstract, mesh)
        assert jax.tree.structure(shardings) == jax.tree.structure(shapes)
        for leaf, sharding in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)):
            axes = [_mesh_axes(e) for e in sharding.spec]
            flat = [a for dim_axes in axes for a in dim_axes]
            assert len(flat) == len(set(flat)), sharding.spec
            assert len(sharding.spec) == len(leaf.shape)
            for dim, dim_axes in zip(leaf.shape, axes):
                assert dim % math.prod(mesh.shape[a] for a in dim_axes) == 0
            if mesh_name == "data8":  # pure data parallel: parameters replicated
                assert sharding.is_fully_replicated


def test_fsdp_shards_nearly_all_parameter_bytes(base_abstract):
    """Under fsdp=8 only the few uneven/1-D leaves stay whole: per-device bytes ~1/8."""
    mesh = make_mesh({"fsdp": 8})
    shapes = jax.tree.leaves(nn.unbox(base_abstract))
    shardings = jax.tree.leaves(param_shardings(base_abstract, mesh))
    total = sum(math.prod(s.shape) for s in shapes)
    per_device = sum(math.prod(sh.shard_shape(s.shape)) for s, sh in zip(shapes, shardings))
    assert per_device < 0.2 * total


def test_every_model_name_has_a_rule(base_abstract, sr_abstract):
    ruled = {name for name, _ in DEFAULT_RULES}
    for abstract in (base_abstract, sr_abstract):
        assert unannotated_leaves(abstract) == []
        boxes = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        used = {n for box in boxes for n in box.names if n is not None}
        assert used <= ruled, used - ruled


def test_logical_to_spec_edge_cases():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    # Two names on the same mesh axis: the first dimension takes it, never both.
    assert logical_to_spec(("embed", "text_embed"), (8, 8), mesh) == P("fsdp", None)
    # Flax assigns the axis before the divisibility fallback drops it, so the second
    # dimension stays replicated (conservative, and never uneven).
    assert logical_to_spec(("embed", "text_embed"), (3, 8), mesh) == P(None, None)
    # A multi-axis rule keeps its longest dividing prefix.
    assert logical_to_spec(("batch", None), (2, 5), mesh) == P("fsdp", None)
    assert logical_to_spec(("batch", None), (4, 5), mesh) == P(("fsdp", "data"), None)
    # Unknown logical names are replicated.
    assert logical_to_spec(("height", "width"), (8, 8), mesh) == P(None, None)
    with pytest.raises(ValueError, match="do not match shape"):
        logical_to_spec(("embed",), (8, 8), mesh)
    other = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    with pytest.raises(ValueError, match="mesh axis 'fsdp'"):
        logical_to_spec(("embed",), (8,), other)


@pytest.mark.parametrize("mesh_name, spec", [
    ("data8", P("data", None, None, None)), ("fsdp8", P("fsdp", None, None, None)),
    ("tensor8", P(None, None, None, None)), ("mixed222", P(("fsdp", "data"), None, None, None)),
])
def test_batch_sharding(mesh_name, spec):
    mesh = make_mesh(MESHES[mesh_name])
    assert batch_sharding(mesh, 4).spec == spec
    assert batch_sharding(mesh).spec == P(spec[0])
    batch = {"images": jax.ShapeDtypeStruct((8, 16, 16, 3), np.float32),
             "text": jax.ShapeDtypeStruct((8, 5, 32), np.float32),
             "text_mask": jax.ShapeDtypeStruct((8, 5), bool)}
    shardings = shard_batch_tree(batch, mesh)
    assert shardings["images"].spec == spec
    assert shardings["text_mask"].spec == P(spec[0], None)


def test_batch_errors():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with pytest.raises(ValueError, match=r"batch\['images'\] has batch size 6, not divisible "
                                         r"by the 4 shards"):
        shard_batch_tree({"images": np.zeros((6, 4, 4, 3))}, mesh)
    with pytest.raises(ValueError, match=r"batch\['step'\] is a scalar"):
        shard_batch_tree({"step": np.zeros(())}, mesh)
    with pytest.raises(ValueError, match="ndim=0"):
        batch_sharding(mesh, 0)


def _state(base_abstract, tx):
    params = nn.unbox(base_abstract)["params"]
    state = jax.eval_shape(lambda p: {"params": p, "ema": p, "opt": tx.init(p),
                                      "step": np.int32(0)}, params)
    return params, state


def test_state_shardings_follow_params(base_abstract):
    mesh = make_mesh({"fsdp": 4, "tensor": 2})
    p_sh = param_shardings(base_abstract, mesh)["params"]
    params, state = _state(base_abstract, optax.adam(1e-3))
    sh = state_shardings(state, params, p_sh, mesh)
    assert jax.tree.structure(sh) == jax.tree.structure(state)
    assert sh["params"] == p_sh and sh["ema"] == p_sh
    adam = sh["opt"][0]
    assert adam.mu == p_sh and adam.nu == p_sh
    assert adam.count == sh["step"] == replicated(mesh)


def test_state_shardings_adafactor(base_abstract):
    """Adafactor: an unfactored second moment is params-shaped and follows the params;
    factored row/column statistics are not, and are replicated (they are small)."""
    mesh = make_mesh({"fsdp": 8})
    p_sh = param_shardings(base_abstract, mesh)["params"]
    params, state = _state(base_abstract, optax.adafactor(1e-3))  # tiny: nothing factored
    factored = optax.adafactor(1e-3, min_dim_size_to_factor=16)
    _, factored_state = _state(base_abstract, factored)
    plain = state_shardings(state, params, p_sh, mesh)["opt"][0]
    assert plain.v == p_sh
    assert all(s == replicated(mesh) for s in jax.tree.leaves((plain.v_row, plain.v_col)))
    sh = state_shardings(factored_state, params, p_sh, mesh)
    assert all(s == replicated(mesh) for s in jax.tree.leaves(sh["opt"]))


def test_constrain_batch():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    x = np.zeros((8, 4), np.float32)
    y = jax.jit(lambda x: constrain_batch(x * 2, mesh))(x)
    assert y.sharding.shard_shape(x.shape) == (2, 4)
