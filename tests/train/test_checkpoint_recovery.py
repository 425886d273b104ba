"""Corrupted run directories: the trainer never loads a broken checkpoint, falls back to
the previous complete one with a one-line warning, or stops with an error naming what
is wrong; never a silent fresh start. (Kills and SIGTERM: test_preemption_soak.py.)"""

import glob
import logging
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import imagen
from imagen_jax.train import checkpoint as ckpt_lib
from imagen_jax.train.trainer import initial_state, read_metrics, setup, train

ONE = jax.devices()[:1]

# Orbax reads arrays in coroutines; when one read fails, the others are dropped and
# Python reports each as an unraisable exception at garbage collection. Expected here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _config(data_dir, steps=3, channels=(16, 32)):
    c = imagen.get_config("tiny,base64")
    c.data.data_dir = data_dir
    c.data.num_train, c.data.num_test, c.data.shuffle_buffer = 32, 8, 32
    c.model.channels = channels
    c.train.steps, c.train.warmup_steps = steps, 2
    c.checkpoint.every_steps, c.checkpoint.keep, c.checkpoint.async_save = 1, 3, False
    c.log.every_steps, c.log.progress_bar = 1, False
    c.mesh.update(data=1)
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step run with checkpoints at steps 1, 2, 3, and its step-2 params."""
    root = tmp_path_factory.mktemp("recovery")
    data_dir, workdir = str(root / "tfds"), str(root / "run")
    train(_config(data_dir, steps=3), workdir, devices=ONE)
    assert glob.glob(os.path.join(workdir, "events.out.tfevents.*"))  # TensorBoard
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]
    step2 = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "2",
                                                            "state"))["params"]
    return data_dir, workdir, step2


@pytest.fixture(scope="module")
def target(trained):
    """This run's train state as restore targets, and its input iterator (built once:
    a setup() per case would rebuild the input pipeline each time)."""
    data_dir, workdir, _ = trained
    run = setup(_config(data_dir), workdir, devices=ONE)
    run.checkpointer.close()
    return ckpt_lib.abstract_with_shardings(run.abstract_state, run.state_shardings), \
        run.iterator


def _copy(trained, tmp_path):
    data_dir, workdir, step2 = trained
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    return data_dir, copy, step2


def _restore(target, workdir):
    """What initial_state does with a workdir that has checkpoints."""
    abstract_state, iterator = target
    checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), save_every=1,
                                         keep=3, async_save=False, retry_delay_s=0.01)
    try:
        return checkpointer.restore(abstract_state, iterator)
    finally:
        checkpointer.close()


def _delete_array_files(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
    assert files
    for f in files:
        os.remove(f)


def _truncate_array_files(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
    assert files
    for f in files:
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _delete(relative):
    def corrupt(step_dir):
        path = os.path.join(step_dir, relative)
        (shutil.rmtree if os.path.isdir(path) else os.remove)(path)
    return corrupt


def _truncate_iterator(step_dir):
    for f in glob.glob(os.path.join(step_dir, "data", "process_0", "*")):
        with open(f, "r+b") as fh:
            fh.truncate(10)


def _empty(step_dir):
    for entry in os.listdir(step_dir):
        _delete(entry)(step_dir)


@pytest.mark.parametrize("corrupt, reason", [
    (_delete_array_files, r"Error reading .* in OCDBT database"),
    (_truncate_array_files, r"Error reading .* in OCDBT database"),
    (_delete("state/_METADATA"), r"no metadata"),
    (_delete("state/manifest.ocdbt"), r"NOT_FOUND"),
    (_delete("data"), r"Item \"data\" was not found"),
    (_truncate_iterator, r"too short"),
    (_empty, r"Unknown key: state"),
], ids=["array-files-deleted", "array-files-truncated", "state-metadata-deleted",
        "ocdbt-manifest-deleted", "iterator-item-deleted", "iterator-truncated", "emptied"])
def test_unreadable_latest_step_falls_back_to_the_previous_one(trained, target, tmp_path,
                                                               caplog, corrupt, reason):
    data_dir, workdir, step2 = _copy(trained, tmp_path)
    corrupt(os.path.join(workdir, "checkpoints", "3"))
    with caplog.at_level(logging.WARNING):
        state = _restore(target, workdir)
    assert int(state.step) == 2
    for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(step2)):
        np.testing.assert_array_equal(a, b)
    warnings = [r.getMessage() for r in caplog.records
                if "is unreadable" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "checkpoint step 3 of" in warnings[0] and "trying step 2" in warnings[0]
    assert re.search(reason, warnings[0]), warnings[0]
    # Kept for inspection, out of the manager's way: the next save of step 3 works.
    assert os.path.isdir(os.path.join(workdir, "unreadable_checkpoints", "step_3"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]


def test_no_readable_step_is_an_error_not_a_fresh_start(trained, target, tmp_path):
    data_dir, workdir, _ = _copy(trained, tmp_path)
    for step in ("1", "2", "3"):
        _delete_array_files(os.path.join(workdir, "checkpoints", step))
    with pytest.raises(ckpt_lib.UnreadableCheckpointError) as e:
        _restore(target, workdir)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"no readable checkpoint in {workdir}/checkpoints (step 3: ")
    assert "step 2: " in message and "step 1: " in message and "--allow_fresh_start" in message


def test_checkpoint_of_another_config_is_an_error_naming_the_array(trained, tmp_path):
    data_dir, workdir, _ = _copy(trained, tmp_path)
    run = setup(_config(data_dir, channels=(8, 32)), workdir, devices=ONE)
    with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
        initial_state(run)  # the trainer's own path: an error, not a fresh init
    run.checkpointer.close()
    message = str(e.value)
    assert "\n" not in message
    assert "step 3 was written for a different model or optimiser" in message
    assert "params/conv_in/conv/bias is float32[16] there, float32[8] here" in message
    # Nothing moved: the checkpoints are fine, the config is not.
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2", "3"]


def test_half_written_step_of_a_killed_save_is_ignored_and_removed(trained, target, tmp_path):
    data_dir, workdir, step2 = _copy(trained, tmp_path)
    checkpoints = os.path.join(workdir, "checkpoints")
    # What a kill during an async save leaves: the step's temporary directory.
    shutil.move(os.path.join(checkpoints, "3"),
                os.path.join(checkpoints, "3.orbax-checkpoint-tmp-1234567"))
    state = _restore(target, workdir)
    assert int(state.step) == 2
    assert sorted(os.listdir(checkpoints)) == ["1", "2"]


def test_shape_mismatch_reports_the_first_difference():
    s = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
    want = {"a": s(2), "b": {"c": s(3, 4)}}
    assert ckpt_lib.shape_mismatch({"a": s(2), "b": {"c": s(3, 4)}}, want) is None
    assert ckpt_lib.shape_mismatch({"a": s(2), "b": {"c": s(3, 5)}}, want) == (
        "b/c is float32[3, 5] there, float32[3, 4] here")
    assert ckpt_lib.shape_mismatch({"a": s(2)}, want) == "it has no array b/c"
    assert ckpt_lib.shape_mismatch({"a": s(2), "b": {"c": s(3, 4)}, "d": s(1)}, want) == (
        "it has an array d this run does not")
    int_a = {"a": jax.ShapeDtypeStruct((2,), np.int32), "b": {"c": s(3, 4)}}
    assert ckpt_lib.shape_mismatch(int_a, want) == "a is int32[2] there, float32[2] here"


def test_sampling_from_a_damaged_checkpoint_is_a_one_line_error(trained, target, tmp_path):
    _, workdir, _ = _copy(trained, tmp_path)
    _delete_array_files(os.path.join(workdir, "checkpoints", "3"))
    params = target[0].params
    shardings = jax.tree.map(lambda x: x.sharding, params)
    with pytest.raises(ValueError) as e:  # what imagen_jax.sample / unclip_jax.generate print
        ckpt_lib.load_params(workdir, params, shardings)
    message = str(e.value)
    assert "\n" not in message and len(message) < 700, message
    assert re.search(r"step 3 cannot be read \(ValueError: .*Error reading", message), message
    assert "steps there: [1, 2, 3]" in message
    ckpt_lib.load_params(workdir, params, shardings, step=2)  # earlier steps still load
