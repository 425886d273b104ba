"""Training faults of issue #21 that are the trainer's, not a process's (in-process
`train()` on one device): diverged weights are never saved, a stop saves the save in
flight, a full disk is one CheckpointSaveError at the save that failed. The faults of
a process (Ctrl-C, a second run, a refused resume, unreadable checkpoints, one line
per fault) run the real CLI: test_training_cli_faults.py."""

from __future__ import annotations

import errno
import glob
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import imagen
from imagen_jax.train import checkpoint as ckpt_lib
from imagen_jax.train.trainer import train

ONE = jax.devices()[:1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def _config(data_dir: str, *, steps: int = 4, every: int = 2, async_save: bool = False,
            **train_fields):
    c = imagen.get_config("tiny,base64")
    c.data.data_dir = data_dir
    c.data.num_train, c.data.num_test, c.data.shuffle_buffer = 32, 8, 32
    c.train.steps, c.train.warmup_steps = steps, 2
    c.train.update(train_fields)
    c.checkpoint.every_steps = every
    c.checkpoint.async_save = async_save
    c.log.every_steps = 1
    c.log.progress_bar = False
    c.mesh.update(data=1)
    return c


def _saved_steps(workdir: str) -> list[int]:
    return ckpt_lib.checkpoint_steps(workdir)


def _saved_arrays(workdir: str, step: int) -> dict:
    """Every array of a saved train state, read back from disk as it is."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    return ocp.StandardCheckpointer().restore(path)


def _nonfinite_or_huge(tree) -> list[str]:
    """Key paths of the floating-point arrays that hold an inf/NaN, or weights whose
    float32 norm overflows (diverged: |w| >~ 1e19)."""
    bad = []
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
            if not np.all(np.isfinite(x)) or np.abs(x).max(initial=0.0) > 1e19:
                bad.append(jax.tree_util.keystr(path))
    return bad


def _leftover_tmp(workdir: str) -> list[str]:
    return glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*"))


def test_diverging_updates_are_skipped_and_never_saved(data_dir, tmp_path):
    """learning_rate=1e38 without warmup: the first step's loss is finite but its update
    is not (Adafactor lands weights of ~1e36 whose norm overflows). With 'skip' every
    such update is dropped: the checkpoints hold the initial weights, all finite."""
    workdir = str(tmp_path / "run")
    losses = []
    config = _config(data_dir, learning_rate=1e38, warmup_steps=0, nonfinite="skip")
    state = train(config, workdir, devices=ONE,
                  on_step=lambda step, m: losses.append(float(m["loss"])))
    assert int(state.step) == 4 and int(state.nonfinite_steps) == 4
    assert np.all(np.isfinite(losses)), losses  # the weights never moved: the loss is finite
    # (Orbax saves a run's first step too, whatever the interval.)
    assert _saved_steps(workdir) == [1, 2, 4]
    for step in (1, 2, 4):
        saved = _saved_arrays(workdir, step)
        assert _nonfinite_or_huge(saved) == [], step
        assert int(saved["nonfinite_steps"]) == step


def test_diverging_update_stops_the_run_before_it_is_saved(data_dir, tmp_path):
    """'error': the run stops at the first step whose update diverges, and the step
    before it (saved every step here) holds finite weights; the diverged one is not
    saved."""
    workdir = str(tmp_path / "run")
    # Warmup from lr 0: step 1 updates by 0 (finite, saved), step 2 by 1e38 / 2.
    config = _config(data_dir, every=1, learning_rate=1e38, warmup_steps=2,
                     nonfinite="error")
    with pytest.raises(FloatingPointError, match=r"at step 2 \(loss=") as e:
        train(config, workdir, devices=ONE)
    assert "\n" not in str(e.value)
    assert _saved_steps(workdir) == [1]
    assert _nonfinite_or_huge(_saved_arrays(workdir, 1)) == []


def test_nonfinite_stop_commits_the_save_in_flight(data_dir, tmp_path):
    """An asynchronous save of step 1 is under way when step 2 diverges: the error
    that stops the run waits for it, so step 1 is complete and no temporary directory is
    left (before, the newest step was lost to `1.orbax-checkpoint-tmp`)."""
    workdir = str(tmp_path / "run")
    config = _config(data_dir, every=1, async_save=True, learning_rate=1e38,
                     warmup_steps=2, nonfinite="error")
    with pytest.raises(FloatingPointError, match="at step 2"):
        train(config, workdir, devices=ONE)
    assert _saved_steps(workdir) == [1]
    assert _leftover_tmp(workdir) == []
    assert os.path.exists(os.path.join(workdir, "checkpoints", "1", "commit_success.txt"))


def test_an_error_in_the_loop_commits_the_save_in_flight(data_dir, tmp_path):
    """Any exception out of the loop (here one raised after step 3, while step 3's
    asynchronous save is in flight) is raised only once that save is complete."""
    workdir = str(tmp_path / "run")

    def fail_at_3(step, metrics):
        if step == 3:
            raise RuntimeError("stopped by the test")

    # The checkpoint of step 2 is in flight while step 3 runs.
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(_config(data_dir, every=2, async_save=True), workdir, devices=ONE,
              on_step=fail_at_3)
    assert _saved_steps(workdir) == [1, 2]
    assert _leftover_tmp(workdir) == []


def test_full_disk_is_one_error_at_the_save_that_failed(data_dir, tmp_path, monkeypatch):
    """ENOSPC while step 4 is written (the data-iterator item; the arrays' writes are
    tensorstore's, out of Python's reach): CheckpointSaveError names step 4 and the
    newest complete step, 2, before step 5 is trained; step 2 stays the newest and
    restorable, and the next start removes step 4's remains."""
    workdir = str(tmp_path / "run")
    save = ckpt_lib.DataIteratorHandler.save

    def full_at_step_4(self, directory, args):
        if os.path.basename(os.path.dirname(str(directory))).startswith("4"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
        return save(self, directory, args)

    monkeypatch.setattr(ckpt_lib.DataIteratorHandler, "save", full_at_step_4)
    steps = []
    with pytest.raises(ckpt_lib.CheckpointSaveError) as e:
        train(_config(data_dir, steps=8, async_save=True), workdir, devices=ONE,
              on_step=lambda step, m: steps.append(step))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"saving checkpoint step 4 to {workdir}/checkpoints failed ")
    assert "No space left on device" in message
    assert "the newest complete checkpoint is step 2" in message
    assert max(steps) <= 5, steps  # reported at the save, not steps later
    assert _saved_steps(workdir) == [1, 2]

    monkeypatch.setattr(ckpt_lib.DataIteratorHandler, "save", save)
    state = train(_config(data_dir, steps=4), workdir, devices=ONE)
    assert int(state.step) == 4 and _saved_steps(workdir) == [1, 2, 4]
    assert _leftover_tmp(workdir) == []
