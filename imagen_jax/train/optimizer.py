"""Optimiser from the config: AdamW or Adafactor, warmup + cosine/constant, clipping.

Imagen trains the base model with Adafactor and the SR models with Adam, both at
1e-4 after 10k warmup steps (App. F); global-norm clipping at 1.0 follows the
NVIDIA reimplementations (the paper is silent). Gradient accumulation
(`train.grad_accum_steps`) is not an optimiser wrapper: the train step averages the
micro-batches' gradients before its one update (imagen_jax/train/state.py), so the
schedule counts updates as `train.steps` does.
"""

from __future__ import annotations

from typing import Any

import optax

OPTIMIZERS = ("adamw", "adam", "adafactor")
SCHEDULES = ("cosine", "constant")


def learning_rate_schedule(train: Any) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then cosine decay or constant."""
    if train.schedule not in SCHEDULES:
        raise ValueError(f"config.train.schedule: unknown {train.schedule!r}; "
                         f"expected one of {SCHEDULES}")
    warmup = max(int(train.warmup_steps), 0)
    lr = float(train.learning_rate)
    if train.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(int(train.steps), warmup + 1),
        end_value=lr * float(train.final_lr_fraction))


def make_optimizer(train: Any) -> optax.GradientTransformation:
    """The optax chain `config.train` describes."""
    if train.optimizer not in OPTIMIZERS:
        raise ValueError(f"config.train.optimizer: unknown {train.optimizer!r}; "
                         f"expected one of {OPTIMIZERS}")
    schedule = learning_rate_schedule(train)
    if train.optimizer == "adafactor":
        opt = optax.adafactor(schedule)
    else:
        opt = optax.adamw(schedule, b1=train.b1, b2=train.b2, eps=train.eps,
                          weight_decay=train.weight_decay if train.optimizer == "adamw" else 0.0)
    chain = [opt]
    if train.grad_clip_norm and train.grad_clip_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(train.grad_clip_norm))
    return optax.chain(*chain)
