"""The faults of a training process (issue #21), each through the real CLI,
`python -m imagen_jax.main`, on the tiny base64 config with a checkpoint every 2 steps:
checkpoints missing for a moment or for good, Ctrl-C, a second run on the workdir, a
resume with a changed config, and the one line every fault prints.

Every run shares one dataset and one compilation cache, so that a start costs the
imports and the restore (~15 s on 2 cores), not a compile. In-process faults (diverged
weights, a save in flight at an error, a full disk): test_training_faults.py."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from tests.xla_env import process_xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300


@dataclass
class Base:
    data_dir: str
    cache_dir: str
    workdir: str  # trained to step 4, checkpoints 1, 2 and 4


def _args(base: Base, workdir: str, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "imagen_jax.main", "--config=configs/imagen.py:tiny,base64",
            f"--workdir={workdir}", f"--compilation_cache={base.cache_dir}",
            f"--config.data.data_dir={base.data_dir}", "--config.data.num_train=32",
            "--config.data.num_test=8", "--config.data.shuffle_buffer=32",
            f"--config.train.steps={steps}", "--config.train.warmup_steps=2",
            "--config.checkpoint.every_steps=2", "--config.checkpoint.async_save=True",
            "--config.checkpoint.read_retry_s=0.1", "--config.log.every_steps=1",
            "--config.log.progress_bar=False", "--config.mesh.data=1", *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, XLA_FLAGS=process_xla_flags(1),
                PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _one_error_line(stderr: str) -> str:
    """The fault's line: the last of stderr, the only 'error:' line, no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    return errors[0]


def _steps(workdir: str) -> list[int]:
    names = os.listdir(os.path.join(workdir, "checkpoints"))
    return sorted(int(n) for n in names if n.isdigit())


def _tmp_dirs(workdir: str) -> list[str]:
    return glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*"))


def _metric_steps(workdir: str) -> list[int]:
    import json
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


def _array_dirs(workdir: str) -> list[str]:
    """The array data of every checkpoint step (what a filesystem hiccup hides)."""
    found = glob.glob(os.path.join(workdir, "checkpoints", "*", "state", "ocdbt.process_0",
                                   "d"))
    assert found
    return found


def _hide(dirs: list[str], where: str) -> list[tuple[str, str]]:
    moves = []
    for i, d in enumerate(dirs):
        target = os.path.join(where, str(i))
        shutil.move(d, target)
        moves.append((target, d))
    return moves


def _snapshot(workdir: str) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under `workdir`; the lock
    file's content only (every start takes the lock, and leaves the file empty)."""
    files = {}
    for root, _, names in os.walk(workdir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            files[os.path.relpath(path, workdir)] = (
                digest, 0 if name == ".lock" else os.stat(path).st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("cli_faults")
    b = Base(str(root / "tfds"), str(root / "cache"), str(root / "run"))
    proc = _run(_args(b, b.workdir, 4))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _steps(b.workdir) == [1, 2, 4]
    return b


def _copy(base: Base, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(base.workdir, workdir)
    return workdir


def test_files_missing_for_a_moment_are_read_again_not_set_aside(base, tmp_path):
    """Every step's arrays vanish (a network filesystem hiccup) and come back while the
    start waits to read them again: it resumes from step 4, nothing set aside."""
    workdir = _copy(base, tmp_path)
    moves = _hide(_array_dirs(workdir), str(tmp_path))
    proc = _start(_args(base, workdir, 6, "--config.checkpoint.read_retry_s=3"))
    stderr = []

    def put_back_at_the_first_failed_read():
        for line in proc.stderr:
            stderr.append(line)
            if "could not be read" in line and moves:
                for hidden, original in moves:
                    shutil.move(hidden, original)
                moves.clear()

    reader = threading.Thread(target=put_back_at_the_first_failed_read)
    reader.start()
    proc.wait(timeout=TIMEOUT)
    reader.join()
    stderr = "".join(stderr)
    assert proc.returncode == 0, stderr[-3000:]
    assert "reading it again in 3.0 s" in stderr
    assert f"resumed from {workdir}/checkpoints step 4" in stderr
    assert not os.path.exists(os.path.join(workdir, "unreadable_checkpoints"))
    assert _metric_steps(workdir) == [1, 2, 3, 4, 5, 6]


def test_unreadable_checkpoints_never_restart_the_run_from_step_0(base, tmp_path):
    """Every step unreadable for good: the first start sets them aside and stops; the
    next start stops too (no silent start from step 0) and prints, for each step set
    aside, the command that puts it back; --allow_fresh_start trains from step 0; the
    printed command restores a step, from which the run resumes."""
    workdir = _copy(base, tmp_path)
    hidden = _hide(_array_dirs(workdir), str(tmp_path))
    set_aside = os.path.join(workdir, "unreadable_checkpoints")

    first = _run(_args(base, workdir, 6))
    assert first.returncode == 1
    line = _one_error_line(first.stderr)
    assert line.startswith(f"error: no readable checkpoint in {workdir}/checkpoints (step 4: ")
    assert "--allow_fresh_start" in line
    assert sorted(os.listdir(set_aside)) == ["step_1", "step_2", "step_4"]

    again = _run(_args(base, workdir, 6))
    assert again.returncode == 1
    assert _one_error_line(again.stderr).startswith(
        f"error: {workdir} has held checkpoints but {workdir}/checkpoints has no complete "
        "step now (3 set aside as unreadable")
    commands = {}
    for line in again.stderr.splitlines():
        if line.startswith("warning: checkpoint ") and "set aside as unreadable" in line:
            commands[line.split()[2]] = line.split("whole again: ", 1)[1]
    assert sorted(commands) == [os.path.join(set_aside, f"step_{s}") for s in (1, 2, 4)]
    assert _metric_steps(workdir) == [1, 2, 3, 4]  # nothing trained

    fresh = _run(_args(base, workdir, 2, "--allow_fresh_start"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "starting afresh" in fresh.stderr
    assert _steps(workdir) == [1, 2]
    assert _metric_steps(workdir) == [1, 2, 3, 4, 1, 2]

    # The step-4 files are whole again: the printed command puts the step back.
    step_4 = os.path.join(set_aside, "step_4")
    for moved_from, original in hidden:
        if original.startswith(os.path.join(workdir, "checkpoints", "4") + os.sep):
            shutil.move(moved_from, original.replace(os.path.join(workdir, "checkpoints", "4"),
                                                     step_4))
    subprocess.run(commands[step_4], shell=True, check=True)
    assert _steps(workdir) == [1, 2, 4]
    resumed = _run(_args(base, workdir, 6))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {workdir}/checkpoints step 4" in resumed.stderr
    assert _metric_steps(workdir)[-2:] == [5, 6]


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = TIMEOUT):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)


def test_ctrl_c_saves_its_step_and_a_second_run_is_refused_while_it_trains(base, tmp_path):
    """A run trains; a second command on the same workdir stops at once naming the
    first's pid; Ctrl-C then saves the step the first run is at, commits it and exits
    130 with one line. A run killed with SIGKILL does not leave the workdir locked."""
    workdir = _copy(base, tmp_path)
    holder = _start(_args(base, workdir, 1000))
    try:
        _wait_for(lambda: max(_metric_steps(workdir)) >= 6, "step 6", holder)
        second = _run(_args(base, workdir, 1000))
        assert second.returncode == 1
        assert _one_error_line(second.stderr).startswith(
            f"error: {workdir} is in use by another training run: pid {holder.pid} on ")
        holder.send_signal(signal.SIGINT)
        _, stderr = holder.communicate(timeout=TIMEOUT)
    finally:
        holder.kill()
    assert holder.returncode == 130, stderr[-3000:]
    line = _one_error_line(stderr)
    prefix = "error: interrupted (Ctrl-C) at step "
    assert line.startswith(prefix) and line.endswith(
        f" of 1000: checkpoint saved in {workdir}/checkpoints; run the same command to "
        "resume"), line
    stopped_at = int(line[len(prefix):].split()[0])
    assert stopped_at > 6 and _steps(workdir)[-1] == stopped_at
    assert _tmp_dirs(workdir) == []

    # A run killed outright leaves no lock behind: the next start gets the workdir.
    killed = _start(_args(base, workdir, 1000))
    try:
        _wait_for(lambda: max(_metric_steps(workdir)) > stopped_at, "a step", killed)
    finally:
        killed.kill()
        killed.wait()
    after_kill = _run(_args(base, workdir, max(_metric_steps(workdir)) + 1))
    assert after_kill.returncode == 0, after_kill.stderr[-3000:]
    assert "in use by another training run" not in after_kill.stderr


def test_resume_with_a_changed_config_is_refused_unchanged_or_said(base, tmp_path):
    """A batch size change is refused in one line naming the field, and every file of
    the workdir stays as it was (config.json included: sampling still works from it);
    a learning-rate change is accepted and said; --resume_with_changes takes the batch
    size change, keeps the weights and restarts the input pipeline."""
    workdir = _copy(base, tmp_path)
    before = _snapshot(workdir)
    refused = _run(_args(base, workdir, 6, "--config.train.batch_size=4"))
    assert refused.returncode == 1
    assert _one_error_line(refused.stderr) == (
        f"error: resuming {workdir} with a config that changes train.batch_size (8 -> 4): "
        "fields that cannot change mid-run; run the config it was trained with, train in "
        "another workdir, or pass --resume_with_changes to keep the weights and restart "
        "the input pipeline")
    assert _snapshot(workdir) == before

    accepted = _run(_args(base, workdir, 6, "--config.train.learning_rate=0.0002"))
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "resume: train.learning_rate 0.0001 -> 0.0002: accepted" in accepted.stderr
    assert "resume: train.steps 4 -> 6: accepted" in accepted.stderr
    assert f"resumed from {workdir}/checkpoints step 4" in accepted.stderr
    assert "input pipeline restarted" not in accepted.stderr

    changed = _run(_args(base, workdir, 8, "--config.train.learning_rate=0.0002",
                         "--config.train.batch_size=4", "--resume_with_changes"))
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert ("resume: train.batch_size 8 -> 4: changed with --resume_with_changes (the input "
            "pipeline starts afresh)") in changed.stderr
    assert f"resumed from {workdir}/checkpoints step 6 (input pipeline restarted)" in \
        changed.stderr
    assert _steps(workdir)[-1] == 8


def test_faults_outside_the_checkpoints_are_one_line(base, tmp_path):
    """A workdir that cannot be created (its parent is a file: the OSError a read-only
    or full filesystem raises too), and a damaged TFRecord of the dataset, named."""
    parent = tmp_path / "a_file"
    parent.write_text("x")
    proc = _run(_args(base, str(parent / "run"), 2))
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr).startswith(
        f"error: NotADirectoryError: [Errno 20] Not a directory: '{parent}")

    data_dir = str(tmp_path / "tfds")
    shutil.copytree(base.data_dir, data_dir)
    [record] = glob.glob(os.path.join(data_dir, "**", "*-train.tfrecord-*"), recursive=True)
    with open(record, "r+b") as f:
        f.truncate(os.path.getsize(record) - 10)
    damaged = Base(data_dir, base.cache_dir, "")
    proc = _run(_args(damaged, str(tmp_path / "run"), 2))
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert record in line, line
