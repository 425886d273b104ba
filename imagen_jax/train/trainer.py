"""One training loop for every stage: the config picks the stage from the registry
(imagen_jax/stage_registry.py); the loop knows only the Stage and Conditioner
protocols: `init`, `loss`, `preview` and `prepare`.

    config -> validate -> mesh -> stage, data iterator, conditioner, optimiser
           -> state layout from jax.eval_shape (no weights on one host)
           -> resume (latest checkpoint) | init_from (another run) | fresh sharded init
           -> loop: next batch -> jitted step (explicit shardings, donated state)
                    -> metrics, progress, periodic samples, checkpoints

The sharded init and step are imagen_jax/train/sharded.py's, the functions the
sharded == unsharded tests check.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
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
from imagen_jax.parallel.distributed import process_zero_first
from imagen_jax.parallel.mesh import make_mesh
from imagen_jax.parallel.rules import DEFAULT_RULES, rules_from_config
from imagen_jax.parallel.sharding import batch_sharding
from imagen_jax.stage_registry import Conditioner, Stage, lookup
from imagen_jax.train.metrics_log import MetricsLog, drop_partial_metrics_line
from imagen_jax.train.metrics_log import read_metrics  # noqa: F401  (re-exported: tests, tools)
from imagen_jax.train import checkpoint as ckpt_lib
from imagen_jax.train.optimizer import make_optimizer
from imagen_jax.train.preemption import PreemptionWatch
from imagen_jax.train.sharded import init_state, jit_train_step, place_frozen, state_layout
from imagen_jax.train.state import TrainState
from imagen_jax.train.validate import validate_config

# The input pipeline's arrays that go into the step (the rest, e.g. caption strings,
# stay on the host); a conditioner turns 'text_ids' into what the stage reads.
STEP_INPUT_KEYS = ("images", "lowres", "text", "text_mask", "text_ids")


@dataclasses.dataclass
class Run:
    """Everything the loop (and tests) need, built once from a config."""

    config: Any
    workdir: str
    mesh: jax.sharding.Mesh
    rules: Any
    stage: Stage
    iterator: InputIterator
    # Frozen model applied in the train step: Imagen's T5, unCLIP's CLIP; None when
    # batches need nothing. Its weights are placed on the mesh from their logical axis
    # names (sharded like the stage's, never a full copy per device under FSDP/tensor).
    conditioner: Conditioner | None
    frozen: Any
    frozen_shardings: Any
    optimizer: Any
    state_shardings: Any
    abstract_state: Any
    checkpointer: ckpt_lib.Checkpointer


def _text_len(config: Any) -> int:
    return config.text.max_length


def _input_iterator(config: Any, builder: Any, mesh: jax.sharding.Mesh, rules: Any,
                    conditioner: Conditioner | None) -> InputIterator:
    """This process's slice of the data as global batches sharded along 'batch';
    captions tokenised by the conditioner's tokenizer."""
    signature = None
    if config.data.embedding_cache:
        if not config.text.checkpoint:
            raise ValueError("config.data.embedding_cache needs config.text.checkpoint: the "
                             "cache is checked against the encoder the config names")
        from imagen_jax.data.embedding_cache import encoder_signature
        signature = encoder_signature(config.text.checkpoint, config.text.max_length)
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
    return InputIterator(dataset, batch_sharding(mesh, rules=rules),
                         tokenizer=conditioner.tokenizer if conditioner else None)


def setup(config: Any, workdir: str, devices: list | None = None) -> Run:
    """Validates the config and builds the run's pieces (no compilation yet).

    `devices` restricts the mesh to a subset (default: all devices).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = validate_config(config, device_count=len(devices))
    mesh = make_mesh(sizes, devices)
    rules = rules_from_config(config.logical_rules) if config.logical_rules else DEFAULT_RULES
    spec = lookup(config.stage)
    stage = spec.build(config)
    # Files written once (the generated dataset, the offline tokenizer): process 0
    # first, so that hosts sharing a workdir or data_dir do not race to write them.
    builder = process_zero_first(lambda: builder_from_config(config.data, workdir), "dataset")
    conditioner = process_zero_first(
        lambda: spec.conditioner(config, workdir, functools.partial(captions, builder)),
        "text conditioner")
    iterator = _input_iterator(config, builder, mesh, rules, conditioner)
    optimizer = make_optimizer(config.train)
    abstract_state, shardings = state_layout(stage, optimizer, mesh, rules, _text_len(config))
    checkpointer = ckpt_lib.Checkpointer(
        os.path.join(workdir, "checkpoints"), save_every=config.checkpoint.every_steps,
        keep=config.checkpoint.keep, async_save=config.checkpoint.async_save,
        read_attempts=config.checkpoint.get("read_attempts", 3),
        retry_delay_s=config.checkpoint.get("read_retry_s", 2.0))
    frozen, frozen_sh = place_frozen(conditioner, mesh, rules)
    return Run(config, workdir, mesh, rules, stage, iterator, conditioner, frozen, frozen_sh,
               optimizer, shardings, abstract_state, checkpointer)


class NoCheckpointError(RuntimeError):
    """A workdir that has held checkpoints has none readable now: not a new run."""


def _report_set_aside(run: Run) -> None:
    """At every start: steps set aside as unreadable, each with the command that puts it
    back (process 0; the directory is shared)."""
    if jax.process_index() != 0:
        return
    for path in ckpt_lib.set_aside_steps(run.workdir):
        print(f"warning: checkpoint {path} was set aside as unreadable; if its files are "
              f"whole again: {ckpt_lib.restore_command(path, run.checkpointer.directory)}",
              file=sys.stderr, flush=True)


def initial_state(run: Run, *, allow_fresh_start: bool = False,
                  restart_input: bool = False) -> TrainState:
    """Latest checkpoint of this workdir, else `init_from`, else a fresh sharded init.

    A workdir that has ever held a checkpoint but has none now (all set aside, or the
    files missing for a moment) raises NoCheckpointError unless `allow_fresh_start`.
    `restart_input` restores the train state only: the input pipeline starts afresh.
    """
    config, stage = run.config, run.stage
    target = ckpt_lib.abstract_with_shardings(run.abstract_state, run.state_shardings)
    _report_set_aside(run)
    if run.checkpointer.latest_step() is not None:
        # The newest readable step; unreadable ones are read again, then set aside with
        # a warning; a checkpoint of another config is an error (never a silent fresh
        # start).
        state = run.checkpointer.restore(target, None if restart_input else run.iterator)
        logging.info("resumed from %s step %d%s", run.checkpointer.directory,
                     int(jax.device_get(state.step)),
                     " (input pipeline restarted)" if restart_input else "")
        return state
    if ckpt_lib.has_held_checkpoints(run.workdir) and not allow_fresh_start:
        set_aside = ckpt_lib.set_aside_steps(run.workdir)
        raise NoCheckpointError(
            f"{run.workdir} has held checkpoints but {run.checkpointer.directory} has no "
            "complete step now"
            + (f" ({len(set_aside)} set aside as unreadable in {run.checkpointer.quarantine}: "
               "put them back with the commands above)" if set_aside else "")
            + "; not starting from step 0: run again once the files are back, or pass "
            "--allow_fresh_start to train from scratch here")
    logging.info("starting afresh: no checkpoint in %s", run.checkpointer.directory)
    state = init_state(stage, run.optimizer, jax.random.PRNGKey(config.seed), run.mesh,
                       run.state_shardings, _text_len(config))
    if config.train.init_from:
        params = ckpt_lib.load_params(config.train.init_from, run.abstract_state.params,
                                      run.state_shardings.params)
        state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params),
                              opt_state=run.optimizer.init(params))
        logging.info("initialised from %s", config.train.init_from)
    return state


def step_inputs(batch: dict) -> dict:
    """The arrays of an input-pipeline batch that the train step reads."""
    return {k: v for k, v in batch.items() if k in STEP_INPUT_KEYS}


def make_step(run: Run, example_batch: dict, compiler_options: dict | None = None):
    """The jitted train step for this run's shardings (the conditioner folded in)."""
    return jit_train_step(run.stage, run.optimizer, run.mesh, run.rules, run.state_shardings,
                          example_batch, conditioner=run.conditioner,
                          frozen_shardings=run.frozen_shardings,
                          ema_decay=run.config.train.ema_decay,
                          skip_nonfinite=run.config.train.nonfinite == "skip",
                          grad_accum_steps=int(run.config.train.get("grad_accum_steps", 1)),
                          compiler_options=compiler_options)


def frozen_params(run: Run) -> Any:
    """The conditioner's frozen weights on the mesh: the step's third argument."""
    return run.frozen


def _flops_per_step(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except (NotImplementedError, RuntimeError, ValueError) as e:  # best-effort per backend
        logging.warning("no XLA cost analysis: %s", e)
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) or None


def write_samples(run: Run, state: TrainState, inputs: dict, step: int, writer: Any) -> str:
    """The stage's preview with the EMA params for the batch's first examples, as a PNG
    grid and in TensorBoard; "" for a stage that makes no images (CLIP, the prior)."""
    n = min(run.config.log.num_samples, len(next(iter(inputs.values()))))
    batch = {k: v[:n] for k, v in inputs.items()}
    if run.conditioner is not None:
        batch = jax.jit(run.conditioner.prepare)(frozen_params(run), batch)
    key = jax.random.fold_in(jax.random.PRNGKey(run.config.seed), step)
    images = run.stage.preview(state.ema_params, batch, key, run.config.sample)
    if images is None:
        return ""
    images = np.asarray(jax.device_get(images))
    path = image_io.save_png_grid(images, os.path.join(run.workdir, "samples",
                                                       f"step_{step:08d}.png"))
    writer.write_images(step, {"samples": image_io.to_uint8(images)})
    return path


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after saving the step it was at (a KeyboardInterrupt, so
    a caller that does not expect it stops as on any Ctrl-C)."""


def train(config: Any, workdir: str, *, devices: list | None = None,
          on_step: Callable[[int, dict], None] | None = None,
          allow_fresh_start: bool = False, resume_with_changes: bool = False) -> TrainState:
    """Trains (or resumes) the stage `config` selects until config.train.steps.

    `on_step(step, metrics)` is called after every step (tests record the loss).
    On SIGTERM (a preemption notice) the loop saves a checkpoint after the current step
    and returns early: the returned state's step is then below config.train.steps. On
    Ctrl-C it saves the same way and raises `Interrupted`. On any exit the save in
    flight is committed first.

    One run per workdir (WorkdirBusyError otherwise). Resuming compares the config with
    the one the run was trained with (imagen_jax/train/config_change.py;
    `resume_with_changes` accepts fields that cannot change mid-run and restarts the
    input pipeline); a workdir that has held checkpoints never starts afresh unless
    `allow_fresh_start`. Nothing in the workdir is written before the resume is known
    to go ahead.
    """
    from imagen_jax.train.config_change import check_resume_config
    from imagen_jax.train.run_config import save_config
    from imagen_jax.train.workdir_lock import WorkdirLock

    os.makedirs(workdir, exist_ok=True)
    with WorkdirLock(workdir):
        # Every process checks (each must stop if the resume is refused); one prints.
        restart_input = ckpt_lib.has_complete_steps(workdir) and check_resume_config(
            workdir, config, allow_changes=resume_with_changes,
            quiet=jax.process_index() != 0)
        run = setup(config, workdir, devices)
        state = initial_state(run, allow_fresh_start=allow_fresh_start,
                              restart_input=restart_input)
        if jax.process_index() == 0:  # beside the checkpoints: samplers rebuild the stage
            save_config(config, workdir)
            drop_partial_metrics_line(workdir)
        return _train_from(run, state, on_step)


def _train_from(run: Run, state: TrainState,
                on_step: Callable[[int, dict], None] | None = None) -> TrainState:
    config, workdir = run.config, run.workdir
    start = int(jax.device_get(state.step))
    total = config.train.steps
    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    hooks = [periodic_actions.ReportProgress(num_train_steps=total, writer=writer,
                                             every_steps=config.log.every_steps)]
    title = config.log.get("title") or config.stage  # the demo names its stages
    bar = tqdm(total=total, initial=start, desc=f"train {title}", unit="step",
               disable=not config.log.get("progress_bar", True) or jax.process_index() > 0,
               dynamic_ncols=True)
    watch = PreemptionWatch()  # from here on SIGTERM and Ctrl-C lose nothing
    finished = False
    try:
        state = _loop(run, state, start, writer, hooks, bar, watch, on_step)
        finished = True
    finally:
        watch.close()
        bar.close()
        _commit_saves(run, quiet=not finished)
    writer.flush()
    run.checkpointer.close()
    done = int(jax.device_get(state.step))
    if done < total:
        name = "Ctrl-C" if watch.signum == signal.SIGINT else "SIGTERM"
        message = (f"{'interrupted' if name == 'Ctrl-C' else 'preempted'} ({name}) at step "
                   f"{done} of {total}: checkpoint saved in {run.checkpointer.directory}; "
                   "run the same command to resume")
        logging.warning(message)
        if name == "Ctrl-C":
            raise Interrupted(message)
        print(message, file=sys.stderr, flush=True)
    return state


def _commit_saves(run: Run, *, quiet: bool) -> None:
    """Waits for the save in flight to commit, on every way out of the loop. After an
    error (`quiet`) a failed save is logged, not raised over the error that stopped
    the run."""
    try:
        run.checkpointer.wait()
    except ckpt_lib.CheckpointSaveError as e:
        if not quiet:
            raise
        logging.error("%s", e)


def _compile_step(run: Run, state: TrainState, inputs: dict) -> tuple[Any, float | None]:
    """The step compiled ahead of time for these shapes, and XLA's FLOPs per step."""
    compiled = make_step(run, inputs).lower(state, inputs, frozen_params(run)).compile()
    return compiled, _flops_per_step(compiled)


def _stop_if_nonfinite(config: Any, step: int, metrics: dict) -> None:
    """config.train.nonfinite == 'error': a non-finite loss, gradient or updated weight
    stops the run before that state is saved ('skip' drops such updates inside the step
    and counts them)."""
    if config.train.nonfinite == "error" and not bool(metrics["finite"]):
        raise FloatingPointError(
            f"non-finite loss, gradient norm or updated weights at step {step} (loss="
            f"{float(metrics['loss'])}, grad_norm={float(metrics['grad_norm'])}); set "
            "config.train.nonfinite='skip' to drop such updates instead")


def _sample_due(config: Any, step: int) -> bool:
    every = config.log.sample_every_steps
    return bool(every) and (step % every == 0 or step == config.train.steps)


def _loop(run: Run, state: TrainState, start: int, writer: Any, hooks: list, bar: Any,
          watch: PreemptionWatch, on_step: Callable[[int, dict], None] | None) -> TrainState:
    """Steps from `start` to config.train.steps, or to the step a SIGTERM stops at."""
    config, total = run.config, run.config.train.steps
    log = MetricsLog(run, writer, bar, start)
    step_fn = None
    for step in range(start, total):
        inputs = step_inputs(next(run.iterator))
        if step_fn is None:  # once, ahead of time: the FLOP count comes with it
            step_fn, log.flops = _compile_step(run, state, inputs)
            log.restart_clock(step)
        state, metrics = step_fn(state, inputs, frozen_params(run))
        done = step + 1
        _stop_if_nonfinite(config, done, metrics)
        if on_step is not None:
            on_step(done, metrics)
        for hook in hooks:
            hook(done)
        log.add(done, metrics, state)
        bar.update(1)
        if _sample_due(config, done):
            write_samples(run, state, inputs, done, writer)
        stop = watch.stop_at(done)  # every process asks at every step (multi-host sync)
        run.checkpointer.save(done, state, run.iterator, force=done == total or stop)
        if stop:
            break
    return state
