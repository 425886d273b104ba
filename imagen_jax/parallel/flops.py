"""An analytic FLOP count from a function's jaxpr: matmuls and convolutions, with loop
bodies counted as many times as they run.

XLA's cost analysis (`compiled.cost_analysis()`) counts the body of a while loop once,
so a scanned stack of blocks or a blocked attention (lax.map over query blocks) is
undercounted by its trip count. Walking the jaxpr instead, a `scan` body is counted
`length` times. Only the two primitives that carry the FLOPs of these models are
counted (2 x multiply-adds of dot_general and conv_general_dilated); elementwise ops
are left out, as MFU conventions do.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
from jax.extend import core as jex_core


def _dot_flops(eqn: Any) -> float:
    lhs = eqn.invars[0].aval.shape
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    out = math.prod(eqn.outvars[0].aval.shape)
    return 2.0 * out * math.prod(lhs[d] for d in lhs_contract)


def _conv_flops(eqn: Any) -> float:
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    out = math.prod(eqn.outvars[0].aval.shape)
    # rhs spec: (out feature dim, in feature dim, spatial...); the kernel's input
    # features are already per group.
    in_features = rhs[dn.rhs_spec[1]]
    window = math.prod(rhs[d] for d in dn.rhs_spec[2:])
    return 2.0 * out * in_features * window


def _subjaxprs(eqn: Any) -> list[tuple[Any, float]]:
    """(closed or open sub-jaxpr, how many times it runs) of a higher-order primitive."""
    name = eqn.primitive.name
    if name == "scan":
        return [(eqn.params["jaxpr"], float(eqn.params["length"]))]
    if name == "cond":  # the most expensive branch (an upper bound for one run)
        return [(max(eqn.params["branches"], key=lambda b: jaxpr_flops(b)), 1.0)]
    found = []
    for value in eqn.params.values():
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(item, (jex_core.ClosedJaxpr, jex_core.Jaxpr)):
                found.append((item, 1.0))  # pjit, remat, custom_jvp/vjp, while (once)
    return found


def jaxpr_flops(jaxpr: Any) -> float:
    """FLOPs of a (closed) jaxpr's matmuls and convolutions, loops unrolled."""
    inner = jaxpr.jaxpr if isinstance(jaxpr, jex_core.ClosedJaxpr) else jaxpr
    total = 0.0
    for eqn in inner.eqns:
        if eqn.primitive.name == "dot_general":
            total += _dot_flops(eqn)
        elif eqn.primitive.name == "conv_general_dilated":
            total += _conv_flops(eqn)
        else:
            total += sum(times * jaxpr_flops(sub) for sub, times in _subjaxprs(eqn))
    return total


def count_flops(fn: Callable, *args: Any) -> float:
    """Matmul + convolution FLOPs of `fn(*args)` (arrays or ShapeDtypeStructs)."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args))
