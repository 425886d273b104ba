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

What is measured (stages' steps, strategies' meshes) is in
benchmarks/sharding_workloads.py; the report, and the rows `--resume` and `--merge`
start from, in benchmarks/sharding_report.py.
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

import math  # noqa: E402
from typing import Callable  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AbstractMesh  # noqa: E402

from benchmarks.sharding_report import (GIB, Measurement, device_kind, report,  # noqa: E402
                                        resumed_results)
from benchmarks.sharding_workloads import (STAGES, Workload, abstract_params,  # noqa: E402
                                           strategies, workload)
from imagen_jax.evaluate.report import environment, write_report  # noqa: E402
from imagen_jax.parallel import analysis  # noqa: E402
from imagen_jax.parallel.mesh import MESH_AXES, make_mesh  # noqa: E402
from imagen_jax.parallel.rules import DEFAULT_RULES  # noqa: E402
from imagen_jax.parallel.sharding import (logical_to_spec, param_shardings,  # noqa: E402
                                          params_like_predicate, replicated,
                                          shard_batch_tree, state_shardings)


def _full(sizes: dict[str, int]) -> dict[str, int]:
    return {a: sizes.get(a, 1) for a in MESH_AXES}


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

    params = abstract_params(w)
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


def measure(w_fn: Callable[[str, str, int], Workload], stage: str, size: str, strategy: str,
            sizes: dict[str, int], per_replica_batch: int, time_steps: int) -> Measurement:
    """Compiles `stage`'s step (built by `w_fn`) sharded by `strategy` on a mesh of
    `sizes`, reads its memory and collectives, and times `time_steps` steps (0: none)."""
    n = math.prod(sizes.values())
    mesh = make_mesh(sizes, jax.devices()[:n])
    batch = per_replica_batch * _replicas(sizes)
    w = w_fn(stage, size, batch)
    params = abstract_params(w)
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
        device=device_kind())


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


def model_flops(stage: str, size: str, batch: int) -> float | None:
    """FLOPs of one whole step (all devices), from XLA's cost analysis of the unsharded,
    unoptimised step lowered on this host: a property of the program, not the machine,
    so it fills in rows whose backend gave none (the GPU backend's lowering does not)."""
    w = workload(stage, size, batch)
    params = abstract_params(w)
    state = params if w.make_state is None else w.make_state(params)
    cost = jax.jit(w.step).lower(state, w.batch).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) if cost and "flops" in cost else None


def _environment() -> str:
    """environment(), plus XLA_FLAGS on accelerators (they change what is timed there)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return environment() + (f"; XLA_FLAGS={flags}" if flags and device_kind() != "cpu" else "")


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
    results, resumed_note = resumed_results(json_path, args.devices, args.resume,
                                            [x for x in args.merge.split(",") if x])
    if args.note is None:  # keep the note of the report being resumed
        args.note = resumed_note
    args.jobs = [(size, stage, strategy) for size in args.sizes for stage in stages
                 for strategy in chosen]
    done = {r.key for r in results}
    on_cpu = device_kind() == "cpu"
    if not args.report_only and {r.device for r in results} - {device_kind()}:
        p.error(f"--resume: {json_path} holds rows measured on "
                f"{sorted({r.device for r in results})}, this run is on {device_kind()}")

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
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    main()
