"""Activation sharding hints: a model marks its residual stream, the jitted step names the mesh.

Models know no mesh. While a step is traced inside `activation_sharding(mesh, rules)`
(`jit_sharded_step` enters it), `shard_residual(x)` pins x's leading dimension to the
'batch' mesh axes and replicates the rest; outside that context it is the identity,
so a model applied eagerly, or under a plain jit, is unchanged.

Why: XLA propagates shardings from the parameters as well as from the inputs. Under
FSDP a transformer's token-embedding table is split along 'embed', and without a hint
the partitioner carries the activations split along 'embed' through every layer, so
each matmul contracts over a split dimension and ends in an all-reduce of partial
sums. For the frozen T5-XXL at 8 captions per chip on a v4-8 that was 21 GiB
all-reduced per chip per step (docs/tpu_compile.md), four times the weights' own
all-gather. Pinning the residual stream to the batch makes XLA all-gather each
weight instead: FSDP as intended. Only the residual stream between blocks is pinned,
which tensor parallelism also leaves replicated over 'tensor' (Megatron), so the hint
suits every strategy.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import jax
from jax.sharding import Mesh, NamedSharding

from imagen_jax.parallel.rules import DEFAULT_RULES, Rules
from imagen_jax.parallel.sharding import logical_to_spec

_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "imagen_jax_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
    """Within this block, `shard_residual` constrains activations to `mesh`'s batch axes."""
    token = _ACTIVE.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def shard_residual(x: jax.Array) -> jax.Array:
    """x [B, ...] with B split over the 'batch' mesh axes and every other dimension
    replicated, inside `activation_sharding`; x itself outside it. A batch that the
    mesh axes do not divide is left to XLA (no constraint)."""
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec = logical_to_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, mesh, rules)
    if spec[0] is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
