"""Jitting a train step over a mesh with explicit in/out shardings and a donated state.

The step function itself knows nothing about sharding: XLA partitions it from the
shardings of its inputs and outputs, and inserts the collectives (gradient
all-reduce for data parallel, all-gather / reduce-scatter for FSDP, the Megatron
all-reduces for tensor parallel). So the same step runs on one device or a pod.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from jax.sharding import Mesh

from imagen_jax.parallel.sharding import replicated

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict]]


def optimizer_step(loss_fn: LossFn, tx: optax.GradientTransformation) -> Callable:
    """The plainest train step: `step((params, opt_state), batch, key) -> (state, metrics)`.

    `loss_fn(params, batch, key) -> (loss, metrics)`, e.g. `stage.loss`. The full
    trainer (`imagen_jax/train/state.py`) adds EMA and non-finite skipping; this
    one is what the sharding-equivalence tests and small scripts use.
    """
    def step(state: tuple[Any, Any], batch: Any, key: jax.Array) -> tuple[tuple[Any, Any], dict]:
        params, opt_state = state
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), dict(metrics, loss=loss)

    return step


def jit_sharded_step(step_fn: Callable, mesh: Mesh, state_shardings: Any, batch_shardings: Any,
                     *, num_replicated_args: int = 0, donate_state: bool = True,
                     compiler_options: dict[str, Any] | None = None) -> Callable:
    """jit of `step_fn(state, batch, *args) -> (state, metrics)` over `mesh`.

    The state keeps its shardings from step to step (in == out), and is donated so
    its buffers are reused for the new state: without donation the old and new
    parameters and optimiser state would both be live at the step boundary.
    `args` (keys, scalars) and the metrics are replicated. `compiler_options` go
    to XLA as they are (e.g. {'xla_backend_optimization_level': 0} to compile fast).
    """
    if num_replicated_args < 0:
        raise ValueError(f"num_replicated_args={num_replicated_args} must be >= 0")
    rep = replicated(mesh)
    return jax.jit(step_fn,
                   in_shardings=(state_shardings, batch_shardings) + (rep,) * num_replicated_args,
                   out_shardings=(state_shardings, rep),
                   donate_argnums=(0,) if donate_state else (),
                   compiler_options=compiler_options)
