"""WORKDIR/metrics.jsonl (one JSON line per logged step) and the loop's logging window:
TensorBoard scalars, the JSON lines and the progress bar's postfix."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np

from imagen_jax.train.optimizer import learning_rate_schedule


def append_metrics(workdir: str, step: int, scalars: dict) -> None:
    """One JSON line per logged step in WORKDIR/metrics.jsonl, flushed at once: easy to
    plot, and after a crash it still holds every step logged before it. A resumed run
    appends the steps it redoes again (a killed run's last line may be cut short)."""
    with open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, **scalars}) + "\n")


def drop_partial_metrics_line(workdir: str) -> None:
    """Cuts a last line that a killed run left unfinished, so the resumed run's first
    line starts on a line of its own."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_metrics(workdir: str) -> list[dict]:
    """metrics.jsonl's records in file order, skipping a last line a crash cut short."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if line.endswith("\n"):  # a whole line that is not JSON: not ours
                    raise ValueError(f"{path}: not a JSON line: {line[:80]!r}") from None
    return records



@dataclasses.dataclass
class MetricsLog:
    """Averages the metrics of each log.every_steps window and writes them: TensorBoard
    (clu), WORKDIR/metrics.jsonl (process 0) and the progress bar's postfix."""

    run: Any  # trainer.Run
    writer: Any
    bar: Any
    start: int
    flops: float | None = None  # per step, from XLA's cost analysis
    window: list = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.schedule = learning_rate_schedule(self.run.config.train)
        self.restart_clock(self.start)

    def restart_clock(self, step: int) -> None:
        """Throughput counts from here (after compiling, after each write)."""
        self.last_time, self.last_step = time.perf_counter(), step

    def add(self, step: int, metrics: dict, state: Any) -> None:
        self.window.append(metrics)
        config = self.run.config
        if step % config.log.every_steps and step != config.train.steps:
            return
        steps_per_sec = (step - self.last_step) / max(time.perf_counter() - self.last_time, 1e-9)
        mean = {k: float(np.mean([jax.device_get(m[k]) for m in self.window]))
                for k in self.window[0] if k != "finite"}
        scalars = dict(mean, learning_rate=float(self.schedule(step)),
                       images_per_sec=steps_per_sec * config.train.batch_size,
                       nonfinite_steps=int(jax.device_get(state.nonfinite_steps)))
        if self.flops:
            scalars["flops_per_sec"] = self.flops * steps_per_sec
        self.writer.write_scalars(step, scalars)
        if jax.process_index() == 0:
            append_metrics(self.run.workdir, step, scalars)
        self.bar.set_postfix(loss=f"{mean['loss']:.4f}",
                             img_s=f"{scalars['images_per_sec']:.0f}")
        self.window = []
        self.restart_clock(step)
