r"""Train the stage a config selects.

    python -m imagen_jax.main --config=configs/imagen.py:tiny,base64 --workdir=/tmp/base64
    python -m imagen_jax.main --config=configs/imagen.py:paper,sr256 --workdir=$DIR \
        --config.train.steps=200 --config.mesh.fsdp=-1 --config.mesh.data=1

Running the same command again resumes from the workdir's latest readable checkpoint
(after a crash, a kill or a preemption), and loads the compiled step from the
persistent compilation cache in WORKDIR/compilation_cache (`--compilation_cache`).
SIGTERM saves a checkpoint after the current step and exits with status 143; Ctrl-C
does the same and exits with 130 (a second Ctrl-C stops at once). A changed config is
compared with the run's own on resume (--resume_with_changes for fields that cannot
change mid-run); a workdir that has held checkpoints never restarts from step 0 unless
--allow_fresh_start; one run per workdir. Each logged step is also a line of
WORKDIR/metrics.jsonl.

Multi-host: every host runs the same command plus how to join the job, either
explicitly (`launch/local_multihost.sh`, `launch/gpu_multinode.sh`)

    ... --coordinator_address=10.0.0.2:8476 --num_processes=4 --process_id=$RANK

or, on a Cloud TPU pod or under SLURM, by detection (`launch/tpu_pod.sh`):

    ... --distributed

The workdir must be one shared location (gs://, NFS) that every host can reach.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py:ARG).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for an explicit multi-process job.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in [0, N).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Join a multi-host job detected from the environment (Cloud TPU "
    "pod, SLURM, Open MPI).")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "Seconds of silence after which a process is declared dead and "
    "the others stop with an error.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for every process to join.")
_COMPILATION_CACHE = flags.DEFINE_string(
    "compilation_cache", None, "XLA's persistent compilation cache: a restart, or another "
    "host, loads the compiled step from it instead of compiling again (minutes at paper "
    "size). Default WORKDIR/compilation_cache (or $JAX_COMPILATION_CACHE_DIR if set); a "
    "directory, or 'none' to compile every start.")
_ALLOW_FRESH_START = flags.DEFINE_bool(
    "allow_fresh_start", False, "Train from step 0 in a workdir that has held checkpoints "
    "but has none readable now (without it such a start is refused: a filesystem hiccup "
    "must not restart a run).")
_RESUME_WITH_CHANGES = flags.DEFINE_bool(
    "resume_with_changes", False, "Resume although the config changes fields that cannot "
    "change mid-run (batch size, data, model, ...): keep the checkpoint's weights and "
    "optimiser state and start the input pipeline afresh.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from imagen_jax.parallel.distributed import DistributedOptions, initialize

    options = DistributedOptions(
        coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value, auto=_DISTRIBUTED.value,
        heartbeat_timeout_s=_HEARTBEAT.value, initialization_timeout_s=_INIT_TIMEOUT.value)
    try:
        initialize(options)  # before anything touches a device
    except ValueError as e:
        sys.exit(f"error: {e}")

    from imagen_jax.train import compile_cache
    from imagen_jax.train.checkpoint import (CheckpointMismatchError, CheckpointSaveError,
                                             UnreadableCheckpointError)
    from imagen_jax.train.trainer import Interrupted, NoCheckpointError, train
    from imagen_jax.train.validate import ConfigError
    from imagen_jax.train.workdir_lock import WorkdirBusyError

    import jax

    sys.unraisablehook = _one_line_unraisable
    import logging as py_logging
    py_logging.getLogger("asyncio").addFilter(_quiet_unretrieved_task_errors)
    config, workdir = _CONFIG.value, _WORKDIR.value
    try:
        cache_dir = compile_cache.cache_dir_for(workdir, _COMPILATION_CACHE.value)
        compile_cache.enable(cache_dir)
        compiles = compile_cache.CompileCount().start()
        # writes workdir/config.json (process 0) once the resume is known to go ahead
        state = train(config, workdir, allow_fresh_start=_ALLOW_FRESH_START.value,
                      resume_with_changes=_RESUME_WITH_CHANGES.value)
    # Faults a user can act on: one line each, naming the file, field or step.
    except (ConfigError, FileNotFoundError, FloatingPointError, CheckpointMismatchError,
            UnreadableCheckpointError, CheckpointSaveError, NoCheckpointError,
            WorkdirBusyError) as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:  # Ctrl-C: the step it stopped at is saved
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(130)  # 128 + SIGINT
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        print(f"error: interrupted (Ctrl-C) before a checkpoint of the current step was "
              f"saved; the newest complete checkpoint in {workdir} is kept: run the same "
              "command to resume", file=sys.stderr, flush=True)
        sys.exit(130)
    except OSError as e:  # a read-only or full workdir, a missing or damaged file
        sys.exit(f"error: {e.__class__.__name__}: {e}")
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        # A peer process died or lost its connection mid-collective. Exit at once:
        # jax.distributed's shutdown barrier would otherwise wait for the dead peer
        # until the heartbeat timeout. The last complete checkpoint is intact, so
        # restarting every process resumes from it.
        print(f"error: process {jax.process_index()} of {jax.process_count()}: a collective "
              f"with another process failed (a peer died or lost its connection); restart "
              f"all processes to resume from the last checkpoint. {str(e).splitlines()[0]}",
              file=sys.stderr, flush=True)
        os._exit(1)
    step = int(jax.device_get(state.step))
    print(compiles.summary(cache_dir), flush=True)
    if step < config.train.steps:  # SIGTERM: checkpoint saved, train() said so
        sys.exit(143)  # 128 + SIGTERM, as if the signal had ended it: not finished
    print(f"trained {config.stage} to step {step} in {workdir} "
          f"(process {jax.process_index()} of {jax.process_count()})")


def _one_line_unraisable(unraisable) -> None:
    """An exception nothing could catch (orbax leaves the read coroutines of a failed
    restore un-awaited; Python prints each with its traceback and a page-long
    TensorStore spec; at exit, each of their event loops "is closed") as a debug log
    line: the restore reports the failure itself, in the one line that matters."""
    from absl import logging

    from imagen_jax.train.checkpoint import one_line
    error = unraisable.exc_value
    logging.debug("ignored in %s: %s", getattr(unraisable.object, "__qualname__",
                                                 type(unraisable.object).__name__),
                    one_line(error) if error is not None else unraisable.exc_type)


def _quiet_unretrieved_task_errors(record) -> bool:
    """asyncio's "Task exception was never retrieved" (with a traceback and a page-long
    TensorStore spec) for the same un-awaited reads: a debug line instead."""
    message = record.getMessage()
    if "exception was never retrieved" not in message:
        return True
    from absl import logging

    logging.debug("asyncio: %s", message.splitlines()[0])
    return False


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    app.run(main)
