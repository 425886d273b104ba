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


def all_finite(tree: Any) -> jax.Array:
    """True when every element of every floating-point array in `tree` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def micro_batches(batch: dict, k: int) -> dict:
    """[k*B, ...] arrays -> [k, B, ...], micro-batch j holding examples j, k + j, 2k + j...

    Strided rather than contiguous so that the split needs no communication: with the
    batch dimension sharded in contiguous blocks over the devices, reshaping to
    [B, k, ...] leaves every device its own rows, and the swap of the two leading axes
    is local too; each micro-batch stays spread over all the data-parallel devices.
    """
    def split(x: jax.Array) -> jax.Array:
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} does not split into {k} micro-batches")
        return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def accumulated_value_and_grad(loss_fn: Callable, params: Any, batch: dict, key: jax.Array,
                               k: int) -> tuple[tuple[jax.Array, dict], Any]:
    """((loss, metrics), grads) of `loss_fn` averaged over k micro-batches of `batch`,
    run one after another (lax.scan): activations of one micro-batch live at a time.
    For a loss that is a mean over examples this equals one evaluation on the whole
    batch; micro-batch j draws its noise from fold_in(key, j)."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def body(carry: Any, inputs: tuple[jax.Array, dict]) -> tuple[Any, None]:
        j, micro = inputs
        (loss, metrics), grads = grad_fn(params, micro, jax.random.fold_in(key, j))
        total = jax.tree.map(jnp.add, carry, (loss, metrics, grads))
        return total, None

    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro_batches(
        batch, k)), key)
    (zero_loss, zero_metrics), zero_grads = jax.tree.map(
        lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (loss, metrics, grads), _ = jax.lax.scan(
        body, (zero_loss, zero_metrics, zero_grads), (jnp.arange(k), micro_batches(batch, k)))
    mean = lambda tree: jax.tree.map(lambda x: x / k, tree)
    return (mean(loss), mean(metrics)), mean(grads)


def train_step(state: TrainState, batch: dict, *, loss_fn: Callable,
               optimizer: optax.GradientTransformation, ema_decay: float,
               skip_nonfinite: bool, grad_accum_steps: int = 1) -> tuple[TrainState, dict]:
    """One optimiser step of `loss_fn(params, batch, key) -> (loss, metrics)`.

    With `grad_accum_steps` k > 1 the batch is k micro-batches whose gradients are
    averaged before the one update: the step, the learning-rate schedule and the EMA
    advance once per update, as for one step on the whole batch.
    A non-finite loss, gradient norm or updated weight (params or EMA, or the params'
    norm: a finite loss whose update overflows, e.g. a learning rate of 1e38) is
    reported in metrics['finite']; with `skip_nonfinite` the update is dropped (params,
    EMA and optimiser state kept) and counted, otherwise the caller stops the run before
    it saves: no checkpoint holds a non-finite or diverged weight.
    """
    key = jax.random.fold_in(state.rng, state.step)
    if grad_accum_steps > 1:
        (loss, metrics), grads = accumulated_value_and_grad(loss_fn, state.params, batch, key,
                                                            grad_accum_steps)
    else:
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch,
                                                                           key)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                       state.ema_params, params)
    # The updated weights too: the loss and gradient of the old weights can be finite
    # while the step that applies them is not. Element by element (an inf or NaN), and
    # by their norm: weights whose norm overflows (|w| >~ 1e19 in float32) are diverged
    # as surely as an inf; Adafactor scales a 1e38 learning rate by the weights' RMS
    # and lands finite weights of ~1e36, which the next step's loss turns into NaN.
    finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite((params, ema))
              & jnp.isfinite(optax.tree.norm(params)))
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
