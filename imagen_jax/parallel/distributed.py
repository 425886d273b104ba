"""Joining JAX's multi-controller runtime: one process per host, all running the same program.

Every process calls `initialize` before anything touches a device. After it,
`jax.devices()` lists the devices of *all* processes, a mesh spans them, and the
one jitted train step runs everywhere in lockstep; each process feeds only its
own devices (`jax.make_array_from_process_local_data` in the input pipeline) and
reads only its own slice of the data (`process_range`).

Three ways in:
  - explicit: coordinator address, process count and this process's id (a plain
    list of per-node commands, `launch/local_multihost.sh`, `launch/gpu_multinode.sh`);
  - auto: `jax.distributed.initialize()` with no arguments, which reads the
    cluster's environment (Cloud TPU pod metadata, SLURM, Open MPI, ...);
  - none: a single process (the default).

Failure handling. JAX's coordination service heartbeats every process; a process
that stops heartbeating for `heartbeat_timeout_s` (killed, host lost) is declared
dead and every surviving process is terminated with an error naming the missing
task, instead of blocking forever in the next collective. Lower the timeout to
fail faster; raise it where long compilations or checkpoint writes stall a host.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, TypeVar

import jax

T = TypeVar("T")

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


@dataclasses.dataclass(frozen=True)
class DistributedOptions:
    """How this process joins a multi-process job (see the module docstring)."""

    coordinator_address: str | None = None  # "host:port" of process 0's coordination service
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False  # let jax detect the cluster (TPU pod, SLURM, MPI)
    initialization_timeout_s: int = 300  # how long to wait for every process to join
    heartbeat_timeout_s: int = 100  # a silent process is declared dead after this

    @property
    def explicit(self) -> bool:
        return self.coordinator_address is not None

    def validate(self) -> None:
        """Raises ValueError naming the bad option."""
        given = {"coordinator_address": self.coordinator_address,
                 "num_processes": self.num_processes, "process_id": self.process_id}
        if self.auto and any(v is not None for v in given.values()):
            raise ValueError("distributed: auto detection takes no coordinator_address, "
                             "num_processes or process_id")
        if not self.explicit:
            extra = [k for k, v in given.items() if v is not None]
            if extra:
                raise ValueError(f"distributed: {', '.join(extra)} given without "
                                 "coordinator_address")
            return
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"distributed: coordinator_address needs {' and '.join(missing)}")
        if not _ADDRESS.match(self.coordinator_address):
            raise ValueError(f"distributed: coordinator_address {self.coordinator_address!r} "
                             "is not host:port")
        port = int(self.coordinator_address.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise ValueError(f"distributed: port {port} of coordinator_address is out of range")
        if self.num_processes < 1:
            raise ValueError(f"distributed: num_processes={self.num_processes} must be >= 1")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"distributed: process_id={self.process_id} is not in "
                             f"[0, {self.num_processes})")
        for name in ("initialization_timeout_s", "heartbeat_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"distributed: {name}={getattr(self, name)} must be >= 1 s")


def initialize(options: DistributedOptions) -> bool:
    """Joins the job `options` describes; returns False (and does nothing) for one process.

    Must run before the first use of a device. On CPU the collectives between
    processes go over gloo (TCP); TPU and GPU backends bring their own.
    """
    options.validate()
    if not (options.explicit or options.auto):
        return False
    # Only the CPU client reads this; without it, cross-process CPU collectives fail.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(initialization_timeout=options.initialization_timeout_s,
                  heartbeat_timeout_seconds=options.heartbeat_timeout_s)
    if options.explicit:
        kwargs.update(coordinator_address=options.coordinator_address,
                      num_processes=options.num_processes, process_id=options.process_id)
    jax.distributed.initialize(**kwargs)
    return True


def process_zero_first(fn: Callable[[], T], name: str) -> T:
    """`fn()` on process 0, then on every other process once process 0 has finished.

    For one-time preparation that writes files (generating a dataset, training the
    offline tokenizer): on a shared filesystem the others then find the files ready
    instead of racing to write them; on per-host disks each host still makes its own.
    """
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    result = fn() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices(f"{name} prepared by process 0")
    return result if jax.process_index() == 0 else fn()
