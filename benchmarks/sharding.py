r"""Data- vs model-parallel: what each sharding strategy costs per device, per stage.

    python benchmarks/sharding.py                       # tiny + paper, 8 fake devices
    python benchmarks/sharding.py --sizes=tiny --stages=base64,sr256
    python benchmarks/sharding.py --budgets_gib=16,32,95 --out=docs/sharding.md

For each stage (T5 encoder, Imagen base/SR U-Nets, unCLIP prior/decoder/upsampler)
and each strategy — data parallel, FSDP, tensor parallel, data x FSDP, FSDP x
tensor — on N devices (default 8 fake CPU devices), the train step (the T5
encoder: its forward pass, it is frozen) is jitted with the trainer's shardings
and compiled, then read:
  - per-device bytes of parameters and optimiser state (exact, from the shardings),
    and XLA's peak per-device memory and temporaries (`memory_analysis`);
  - bytes each device sends per step in all-reduce / all-gather / reduce-scatter /
    all-to-all, from the partitioned HLO (imagen_jax/parallel/analysis.py);
  - step time on the fake devices, at tiny size only (a CPU simulation: N devices
    share the host's cores; it ranks strategies' overheads, not accelerator speed).

Paper sizes (2B base U-Net, T5-XXL encoder, ...) are lowered from abstract shapes
(ShapeDtypeStructs): no weight is ever allocated. For them the report also gives,
per per-device memory budget, the fewest devices each strategy needs: parameter +
optimiser bytes at N devices follow exactly from the shardings (computed for any N
on an abstract mesh), the rest of the peak (batch, activations, gathered weights)
is the 8-device measurement, held fixed because the per-replica batch is fixed
(weak scaling; conservative for tensor parallelism, whose activations keep
shrinking with more devices).

Batch: `--per_replica_batch` examples per data-parallel shard (paper: 2048 over
256 TPU-v4 chips for the base model = 8), so the global batch is that times the
data x fsdp ways.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__":  # before jax is imported
    _arg = lambda name, default: next((a.split("=", 1)[1] for a in sys.argv
                                       if a.startswith(f"--{name}=")), default)
    if _arg("platform", "cpu") == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        # LLVM's optimisations off: compiles ~2x faster; the HLO passes that decide the
        # collectives and the buffer assignment (what is measured) are unchanged. Not on
        # accelerators, whose step times are measured.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={_arg('devices', '8')}"
                                   " --xla_backend_optimization_level=0").strip()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
from typing import Any  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AbstractMesh  # noqa: E402

from imagen_jax.evaluate.report import environment, grid_table, write_report  # noqa: E402
from imagen_jax.parallel import analysis  # noqa: E402
from imagen_jax.parallel.mesh import MESH_AXES, make_mesh  # noqa: E402
from imagen_jax.parallel.rules import DEFAULT_RULES  # noqa: E402
from imagen_jax.parallel.sharding import (logical_to_spec, param_shardings,  # noqa: E402
                                          params_like_predicate, replicated,
                                          shard_batch_tree, state_shardings)

GIB = 1024 ** 3
IMAGEN_STAGES = ("base64", "sr256", "sr1024")
UNCLIP_STAGES = ("prior", "decoder64", "upsample256")
STAGES = ("t5",) + IMAGEN_STAGES + UNCLIP_STAGES
# T5 v1.1 XXL's encoder (Imagen's text encoder; HF google/t5-v1_1-xxl config.json).
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu")


def strategies(n: int) -> dict[str, dict[str, int]]:
    """Mesh shapes over n devices. Hybrids put 2 devices on the second axis: data x
    FSDP = 2 FSDP groups of n/2 (e.g. two slices), FSDP x tensor = tensor pairs."""
    out = {"data": {"data": n}, "fsdp": {"fsdp": n}, "tensor": {"tensor": n}}
    if n >= 4 and n % 2 == 0:
        out["data x fsdp"] = {"data": 2, "fsdp": n // 2}
        out["fsdp x tensor"] = {"fsdp": n // 2, "tensor": 2}
    return out


def _full(sizes: dict[str, int]) -> dict[str, int]:
    return {a: sizes.get(a, 1) for a in MESH_AXES}


@dataclasses.dataclass
class Workload:
    """One stage's step as abstract pieces: the function, its state and batch shapes."""

    name: str
    boxed: Any  # eval_shape of the init: params with logical names
    step: Any  # (state, batch) -> outputs
    make_state: Any  # abstract params -> abstract state (None: the state is the params)
    batch: dict  # name -> ShapeDtypeStruct (global shapes)
    param_dtype: Any = None  # cast params to this (frozen bf16 T5)
    abstract_state: Any = None  # make_state(params), cached by state_bytes_at


def _sds(shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), dtype)


def _config(stage: str, size: str):
    from configs import imagen, unclip
    module = imagen if stage in IMAGEN_STAGES else unclip
    config = module.get_config(f"{size},{stage}")
    if stage in UNCLIP_STAGES:
        config.clip.workdir = "/unused"  # the frozen CLIP is not part of these steps
    return config


def _t5_workload(size: str, batch: int) -> Workload:
    from configs import imagen
    from imagen_jax.nn.t5 import T5Config, T5Encoder

    if size == "paper":
        cfg, length, dtype = T5Config(**T5_XXL, dtype=jnp.bfloat16), 128, jnp.bfloat16
    else:
        text = imagen.get_config("tiny,base64").text
        cfg, length, dtype = T5Config(**text.random_t5.to_dict()), text.max_length, None
    module = T5Encoder(cfg)
    ids = _sds((batch, length), jnp.int32)
    boxed = jax.eval_shape(module.init, jax.random.PRNGKey(0), ids, ids)
    step = lambda params, b: module.apply({"params": params}, b["text_ids"], b["text_mask"])
    return Workload("t5", boxed["params"], step, None,
                    {"text_ids": ids, "text_mask": _sds((batch, length), jnp.int32)}, dtype)


def _stage_batch(stage: str, config: Any, batch: int) -> dict:
    side = config.diffusion.train_crop or config.image_size
    if stage in IMAGEN_STAGES:
        length, width = config.text.max_length, config.model.text_dim
        out = {"images": _sds((batch, side, side, 3)), "text": _sds((batch, length, width)),
               "text_mask": _sds((batch, length), jnp.int32)}
        if config.lowres_size:
            low = side * config.lowres_size // config.image_size
            out["lowres"] = _sds((batch, low, low, 3))
        return out
    if stage.startswith("upsample"):  # images only: the degraded low-res is made in the step
        return {"images": _sds((batch, side, side, 3))}
    length, width, dim = config.text.max_length, config.clip.text_width, config.clip.embed_dim
    out = {"text": _sds((batch, length, width)), "text_mask": _sds((batch, length), jnp.int32),
           "text_embed": _sds((batch, dim)), "image_embed": _sds((batch, dim))}
    if stage == "decoder64":
        out["images"] = _sds((batch, side, side, 3))
    return out


def _train_workload(stage: str, size: str, batch: int) -> Workload:
    from imagen_jax.train.optimizer import make_optimizer
    from imagen_jax.train.state import create_state, train_step
    from imagen_jax.train.trained import stage_family

    config = _config(stage, size)
    model = stage_family(config).stage_from_config(config)
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), config.text.max_length))
    tx = make_optimizer(config.train)
    step = functools.partial(train_step, loss_fn=model.loss, optimizer=tx,
                             ema_decay=config.train.ema_decay, skip_nonfinite=False)
    make_state = lambda p: jax.eval_shape(lambda q: create_state(q, tx, jax.random.PRNGKey(0)),
                                          p)
    return Workload(stage, boxed["params"], lambda s, b: step(s, b), make_state,
                    _stage_batch(stage, config, batch))


def workload(stage: str, size: str, batch: int) -> Workload:
    return _t5_workload(size, batch) if stage == "t5" else _train_workload(stage, size, batch)


def _unbox(boxed: Any, dtype: Any = None) -> Any:
    def leaf(x):
        value = x.value if isinstance(x, nn.LogicallyPartitioned) else x
        return _sds(value.shape, dtype or value.dtype)
    return jax.tree.map(leaf, boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def _replicas(sizes: dict[str, int]) -> int:
    return sizes.get("data", 1) * sizes.get("fsdp", 1)


def state_bytes_at(w: Workload, sizes: dict[str, int]) -> dict[str, int]:
    """Per-device parameter and optimiser-state bytes on a mesh of `sizes`, any device
    count (an abstract mesh: the shardings' shard shapes, no devices needed)."""
    full = _full(sizes)
    mesh = AbstractMesh(tuple(full[a] for a in MESH_AXES), MESH_AXES)

    def shard(shape, names):
        spec = logical_to_spec(names, shape, mesh, DEFAULT_RULES)
        out = list(shape)
        for i, entry in enumerate(spec):
            for axis in (entry,) if isinstance(entry, str) else (entry or ()):
                out[i] = math.ceil(out[i] / full[axis])
        return out

    params = _unbox(w.boxed, w.param_dtype)
    names = jax.tree.leaves(jax.tree.map(lambda x: x.names, w.boxed,
                                         is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)),
                            is_leaf=lambda x: isinstance(x, tuple))
    param_shards = [shard(p.shape, n) for p, n in zip(jax.tree.leaves(params), names)]
    per_param = [math.prod(s) * np.dtype(p.dtype).itemsize
                 for s, p in zip(param_shards, jax.tree.leaves(params))]
    out = {"params": sum(per_param), "optimizer": 0, "ema": 0,
           "total_params": analysis.total_bytes(params)}
    if w.make_state is None:
        return out
    if w.abstract_state is None:  # the same at every mesh size: built once per workload
        w.abstract_state = w.make_state(params)
    state = w.abstract_state
    params_like = params_like_predicate(params)

    def node_bytes(node):
        if params_like(node):
            return sum(math.prod(s) * np.dtype(x.dtype).itemsize
                       for s, x in zip(param_shards, jax.tree.leaves(node)))
        return analysis.total_bytes(node)  # replicated (counters, factored statistics)

    opt = jax.tree.leaves(jax.tree.map(node_bytes, state.opt_state, is_leaf=params_like))
    out["optimizer"] = int(sum(opt))
    out["ema"] = node_bytes(state.ema_params)
    return out


@dataclasses.dataclass
class Measurement:
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


def measure(w_fn, stage: str, size: str, strategy: str, sizes: dict[str, int],
            per_replica_batch: int, time_steps: int) -> Measurement:
    n = math.prod(sizes.values())
    mesh = make_mesh(sizes, jax.devices()[:n])
    batch = per_replica_batch * _replicas(sizes)
    w = w_fn(stage, size, batch)
    params = _unbox(w.boxed, w.param_dtype)
    p_sh = param_shardings(w.boxed, mesh, DEFAULT_RULES)
    if w.make_state is None:
        state, st_sh = params, p_sh
        out_sh = shard_batch_tree(jax.eval_shape(w.step, params, w.batch), mesh)
    else:
        state = w.make_state(params)
        st_sh = state_shardings(state, params, p_sh, mesh)
        out_sh = (st_sh, replicated(mesh))
    b_sh = shard_batch_tree(w.batch, mesh)
    jitted = jax.jit(w.step, in_shardings=(st_sh, b_sh), out_shardings=out_sh,
                     donate_argnums=(0,) if w.make_state is not None else ())
    abstract = lambda tree, sh: jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, sh)
    start = time.perf_counter()
    lowered = jitted.lower(abstract(state, st_sh), abstract(w.batch, b_sh))
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    mem = analysis.memory_stats(compiled)
    coll = analysis.collective_bytes(compiled.as_text(), n)
    # Model FLOPs from the lowered (unpartitioned, unoptimised) step: after optimisation
    # the GPU backend's matmuls are library calls its cost analysis undercounts.
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost["flops"]) if cost and "flops" in cost else None
    stb = state_bytes_at(w, sizes)
    step_ms = None
    if time_steps:
        step_ms = _time_steps(compiled, state, st_sh, w.batch, b_sh, w.make_state is not None,
                              time_steps)
    mib = 1024 ** 2
    return Measurement(
        stage=stage, size=size, strategy=strategy, mesh=_full(sizes), global_batch=batch,
        params_total_bytes=stb["total_params"], params_bytes=stb["params"],
        optimizer_bytes=stb["optimizer"] + stb["ema"], temp_bytes=mem["temp"],
        peak_bytes=mem["peak"],
        collectives={k: dict(count=v.count, payload_mib=v.payload_bytes / mib,
                             sent_mib=v.sent_bytes / mib) for k, v in coll.items() if v.count},
        sent_mib=sum(v.sent_bytes for v in coll.values()) / mib, compile_s=compile_s,
        step_ms=step_ms, flops=flops, environment=_environment(),
        device=_device_kind())


def _time_steps(compiled, state, st_sh, batch, b_sh, donated: bool, steps: int) -> float:
    """Mean wall time of `steps` steps after one warm-up, on random (not zero) inputs
    made on the devices: zeros can run faster than real data and would need the whole
    state built on the host first."""
    def fill(tree, key):
        leaves, treedef = jax.tree.flatten(tree)
        keys = jax.random.split(key, len(leaves))
        out = [jax.random.uniform(k, x.shape, jnp.float32, 0.0, 0.02).astype(x.dtype)
               if jnp.issubdtype(x.dtype, jnp.floating) else jnp.ones(x.shape, x.dtype)
               for k, x in zip(keys, leaves)]
        return jax.tree.unflatten(treedef, out)

    make = jax.jit(lambda key: (fill(state, key), fill(batch, jax.random.fold_in(key, 1))),
                   out_shardings=(st_sh, b_sh))
    state_v, batch_v = make(jax.random.PRNGKey(0))
    out = compiled(state_v, batch_v)  # warm-up
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
        if donated:
            state_v = out[0]
        out = compiled(state_v, batch_v)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps * 1000


def min_devices(w: Workload, strategy: str, m: Measurement, budget_gib: float,
                max_devices: int = 65536) -> int | None:
    """Fewest devices (a power of 2) at which `strategy` fits `budget_gib` per device:
    exact state bytes at N plus the measured rest of the peak (held fixed: below the
    measured device count it also keeps collective buffers a smaller mesh may not need)."""
    rest = (m.peak_bytes - m.params_bytes - m.optimizer_bytes) / GIB
    n = 1
    while n <= max_devices:
        shapes = strategies(n)
        if strategy in shapes:
            b = state_bytes_at(w, shapes[strategy])
            if (b["params"] + b["optimizer"] + b["ema"]) / GIB + rest <= budget_gib:
                return n
        n *= 2
    return None


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def model_flops(stage: str, size: str, batch: int) -> float | None:
    """FLOPs of one whole step (all devices), from XLA's cost analysis of the unsharded,
    unoptimised step lowered on this host: a property of the program, not the machine,
    so it fills in rows whose backend gave none (the GPU backend's lowering does not)."""
    w = workload(stage, size, batch)
    params = _unbox(w.boxed, w.param_dtype)
    state = params if w.make_state is None else w.make_state(params)
    cost = jax.jit(w.step).lower(state, w.batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def _environment() -> str:
    """environment(), plus XLA_FLAGS on accelerators (they change what is timed there)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return environment() + (f"; XLA_FLAGS={flags}" if flags and _device_kind() != "cpu" else "")


def _device_kind() -> str:
    d = jax.devices()[0]
    return "cpu" if d.platform == "cpu" else d.device_kind


def report(results: list[Measurement], fits: dict, args: Any) -> tuple[list[str], dict]:
    envs = list(dict.fromkeys(r.environment for r in results))
    tag = {e: chr(ord("A") + i) for i, e in enumerate(envs)}
    kinds = list(dict.fromkeys(r.device for r in results)) or [_device_kind()]
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
    import json

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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--platform", default="cpu", choices=("cpu", "gpu", "tpu"),
                   help="cpu: N fake CPU devices (a simulation); gpu/tpu: the real ones")
    p.add_argument("--sizes", default="tiny,paper")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--strategies", default="")
    p.add_argument("--per_replica_batch", type=int, default=0,
                   help="examples per data-parallel shard (default: tiny 2, paper 8)")
    p.add_argument("--time_steps", type=int, default=3,
                   help="timed steps (on CPU at tiny size only: paper sizes run on accelerators)")
    p.add_argument("--budgets_gib", default="16,32,95",
                   help="per-device memory budgets (TPU v3 core 16, v4 32, v5p 95 GiB)")
    p.add_argument("--out", default="docs/sharding.md")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of --out's JSON and measure only the missing ones")
    p.add_argument("--merge", default="",
                   help="comma-separated JSON reports whose rows join --out's (with --resume)")
    p.add_argument("--note", default=None,
                   help="a paragraph for the report's head (kept in the JSON; '' removes it)")
    p.add_argument("--report_only", action="store_true",
                   help="with --resume: rewrite the report from the JSON, measure nothing")
    args = p.parse_args(argv)
    args.sizes = [s for s in args.sizes.split(",") if s]
    args.budgets_gib = [float(b) for b in args.budgets_gib.split(",") if b]
    stages = [s for s in args.stages.split(",") if s]
    for name, values, known in (("--sizes", args.sizes, ("tiny", "paper")),
                                ("--stages", stages, STAGES)):
        bad = [v for v in values if v not in known]
        if bad:
            p.error(f"{name}: unknown {bad}; choose from {list(known)}")
    if (args.report_only or args.merge) and not args.resume:
        p.error("--report_only and --merge need --resume (they build on --out's JSON)")
    if jax.devices()[0].platform != args.platform and not args.report_only:
        p.error(f"--platform={args.platform} but jax's devices are "
                f"{jax.devices()[0].platform} (set JAX_PLATFORMS)")
    if len(jax.devices()) < args.devices and not args.report_only:
        p.error(f"--devices={args.devices} but jax sees {len(jax.devices())} devices")
    shapes = strategies(args.devices)
    chosen = [s for s in args.strategies.split(",") if s] or list(shapes)
    bad = [s for s in chosen if s not in shapes]
    if bad:
        p.error(f"--strategies: unknown {bad}; choose from {list(shapes)}")
    json_path = os.path.splitext(args.out)[0] + ".json"
    results = (load_results(json_path, args.devices)
               if args.resume and os.path.exists(json_path) else [])
    if args.note is None:  # keep the note of the report being resumed
        args.note = (_read_json(json_path).get("note", "")
                     if args.resume and os.path.exists(json_path) else "")
    for path in (x for x in args.merge.split(",") if x):
        have = {r.key for r in results}
        results += [r for r in load_results(path, args.devices) if r.key not in have]
    args.jobs = [(size, stage, strategy) for size in args.sizes for stage in stages
                 for strategy in chosen]
    done = {r.key for r in results}
    on_cpu = _device_kind() == "cpu"
    if not args.report_only and {r.device for r in results} - {_device_kind()}:
        p.error(f"--resume: {json_path} holds rows measured on "
                f"{sorted({r.device for r in results})}, this run is on {_device_kind()}")

    from tqdm import tqdm
    fits = {}

    def fit(m: Measurement) -> None:
        if m.size == "paper":
            w = workload(m.stage, m.size, m.global_batch)
            fits[(m.stage, m.strategy)] = {b: min_devices(w, m.strategy, m, b)
                                           for b in args.budgets_gib}

    rank = {j: i for i, j in enumerate((sz, st, t) for sz in ("tiny", "paper")
                                      for st in STAGES for t in strategies(8))}
    results.sort(key=lambda r: rank.get(r.key, len(rank)))
    for m in results:
        fit(m)
        if m.step_ms and m.flops is None:
            m.flops = model_flops(m.stage, m.size, m.global_batch)
    todo = [] if args.report_only else [j for j in args.jobs if j not in done]
    for size, stage, strategy in tqdm(todo, desc="compile", unit="step"):
        per_replica = args.per_replica_batch or (8 if size == "paper" else 2)
        m = measure(workload, stage, size, strategy, shapes[strategy], per_replica,
                    args.time_steps if (size == "tiny" or not on_cpu) else 0)
        results.append(m)
        tqdm.write(f"{size:5s} {stage:11s} {strategy:13s} peak {m.peak_bytes / GIB:8.3f} GiB/dev, "
                   f"sent {m.sent_mib:9.1f} MiB/dev, compile {m.compile_s:5.1f} s"
                   + (f", step {m.step_ms:.1f} ms" if m.step_ms else ""), file=sys.stderr)
        fit(m)
        results.sort(key=lambda r: rank.get(r.key, len(rank)))
        lines, payload = report(results, fits, args)  # after every row: a crash loses none
        write_report(args.out, lines, payload, echo=False)
    lines, payload = report(results, fits, args)
    write_report(args.out, lines, payload)


if __name__ == "__main__":
    main()
