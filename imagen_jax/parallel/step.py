"""Jitting a train step over a mesh with explicit in/out shardings and a donated state.

The step function itself knows nothing about sharding: XLA partitions it from the
shardings of its inputs and outputs, and inserts the collectives (gradient
all-reduce for data parallel, all-gather / reduce-scatter for FSDP, the Megatron
all-reduces for tensor parallel). So the same step runs on one device or a pod.
The trainer's step is built on it in imagen_jax/train/sharded.py.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
from jax.sharding import Mesh

from imagen_jax.parallel.activations import activation_sharding
from imagen_jax.parallel.rules import DEFAULT_RULES, Rules
from imagen_jax.parallel.sharding import replicated


def jit_sharded_step(step_fn: Callable, mesh: Mesh, state_shardings: Any, batch_shardings: Any,
                     *, arg_shardings: Sequence[Any] = (), donate_state: bool = True,
                     rules: Rules = DEFAULT_RULES,
                     compiler_options: dict[str, Any] | None = None) -> Callable:
    """jit of `step_fn(state, batch, *args) -> (state, metrics)` over `mesh`.

    The state keeps its shardings from step to step (in == out), and is donated so
    its buffers are reused for the new state: without donation the old and new
    parameters and optimiser state would both be live at the step boundary.
    `arg_shardings` place the extra `args` (one entry per argument; None replicates
    it, e.g. keys and scalars); the metrics are replicated. `compiler_options` go
    to XLA as they are (e.g. {'xla_backend_optimization_level': 0} to compile fast).
    The step is traced inside `activation_sharding(mesh, rules)`, so the models'
    residual-stream hints (`activations.shard_residual`) take effect.
    """
    rep = replicated(mesh)
    args = tuple(rep if sh is None else sh for sh in arg_shardings)

    def traced_step(*step_args: Any) -> Any:
        with activation_sharding(mesh, rules):
            return step_fn(*step_args)

    return jax.jit(traced_step,
                   in_shardings=(state_shardings, batch_shardings) + args,
                   out_shardings=(state_shardings, rep),
                   donate_argnums=(0,) if donate_state else (),
                   compiler_options=compiler_options)
