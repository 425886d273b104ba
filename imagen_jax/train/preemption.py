"""SIGTERM as a preemption notice: finish the step, save a checkpoint, stop.

Cloud TPU VMs, GKE and SLURM send SIGTERM some seconds before they take a machine
away. One process: a Python handler records the signal and the loop asks after every
step. Several processes: jax.distributed's preemption service (on by default) catches
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
    """`stop_at(step)` is True once SIGTERM has arrived (on any process of the job)."""

    def __init__(self) -> None:
        self.signalled = False
        self._previous: Any = None
        self._multiprocess = jax.process_count() > 1
        # signal.signal works only in the main thread; elsewhere (a notebook's worker
        # thread) SIGTERM keeps its default action.
        if not self._multiprocess and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.signalled = True
        logging.warning("received signal %d: saving a checkpoint after this step", signum)

    def stop_at(self, step: int) -> bool:
        if not self._multiprocess:
            return self.signalled
        try:
            return multihost_utils.reached_preemption_sync_point(step)
        except RuntimeError:  # jax.config.jax_enable_preemption_service switched off
            return False

    def close(self) -> None:
        """Puts the previous SIGTERM handler back (train() may be called again)."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __enter__(self) -> "PreemptionWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
