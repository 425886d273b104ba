"""The device mesh: one config entry {'data': D, 'fsdp': F, 'tensor': T} -> a jax Mesh.

The three axes are always present, in this order, so that one table of logical-axis
rules (`rules.py`) works for every mesh; an axis of size 1 simply shards nothing.
Data-parallel, FSDP and tensor-parallel training differ only in these sizes.

The axes are created with `AxisType.Auto`, not jax's default `Explicit`: Flax linen's
logical partitioning (`nn.LogicallyPartitioned`, `nn.with_logical_constraint`) and
jit with explicit in/out shardings leave the propagation of intermediate shardings
to XLA, which is what Auto axes mean. Explicit axes would instead make sharding part
of every array's type and require the model code to resolve every ambiguity itself.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")


def mesh_shape(shape: Mapping[str, int] | Any, num_devices: int) -> dict[str, int]:
    """Resolves a config's mesh shape to sizes for all of MESH_AXES.

    Missing axes are 1; one axis may be -1, meaning "all remaining devices". The
    product must equal `num_devices`: a mesh over a subset of the devices is
    almost always a config mistake, so it is refused rather than silently used.
    """
    if not hasattr(shape, "items"):
        raise ValueError(f"mesh shape {shape!r} must be a mapping of axis name -> size")
    items = dict(shape.items())  # a dict or an ml_collections.ConfigDict
    unknown = sorted(set(items) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh shape: unknown axes {unknown}; the axes are {MESH_AXES}")
    sizes = {axis: items.get(axis, 1) for axis in MESH_AXES}
    for axis, size in sizes.items():  # numbers.Integral: numpy ints from a config are fine
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or (
                size < 1 and size != -1):
            raise ValueError(f"mesh shape: {axis}={size!r} must be a positive int or -1")
    sizes = {axis: int(size) for axis, size in sizes.items()}
    fill = [axis for axis, size in sizes.items() if size == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh shape {sizes}: only one axis may be -1, got {fill}")
    if fill:
        known = math.prod(size for size in sizes.values() if size != -1)
        if num_devices % known:
            raise ValueError(f"mesh shape {sizes}: cannot fill {fill[0]!r} with {num_devices} "
                             f"devices, the other axes take {known}")
        sizes[fill[0]] = num_devices // known
    need = math.prod(sizes.values())
    if need != num_devices:
        raise ValueError(f"mesh shape {sizes} needs {need} devices, have {num_devices}")
    return sizes


def make_mesh(shape: Mapping[str, int] | Any,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh with Auto axis types over `devices` (default all).

    `jax.make_mesh` orders the devices for the physical topology (e.g. TPU rings),
    so neighbouring indices of the innermost axis ('tensor', the most
    communication-heavy) are neighbouring chips.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(shape, len(devices))
    return jax.make_mesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                         axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
