"""The launch scripts in --dry-run: every worker runs the same training command with
the right way of joining the job. (local_multihost.sh also runs for real in
tests/parallel/test_multihost.py.)"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/imagen.py:paper,base64"


def _with_dry_run(args: tuple[str, ...]) -> list[str]:
    """--dry-run among the script's own options (before `--`, after which main's go)."""
    args = list(args)
    at = args.index("--") if "--" in args else len(args)
    return args[:at] + ["--dry-run"] + args[at:]


def _dry_run(script: str, *args: str) -> list[list[str]]:
    result = subprocess.run(["bash", os.path.join(REPO, "launch", script),
                             *_with_dry_run(args)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def _fails(script: str, *args: str) -> str:
    result = subprocess.run(["bash", os.path.join(REPO, "launch", script),
                             *_with_dry_run(args)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "\n" not in result.stderr.strip(), result.stderr  # one line
    return result.stderr


def _main_flags(words: list[str]) -> list[str]:
    start = words.index("imagen_jax.main")
    return words[start + 1:]


def test_tpu_pod_runs_the_same_command_on_every_worker():
    common = ["--name=imagen", "--zone=us-central2-b"]
    (create,) = _dry_run("tpu_pod.sh", "create", *common, "--type=v4-32")
    assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert "--accelerator-type=v4-32" in create
    setup = _dry_run("tpu_pod.sh", "setup", *common)
    assert any("--worker=all" in c and "scp" in c for c in setup)
    install = [c for c in setup if "ssh" in c][0]
    assert "--worker=all" in install and "setup_env.sh" in install[-1]
    (train,) = _dry_run("tpu_pod.sh", "train", *common, f"--config={CONFIG}",
                        "--workdir=gs://bucket/run", "--", "--config.train.steps=10")
    assert train[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "imagen"]
    assert "--worker=all" in train and "--zone=us-central2-b" in train
    remote = shlex.split(next(w for w in train if w.startswith("--command="))[len("--command="):])
    flags = _main_flags(remote)
    assert f"--config={CONFIG}" in flags and "--workdir=gs://bucket/run" in flags
    assert "--distributed" in flags and "--config.train.steps=10" in flags
    for action in ("stop", "delete"):
        (cmd,) = _dry_run("tpu_pod.sh", action, *common)
        assert cmd[4] == ("ssh" if action == "stop" else "delete")
    assert "gs://" in _fails("tpu_pod.sh", "train", *common, f"--config={CONFIG}",
                             "--workdir=/local/dir")
    assert "--zone" in _fails("tpu_pod.sh", "create", "--name=x")


def test_gpu_slurm_and_plain_hosts():
    (srun,) = _dry_run("gpu_multinode.sh", "slurm", "--nodes=4", "--gpus_per_node=8",
                       f"--config={CONFIG}", "--workdir=/shared/run")
    assert srun[0] == "srun" and "--nodes=4" in srun and "--ntasks-per-node=1" in srun
    assert "--distributed" in _main_flags(srun)
    hosts = _dry_run("gpu_multinode.sh", "hosts", "--hosts=gpu0,gpu1,gpu2", "--port=9000",
                     f"--config={CONFIG}", "--workdir=/shared/run", "--", "--config.seed=3")
    assert [h[1] for h in hosts] == ["gpu0", "gpu1", "gpu2"]
    for i, (ssh, host, remote) in enumerate(hosts):
        flags = _main_flags(shlex.split(remote))
        assert f"--config={CONFIG}" in flags and "--config.seed=3" in flags
        assert "--coordinator_address=gpu0:9000" in flags
        assert "--num_processes=3" in flags and f"--process_id={i}" in flags
    assert "--nodes" in _fails("gpu_multinode.sh", "slurm", f"--config={CONFIG}",
                               "--workdir=/x")


def test_local_multihost_binds_localhost_with_one_id_per_process():
    commands = _dry_run("local_multihost.sh", "--num_processes=3", "--devices_per_process=2",
                        "--", f"--config={CONFIG}", "--workdir=/tmp/run")
    assert len(commands) == 3
    for i, cmd in enumerate(commands):
        # Its own device count, the caller's other flags kept (this suite's: 8 devices
        # dropped, backend optimisation level kept).
        xla = [w for w in cmd if w.startswith("XLA_FLAGS=")]
        assert len(xla) == 1 and xla[0].split()[0] == (
            "XLA_FLAGS=--xla_force_host_platform_device_count=2"), xla
        assert "device_count=8" not in xla[0]
        assert "--xla_backend_optimization_level=0" in xla[0].split()
        flags = _main_flags(cmd)
        assert f"--config={CONFIG}" in flags
        assert "--coordinator_address=127.0.0.1:PORT" in flags
        assert "--num_processes=3" in flags and f"--process_id={i}" in flags
        assert cmd[-2:] == [">", f"/tmp/run/process_{i}.log"]
    assert "positive integer" in _fails("local_multihost.sh", "--num_processes=0", "--",
                                        "--workdir=/x")


@pytest.mark.parametrize("flags, message", [
    (["--coordinator_address=127.0.0.1:1234"], "needs num_processes and process_id"),
    (["--num_processes=2", "--process_id=0"], "without coordinator_address"),
    (["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"], "host:port"),
    (["--coordinator_address=h:1", "--num_processes=2", "--process_id=2"], "[0, 2)"),
    (["--distributed", "--num_processes=2"], "auto detection"),
])
def test_main_rejects_bad_distributed_flags_in_one_line(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "imagen_jax.main", "--config=configs/imagen.py:tiny,base64",
         f"--workdir={tmp_path}", *flags], cwd=REPO, capture_output=True, text=True,
        timeout=120, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1]
    assert not os.listdir(tmp_path)  # nothing started
