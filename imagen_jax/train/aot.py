"""The trainer's own step compiled ahead of time for a TPU topology, on a machine
without a TPU: does a configuration fit a pod, and what bounds its speed?

libtpu (installed with `pip install "jax[tpu]"`; in the test extra) compiles for
TPU devices that `jax.experimental.topologies` describes, with no chip attached:
maxtext's train_compile.py and axlearn's run_aot_compilation.py prove pod
configurations the same way. What is compiled is exactly what `trainer.train` runs:
`sharded.state_layout` + `sharded.jit_train_step` (with the frozen T5 / CLIP inside
the step, sharded by `sharded.frozen_shardings`; the stage's registered
`weightless_conditioner` gives its architecture without the checkpoint), lowered
from abstract shapes, so no weight is ever allocated.

    devices = topology_devices("v4:4x8x8")                  # 256 chips
    program = compile_train_step(config, devices)
    row = step_costs(program) | roofline(step_costs(program), CHIPS["v4"], ...)

The roofline is a *bound*, never a measurement: the step cannot be faster than its
FLOPs at the chip's bf16 peak, its HBM bytes at the HBM bandwidth, or its
collective bytes at the interconnect bandwidth (published figures, `Chip.source`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp

from imagen_jax.parallel import analysis
from imagen_jax.parallel.activations import activation_sharding
from imagen_jax.parallel.flops import count_flops
from imagen_jax.parallel.mesh import make_mesh
from imagen_jax.parallel.rules import rules_from_config
from imagen_jax.parallel.sharding import shard_batch_tree, unbox_logical
from imagen_jax.stage_registry import build_stage, lookup
from imagen_jax.train.optimizer import make_optimizer
from imagen_jax.train.sharded import frozen_shardings, jit_train_step, state_layout
from imagen_jax.train.validate import validate_config

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """Published per-chip figures of one TPU generation."""

    name: str
    bf16_flops: float  # peak, per second
    hbm_bytes: int
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bytes/s one chip moves in a collective
    source: str


CHIPS = {
    "v4": Chip("TPU v4", 275e12, 32 * GIB, 1200e9, 1.1e15 / 4096,
               "cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2 at 1200 GB/s; "
               "all-reduce bandwidth 1.1 PB/s per 4096-chip pod = 269 GB/s per chip"),
    "v5e": Chip("TPU v5e", 197e12, 16 * GIB, 819e9, 51.2e12 / 256,
                "cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GB HBM2 at 819 GB/s; "
                "all-reduce bandwidth 51.2 TB/s per 256-chip pod = 200 GB/s per chip"),
    "v5p": Chip("TPU v5p", 459e12, 95 * GIB, 2765e9, 4800e9 / 8,
                "cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GB HBM2e at 2765 GB/s; "
                "inter-chip interconnect 4800 Gbps = 600 GB/s per chip"),
}


def generation(topology: str) -> str:
    """'v4:4x8x8' -> 'v4'."""
    name = topology.split(":", 1)[0]
    if name not in CHIPS or ":" not in topology:
        raise ValueError(f"TPU topology {topology!r}: expected GEN:AxB[xC] with GEN one of "
                         f"{sorted(CHIPS)}, e.g. 'v5e:2x2' or 'v4:4x8x8'")
    return name


def topology_devices(topology: str) -> list:
    """Compile-only TPU devices of `topology`, one per chip (v4 and v5p as megacores,
    as a TPU VM presents them)."""
    gen = generation(topology)
    # libtpu otherwise asks a metadata server (absent here) what machine it is on.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", {"v4": "v4-8", "v5e": "v5litepod-4",
                                                   "v5p": "v5p-8"}[gen])
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    # No chip is opened, so several compiling processes (benchmark rows, test workers)
    # need not queue on libtpu's one-process lockfile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    kwargs = {"chip_config_name": "megacore"} if gen in ("v4", "v5p") else {}
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs)
    except RuntimeError as e:  # no libtpu, or a shape this generation has not
        raise RuntimeError(f"TPU topology {topology!r}: {e}; is libtpu installed "
                           "(pip install 'jax[tpu]')?") from e
    return list(desc.devices)


def _sds(shape: tuple, dtype: Any, sharding: Any = None) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), jnp.dtype(dtype), sharding=sharding)


def abstract_batch(config: Any, stage: Any, conditioner: Any) -> dict:
    """The global batch the input pipeline hands the trainer's step: float32 images (the
    training crops), the low-res image when the config has one, caption ids and mask
    when the conditioner or the stage reads them, else cached text embeddings."""
    b = config.train.batch_size
    side = config.diffusion.get("train_crop", 0) or config.image_size
    batch = {"images": _sds((b, side, side, 3), jnp.float32)}
    low = config.get("lowres_size", 0)
    if low:
        low_side = side * low // config.image_size
        batch["lowres"] = _sds((b, low_side, low_side, 3), jnp.float32)
    length = config.text.max_length
    if conditioner is not None or "text_ids" in stage.batch_keys:
        batch["text_ids"] = _sds((b, length), jnp.int32)
        batch["text_mask"] = _sds((b, length), jnp.bool_)
    elif "text" in stage.batch_keys:  # the embedding cache
        batch["text"] = _sds((b, length, config.model.text_dim), jnp.float32)
        batch["text_mask"] = _sds((b, length), jnp.bool_)
    return batch


@dataclasses.dataclass
class StepProgram:
    """A compiled train step and what it took."""

    compiled: Any
    lower_s: float
    compile_s: float
    num_devices: int
    mesh_sizes: dict
    global_batch: int
    state_bytes_per_device: int  # params + EMA + optimiser state, from the shardings
    frozen_bytes_per_device: int  # the frozen encoder's weights, from their shardings
    model_flops: float  # whole step, all chips: 3 x the loss's forward + the encoder's
    state_bytes_total: int = 0  # one full copy of the state (what data parallel keeps)
    frozen_bytes_total: int = 0


def _forward_flops(fn: Any, *args: Any) -> float:
    """Matmul and convolution FLOPs of `fn` from its jaxpr, loops counted as often as
    they run (XLA's cost analysis counts a loop body once)."""
    return count_flops(fn, *args)


def _model_flops(stage: Any, conditioner: Any, params: Any, batch: dict, frozen: Any) -> float:
    """FLOPs the step must do, without rematerialisation or partitioning overheads:
    the loss's forward x 3 (forward + backward) plus the frozen encoder's forward once,
    counted from the jaxpr (imagen_jax/parallel/flops.py). MFU is measured against this;
    the compiled program's FLOPs include recomputation but count loop bodies once."""
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    prepared = batch
    encoder = 0.0
    if conditioner is not None:
        encoder = _forward_flops(conditioner.prepare, frozen, batch)
        prepared = jax.eval_shape(conditioner.prepare, frozen, batch)
    loss = _forward_flops(lambda p, b, k: stage.loss(p, b, k)[0], params, prepared, key)
    return 3.0 * loss + encoder


def _bytes_per_device(abstract: Any, shardings: Any) -> int:
    """Bytes of one device's shards of `abstract` under `shardings`."""
    return sum(jnp.dtype(leaf.dtype).itemsize * math.prod(sh.shard_shape(tuple(leaf.shape)))
               for leaf, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))


def _with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: _sds(a.shape, a.dtype, s), abstract, shardings)


def _abstract_frozen(conditioner: Any) -> Any:
    """The frozen weights as ShapeDtypeStructs in the encoder's dtype (None: none)."""
    if conditioner is None or conditioner.abstract_params() is None:
        return None
    dtype = jnp.dtype(getattr(conditioner.config, "dtype", jnp.float32))
    return jax.tree.map(lambda x: _sds(x.shape, dtype),
                        unbox_logical(conditioner.abstract_params()))


def _frozen_inputs(conditioner: Any, mesh: Any, rules: Any) -> tuple[Any, Any]:
    """(the frozen weights as ShapeDtypeStructs in their dtype, their shardings)."""
    shardings = frozen_shardings(conditioner, mesh, rules)
    if shardings is None:
        return None, None
    return _abstract_frozen(conditioner), shardings


def _compile(jitted: Any, args: tuple) -> tuple[Any, float, float]:
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, lower_s, time.perf_counter() - start


def _setup(config: Any, devices: list) -> tuple[dict, Any, Any, Any, Any]:
    sizes = validate_config(config, device_count=len(devices), process_count=1)
    mesh = make_mesh(sizes, devices)
    rules = rules_from_config(config.logical_rules)
    stage = build_stage(config)
    conditioner = lookup(config.stage).weightless_conditioner(config)
    return sizes, mesh, rules, stage, conditioner


def compile_train_step(config: Any, devices: list, *,
                       compiler_options: dict | None = None) -> StepProgram:
    """The step `trainer.train` would run for `config` on `devices`, lowered from shapes
    and compiled by the devices' backend (a TPU topology's, or the host's)."""
    sizes, mesh, rules, stage, conditioner = _setup(config, devices)
    optimizer = make_optimizer(config.train)
    abstract_state, shardings = state_layout(stage, optimizer, mesh, rules,
                                             config.text.max_length)
    frozen, frozen_sh = _frozen_inputs(conditioner, mesh, rules)
    batch = abstract_batch(config, stage, conditioner)
    batch_sh = shard_batch_tree(batch, mesh, rules)
    step = jit_train_step(stage, optimizer, mesh, rules, shardings, batch,
                          conditioner=conditioner, frozen_shardings=frozen_sh,
                          ema_decay=config.train.ema_decay,
                          skip_nonfinite=config.train.nonfinite == "skip",
                          grad_accum_steps=int(config.train.get("grad_accum_steps", 1)),
                          compiler_options=compiler_options)
    args = (_with_shardings(abstract_state, shardings), _with_shardings(batch, batch_sh),
            None if frozen is None else _with_shardings(frozen, frozen_sh))
    model_flops = _model_flops(stage, conditioner, abstract_state.params, batch, frozen)
    compiled, lower_s, compile_s = _compile(step, args)
    return StepProgram(
        compiled, lower_s, compile_s, len(devices), sizes, config.train.batch_size,
        _bytes_per_device(abstract_state, shardings),
        0 if frozen is None else _bytes_per_device(frozen, frozen_sh), model_flops,
        analysis.total_bytes(abstract_state), analysis.total_bytes(frozen))


def step_model_flops(config: Any) -> float:
    """`_model_flops` of the config's step from shapes alone (no mesh, no compile)."""
    stage = build_stage(config)
    conditioner = lookup(config.stage).weightless_conditioner(config)
    params = unbox_logical(jax.eval_shape(
        lambda: stage.init(jax.random.PRNGKey(0), config.text.max_length)))["params"]
    return _model_flops(stage, conditioner, params, abstract_batch(config, stage, conditioner),
                        _abstract_frozen(conditioner))


def compile_frozen_encoder(config: Any, devices: list, *,
                           compiler_options: dict | None = None) -> StepProgram:
    """The frozen encoder's forward alone (the part of the step `conditioner.prepare`
    runs) on a batch of caption ids, with the weights sharded as the trainer shards them."""
    sizes, mesh, rules, stage, conditioner = _setup(config, devices)
    if conditioner is None:
        raise ValueError(f"config.stage {config.stage!r} runs no frozen encoder")
    frozen, frozen_sh = _frozen_inputs(conditioner, mesh, rules)
    length, b = config.text.max_length, config.train.batch_size
    batch = {"text_ids": _sds((b, length), jnp.int32), "text_mask": _sds((b, length), jnp.bool_)}
    batch_sh = shard_batch_tree(batch, mesh, rules)
    def encode(frozen_params: Any, captions: dict) -> dict:
        with activation_sharding(mesh, rules):  # as inside the train step
            return conditioner.prepare(frozen_params, captions)

    forward = jax.jit(encode, in_shardings=(frozen_sh, batch_sh),
                      compiler_options=compiler_options)
    compiled, lower_s, compile_s = _compile(
        forward, (_with_shardings(frozen, frozen_sh), _with_shardings(batch, batch_sh)))
    return StepProgram(compiled, lower_s, compile_s, len(devices), sizes, b, 0,
                       _bytes_per_device(frozen, frozen_sh),
                       _forward_flops(conditioner.prepare, frozen, batch), 0,
                       analysis.total_bytes(frozen))


def step_costs(program: StepProgram) -> dict:
    """Per chip, from the compiled program: XLA's buffer sizes (argument, output, temp,
    peak), its cost analysis (FLOPs, HBM bytes accessed) and the collectives of the
    partitioned HLO by kind (bytes each chip sends, ring algorithms)."""
    compiled = program.compiled
    memory = analysis.memory_stats(compiled)
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    collectives = analysis.collective_bytes(compiled.as_text(), program.num_devices)
    return dict(
        memory=memory, flops=float(cost.get("flops", 0.0)),
        hbm_bytes=float(cost.get("bytes accessed", 0.0)),
        collectives={kind: dict(count=s.count, sent_bytes=s.sent_bytes)
                     for kind, s in collectives.items() if s.count},
        collective_sent_bytes=sum(s.sent_bytes for s in collectives.values()))


def roofline(costs: dict, chip: Chip, global_batch: int, model_flops_per_chip: float) -> dict:
    """The lower bound on one step's time per chip and what it implies (labelled a
    bound: the real step is slower by whatever overlap and efficiency it misses). MFU
    at the bound counts `model_flops_per_chip` (no recomputation) against the peak.

    XLA's cost analysis counts a loop body once (the blocked attention's lax.map, a
    scanned stack of blocks), so its FLOPs, HBM bytes and the HLO's collectives are
    lower bounds themselves; the compute term takes the larger of the compiled FLOPs
    and the model's (which count loops fully), and the bound stays a bound."""
    flops = max(costs["flops"], model_flops_per_chip)
    times = {"compute": flops / chip.bf16_flops,
             "hbm": costs["hbm_bytes"] / chip.hbm_bandwidth,
             "collectives": costs["collective_sent_bytes"] / chip.ici_bandwidth}
    bound_by = max(times, key=times.get)
    seconds = times[bound_by]
    return dict(bound_s=seconds, bound_by=bound_by, times=times,
                images_per_s_bound=global_batch / seconds if seconds > 0 else float("inf"),
                mfu_at_bound=(model_flops_per_chip / seconds / chip.bf16_flops) if seconds > 0
                else 0.0,
                fits=costs["memory"]["peak"] <= chip.hbm_bytes)
