"""The train state over a device mesh: its layout, its sharded init and the jitted step.

These are the functions the trainer runs and the ones the sharded == unsharded tests
check (tests/parallel/test_equivalence.py), so what is proven is what trains:

    abstract_state, shardings = state_layout(stage, optimizer, mesh, rules, text_len)
    state = init_state(stage, optimizer, key, mesh, shardings, text_len)
    frozen, frozen_sh = place_frozen(conditioner, mesh, rules)   # T5 / CLIP weights
    step = jit_train_step(stage, optimizer, mesh, rules, shardings, example_batch,
                          conditioner=conditioner, frozen_shardings=frozen_sh, ...)
    state, metrics = step(state, batch, frozen)

Everything is derived from shapes (`jax.eval_shape`): no full copy of the weights is
built on one host; each device initialises only its own shard.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.sharding import Mesh

from imagen_jax.parallel.rules import Rules
from imagen_jax.parallel.sharding import (param_shardings, shard_batch_tree, sharded_init,
                                          state_shardings, unbox_logical)
from imagen_jax.parallel.step import jit_sharded_step
from imagen_jax.stage_registry import Conditioner, Stage
from imagen_jax.train.state import TrainState, create_state, train_step


def state_layout(stage: Stage, optimizer: optax.GradientTransformation, mesh: Mesh,
                 rules: Rules, text_len: int) -> tuple[Any, Any]:
    """(abstract TrainState, its shardings): params, EMA and the optimiser's
    params-shaped statistics placed by the logical-axis rules, the rest replicated."""
    boxed = jax.eval_shape(lambda: stage.init(jax.random.PRNGKey(0), text_len))
    param_sh = param_shardings(boxed, mesh, rules)["params"]
    abstract_params = unbox_logical(boxed)["params"]  # ShapeDtypeStructs
    abstract_state = jax.eval_shape(lambda p: create_state(p, optimizer, jax.random.PRNGKey(0)),
                                    abstract_params)
    return abstract_state, state_shardings(abstract_state, abstract_params, param_sh, mesh)


def init_state(stage: Stage, optimizer: optax.GradientTransformation, key: jax.Array,
               mesh: Mesh, shardings: Any, text_len: int) -> TrainState:
    """A fresh TrainState, each device building only its own shards of it."""
    def init(k: jax.Array) -> TrainState:
        init_key, rng = jax.random.split(k)
        params = unbox_logical(stage.init(init_key, text_len))["params"]
        return create_state(params, optimizer, rng)

    return sharded_init(init, key, mesh, shardings)


def frozen_shardings(conditioner: Conditioner | None, mesh: Mesh, rules: Rules) -> Any:
    """Shardings of a conditioner's frozen weights (T5, CLIP) from their logical axis
    names, like a stage's own parameters: under FSDP or tensor parallelism each device
    keeps only its shard (T5-XXL is 8.9 GiB in bfloat16: a full copy per chip would
    take more than a quarter of a TPU v4's HBM). None when there are no frozen weights."""
    if conditioner is None:
        return None
    abstract = conditioner.abstract_params()
    return None if abstract is None else param_shardings(abstract, mesh, rules)


def place_frozen(conditioner: Conditioner | None, mesh: Mesh, rules: Rules) -> tuple[Any, Any]:
    """(frozen weights on the mesh, their shardings): the train step's third argument.
    Host arrays (a loaded checkpoint) are copied shard by shard, never whole to a device."""
    shardings = frozen_shardings(conditioner, mesh, rules)
    if shardings is None:
        return None, None
    return jax.device_put(conditioner.params, shardings), shardings


def jit_train_step(stage: Stage, optimizer: optax.GradientTransformation, mesh: Mesh,
                   rules: Rules, shardings: Any, example_batch: dict, *,
                   conditioner: Conditioner | None = None, frozen_shardings: Any = None,
                   ema_decay: float = 0.0,
                   skip_nonfinite: bool = False, grad_accum_steps: int = 1,
                   compiler_options: dict[str, Any] | None = None):
    """`step(state, batch, frozen_params) -> (state, metrics)`, jitted over `mesh`.

    The batch is sharded along its leading axis by the 'batch' rule; the conditioner's
    frozen params (T5, CLIP) come in with `frozen_shardings` (`place_frozen`; None
    replicates them) and run inside the step, so raw caption ids and images go in and
    no host round trip is needed; the state is donated.
    """
    def step(state: TrainState, batch: dict, frozen_params: Any) -> tuple[TrainState, dict]:
        if conditioner is not None:
            batch = conditioner.prepare(frozen_params, batch)
        return train_step(state, batch, loss_fn=stage.loss, optimizer=optimizer,
                          ema_decay=ema_decay, skip_nonfinite=skip_nonfinite,
                          grad_accum_steps=grad_accum_steps)

    return jit_sharded_step(step, mesh, shardings, shard_batch_tree(example_batch, mesh, rules),
                            arg_shardings=(frozen_shardings,), rules=rules,
                            compiler_options=compiler_options)
