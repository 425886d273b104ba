"""One training loop for every stage: the config picks the stage; the loop knows only
`stage.init`, `stage.loss` and `stage.sample`.

    config -> validate -> mesh -> stage, data iterator, text encoder, optimiser
           -> state shardings from jax.eval_shape (no weights on one host)
           -> resume (latest checkpoint) | init_from (another run) | fresh init
           -> loop: next batch -> jit step (explicit shardings, donated state)
                    -> metrics, progress, periodic samples, checkpoints
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers, periodic_actions
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from imagen_jax import image_io
from imagen_jax.data.datasets import builder_from_config, captions
from imagen_jax.data.pipeline import InputIterator, PipelineConfig, make_dataset
from imagen_jax.diffusion import SamplerSettings
from imagen_jax.parallel.distributed import process_zero_first
from imagen_jax.parallel.mesh import make_mesh
from imagen_jax.parallel.rules import DEFAULT_RULES, rules_from_config
from imagen_jax.parallel.sharding import (batch_sharding, param_shardings, replicated,
                                          shard_batch_tree, state_shardings)
from imagen_jax.stages import BaseStage
from imagen_jax.train import checkpoint as ckpt_lib
from imagen_jax.train.optimizer import learning_rate_schedule, make_optimizer
from imagen_jax.train.preemption import PreemptionWatch
from imagen_jax.train.state import TrainState, create_state, train_step
from imagen_jax.train.trained import stage_family
from imagen_jax.train.validate import validate_config

STAGE_KEYS = ("images", "lowres", "text", "text_mask")


@dataclasses.dataclass
class Run:
    """Everything the loop (and tests) need, built once from a config."""

    config: Any
    workdir: str
    mesh: jax.sharding.Mesh
    rules: Any
    stage: Any  # an imagen_jax or unclip_jax stage: init, loss, sample
    iterator: InputIterator
    # Frozen model applied in the train step (.prepare(params, batch), .params,
    # .tokenizer): Imagen's T5, unCLIP's CLIP; None when batches need nothing.
    conditioner: Any
    optimizer: Any
    state_shardings: Any
    abstract_state: Any
    checkpointer: ckpt_lib.Checkpointer


def _text_len(config: Any) -> int:
    return config.text.max_length


def setup(config: Any, workdir: str, devices: list | None = None) -> Run:
    """Validates the config and builds the run's pieces (no compilation yet).

    `devices` restricts the mesh to a subset (default: all devices).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = validate_config(config, device_count=len(devices))
    mesh = make_mesh(sizes, devices)
    rules = rules_from_config(config.logical_rules) if config.logical_rules else DEFAULT_RULES
    family = stage_family(config)
    stage = family.stage_from_config(config)
    # Files written once (the generated dataset, the offline tokenizer): process 0
    # first, so that hosts sharing a workdir or data_dir do not race to write them.
    builder = process_zero_first(lambda: builder_from_config(config.data, workdir), "dataset")

    signature = None
    if config.data.embedding_cache:
        if not config.text.checkpoint:
            raise ValueError("config.data.embedding_cache needs config.text.checkpoint: the "
                             "cache is checked against the encoder the config names")
        from imagen_jax.data.embedding_cache import encoder_signature
        signature = encoder_signature(config.text.checkpoint, config.text.max_length)
    conditioner = process_zero_first(
        lambda: family.conditioner_from_config(config, workdir,
                                               functools.partial(captions, builder)),
        "text conditioner")

    lowres_size = config.get("lowres_size", 0)
    pipeline = PipelineConfig(
        image_size=config.image_size, global_batch_size=config.train.batch_size,
        lowres_size=lowres_size, crop_size=config.diffusion.train_crop if lowres_size else 0,
        random_flip=config.data.random_flip, shuffle_buffer=config.data.shuffle_buffer,
        seed=config.seed)
    dataset = make_dataset(builder, config.data.split, pipeline,
                           process_index=jax.process_index(),
                           process_count=jax.process_count(),
                           embedding_cache=config.data.embedding_cache or None,
                           cache_signature=signature)
    iterator = InputIterator(dataset, batch_sharding(mesh, rules=rules),
                             tokenizer=conditioner.tokenizer if conditioner else None)

    optimizer = make_optimizer(config.train)
    boxed = jax.eval_shape(lambda: stage.init(jax.random.PRNGKey(0), _text_len(config)))
    param_sh = param_shardings(boxed, mesh, rules)["params"]
    abstract_params = jax.tree.map(lambda b: b.value, boxed["params"],
                                   is_leaf=lambda x: hasattr(x, "names"))
    abstract_state = jax.eval_shape(lambda p: create_state(p, optimizer, jax.random.PRNGKey(0)),
                                    abstract_params)
    shardings = state_shardings(abstract_state, abstract_params, param_sh, mesh)
    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), save_every=config.checkpoint.every_steps,
        keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
    return Run(config, workdir, mesh, rules, stage, iterator, conditioner, optimizer,
               shardings, abstract_state, checkpointer)


def initial_state(run: Run) -> TrainState:
    """Latest checkpoint of this workdir, else `init_from`, else a fresh sharded init."""
    config, stage = run.config, run.stage
    target = ckpt_lib.abstract_with_shardings(run.abstract_state, run.state_shardings)
    if run.checkpointer.latest_step() is not None:
        # The newest readable step; unreadable ones are set aside with a warning, a
        # checkpoint of another config is an error (never a silent fresh start).
        state = run.checkpointer.restore(target, run.iterator)
        logging.info("resumed from %s step %d", run.checkpointer.directory,
                     int(jax.device_get(state.step)))
        return state
    logging.info("starting afresh: no checkpoint in %s", run.checkpointer.directory)

    def init(key):
        init_key, rng = jax.random.split(key)
        params = jax.tree.map(lambda x: x.unbox(apply_constraint=False) if hasattr(x, "names")
                              else x, stage.init(init_key, _text_len(config))["params"],
                              is_leaf=lambda x: hasattr(x, "names"))
        return create_state(params, run.optimizer, rng)

    key = jax.device_put(jax.random.PRNGKey(config.seed), replicated(run.mesh))
    state = jax.jit(init, out_shardings=run.state_shardings)(key)
    if config.train.init_from:
        params = ckpt_lib.load_params(config.train.init_from, run.abstract_state.params,
                                      run.state_shardings.params)
        state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params),
                              opt_state=run.optimizer.init(params))
        logging.info("initialised from %s", config.train.init_from)
    return state


def _stage_batch(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k in STAGE_KEYS + ("text_ids",)}


def make_step(run: Run, example_batch: dict):
    """The jitted train step for this run's shardings (text encoding folded in)."""
    conditioner = run.conditioner
    skip = run.config.train.nonfinite == "skip"

    def step(state, batch, frozen_params):
        if conditioner is not None:  # frozen model inside the step: no host round trip
            batch = conditioner.prepare(frozen_params, batch)
        return train_step(state, batch, loss_fn=run.stage.loss, optimizer=run.optimizer,
                          ema_decay=run.config.train.ema_decay, skip_nonfinite=skip)

    batch_sh = shard_batch_tree(example_batch, run.mesh, run.rules)
    frozen = conditioner.params if conditioner is not None else None
    frozen_sh = jax.tree.map(lambda _: replicated(run.mesh), frozen)
    return jax.jit(step, in_shardings=(run.state_shardings, batch_sh, frozen_sh),
                   out_shardings=(run.state_shardings, replicated(run.mesh)),
                   donate_argnums=(0,))


def _flops_per_step(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except (NotImplementedError, RuntimeError, ValueError) as e:  # best-effort per backend
        logging.warning("no XLA cost analysis: %s", e)
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) or None


def write_samples(run: Run, state: TrainState, batch: dict, step: int, writer: Any) -> str:
    """Samples with the EMA params for the batch's first captions; PNG + TensorBoard."""
    n = min(run.config.log.num_samples, batch["images"].shape[0])
    if not isinstance(run.stage, BaseStage) or run.config.stage.startswith("unclip."):
        logging.warning("periodic samples are written for Imagen stages only; unCLIP runs "
                        "sample with `python -m unclip_jax.generate`")
        return ""
    if "text" in batch:
        text, mask = batch["text"][:n], batch["text_mask"][:n]
    else:
        encoder = run.conditioner
        text = encoder.apply(encoder.params, batch["text_ids"][:n], batch["text_mask"][:n])
        mask = batch["text_mask"][:n]
    s = run.config.sample
    settings = SamplerSettings(sampler=s.sampler, steps=s.steps, eta=s.eta,
                               threshold=s.threshold, percentile=s.percentile)
    kwargs = dict(settings=settings, guidance=s.guidance)
    if "lowres" in batch:
        kwargs.update(lowres=batch["lowres"][:n], aug_level=s.aug_level)
    key = jax.random.fold_in(jax.random.PRNGKey(run.config.seed), step)
    images = np.asarray(jax.device_get(run.stage.sample(state.ema_params, text, mask, key,
                                                        **kwargs)))
    path = image_io.save_png_grid(images, os.path.join(run.workdir, "samples",
                                                       f"step_{step:08d}.png"))
    writer.write_images(step, {"samples": image_io.to_uint8(images)})
    return path


def append_metrics(workdir: str, step: int, scalars: dict) -> None:
    """One JSON line per logged step in WORKDIR/metrics.jsonl, flushed at once: easy to
    plot, and after a crash it still holds every step logged before it. A resumed run
    appends the steps it redoes again (a killed run's last line may be cut short)."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")


def drop_partial_metrics_line(workdir: str) -> None:
    """Cuts a last line that a killed run left unfinished, so the resumed run's first
    line starts on a line of its own."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_metrics(workdir: str) -> list[dict]:
    """metrics.jsonl's records in file order, skipping a last line a crash cut short."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if line.endswith("\n"):  # a whole line that is not JSON: not ours
                    raise ValueError(f"{path}: not a JSON line: {line[:80]!r}") from None
    return records


def train(config: Any, workdir: str, *, devices: list | None = None,
          on_step: Callable[[int, dict], None] | None = None) -> TrainState:
    """Trains (or resumes) the stage `config` selects until config.train.steps.

    `on_step(step, metrics)` is called after every step (tests record the loss).
    On SIGTERM (a preemption notice) the loop saves a checkpoint after the current step
    and returns early: the returned state's step is then below config.train.steps.
    """
    from imagen_jax.train.run_config import save_config

    os.makedirs(workdir, exist_ok=True)
    run = setup(config, workdir, devices)
    if jax.process_index() == 0:  # beside the checkpoints: samplers rebuild the stage from it
        save_config(config, workdir)
        drop_partial_metrics_line(workdir)
    state = initial_state(run)
    start = int(jax.device_get(state.step))
    total = config.train.steps
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    hooks = [periodic_actions.ReportProgress(num_train_steps=total, writer=writer,
                                             every_steps=config.log.every_steps)]
    bar = tqdm(total=total, initial=start, desc=f"train {config.stage}", unit="step",
               disable=not config.log.get("progress_bar", True) or jax.process_index() > 0,
               dynamic_ncols=True)
    watch = PreemptionWatch()  # from here on a SIGTERM loses nothing
    try:
        state = _loop(run, state, start, writer, hooks, bar, watch, on_step)
    finally:
        watch.close()
    bar.close()
    run.checkpointer.wait()
    writer.flush()
    run.checkpointer.close()
    done = int(jax.device_get(state.step))
    if done < total:
        message = (f"preempted (SIGTERM) at step {done} of {total}: checkpoint saved in "
                   f"{run.checkpointer.directory}; run the same command to resume")
        logging.warning(message)
        print(message, file=sys.stderr, flush=True)
    return state


def _loop(run: Run, state: TrainState, start: int, writer: Any, hooks: list, bar: Any,
          watch: PreemptionWatch, on_step: Callable[[int, dict], None] | None) -> TrainState:
    """Steps from `start` to config.train.steps, or to the step a SIGTERM stops at."""
    config = run.config
    total = config.train.steps
    schedule = learning_rate_schedule(config.train)
    text_params = run.conditioner.params if run.conditioner is not None else None
    step_fn, flops, window = None, None, []
    last_time, last_step = time.perf_counter(), start
    for step in range(start, total):
        batch = next(run.iterator)
        stage_batch = _stage_batch(batch)
        if step_fn is None:  # compile once, ahead of time, and read XLA's FLOP count
            step_fn = make_step(run, stage_batch).lower(state, stage_batch, text_params).compile()
            flops = _flops_per_step(step_fn)
            last_time = time.perf_counter()  # throughput excludes compilation
        state, metrics = step_fn(state, stage_batch, text_params)
        if config.train.nonfinite == "error" and not bool(metrics["finite"]):
            raise FloatingPointError(
                f"non-finite loss or gradient norm at step {step + 1} (loss="
                f"{float(metrics['loss'])}, grad_norm={float(metrics['grad_norm'])}); set "
                "config.train.nonfinite='skip' to drop such updates instead")
        window.append(metrics)
        done = step + 1
        if on_step is not None:
            on_step(done, metrics)
        for hook in hooks:
            hook(done)
        if done % config.log.every_steps == 0 or done == total:
            now = time.perf_counter()
            steps_per_sec = (done - last_step) / max(now - last_time, 1e-9)
            last_time, last_step = now, done
            mean = {k: float(np.mean([jax.device_get(m[k]) for m in window]))
                    for k in window[0] if k != "finite"}
            scalars = dict(mean, learning_rate=float(schedule(done)),
                           images_per_sec=steps_per_sec * config.train.batch_size,
                           nonfinite_steps=int(jax.device_get(state.nonfinite_steps)))
            if flops:
                scalars["flops_per_sec"] = flops * steps_per_sec
            writer.write_scalars(done, scalars)
            if jax.process_index() == 0:
                append_metrics(run.workdir, done, scalars)
            bar.set_postfix(loss=f"{mean['loss']:.4f}", img_s=f"{scalars['images_per_sec']:.0f}")
            window = []
        bar.update(1)
        every = config.log.sample_every_steps
        if every and (done % every == 0 or done == total):
            write_samples(run, state, batch, done, writer)
        stop = watch.stop_at(done)  # every process asks at every step (multi-host sync)
        run.checkpointer.save(done, state, run.iterator, force=done == total or stop)
        if stop:
            break
    return state
