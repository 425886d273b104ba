"""One training run per workdir.

Two runs on one workdir destroy each other's checkpoints (each removes the other's
half-written steps, then one waits in Orbax's barrier). The first run holds an
exclusive `flock` on WORKDIR/.lock; a second one stops at once with one line naming
the holder (host, pid, start time), which the holder writes into the file. The kernel
releases the lock when the holding process dies, however it dies, so a killed run
never leaves the workdir locked. In a multi-host job (hosts sharing the workdir)
process 0 holds the lock for the job and tells the others whether it got it.

A workdir that is not a local or mounted path (gs://...) cannot be flock-ed: it is
not locked, with a warning.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from typing import Any

from absl import logging
import jax
import numpy as np

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
    """Another training run holds the workdir."""


class WorkdirLock:
    """`with WorkdirLock(workdir):` — held for the run, released on exit."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        holder = None
        if jax.process_index() == 0:
            holder = self._acquire()
        if not _everyone_knows(holder is None):
            where = (f": {holder}" if holder else " (found by process 0 of this job)")
            raise WorkdirBusyError(
                f"{self.workdir} is in use by another training run{where}; stop that run "
                f"or train in another workdir (the lock is {self.path})")
        return self

    def _acquire(self) -> str | None:
        """Takes the lock; returns None, or the holder's description when it is held."""
        if "://" in self.workdir:
            logging.warning("%s is not a local path: not locked against a second run",
                            self.workdir)
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)[:500]}).encode())
        self._fd = fd
        return None

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            # Emptied before it is released: the file then reads the same before and
            # after a run (a refused resume changes no file of the workdir).
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _describe(content: bytes) -> str:
    try:
        holder = json.loads(content.decode() or "{}")
        return (f"pid {holder['pid']} on {holder['host']} since {holder['since']} "
                f"({holder['command']})")
    except (ValueError, KeyError, UnicodeDecodeError):
        return "a process that has not yet written its name"


def _everyone_knows(ok: bool) -> bool:
    """Process 0's `ok`, on every process of the job."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))
