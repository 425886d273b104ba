"""Orbax checkpoints of the train state *and* the input iterator's position.

One `ocp.CheckpointManager` per run, under WORKDIR/checkpoints, with async saves and
keep-N. Each step directory holds two items: 'state' (the TrainState pytree,
restored onto whatever shardings the caller asks for, so a checkpoint saved on one
mesh restores onto another) and 'data' (every process's tf.data iterator state, one
file per process, written by a small handler registered below). Orbax writes a step
into a temporary directory and renames it once both items are written, so a crash
mid-save leaves the previous step as the latest (the temporary directory is removed
when the next run opens the manager).

Restoring never starts a run afresh behind the user's back: the newest step whose
shapes do not match this run's train state stops the run with an error naming the
first differing array (a checkpoint of another config); a step that cannot be read
is read again a few times (a network filesystem's files can be missing for a
moment), and only then moved aside to WORKDIR/unreadable_checkpoints/ with a
one-line warning and the next older step is tried; when none can be read, the error
lists why for each. Set-aside steps are reported at every start with the command that
puts them back, and a workdir that has ever held a checkpoint (WORKDIR/run_history.json,
written once the first step is complete) never starts from step 0 without an
explicit flag (trainer.initial_state).

A save that fails in the background (a full disk) is reported as one line naming the
step whose save failed and the newest complete one, which stays the latest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores objects with `.save(prefix)` / `.restore(prefix)` (InputIterator)."""

    def _prefix(self, directory: epath.Path) -> str:
        return os.fspath(directory / f"process_{jax.process_index()}" / "iterator")

    def save(self, directory: epath.Path, args: "DataIteratorSave") -> None:
        args.item.save(self._prefix(directory))

    def restore(self, directory: epath.Path, args: "DataIteratorRestore") -> Any:
        prefix = self._prefix(directory)
        if not os.path.exists(os.path.dirname(prefix)):
            raise FileNotFoundError(f"checkpoint {directory} has no input-iterator state for "
                                    f"process {jax.process_index()}")
        args.item.restore(prefix)
        return args.item


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    item: Any


class CheckpointMismatchError(ValueError):
    """A checkpoint written for another model or optimiser (its arrays differ)."""


class UnreadableCheckpointError(RuntimeError):
    """No checkpoint of a run directory can be read."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (disk full, read-only workdir, ...)."""


# Beside the checkpoints: proof that this workdir has held a complete checkpoint, so
# an empty checkpoints/ (files missing for a moment, steps set aside) is never read as
# "a new run".
HISTORY_FILE = "run_history.json"
QUARANTINE_DIR = "unreadable_checkpoints"


def has_held_checkpoints(workdir: str) -> bool:
    """Whether `workdir` has ever held a complete checkpoint (its history file, or
    steps set aside as unreadable)."""
    return (os.path.exists(os.path.join(workdir, HISTORY_FILE))
            or bool(set_aside_steps(workdir)))


def set_aside_steps(workdir: str) -> list[str]:
    """Paths of the steps moved to WORKDIR/unreadable_checkpoints/, oldest first."""
    quarantine = os.path.join(workdir, QUARANTINE_DIR)
    if not os.path.isdir(quarantine):
        return []
    names = [n for n in os.listdir(quarantine) if n.startswith("step_")]
    return [os.path.join(quarantine, n)
            for n in sorted(names, key=lambda n: int(n.split("_")[1].split(".")[0]))]


def restore_command(set_aside: str, checkpoints: str) -> str:
    """The shell command that puts a set-aside step back where the manager reads it."""
    step = os.path.basename(set_aside).split("_")[1].split(".")[0]
    return f"mv {set_aside} {os.path.join(checkpoints, step)}"


def has_complete_steps(workdir: str) -> bool:
    """Whether WORKDIR/checkpoints holds a step directory (a complete step: orbax
    writes into a temporary name and renames when done). Reads no checkpoint."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def _path_str(path: tuple) -> str:
    """'params/conv_in/kernel' for a key path of dict keys, attributes or indices, so that
    a TrainState's paths and a checkpoint's metadata (plain dicts) compare equal."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_str(path): (tuple(x.shape), str(np.dtype(x.dtype))) for path, x in leaves}


def shape_mismatch(saved: Any, expected: Any) -> str | None:
    """The first difference between a checkpoint's array metadata and the arrays this run
    expects, in words (None when every path, shape and dtype agree)."""
    have, want = _shapes(saved), _shapes(expected)
    missing = [p for p in want if p not in have]
    if missing:
        return (f"it has no array {missing[0]}" + (f" (nor {len(missing) - 1} others)"
                                                   if len(missing) > 1 else ""))
    extra = [p for p in have if p not in want]
    if extra:
        return (f"it has an array {extra[0]} this run does not"
                + (f" (and {len(extra) - 1} others)" if len(extra) > 1 else ""))
    for path, (shape, dtype) in want.items():
        if have[path] != (shape, dtype):
            return (f"{path} is {have[path][1]}{list(have[path][0])} there, "
                    f"{dtype}{list(shape)} here")
    return None


def one_line(error: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message` of the root cause, short: orbax wraps
    tensorstore's reason (e.g. a truncated file) in a generic error with a page-long
    spec."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[:limit] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _all_processes_agree(ok: bool) -> bool:
    """True only if `ok` on every process (processes must restore the same step)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


class Checkpointer:
    """Train-state + iterator checkpoints of one run directory."""

    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True,
                 read_attempts: int = 3, retry_delay_s: float = 2.0):
        self.directory = os.path.abspath(directory)
        self.workdir = os.path.dirname(self.directory)
        # A step that fails to read is read again (after retry_delay_s, then twice that
        # ...) before it is set aside: a transient filesystem error is not damage.
        self.read_attempts, self.retry_delay_s = max(int(read_attempts), 1), retry_delay_s
        self._pending_step: int | None = None  # the save in flight (async)
        self._history_written = os.path.exists(os.path.join(self.workdir, HISTORY_FILE))
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(save_every), 1), max_to_keep=keep or None,
            enable_async_checkpointing=async_save, create=True,
            # Half-written steps of a killed run (never complete, never restored).
            cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data"),
            # Explicit handlers so that a step's metadata can be read before restoring.
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": DataIteratorHandler()})
        # Where unreadable steps are moved: beside the checkpoints, not inside (the
        # manager would count them as steps and never save over their numbers).
        self.quarantine = os.path.join(self.workdir, QUARANTINE_DIR)
        self._note_history()  # a workdir of a run from before the history file

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, iterator: Any = None, *, force: bool = False) -> bool:
        """Starts saving `step` (in the background with async saves) if it is due; a
        previous save that failed is raised here as CheckpointSaveError."""
        self.check_for_errors()
        items = {"state": ocp.args.StandardSave(state)}
        if iterator is not None:
            items["data"] = DataIteratorSave(iterator)
        with self._failure_of(step):
            saved = self.manager.save(step, args=ocp.args.Composite(**items), force=force)
        if saved:
            self._pending_step = step
        return saved

    def check_for_errors(self) -> None:
        """Raises CheckpointSaveError if the save in flight has failed (cheap: asked
        after every step, so a full disk is reported at the step whose save failed)."""
        if self._pending_step is not None:
            with self._failure_of(self._pending_step):
                self.manager.check_for_errors()
            self._note_history()

    def _failure_of(self, step: int) -> "_SaveFailure":
        return _SaveFailure(self, step)

    def _note_history(self) -> None:
        """Writes WORKDIR/run_history.json once a complete step exists (process 0)."""
        if self._history_written or jax.process_index() != 0:
            return
        if not has_complete_steps(self.workdir):
            return
        path = os.path.join(self.workdir, HISTORY_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"first_complete_checkpoint": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "note": "this workdir has held checkpoints: training does not start "
                               "afresh here without --allow_fresh_start"}, f, indent=1)
        os.replace(path + ".tmp", path)
        self._history_written = True

    def restore(self, abstract_state: Any, iterator: Any = None, step: int | None = None) -> Any:
        """Restores `step` (default: the newest readable one) onto `abstract_state`'s
        shapes and shardings, and `iterator`'s position.

        Raises CheckpointMismatchError for a checkpoint of different arrays (another
        config), UnreadableCheckpointError when no step can be read; unreadable steps
        newer than the restored one are moved to `self.quarantine` with a warning.
        """
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        failures = []
        for candidate in steps:
            error = None
            for attempt in range(self.read_attempts):
                if attempt:
                    delay = self.retry_delay_s * 2 ** (attempt - 1)
                    logging.warning("checkpoint step %d of %s could not be read (%s); "
                                    "reading it again in %.1f s", candidate, self.directory,
                                    error, delay)
                    time.sleep(delay)
                    self.manager.reload()
                restored, error = self._try_restore(candidate, abstract_state, iterator)
                if _all_processes_agree(error is None):
                    return restored["state"]
            failures.append(f"step {candidate}: {error or 'unreadable on another process'}")
            if step is not None:
                break
            moved = self._set_aside(candidate)
            older = [s for s in steps if s < candidate]
            logging.warning("checkpoint step %d of %s is unreadable (%s); moved to %s; %s",
                            candidate, self.directory, error or "on another process", moved,
                            f"trying step {older[0]}" if older else "no older step left")
        raise UnreadableCheckpointError(
            f"no readable checkpoint in {self.directory} ({'; '.join(failures)}); unreadable "
            f"steps were moved to {self.quarantine}: once their files are back, move them "
            f"back (e.g. {restore_command(os.path.join(self.quarantine, f'step_{steps[0]}'), self.directory)}) "
            "and run again; --allow_fresh_start starts from step 0 instead")

    def _try_restore(self, step: int, abstract_state: Any,
                     iterator: Any) -> tuple[Any, str | None]:
        """(restored items, None) or (None, why `step` could not be read)."""
        error = self._check_arrays(step, abstract_state)
        if error is not None:
            return None, error
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data"] = DataIteratorRestore(iterator)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**items)), None
        # Any failure to read a step (tensorstore raises plain Exception, tf.data
        # OpError, orbax ValueError/KeyError) means that step is unusable for now; the
        # error is reported (and, once retries are spent, the step set aside), never
        # swallowed.
        except Exception as e:  # noqa: BLE001
            return None, one_line(e)

    def _check_arrays(self, step: int, abstract_state: Any) -> str | None:
        """Why `step` cannot be restored onto `abstract_state` before reading any array:
        raises CheckpointMismatchError for different arrays, returns a reason when the
        metadata cannot be read, None when the step looks restorable."""
        try:
            saved = self.manager.item_metadata(step)["state"]
            if saved is None:
                return "its train state has no metadata"
            difference = shape_mismatch(saved, abstract_state)
        except Exception as e:  # noqa: BLE001 -- a metadata file missing or corrupt
            return one_line(e)
        if difference is not None:
            raise CheckpointMismatchError(
                f"checkpoint {self.directory} step {step} was written for a different model "
                f"or optimiser: {difference}; resume with the config that wrote it, or train "
                "this config in another workdir")
        return None

    def _set_aside(self, step: int) -> str:
        """Moves an unreadable step out of the manager's directory (process 0; kept for
        inspection, not deleted) and makes the manager forget it."""
        target = os.path.join(self.quarantine, f"step_{step}")
        if jax.process_index() == 0:
            os.makedirs(self.quarantine, exist_ok=True)
            suffix = 1
            while os.path.exists(target):
                target = os.path.join(self.quarantine, f"step_{step}.{suffix}")
                suffix += 1
            # Step directories are named by the bare step number (no step_prefix);
            # one that vanished (a filesystem hiccup) has nothing to move.
            source = os.path.join(self.directory, str(step))
            if os.path.exists(source):
                shutil.move(source, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"checkpoint step {step} set aside")
        self.manager.reload()
        return target

    def wait(self) -> None:
        """Blocks until the save in flight is committed (CheckpointSaveError if it
        failed)."""
        step = self._pending_step
        with self._failure_of(step if step is not None else -1):
            self.manager.wait_until_finished()
        self._pending_step = None
        self._note_history()

    def close(self) -> None:
        self.manager.close()


class _SaveFailure:
    """Turns an exception of a save (orbax re-raises a background thread's) into one
    CheckpointSaveError line naming the step and the newest complete checkpoint."""

    def __init__(self, checkpointer: Checkpointer, step: int):
        self.checkpointer, self.step = checkpointer, step

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or not isinstance(error, Exception) or isinstance(
                error, CheckpointSaveError):
            return False
        c = self.checkpointer
        c._pending_step = None
        complete = sorted(int(n) for n in os.listdir(c.directory) if n.isdigit()) \
            if os.path.isdir(c.directory) else []
        newest = f"step {complete[-1]}" if complete else "none"
        raise CheckpointSaveError(
            f"saving checkpoint step {self.step} to {c.directory} failed ({one_line(error)}); "
            f"the newest complete checkpoint is {newest}; free space or fix the workdir, "
            "then run the same command to resume from it") from error


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying the target shardings, for restoring onto a mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def checkpoint_steps(workdir: str) -> list[int]:
    """The steps of a run's complete checkpoints, oldest first."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints under {workdir}")
    manager = ocp.CheckpointManager(directory, item_names=("state", "data"),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    return sorted(manager.all_steps())


def load_params(workdir: str, abstract_params: Any, shardings: Any, *,
                ema: bool = True, step: int | None = None) -> Any:
    """Params (EMA by default) of another run's latest checkpoint (or of `step`), for
    `init_from` and sampling. A missing run or one whose params differ in shape is an
    error."""
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints under {workdir}")
    manager = ocp.CheckpointManager(directory, item_names=("state", "data"),
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    if step is None:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint under {directory}")
    elif step not in manager.all_steps():
        raise FileNotFoundError(f"no checkpoint of step {step} under {directory} (it has "
                                f"{sorted(manager.all_steps())})")
    key = "ema_params" if ema else "params"
    target = abstract_with_shardings(abstract_params, shardings)
    try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={key: target}, partial_restore=True,
                restore_args=ocp.checkpoint_utils.construct_restore_args({key: target}))))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {directory} step {step} has no {key} matching this "
                         f"model: {one_line(e)}") from e
    # Anything else is a damaged file (tensorstore raises plain Exception): one line
    # naming the step, for the sampling CLIs to print, instead of a page of spec.
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"checkpoint {directory} step {step} cannot be read "
                         f"({one_line(e)}); move that step's directory out of "
                         f"{directory} to use the one before (steps there: "
                         f"{sorted(manager.all_steps())})") from e
    return restored["state"][key]
