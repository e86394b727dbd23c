"""The matmuls of a traced program, for tests that count FLOPs against the program itself."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import jax
import jax.extend


def dot_equations(jaxpr: Any, times: int = 1) -> Iterator[tuple[Any, int]]:
    """Every dot_general of a jaxpr and of the programs nested in it, with how often it runs (a scan's body: once
    per iteration)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn, times
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from dot_equations(sub, times * eqn.params.get("length", 1))


def dot_flops(eqn: Any) -> int:
    """FLOPs of one dot_general at 2 per multiply-add (XLA's convention): 2 x output elements x contraction."""
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
    return 2 * math.prod(out.shape) * math.prod(lhs.shape[i] for i in contracting)


def only_the_dots(jaxpr: Any) -> tuple[Any, list[jax.ShapeDtypeStruct]]:
    """A program of the jaxpr's matmuls alone, each on inputs of its operands' shapes and dtypes, every result
    returned (so none is optimised away), and those inputs: XLA's cost analysis of it counts only matmuls."""
    eqns = [eqn for eqn, times in dot_equations(jaxpr) for _ in range(times)]

    def dots(*operands: jax.Array) -> list[jax.Array]:
        return [
            jax.lax.dot_general(
                operands[2 * i],
                operands[2 * i + 1],
                eqn.params["dimension_numbers"],
                preferred_element_type=eqn.params.get("preferred_element_type"),
            )
            for i, eqn in enumerate(eqns)
        ]

    inputs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for eqn in eqns for v in eqn.invars[:2]]
    return dots, inputs
