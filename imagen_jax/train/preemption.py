"""SIGTERM (a preemption notice) and Ctrl-C: finish the step, save a checkpoint, stop.

Cloud TPU VMs, GKE and SLURM send SIGTERM some seconds before they take a machine
away; a person at the terminal presses Ctrl-C. One process: a Python handler records
the signal and the loop asks after every step; the trainer saves the step it stops at
and waits for the save to commit. A second Ctrl-C raises KeyboardInterrupt at once (a
paper-size first compile takes minutes); the trainer still waits for a save in flight.
Several processes: jax.distributed's preemption service (on by default) catches
SIGTERM on whichever host gets it and agrees on one step at which *every* process
stops; `reached_preemption_sync_point` must then be asked at every step by all of them,
which the loop does.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
    """`stop_at(step)` is True once SIGTERM or SIGINT has arrived (SIGTERM: on any
    process of the job); `signum` says which (None before any)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._multiprocess = jax.process_count() > 1
        # signal.signal works only in the main thread; elsewhere (a notebook's worker
        # thread) the signals keep their default actions. Several processes: SIGTERM
        # is the preemption service's, and Ctrl-C stays KeyboardInterrupt (a stop
        # that one process alone decided would leave the others in a collective).
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    @property
    def signalled(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signum = self.signum or signum
        logging.warning("received signal %d: saving a checkpoint after this step%s", signum,
                        " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")

    def stop_at(self, step: int) -> bool:
        if not self._multiprocess:
            return self.signalled
        try:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signum = signal.SIGTERM
                return True
            return False
        except RuntimeError:  # jax.config.jax_enable_preemption_service switched off
            return False

    def close(self) -> None:
        """Puts the previous handlers back (train() may be called again)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def __enter__(self) -> "PreemptionWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
