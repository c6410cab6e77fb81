"""The registry of approved computations, by name.

A computation is added here only after review; its code hash then identifies it in policies
and attestations.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from computations._aggregate import AGGREGATE, PlanCharge
from computations._aggregate import plan_charge as _aggregate_charge
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
from computations._module import MODULE, attested_hash, module_charge
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


def warm_up() -> None:
    """Load what the computations need before a request arrives (the enclave's pre-started
    workers call this): their code hashes, and any library a computation loads lazily."""
    for computation in _REGISTRY.values():
        _ = computation.code_hash
        prepare = getattr(computation, "warm_up", None)
        if callable(prepare):
            prepare()


def plan_cost(plan: Plan) -> tuple[float, float]:
    """``(epsilon, delta)`` a run of ``plan`` spends, by its computation.

    A PSI offer spends nothing (it releases public group labels and a rounded length);
    raises :class:`ComputationError` for a plan its computation cannot read.
    """
    if plan.computation == PSI.name:
        return 0.0, 0.0
    if plan.computation == MODULE.name:
        return module_charge(plan)
    if plan.computation == ENCRYPTED_GROUP_SUM.name:
        return _encrypted_cost(plan)
    if plan.computation == ENCRYPTED_LINEAR_SCORE.name:
        return linear_score_cost(plan)
    return _aggregate_cost(plan)


def plan_charge(plan: Plan) -> PlanCharge:
    """What the accountant charges for ``plan``, by its computation (see :func:`plan_cost`;
    aggregate plans may also charge zCDP rho)."""
    if plan.computation == AGGREGATE.name:
        return _aggregate_charge(plan)
    epsilon, delta = plan_cost(plan)
    return PlanCharge(epsilon=epsilon, delta=delta)


def runner_for(plan: Plan) -> Computation:
    """The computation that executes ``plan``: a registered one by name, or the module
    runner for a plan built from an approved module (which no job can name)."""
    if plan.computation == MODULE.name:
        return MODULE
    return get_computation(plan.computation)


def code_hash_of(plan: Plan) -> str:
    """The code hash a run of ``plan`` is attested under: an approved module's own hash,
    otherwise the computation's."""
    if plan.computation == MODULE.name:
        return attested_hash(plan)
    return get_computation(plan.computation).code_hash
