"""The logical-axis rules: logical parameter/activation names -> mesh axes.

Every parameter carries logical names (`imagen_jax/nn/partitioning.py`); this one
table maps them onto the mesh axes ('data', 'fsdp', 'tensor'). Because an axis of
size 1 shards nothing, the same table gives every parallelism strategy, and
switching strategy is only a change of `mesh` shape in the config:

  mesh {'data': N}      pure data parallel. Only 'batch' lands on a real axis, so
                        parameters and optimiser state are replicated; gradients
                        are all-reduced over 'data'.
  mesh {'fsdp': N}      ZeRO-3 / fully sharded data parallel. The batch is split
                        over 'fsdp' too, and every parameter along its input-width
                        dimension ('embed', 'text_embed', 'conv_in'); XLA
                        all-gathers a weight just before it is used and
                        reduce-scatters its gradient, so each device stores 1/N of
                        the parameters and optimiser state.
  mesh {'tensor': N}    Megatron-style tensor parallel. Output widths ('mlp',
                        'heads', 'conv_out', 'vocab') are split over 'tensor'; the
                        batch is replicated over it.
  mesh {'data': 2, 'fsdp': 2, 'tensor': 2}   all three at once.

A dimension that its mesh axes do not divide evenly (e.g. 3 RGB input channels over
fsdp=8) is replicated instead (`sharding.py`), so one table fits every model size.

Rules are in priority order (flax semantics): for each dimension the first rule
whose mesh axes are still free in that array wins; a name without a rule is
replicated. A config may replace the table with a list of [name, axes] pairs
(`rules_from_config`), e.g. to also shard 'norm' over 'fsdp', or to move 'heads'
off 'tensor':

    config.mesh = {'data': 1, 'fsdp': -1, 'tensor': 1}   # FSDP over every device
    config.logical_rules = [['batch', ['fsdp', 'data']], ['embed', 'fsdp'], ...]
"""

from __future__ import annotations

from typing import Any, Sequence

from imagen_jax.parallel.mesh import MESH_AXES

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

DEFAULT_RULES: Rules = (
    # Activations: the batch is split over every data-like axis. The order
    # ('fsdp', 'data') rather than ('data', 'fsdp') is deliberate: with all three
    # axes > 1, XLA's SPMD partitioning (jax 0.10.2, Shardy; seen on the CPU
    # backend, TPU not checked) miscompiles the gradient through a stride-2 conv
    # followed by two convs whose kernels are split (fsdp, tensor) when the batch
    # is split ('data', 'fsdp'): gradients off by up to ~100% (a relative of
    # jax-ml/jax#16894). This order gives results equal to one device's; the
    # (2, 2, 2) case of tests/parallel/test_equivalence.py guards it.
    ("batch", ("fsdp", "data")),
    # FSDP: the input-width dimension of each weight.
    ("embed", "fsdp"),
    ("text_embed", "fsdp"),
    ("conv_in", "fsdp"),
    # Tensor parallel. 'mlp' and 'heads' name the hidden width of a block, so the
    # first weight (embed -> mlp, embed -> heads) is column-split and the second
    # (mlp -> embed, heads -> embed) row-split: Megatron's one all-reduce per
    # block. A conv has no such pairing, so its output channels are split and XLA
    # all-gathers them before the next conv.
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_out", "tensor"),
    ("vocab", "tensor"),
    # Replicated: small, or a window / per-head width that is not worth splitting.
    ("kv", None),
    ("relpos_buckets", None),
    ("conv_h", None),
    ("conv_w", None),
    ("norm", None),
)


def _mesh_axes(name: str, axes: Any) -> MeshAxes:
    """Validates one rule's mesh axes: None, an axis name, or a sequence of them."""
    if axes is None:
        return None
    as_tuple = (axes,) if isinstance(axes, str) else tuple(axes)
    for axis in as_tuple:
        if axis not in MESH_AXES:
            raise ValueError(f"logical axis rule {name!r}: unknown mesh axis {axis!r}; "
                             f"the mesh axes are {MESH_AXES}")
    if len(set(as_tuple)) != len(as_tuple):
        raise ValueError(f"logical axis rule {name!r}: mesh axes {as_tuple} repeat an axis")
    if not as_tuple:
        return None
    return as_tuple[0] if len(as_tuple) == 1 else as_tuple


def rules_from_config(value: Sequence[Sequence[Any]] | None) -> Rules:
    """Rules from a config entry: a list of [logical_name, mesh_axes] pairs.

    mesh_axes is None, an axis name or a list of axis names. An empty or None entry
    means DEFAULT_RULES, so configs only spell out the table when they change it.
    """
    if not value:
        return DEFAULT_RULES
    rules = []
    for i, entry in enumerate(value):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"logical axis rule #{i}: {entry!r} is not a [name, axes] pair")
        name, axes = entry
        if not isinstance(name, str) or not name:
            raise ValueError(f"logical axis rule #{i}: name {name!r} is not a non-empty str")
        rules.append((name, _mesh_axes(name, axes)))
    return tuple(rules)
