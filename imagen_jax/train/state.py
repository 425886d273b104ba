"""The train state and the generic train step.

The state holds everything a resumed run needs to continue bit for bit: params, EMA
params, optimiser state, step and the base PRNG key (the step's key is
fold_in(rng, step), so it does not depend on how many steps ran in this process).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array
    nonfinite_steps: jax.Array  # updates skipped for a non-finite loss or gradient


def create_state(params: Any, optimizer: optax.GradientTransformation,
                 rng: jax.Array) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=jax.tree.map(jnp.copy, params),
                      opt_state=optimizer.init(params), rng=rng,
                      nonfinite_steps=jnp.zeros((), jnp.int32))


def train_step(state: TrainState, batch: dict, *, loss_fn: Callable,
               optimizer: optax.GradientTransformation, ema_decay: float,
               skip_nonfinite: bool) -> tuple[TrainState, dict]:
    """One optimiser step of `loss_fn(params, batch, key) -> (loss, metrics)`.

    A non-finite loss or gradient norm is reported in metrics['finite']; with
    `skip_nonfinite` the update is dropped (params, EMA and optimiser state kept)
    and counted, otherwise the caller stops the run.
    """
    key = jax.random.fold_in(state.rng, state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                       state.ema_params, params)
    if skip_nonfinite:
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        params, ema = keep(params, state.params), keep(ema, state.ema_params)
        opt_state = keep(opt_state, state.opt_state)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema,
                              opt_state=opt_state,
                              nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
    # param_norm: a cheap fingerprint of the weights each step (also lets a restored
    # checkpoint be checked against the run that wrote it).
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, finite=finite,
                   param_norm=optax.tree.norm(new_state.params))
    return new_state, metrics
