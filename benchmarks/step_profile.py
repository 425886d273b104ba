r"""Where a compiled step's time goes, per kind of op: a jax.profiler trace of the
step, each executed thunk matched to its HLO instruction in the compiled program
and put in one category (forward or backward, convolution input or kernel
gradient, group norm, attention, dense layers, layout copies, the rest).

    python benchmarks/step_profile.py --size=32 --batch=8      # prints the table
    python benchmarks/step_profile.py --size=64 --batch=4 --program=step

benchmarks/vs_imagen_pytorch.py calls `profile_step` for the profile section of
docs/performance.md. XLA:CPU runs a program as a sequence of thunks (one per
top-level HLO instruction; a fusion is one thunk) and the profiler records each
one's start and end on the thread that ran it, so the sum per category is measured
time, not an estimate. Thunks of one program can run on both cores at once, so the
categories may add up to more than the wall time, which is reported beside them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z0-9-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) ")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_WINDOW = re.compile(r"window=\{size=([0-9x]+)")
_CALLS = re.compile(r"calls=%([^,\s}]+)")
_OPERANDS = re.compile(r"%([^,\s)]+)")
_SHAPE = re.compile(r"^([a-z0-9]+)\[([0-9,]*)\]")

# Printed in this order; every instruction lands in exactly one.
CATEGORIES = (
    "conv forward", "conv input gradient", "conv kernel gradient",
    "group norm forward", "group norm backward",
    "attention forward", "attention backward",
    "dense forward", "dense backward",
    "layout copies forward", "layout copies backward",
    "other forward", "other backward",
)


@dataclass(frozen=True)
class Instruction:
    name: str
    opcode: str
    shape: str
    op_name: str  # JAX's name stack: the module path and the primitive
    window: tuple[int, ...]  # a convolution's window size, () for other ops
    fused: str  # the opcodes inside a fusion, space-separated ('' otherwise)
    operands: tuple[str, ...] = ()
    attributes: str = ""  # the text after the operand list (window, dims, ...)

    def dims(self) -> tuple[str, tuple[int, ...]] | None:
        """(dtype, dimensions) of an array-shaped result; None for a tuple."""
        m = _SHAPE.match(self.shape)
        return (m.group(1), tuple(int(d) for d in m.group(2).split(",") if d)) if m else None


def parse_hlo(text: str) -> dict[str, Instruction]:
    """Every instruction of a compiled HLO module (`compiled.as_text()`) by name."""
    computations: dict[str, list[str]] = collections.defaultdict(list)
    rows: list[tuple[str, str, str, str, str]] = []
    current = ""
    for line in text.splitlines():
        head = _COMPUTATION.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if m:
            name, shape, opcode, rest = m.groups()
            computations[current].append(opcode)
            rows.append((name, shape, opcode, rest, current))
    out = {}
    for name, shape, opcode, rest, _ in rows:
        args, _, attributes = rest.partition("), ")
        op_name = _OP_NAME.search(rest)
        window = _WINDOW.search(rest)
        calls = _CALLS.search(rest) if opcode == "fusion" else None
        out[name] = Instruction(
            name=name, opcode=opcode, shape=shape,
            op_name=op_name.group(1) if op_name else "",
            window=tuple(int(s) for s in window.group(1).split("x")) if window else (),
            fused=" ".join(computations.get(calls.group(1), ())) if calls else "",
            operands=tuple(_OPERANDS.findall(args)), attributes=attributes)
    return out


def _backward(instr: Instruction) -> bool:
    # jax.grad's backward pass is the transpose of the forward's linearisation; its
    # ops carry 'transpose(jvp(...))' in their name stack.
    return "transpose(" in instr.op_name


def classify(instr: Instruction) -> str:
    """The category (one of CATEGORIES) of one HLO instruction."""
    phase = "backward" if _backward(instr) else "forward"
    if instr.opcode == "convolution":
        # XLA writes a kernel gradient as a convolution whose window is the whole
        # image (the activations correlated with the output gradient); it keeps no
        # name stack. Forward and input-gradient convolutions have the kernel's window.
        if instr.window and max(instr.window) > 3:
            return "conv kernel gradient"
        return "conv input gradient" if phase == "backward" else "conv forward"
    path = instr.op_name
    if re.search(r"_attn/", path) and not re.search(r"_attn/norm/", path):
        return f"attention {phase}"
    if re.search(r"/norm(_\d+)?/", path):
        return f"group norm {phase}"
    if instr.opcode == "dot" or "dot" in instr.fused.split():
        return f"dense {phase}"
    if instr.opcode in ("copy", "transpose") or instr.name.startswith(
            ("transpose_copy_fusion", "copy_fusion", "transpose_fusion")):
        if not instr.op_name and instr.opcode == "fusion" and instr.shape.count(",") == 3:
            return "layout copies backward"  # the kernel gradients' operand transposes
        return f"layout copies {phase}"
    return f"other {phase}"


# Ops whose thunks return before their work is done (XLA:CPU hands a convolution,
# a dot or a copy to its thread pool and completes it asynchronously), so the trace
# shows only their launch: each is timed on its own instead, at the same shapes.
REPLAYED = ("convolution", "dot", "copy")
_LHS_OUT = {"b": "N", "f": "C", "0": "H", "1": "W"}
_RHS = {"o": "O", "i": "I", "0": "H", "1": "W"}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def _replay_fn(instr: Instruction, instructions: dict[str, Instruction]):
    """(function, argument shapes) computing the same op as `instr` alone."""
    from jax import lax

    shapes = [instructions[o].dims() for o in instr.operands]
    if instr.opcode == "copy":
        return (lambda x: -x), shapes  # one read and one write of the same bytes
    a = instr.attributes
    if instr.opcode == "dot":
        def dims(key):
            m = re.search(key + r"=\{([0-9,]*)\}", a)
            return _ints(m.group(1)) if m else ()
        numbers = ((dims("lhs_contracting_dims"), dims("rhs_contracting_dims")),
                   (dims("lhs_batch_dims"), dims("rhs_batch_dims")))
        return (lambda x, y: lax.dot_general(x, y, numbers)), shapes
    window = re.search(r"window=\{([^}]*)\}", a).group(1)
    fields = dict(f.split("=") for f in window.split())
    rank = len(fields["size"].split("x"))
    per_dim = lambda key, default: tuple(int(v) for v in fields[key].split("x")) \
        if key in fields else (default,) * rank  # noqa: E731
    padding = [tuple(int(v) for v in p.split("_")) for p in fields["pad"].split("x")] \
        if "pad" in fields else [(0, 0)] * rank
    labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", a)
    spec = ("".join(_LHS_OUT[c] for c in labels.group(1)),
            "".join(_RHS[c] for c in labels.group(2)),
            "".join(_LHS_OUT[c] for c in labels.group(3)))
    groups = re.search(r"feature_group_count=(\d+)", a)
    batch_groups = re.search(r"batch_group_count=(\d+)", a)

    def conv(x, w):
        return lax.conv_general_dilated(
            x, w, per_dim("stride", 1), padding, per_dim("lhs_dilate", 1),
            per_dim("rhs_dilate", 1), spec,
            feature_group_count=int(groups.group(1)) if groups else 1,
            batch_group_count=int(batch_groups.group(1)) if batch_groups else 1)
    return conv, shapes


def median_ms(fn: Callable, *args, iters: int) -> float:
    """Median ms of `iters` calls of `fn(*args)` (results awaited), after one call
    that compiles and warms up."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def replay_ms(instr: Instruction, instructions: dict[str, Instruction], iters: int = 5,
              cache: dict | None = None) -> float:
    """Median ms of `instr`'s op compiled and run on its own, on random operands of
    its operands' shapes (cached by op and shapes)."""
    import jax
    import jax.numpy as jnp

    key = (instr.opcode, tuple(instructions[o].shape for o in instr.operands), instr.attributes
           if instr.opcode != "copy" else "")
    if cache is not None and key in cache:
        return cache[key]
    fn, shapes = _replay_fn(instr, instructions)
    hlo_types = {"f32": jnp.float32, "bf16": jnp.bfloat16, "f16": jnp.float16,
                 "s32": jnp.int32, "u32": jnp.uint32, "pred": jnp.bool_}
    args = [jnp.ones(dims, hlo_types[dtype]) for dtype, dims in shapes]
    ms = median_ms(jax.jit(fn), *args, iters=iters)
    if cache is not None:
        cache[key] = ms
    return ms


def _trace_events(trace_dir: str) -> list[dict]:
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise RuntimeError(f"jax.profiler wrote no trace under {trace_dir}")
    with gzip.open(max(files, key=os.path.getmtime), "rt", encoding="utf-8") as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def profile_compiled(fn: Callable, args: tuple, iters: int = 3) -> dict[str, Any]:
    """Run the jitted `fn(*args)` `iters` times under jax.profiler; returns
    {'wall_ms': median wall time, 'thunk_ms': the sum of all op times per call (the
    traced thunk times; REPLAYED ops timed alone: a loop body's op counts once per
    executed iteration only when traced, so keep REPLAYED ops out of loops to compare),
    'categories': {category: ms per call}, 'top': the 12 slowest instructions}."""
    import jax

    compiled = fn.lower(*args).compile()
    instructions = parse_hlo(compiled.as_text())
    jax.block_until_ready(fn(*args))  # compile and warm up outside the trace
    walls = []
    with tempfile.TemporaryDirectory(prefix="step_profile_") as trace_dir:
        jax.profiler.start_trace(trace_dir)
        try:
            for _ in range(iters):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                walls.append(time.perf_counter() - start)
        finally:
            jax.profiler.stop_trace()
        events = _trace_events(trace_dir)
    per_op: dict[str, float] = collections.defaultdict(float)
    runs: dict[str, int] = collections.defaultdict(int)
    for e in events:
        op = e.get("args", {}).get("hlo_op")
        if op in instructions:
            per_op[op] += e["dur"] / 1e3 / iters  # microseconds -> ms per call
            runs[op] += 1
    # A while loop's thunk contains its body's thunks: count the body, not the loop.
    cache: dict = {}
    for name in list(per_op):
        instr = instructions[name]
        if instr.opcode in ("while", "call", "conditional"):
            del per_op[name]
        elif instr.opcode in REPLAYED:
            # times it ran per call: more than once in a loop body
            per_op[name] = replay_ms(instr, instructions, cache=cache) * runs[name] / iters
    categories = {c: 0.0 for c in CATEGORIES}
    for name, ms in per_op.items():
        categories[classify(instructions[name])] += ms
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
    return {"wall_ms": statistics.median(walls) * 1e3, "thunk_ms": sum(per_op.values()),
            "categories": categories,
            "top": [{"op": n, "ms": ms, "category": classify(instructions[n]),
                     "shape": instructions[n].shape} for n, ms in top]}


def profile_step(ours, batch: dict, iters: int = 3) -> dict[str, Any]:
    """The profile of `ours.forward_backward` (loss and gradient; benchmarks/
    vs_imagen_pytorch.py's Ours) on `batch`."""
    return profile_compiled(ours.forward_backward, (ours.params, batch, ours.key), iters)


def format_profile(profile: dict[str, Any]) -> str:
    lines = [f"wall {profile['wall_ms']:.1f} ms per call; thunks {profile['thunk_ms']:.1f} ms"]
    for c, ms in profile["categories"].items():
        lines.append(f"  {c:26s} {ms:8.1f} ms  {ms / profile['thunk_ms']:6.1%}")
    lines.append("  slowest instructions:")
    for t in profile["top"]:
        lines.append(f"    {t['ms']:7.1f} ms  {t['category']:24s} {t['op']} {t['shape']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--program", choices=("forward_backward", "step"), default="forward_backward")
    args = p.parse_args(argv)
    from benchmarks.vs_imagen_pytorch import Ours

    ours = Ours(args.size)
    batch = ours.train_batch(args.batch)
    if args.program == "step":
        import jax
        step = jax.jit(ours.train_step_fn)
        result = profile_compiled(step, (ours.params, ours.opt, batch, ours.key), args.iters)
    else:
        result = profile_step(ours, batch, args.iters)
    print(f"{args.program}, {args.size} px batch {args.batch}")
    print(format_profile(result))


if __name__ == "__main__":
    from imagen_jax.xla_flags import add_default_xla_flags
    add_default_xla_flags()  # before JAX starts its backend
    main()
