r"""Every paper stage's train step compiled for TPU topologies, on a machine with no TPU.

    python benchmarks/tpu_compile.py                                  # the default rows
    python benchmarks/tpu_compile.py --stages=base64 --topologies=v4:2x2x1,v4:2x2x2 \
        --strategies=fsdp --per_chip_batch=8
    python benchmarks/tpu_compile.py --report_only                    # rebuild the .md

Each row compiles the trainer's own step (`imagen_jax/train/aot.py`: the same
`state_layout` + `jit_train_step` that `trainer.train` runs, with the frozen T5 or
CLIP inside the step) for a TPU topology through libtpu, in a child process with a
time limit, and records per chip: compile seconds; XLA's argument, output,
temporary and peak bytes; whether the peak fits the chip's HBM; the collectives of
the partitioned HLO by kind (bytes each chip sends); FLOPs and HBM bytes from the
cost analysis; and a roofline **bound** on the step time (the largest of FLOPs /
bf16 peak, HBM bytes / HBM bandwidth, collective bytes / interconnect bandwidth)
with the images/s and MFU it implies. Bounds, never measurements.

Rows land in docs/tpu_compile.json as each finishes (atomic write); a second run
skips rows already there (a failed or timed-out row is retried with --retry).
Stages: t5 (the frozen T5-XXL encoder's forward), base64, sr256, sr1024 (imagen),
clip, prior, decoder64, upsample256, upsample1024 (unclip).
Strategies: data, fsdp, tensor, data_fsdp (data 2 x fsdp N/2), fsdp_tensor
(fsdp N/2 x tensor 2).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time

if __name__ == "__main__":  # before jax is imported: compile for TPU, run nothing on it
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGEN = ("base64", "sr256", "sr1024")
UNCLIP = ("clip", "prior", "decoder64", "upsample256", "upsample1024")
STAGES = ("t5",) + IMAGEN + UNCLIP
STRATEGIES = ("data", "fsdp", "tensor", "data_fsdp", "fsdp_tensor")
OUT = "docs/tpu_compile.md"
# Each row's compiled HLO (gzip), so collectives can be recounted without a compile
# (`--recount`); outputs/ is not committed: tens of MB per paper-size row.
HLO_DIR = "outputs/tpu_hlo"
GIB = 1 << 30


def mesh_for(strategy: str, chips: int) -> dict[str, int]:
    """The mesh sizes of a strategy over `chips` chips."""
    half = max(chips // 2, 1)
    return {"data": {"data": chips}, "fsdp": {"fsdp": chips}, "tensor": {"tensor": chips},
            "data_fsdp": {"data": 2, "fsdp": half},
            "fsdp_tensor": {"fsdp": half, "tensor": 2}}[strategy]


def row_key(stage: str, topology: str, strategy: str, per_chip_batch: int,
            overrides: str = "") -> str:
    return f"{stage}@{topology}@{strategy}@b{per_chip_batch}" + (f"@{overrides}" if overrides
                                                                  else "")


def apply_overrides(config, overrides: str) -> None:
    """'model.scan_blocks=True;model.remat=False' -> config fields (Python literals)."""
    import ast
    for item in filter(None, overrides.split(";")):
        path, _, value = item.partition("=")
        *parents, leaf = path.strip().split(".")
        section = config
        for name in parents:
            section = section[name]
        section[leaf] = ast.literal_eval(value.strip())


def paper_config(stage: str, topology_chips: int, strategy: str, per_chip_batch: int):
    """configs/{imagen,unclip}.py:paper,STAGE on this mesh, at per_chip_batch x the
    data-parallel ways as the global batch. A stage named 'tiny-STAGE' takes the tiny
    variant instead (the scaling check: the same mechanism, compiled in a minute)."""
    from configs import imagen, unclip
    variant = "tiny" if stage.startswith("tiny-") else "paper"
    stage = stage.removeprefix("tiny-")
    config = (imagen if stage in IMAGEN or stage == "t5" else unclip).get_config(
        f"{variant},{'base64' if stage == 't5' else stage}")
    sizes = {"data": 1, "fsdp": 1, "tensor": 1, **mesh_for(strategy, topology_chips)}
    config.mesh = sizes
    config.train.batch_size = per_chip_batch * sizes["data"] * sizes["fsdp"]
    if (stage in IMAGEN or stage == "t5") and variant == "paper":
        config.text.checkpoint = "t5-v1_1-xxl"  # a name: the architecture is compiled, not loaded
    if "clip" in config and stage in ("prior", "decoder64"):
        config.clip.workdir = "unused"  # ditto for the frozen CLIP
    return config


def measure(stage: str, topology: str, strategy: str, per_chip_batch: int,
            overrides: str = "") -> dict:
    """One row, in this process."""
    import jax

    from imagen_jax.evaluate.report import environment
    from imagen_jax.train import aot

    devices = aot.topology_devices(topology)
    config = paper_config(stage, len(devices), strategy, per_chip_batch)
    apply_overrides(config, overrides)
    if stage.removeprefix("tiny-") == "t5":
        program = aot.compile_frozen_encoder(config, devices)
    else:
        program = aot.compile_train_step(config, devices)
    costs = aot.step_costs(program)
    hlo = program.compiled.as_text()
    _save_hlo(row_key(stage, topology, strategy, per_chip_batch, overrides), hlo)
    costs["hlo_lines"] = len(hlo.splitlines())  # the optimised program's size
    chip = aot.CHIPS[aot.generation(topology)]
    bound = aot.roofline(costs, chip, program.global_batch,
                         program.model_flops / program.num_devices)
    return dict(key=row_key(stage, topology, strategy, per_chip_batch, overrides),
                overrides=overrides, scan_blocks=bool(config.model.get("scan_blocks", False)),
                stage=stage,
                topology=topology, chips=program.num_devices, strategy=strategy,
                mesh=program.mesh_sizes, per_chip_batch=per_chip_batch,
                global_batch=program.global_batch,
                remat=stage != "t5" and bool(config.model.get("remat", False)),
                dtype=str(config.text.dtype if stage == "t5" else config.model.get("dtype",
                                                                                    "float32")),
                lower_s=program.lower_s, compile_s=program.compile_s,
                state_bytes=program.state_bytes_per_device,
                frozen_bytes=program.frozen_bytes_per_device,
                state_bytes_total=program.state_bytes_total,
                frozen_bytes_total=program.frozen_bytes_total,
                model_flops=program.model_flops, **costs, **bound,
                hbm_capacity=chip.hbm_bytes, environment=environment(),
                libtpu=_libtpu_version(), jax=jax.__version__, status="ok")


def _hlo_path(key: str) -> str:
    return os.path.join(HLO_DIR, re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".hlo.gz")


def _save_hlo(key: str, hlo_text: str) -> None:
    os.makedirs(HLO_DIR, exist_ok=True)
    with gzip.open(_hlo_path(key) + ".tmp", "wt", encoding="utf-8") as f:
        f.write(hlo_text)
    os.replace(_hlo_path(key) + ".tmp", _hlo_path(key))


def recount(json_path: str) -> None:
    """Model FLOPs and the roofline of every measured row again, from the row's stored
    compiler numbers and a fresh jaxpr count (rows measured before loops were counted),
    and its collectives from the row's saved HLO where there is one (HLO_DIR)."""
    from imagen_jax.parallel import analysis
    from imagen_jax.train import aot

    data = load_rows(json_path)
    for row in data["rows"]:
        if row.get("status") != "ok":
            continue
        if os.path.exists(_hlo_path(row["key"])):
            with gzip.open(_hlo_path(row["key"]), "rt", encoding="utf-8") as f:
                hlo = f.read()
            stats = analysis.collective_bytes(hlo, row["chips"])
            row["hlo_lines"] = len(hlo.splitlines())
            row["collectives"] = {kind: dict(count=st.count, sent_bytes=st.sent_bytes)
                                  for kind, st in stats.items() if st.count}
            row["collective_sent_bytes"] = sum(st.sent_bytes for st in stats.values())
        config = paper_config(row["stage"], row["chips"], row["strategy"],
                              row["per_chip_batch"])
        apply_overrides(config, row.get("overrides", ""))
        if row["stage"] != "t5":  # its forward has no loop: the count stands
            row["model_flops"] = aot.step_model_flops(config)
        row.update(aot.roofline(row, aot.CHIPS[aot.generation(row["topology"])],
                                row["global_batch"], row["model_flops"] / row["chips"]))
        print(f"[recount] {row['key']}: {row['model_flops']:.3e} model FLOPs", flush=True)
    save_rows(json_path, data)


def _libtpu_version() -> str:
    try:
        from importlib.metadata import version
        return version("libtpu")
    except Exception:  # noqa: BLE001 - a name in the report, nothing depends on it
        return "?"


def load_rows(path: str) -> dict:
    """A report's JSON ({"rows": [...]}), empty if it does not exist yet."""
    if not os.path.exists(path):
        return {"rows": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_rows(path: str, data: dict) -> None:
    """Writes the JSON through a temporary file and a rename: an interrupted write
    leaves the previous rows."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(path + ".tmp", path)


def _save_row(path: str, row: dict) -> None:
    data = load_rows(path)
    data["rows"] = [r for r in data["rows"] if r["key"] != row["key"]] + [row]
    save_rows(path, data)


def run_child(args: argparse.Namespace, stage: str, topology: str, strategy: str,
              json_path: str) -> dict:
    """Measures one row in a child process (its compile's memory is returned to the
    OS after), with a wall-clock limit; a failure or a timeout is a row too."""
    key = row_key(stage, topology, strategy, args.per_chip_batch, args.set)
    cmd = [sys.executable, os.path.abspath(__file__), f"--one={key}", f"--out={args.out}"]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_s)
        status = "ok" if done.returncode == 0 else "error"
        tail = (done.stderr or "").strip().splitlines()[-3:]
        if done.returncode < 0:  # e.g. SIGKILL from the kernel's OOM killer
            tail.append(f"killed by signal {-done.returncode} (9: host out of memory?)")
    except subprocess.TimeoutExpired:
        status, tail = "timeout", [f"no result after {args.timeout_s} s"]
    if status == "ok":
        return next(r for r in load_rows(json_path)["rows"] if r["key"] == key)
    row = dict(key=key, stage=stage, topology=topology, strategy=strategy,
               per_chip_batch=args.per_chip_batch, status=status,
               wall_s=time.perf_counter() - start, error=" | ".join(tail)[-600:])
    _save_row(json_path, row)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--topologies", default="v4:2x2x1")
    parser.add_argument("--strategies", default="fsdp")
    parser.add_argument("--per_chip_batch", type=int, default=8,
                        help="examples per data-parallel chip (paper: 2048 / 256 = 8)")
    parser.add_argument("--timeout_s", type=int, default=3600)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--retry", action="store_true", help="re-measure failed rows")
    parser.add_argument("--report_only", action="store_true")
    parser.add_argument("--recount", action="store_true",
                        help="recount every row's model FLOPs (jaxpr, no compile) and bound")
    parser.add_argument("--set", default="", help="config overrides for every row, e.g. "
                        "'model.scan_blocks=True;model.remat=False' (part of the row's key)")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    json_path = os.path.splitext(args.out)[0] + ".json"
    if args.one:  # child: measure one row and add it to the JSON
        stage, topology, strategy, batch, *overrides = args.one.split("@", 4)
        _save_row(json_path, measure(stage, topology, strategy, int(batch[1:]),
                                     overrides[0] if overrides else ""))
        return
    from benchmarks.tpu_compile_report import write_markdown
    if args.recount:
        recount(json_path)
    elif not args.report_only:
        for stage in args.stages.split(","):
            for topology in args.topologies.split(","):
                for strategy in args.strategies.split(","):
                    key = row_key(stage, topology, strategy, args.per_chip_batch, args.set)
                    old = {r["key"]: r for r in load_rows(json_path)["rows"]}.get(key)
                    if old and (old["status"] == "ok" or not args.retry):
                        print(f"[skip] {key}: {old['status']} already", flush=True)
                        continue
                    print(f"[compile] {key} ...", flush=True)
                    row = run_child(args, stage, topology, strategy, json_path)
                    print(f"[{row['status']}] {key}: " + (
                        f"{row['compile_s']:.0f} s, peak {row['memory']['peak'] / GIB:.2f} GiB"
                        if row["status"] == "ok" else row.get("error", "")), flush=True)
                    write_markdown(load_rows(json_path), args.out)
    write_markdown(load_rows(json_path), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    main()
