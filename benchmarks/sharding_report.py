"""benchmarks/sharding.py's report: its rows (`Measurement`), the markdown + JSON it
writes, and the rows an earlier report hands to `--resume` and `--merge`.

The JSON next to the markdown holds every measured row, so a report can be
rebuilt (`--report_only`), continued where a run stopped (`--resume`), or joined
with rows measured elsewhere (`--merge`, e.g. on an accelerator).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import jax

from imagen_jax.evaluate.report import grid_table
from imagen_jax.parallel.mesh import MESH_AXES

GIB = 1024 ** 3


@dataclasses.dataclass
class Measurement:
    """One row of the report: a stage's step under one strategy, as measured."""

    stage: str
    size: str
    strategy: str
    mesh: dict
    global_batch: int
    params_total_bytes: int
    params_bytes: int  # per device
    optimizer_bytes: int  # per device, incl. the EMA copy
    temp_bytes: int  # per device
    peak_bytes: int  # per device
    collectives: dict  # kind -> {count, payload_mib, sent_mib}
    sent_mib: float
    compile_s: float
    step_ms: float | None = None
    flops: float | None = None  # the whole step's (all devices), XLA's cost analysis
    environment: str = ""  # machine and versions the row was measured on
    device: str = "cpu"  # the devices' kind ("cpu": fake CPU devices, a simulation)

    @property
    def key(self) -> tuple:
        return (self.size, self.stage, self.strategy)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def device_kind() -> str:
    """The devices' kind, as rows record it: "cpu" (fake CPU devices) or e.g. "NVIDIA H100"."""
    d = jax.devices()[0]
    return "cpu" if d.platform == "cpu" else d.device_kind


def report(results: list[Measurement], fits: dict, args: Any) -> tuple[list[str], dict]:
    """The markdown lines and JSON payload of the report on `results`; `fits` maps
    (stage, strategy) to {budget GiB: fewest devices}, `args` are the CLI's."""
    envs = list(dict.fromkeys(r.environment for r in results))
    tag = {e: chr(ord("A") + i) for i, e in enumerate(envs)}
    kinds = list(dict.fromkeys(r.device for r in results)) or [device_kind()]
    if len(kinds) > 1:
        raise SystemExit(f"{args.out}: rows measured on different device kinds {kinds}; "
                         "write them to separate reports")
    on_cpu = kinds[0] == "cpu"
    label = "CPU sim" if on_cpu else kinds[0]
    where = (f"{args.devices} fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count)"
             if on_cpu else f"{args.devices} x {label}")
    machines = (f"Machine: {envs[0]}" if len(envs) == 1 else
                "Machines (column 'on'): " + "; ".join(f"{tag[e]}: {e}" for e in envs))
    timing = ("Step time: CPU simulation (all fake devices share the host's cores) — a ranking "
              "of overheads, not accelerator speed." if on_cpu else
              "Step time: mean wall time of the jitted step on the accelerator after a warm-up, "
              "random inputs; TFLOP/s per device = the step's FLOPs (XLA's cost analysis of the "
              "lowered, unpartitioned step) / devices / step time.")
    note = [args.note, ""] if args.note else []
    argv = " ".join(a for a in sys.argv[1:] if not a.startswith("--note"))  # the note is above
    lines = [f"# Data- vs model-parallel sharding ({time.strftime('%Y-%m-%d')})", "", *note,
             (f"Rebuilt from the measured rows: `python benchmarks/sharding.py {argv}`; the "
              "same without `--report_only` (and `--merge`) measures the rows still missing."
              if args.report_only else
              f"Regenerate: `python benchmarks/sharding.py {argv}` "
              "(`--resume` keeps the rows already in the JSON and measures the rest)."),
             "", f"{machines}; {where}. Per-device numbers: "
             "parameters and optimiser state (Adam/Adafactor + EMA) exact from the "
             "shardings; temporaries and peak from XLA's buffer assignment; bytes sent per "
             f"device per step from the partitioned HLO under ring algorithms. {timing} "
             "T5 rows are the frozen encoder's forward pass (no optimiser).", "",
             f"The per-replica batch is fixed ({args.per_replica_batch or 'tiny 2, paper 8'} "
             "examples per data x fsdp shard), so the global batch differs between "
             "strategies: tensor parallelism replicates the batch over 'tensor'."
             + (" On the CPU backend XLA lowers reduce-scatter as all-reduce + slice, so "
                "FSDP's gradient reduce-scatter appears in the all-reduce column (about twice "
                "the bytes a TPU reduce-scatter sends)." if on_cpu else ""), ""]
    for size in args.sizes:
        rows = [r for r in results if r.size == size]
        if not rows:
            continue
        lines += [f"## {size} size", ""]
        missing = [f"{st}/{t}" for (sz, st, t) in args.jobs if sz == size
                   and (sz, st, t) not in {r.key for r in rows}]
        if missing:
            lines += [f"Partial: not measured yet: {', '.join(missing)}.", ""]
        unit, scale = ("GiB", GIB) if size == "paper" else ("MiB", 1024 ** 2)
        timed = any(r.step_ms for r in rows)
        header = (["stage", "strategy", "mesh (d,f,t)", "batch", f"params total {unit}",
                   f"params/dev {unit}", f"opt+EMA/dev {unit}", f"temp/dev {unit}",
                   f"peak/dev {unit}", "all-reduce MiB", "all-gather MiB",
                   "reduce-scatter MiB", "all-to-all MiB", "sent/dev MiB", "compile s"]
                  + ([f"step ms ({label})"] if timed else [])
                  + (["TFLOP/s"] if timed and not on_cpu else [])
                  + (["on"] if len(envs) > 1 else []))
        table = []
        for r in rows:
            c = lambda k: _fmt(r.collectives.get(k, {}).get("sent_mib", 0.0), 1)
            n = math.prod(r.mesh.values())
            tflops = (r.flops / n / (r.step_ms / 1e3) / 1e12 if r.flops and r.step_ms else None)
            table.append([r.stage, r.strategy, ",".join(str(r.mesh[a]) for a in MESH_AXES),
                          r.global_batch, _fmt(r.params_total_bytes / scale),
                          _fmt(r.params_bytes / scale), _fmt(r.optimizer_bytes / scale),
                          _fmt(r.temp_bytes / scale), _fmt(r.peak_bytes / scale),
                          c("all-reduce"), c("all-gather"), c("reduce-scatter"), c("all-to-all"),
                          _fmt(r.sent_mib, 1), _fmt(r.compile_s, 1)]
                         + ([_fmt(r.step_ms, 1)] if timed else [])
                         + ([f"{tflops:.3g}" if tflops else "—"] if timed and not on_cpu else [])
                         + ([tag[r.environment]] if len(envs) > 1 else []))
        lines += grid_table(header, table) + [""]
        if size == "paper" and fits:
            lines += ["### Fewest devices that fit a per-device memory budget", "",
                      "Powers of 2 from 1 to 65,536. `—`: none fits — the state a strategy "
                      "replicates, or the rest of the peak at this per-replica batch "
                      "(activations, gathered weights), is over the budget by itself.", ""]
            budgets = list(args.budgets_gib)
            header = ["stage", "strategy"] + [f"{b:g} GiB" for b in budgets]
            table = [[r.stage, r.strategy] + [str(fits[(r.stage, r.strategy)].get(b) or "—")
                                              for b in budgets]
                     for r in rows if (r.stage, r.strategy) in fits]
            lines += grid_table(header, table) + [""]
    payload = {"date": time.strftime("%Y-%m-%d"), "note": args.note or "", "environments": envs,
               "devices": args.devices, "per_replica_batch": args.per_replica_batch,
               "results": [dataclasses.asdict(r) for r in results],
               "min_devices": [{"stage": s, "strategy": t, "budgets_gib": {str(b): n for b, n
                                                                             in v.items()}}
                               for (s, t), v in fits.items()]}
    return lines, payload


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_results(json_path: str, devices: int) -> list[Measurement]:
    """Rows of an earlier report (for --resume); a report for another device count or
    in another format is an error, not silently measured over."""
    payload = _read_json(json_path)
    if payload.get("devices") != devices:
        raise SystemExit(f"--resume: {json_path} was measured on {payload.get('devices')} "
                         f"devices, not --devices={devices}")
    fields = {f.name for f in dataclasses.fields(Measurement)}
    env = payload.get("environment", "")  # reports written before per-row environments
    rows = []
    for d in payload.get("results", []):
        unknown = set(d) - fields
        if unknown:
            raise SystemExit(f"--resume: {json_path}: unknown result fields {sorted(unknown)}")
        d.setdefault("environment", env)
        rows.append(Measurement(**d))
    return rows


def resumed_results(json_path: str, devices: int, resume: bool,
                    merge_paths: list[str]) -> tuple[list[Measurement], str]:
    """The rows to start from, and the note of the report being resumed ('' if none):
    with `resume`, those of `json_path` (if it exists yet), then the rows of each
    `merge_paths` report that are not there already (the first row of a key wins)."""
    resuming = resume and os.path.exists(json_path)
    results = load_results(json_path, devices) if resuming else []
    note = _read_json(json_path).get("note", "") if resuming else ""
    for path in merge_paths:
        have = {r.key for r in results}
        results += [r for r in load_results(path, devices) if r.key not in have]
    return results, note
