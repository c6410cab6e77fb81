"""The registry of approved computations, by name.

A computation is added here only after review; its code hash then identifies it in policies
and attestations.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from computations._aggregate import AGGREGATE
from computations._aggregate import plan_cost as _aggregate_cost
from computations._computation import Computation
from computations._encrypted import (
    ENCRYPTED_GROUP_SUM,
    ENCRYPTED_LINEAR_SCORE,
    PSI,
    linear_score_cost,
)
from computations._encrypted import plan_cost as _encrypted_cost
from computations._errors import ComputationError, shorten
from computations._plan import Plan

_REGISTRY: Final[Mapping[str, Computation]] = MappingProxyType(
    {c.name: c for c in (AGGREGATE, PSI, ENCRYPTED_GROUP_SUM, ENCRYPTED_LINEAR_SCORE)}
)


def get_computation(name: str) -> Computation:
    """The approved computation called ``name``.

    Raises :class:`ComputationError` naming the known computations if there is none.
    """
    computation = _REGISTRY.get(name) if isinstance(name, str) else None
    if computation is None:
        known = ", ".join(available_computations())
        raise ComputationError(
            f"unknown computation {shorten(str(name), 64)!r}; known computations: {known}"
        )
    return computation


def available_computations() -> tuple[str, ...]:
    """The names of the approved computations, sorted."""
    return tuple(sorted(_REGISTRY))


def plan_cost(plan: Plan) -> tuple[float, float]:
    """``(epsilon, delta)`` a run of ``plan`` spends, by its computation.

    A PSI offer spends nothing (it releases public group labels and a rounded length);
    raises :class:`ComputationError` for a plan its computation cannot read.
    """
    if plan.computation == PSI.name:
        return 0.0, 0.0
    if plan.computation == ENCRYPTED_GROUP_SUM.name:
        return _encrypted_cost(plan)
    if plan.computation == ENCRYPTED_LINEAR_SCORE.name:
        return linear_score_cost(plan)
    return _aggregate_cost(plan)
