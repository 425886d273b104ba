"""What a sharded step costs per device, read from the compiled executable.

  - memory: parameter and optimiser-state bytes per device follow exactly from the
    shardings (each leaf's shard shape); peak temporaries come from XLA's buffer
    assignment (`compiled.memory_analysis()`).
  - communication: every collective in the partitioned HLO (`compiled.as_text()`),
    with its payload and the bytes a device sends under the usual ring algorithms:
        all-reduce          2 (n-1)/n x size    (reduce-scatter + all-gather)
        all-gather          (n-1)/n x output size
        reduce-scatter      (n-1)   x output size   (= (n-1)/n x input size)
        all-to-all          (n-1)/n x size
        collective-permute  size
    where n is the size of the collective's replica group.

The train step has no loops (no scan over layers), so each collective in the HLO
runs once per step.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import jax
import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
                "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1}
# `%name = TYPE op(` or `%name = TYPE op-start(`; TYPE is a shape or a tuple of shapes
# (combined collectives: `(f32[32]{0}, /*index=5*/f32[64,32]{1,0}, ...)`).
_INSTRUCTION = re.compile(
    r"=\s*(?P<type>\([^()]*\)|[a-z0-9]+\[[0-9,]*\](?:\{[^}]*\})?)\s+"
    r"(?P<op>" + "|".join(COLLECTIVES) + r")(?P<start>-start)?\(")
_SHAPE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
# A shape's layout, e.g. `{1,0}` or TPU's tiled `{1,3,0,2:T(8,128)(2,1)S(3)}`, whose
# parentheses would break the tuple pattern above; dropped before matching.
_LAYOUT = re.compile(r"(?<=\])\{[^{}]*\}")
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[0-9,]*\})")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=")
_PAIRS = re.compile(r"source_target_pairs=\{")


def shape_bytes(type_text: str) -> int:
    """Bytes of an HLO result type: one shape or a tuple of them (tokens count 0)."""
    total = 0
    for dtype, dims in _SHAPE.findall(type_text):
        if dtype not in _DTYPE_BYTES:
            raise ValueError(f"unknown HLO element type {dtype!r} in {type_text!r}")
        total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _group_size(line: str, num_devices: int) -> int:
    iota = _GROUPS_IOTA.search(line)
    if iota:
        return int(iota.group(2))
    listed = _GROUPS_LIST.search(line)
    if listed:
        members = [m for m in listed.group(1).strip("{}").split(",") if m]
        return len(members) or num_devices
    return num_devices  # replica_groups={} : all devices


_RING_FACTOR = {
    "all-reduce": lambda n: 2 * (n - 1) / n,
    "all-gather": lambda n: (n - 1) / n,
    "reduce-scatter": lambda n: float(n - 1),
    "all-to-all": lambda n: (n - 1) / n,
    "collective-permute": lambda n: 1.0,
}


@dataclasses.dataclass
class CollectiveStats:
    count: int = 0
    payload_bytes: int = 0  # sum of the collectives' result sizes, per device
    sent_bytes: float = 0.0  # bytes one device sends (ring algorithms, module docstring)


def collective_bytes(hlo_text: str, num_devices: int) -> dict[str, CollectiveStats]:
    """Per collective kind: how many, their payload and the bytes each device sends."""
    stats = {kind: CollectiveStats() for kind in COLLECTIVES}
    for line in hlo_text.splitlines():
        if not any(kind in line for kind in COLLECTIVES):
            continue
        line = _LAYOUT.sub("", line)
        match = _INSTRUCTION.search(line)
        if not match:
            continue
        kind = match.group("op")
        size = shape_bytes(match.group("type"))
        if match.group("start") and match.group("type").startswith("("):
            # async start ops return (operands, results[, u32[] contexts]); count the
            # results (TPU's collective-permute-start ends in two u32[] contexts)
            shapes = _SHAPE.findall(match.group("type"))
            while len(shapes) > 2 and shapes[-1][1] == "" and shapes[-1][0] in ("u32", "s32"):
                shapes.pop()
            size = shape_bytes(" ".join(f"{d}[{s}]" for d, s in shapes[len(shapes) // 2:]))
        n = 2 if kind == "collective-permute" else _group_size(line, num_devices)
        if n <= 1:
            continue  # a collective over one device moves nothing
        entry = stats[kind]
        entry.count += 1
        entry.payload_bytes += size
        entry.sent_bytes += _RING_FACTOR[kind](n) * size
    return stats


def total_bytes(tree: Any) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def memory_stats(compiled: Any) -> dict[str, int]:
    """XLA's per-device buffer sizes of a compiled executable (bytes)."""
    analysis = compiled.memory_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    if analysis is None:
        raise RuntimeError("this backend gives no memory analysis")
    out = {name: int(getattr(analysis, f"{name}_size_in_bytes")) for name in
           ("argument", "output", "alias", "temp", "generated_code")}
    # Live at the peak: inputs, outputs not written in place of a donated input, and
    # the temporaries of the step.
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out
