"""Orbax checkpoints of the train state *and* the input iterator's position.

One `ocp.CheckpointManager` per run, under WORKDIR/checkpoints, with async saves and
keep-N. Each step directory holds two items: 'state' (the TrainState pytree,
restored onto whatever shardings the caller asks for, so a checkpoint saved on one
mesh restores onto another) and 'data' (every process's tf.data iterator state, one
file per process, written by a small handler registered below). Orbax only marks
a step complete once both items are written, so a crash mid-save leaves the
previous step as the latest.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from etils import epath
import jax
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


class Checkpointer:
    """Train-state + iterator checkpoints of one run directory."""

    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(int(save_every), 1), max_to_keep=keep or None,
            enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, iterator: Any = None, *, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if iterator is not None:
            items["data"] = DataIteratorSave(iterator)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: Any, iterator: Any = None, step: int | None = None) -> Any:
        """Restores `step` (default: latest) onto `abstract_state`'s shapes and shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data"] = DataIteratorRestore(iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"checkpoint {self.directory} step {step} does not match this "
                             f"run's train state: {e}") from e
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


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
                         f"model: {e}") from e
    return restored["state"][key]
