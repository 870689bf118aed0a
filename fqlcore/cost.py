"""What a computation costs, counted rather than timed: XLA's FLOP count for the compiled program.

A timer on a shared machine measures the neighbours too; a FLOP count is the same on every run, so chapters and tests
check their cost claims with it and only *show* seconds.
"""
from __future__ import annotations

import jax


def flops(fn, *args, **kwargs) -> float:
    """Floating-point operations of one call of ``fn(*args, **kwargs)``, from XLA's cost analysis of a fresh trace
    (loops that should count every iteration must be unrolled, as ``flow.euler_sample``'s is)."""
    compiled = jax.jit(lambda *a, **k: fn(*a, **k)).lower(*args, **kwargs).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])
