"""Shardings from logical names: parameters, batches, train state, sharded init.

Everything here works from shapes (`jax.eval_shape`), so no full copy of the
weights is ever built on one host: `sharded_init` compiles an initialiser with the
shardings as `out_shardings`, and each device materialises only its own shard
(imagen_jax/train/sharded.py lays out and initialises a whole train state this way).

Two refinements over plain `nn.logical_to_mesh_axes`, both needed for one rules
table to fit every model and mesh:
  - a dimension its mesh axes do not divide evenly (3 RGB channels over fsdp=8,
    2 heads over tensor=8) is replicated instead: jit refuses uneven shardings of
    its arguments. For a multi-axis rule the longest dividing prefix is kept.
  - mesh axes of size 1 are dropped, so specs say what is really split (a pure
    data-parallel mesh gives fully replicated parameters, P(None, ...)).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from imagen_jax.parallel.rules import DEFAULT_RULES, MeshAxes, Rules


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)


def _as_tuple(axes: MeshAxes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def _spec_entry(axes: Sequence[str]) -> MeshAxes:
    if not axes:
        return None
    return axes[0] if len(axes) == 1 else tuple(axes)


def _axis_size(mesh: Mesh, axis: str) -> int:
    if axis not in mesh.shape:
        raise ValueError(f"logical axis rules name mesh axis {axis!r}, which the mesh "
                         f"{dict(mesh.shape)} does not have")
    return mesh.shape[axis]


def _dividing_mesh_axes(axes: MeshAxes, dim: int | None, mesh: Mesh,
                        used: set[str]) -> tuple[str, ...]:
    """The mesh axes of one dimension that really shard it.

    Drops size-1 axes and axes another dimension already uses, then keeps the
    longest prefix whose total size divides `dim` (None: no divisibility check).
    """
    kept, size = [], 1
    for axis in _as_tuple(axes):
        n = _axis_size(mesh, axis)
        if n == 1 or axis in used:
            continue
        if dim is not None and dim % (size * n):
            break
        kept.append(axis)
        size *= n
    return tuple(kept)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Rules = DEFAULT_RULES) -> PartitionSpec:
    """The PartitionSpec of an array of `shape` with logical axis `names`.

    Flax's priority rules pick the mesh axes per name (and never give one mesh axis
    to two dimensions); `_dividing_mesh_axes` then removes what cannot shard this
    shape evenly.
    """
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match shape {tuple(shape)}")
    flax_spec = nn.logical_to_mesh_axes(tuple(names), rules)
    used: set[str] = set()
    entries = []
    for dim, axes in zip(shape, flax_spec):
        kept = _dividing_mesh_axes(axes, dim, mesh, used)
        used.update(kept)
        entries.append(_spec_entry(kept))
    return PartitionSpec(*entries)


def _is_logical(x: Any) -> bool:
    return isinstance(x, nn.LogicallyPartitioned)


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def param_shardings(abstract_variables: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """NamedShardings for the *unboxed* tree of boxed `abstract_variables`.

    `abstract_variables` is `jax.eval_shape(module.init, ...)` (or real boxed
    variables); the result has the structure of `nn.unbox(abstract_variables)`.
    Leaves without logical names (plain arrays, other metadata boxes) are replicated.
    """
    def leaf_sharding(leaf: Any) -> NamedSharding:
        if _is_logical(leaf):
            return NamedSharding(mesh, logical_to_spec(leaf.names, _shape(leaf.value), mesh,
                                                       rules))
        return replicated(mesh)

    return jax.tree.map(leaf_sharding, abstract_variables, is_leaf=_is_box)


def _batch_axes(mesh: Mesh, rules: Rules) -> tuple[str, ...]:
    return _dividing_mesh_axes(nn.logical_to_mesh_axes(("batch",), rules)[0], None, mesh, set())


def batch_sharding(mesh: Mesh, ndim: int | None = None,
                   rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Leading (batch) dimension over the 'batch' rule's mesh axes, the rest replicated.

    With `ndim` the spec names every dimension; without, it covers only the first
    (a shorter spec replicates the remaining dimensions, so it fits any rank >= 1).
    """
    if ndim is not None and ndim < 1:
        raise ValueError(f"batch_sharding: ndim={ndim} has no batch dimension")
    entry = _spec_entry(_batch_axes(mesh, rules))
    return NamedSharding(mesh, PartitionSpec(entry, *(None,) * ((ndim or 1) - 1)))


def shard_batch_tree(batch: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
    """Batch shardings for every array of `batch` (a dict of [B, ...] arrays or shapes).

    A batch size the batch axes do not divide is an error, not a silent fallback
    to replication: it would make every device process the whole global batch.
    """
    axes = _batch_axes(mesh, rules)
    ways = int(np.prod([mesh.shape[a] for a in axes]))

    def leaf_sharding(path: Any, leaf: Any) -> NamedSharding:
        shape = _shape(leaf)
        where = f"batch{jax.tree_util.keystr(path)}"
        if not shape:
            raise ValueError(f"{where} is a scalar; batch arrays need a leading batch dimension")
        if shape[0] % ways:
            raise ValueError(f"{where} has batch size {shape[0]}, not divisible by the {ways} "
                             f"shards of mesh axes {axes}")
        return batch_sharding(mesh, len(shape), rules)

    return jax.tree_util.tree_map_with_path(leaf_sharding, batch)


def params_like_predicate(abstract_params: Any) -> Callable[[Any], bool]:
    """True for a subtree with the tree structure and leaf shapes of `abstract_params`
    (the params, an EMA copy, Adam's mu or nu)."""
    leaves, treedef = jax.tree.flatten(abstract_params)
    shapes = [_shape(x) for x in leaves]

    def params_like(node: Any) -> bool:
        node_leaves, node_def = jax.tree.flatten(node)
        return node_def == treedef and [_shape(x) for x in node_leaves] == shapes

    return params_like


def state_shardings(state: Any, abstract_params: Any, params_shardings: Any,
                    mesh: Mesh) -> Any:
    """Shardings for a train state: every params-shaped subtree like the params.

    Finds each subtree of `state` with the tree structure and leaf shapes of
    `abstract_params` (the params themselves, an EMA copy, Adam's mu and nu) and
    gives it `params_shardings`; everything else (step counters, keys, Adafactor's
    factored row/column statistics) is replicated. Works on abstract or real state,
    so the train step's in/out shardings come from `jax.eval_shape`.
    """
    params_like = params_like_predicate(abstract_params)
    return jax.tree.map(lambda node: params_shardings if params_like(node) else replicated(mesh),
                        state, is_leaf=params_like)


def unbox_logical(tree: Any) -> Any:
    """`tree` without its metadata boxes: plain arrays (or ShapeDtypeStructs of an
    abstract tree). Logically partitioned leaves are unboxed without the sharding
    constraint flax would add inside a `logical_axis_rules` context: out_shardings
    place every leaf, with the uneven-dimension fallback that flax's constraint lacks."""
    return nn.unbox(jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if _is_logical(x) else x, tree,
        is_leaf=_is_logical))


def sharded_init(init_fn: Callable[[jax.Array], Any], key: jax.Array, mesh: Mesh,
                 shardings: Any) -> Any:
    """`init_fn(key)` compiled with `shardings` as its out_shardings, so that each device
    materialises only its own shard (with jax's partitionable threefry PRNG each device
    also draws only its shard's random numbers)."""
    return jax.jit(init_fn, out_shardings=shardings)(jax.device_put(key, replicated(mesh)))


def constrain_batch(x: jax.Array, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> jax.Array:
    """Inside jit: pins an activation's leading dimension to the 'batch' axes."""
    return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1), rules=rules,
                                      mesh=mesh)
