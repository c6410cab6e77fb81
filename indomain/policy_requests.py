"""From a job and the bureau's registry to a policy request, and from a decision back to
the plan: the glue between :mod:`policies` and the sandbox, kept pure and small.

The stricter of the dataset manifest's ``min_group_size`` and the decision's
``min_group_size`` obligation applies to the plan, so a grant can only tighten
suppression, never loosen it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import policies
from computations import DatasetSpec
from gateway import JobDocument
from indomain.registry import DatasetClass, Grant, Licence


class RegistryFacts(Protocol):
    """What a decision reads from the registry: today's (:class:`indomain.registry.Registry`)
    or the past's (:class:`indomain.policy_diff.HistoricalRegistry`)."""

    def licence(self, enterprise: str) -> Licence: ...

    def dataset_class(self, dataset: str) -> DatasetClass: ...

    def grants(self, holder: str | None = None) -> list[Grant]: ...


def epsilon_of(params: Mapping[str, Any]) -> Decimal | None:
    """The epsilon a job asks for (``params["epsilon"]``), or ``None`` if it asks none.

    Raises :class:`policies.PolicyError` for an epsilon that is not a plain number: a
    malformed privacy cost must deny, not read as zero.
    """
    if "epsilon" not in params:
        return None
    value = params["epsilon"]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise policies.PolicyError("job parameter epsilon must be a number")
    try:
        epsilon = Decimal(str(value))
    except InvalidOperation:
        raise policies.PolicyError("job parameter epsilon must be a number") from None
    if not epsilon.is_finite() or epsilon < 0:
        raise policies.PolicyError("job parameter epsilon must be finite and not negative")
    return epsilon


def columns_of(plan: Any) -> tuple[str, ...]:
    """The dataset columns a checked plan uses: group columns, aggregated columns and the
    columns its WHERE clause tests (a filter reads a column as surely as a GROUP BY)."""
    body = getattr(plan, "body", {})
    if not isinstance(body, Mapping):
        return ()
    used: set[str] = {str(column) for column in body.get("group_by", ())}
    used.update(str(column) for column in body.get("columns", ()))  # an approved module's
    for item in (*body.get("outputs", ()), *body.get("where", ())):
        column = item.get("column") if isinstance(item, Mapping) else None
        if isinstance(column, str) and column != "*":
            used.add(column)
    return tuple(sorted(used))


def result_size_of(plan: Any, spec: DatasetSpec) -> int | None:
    """The most rows a checked plan's result can have: the product of the number of public
    keys of its group columns (1 with no group column); ``None`` when a group column
    declares no keys, so the size is unknown (and a policy limit on it fails closed)."""
    body = getattr(plan, "body", {})
    if isinstance(body, Mapping) and "module" in body:
        return None  # a module's result has as many rows as it chooses to return
    group_by = body.get("group_by", ()) if isinstance(body, Mapping) else ()
    keys = {c.name: c.keys for c in spec.columns}
    size = 1
    for column in group_by:
        declared = keys.get(str(column))
        if not declared:
            return None
        size *= len(declared)
    return size


def build_request(
    registry: RegistryFacts,
    job: JobDocument,
    *,
    columns: tuple[str, ...],
    when: datetime,
    result_size: int | None = None,
    epsilon: Decimal | None = None,
) -> policies.AccessRequest:
    """The access request for ``job`` at ``when``; raises :class:`policies.PolicyError`.

    ``epsilon``: what the job's checked plan spends; without it, the job's own
    ``params["epsilon"]`` if it names one (no computation accepts one today)."""
    return registry_request(
        registry,
        enterprise=job.enterprise,
        computation=job.computation,
        dataset=job.dataset,
        purpose=job.purpose,
        when=when,
        epsilon=epsilon if epsilon is not None else epsilon_of(job.params),
        columns=columns,
        result_size=result_size,
    )


def registry_request(
    registry: RegistryFacts,
    *,
    enterprise: str,
    computation: str,
    dataset: str,
    purpose: str,
    when: datetime,
    epsilon: Decimal | None = None,
    columns: tuple[str, ...] = (),
    result_size: int | None = None,
) -> policies.AccessRequest:
    """An access request with the enterprise's licence and grants and the dataset's class
    as the registry holds them now. Raises :class:`policies.PolicyError`."""
    licence = registry.licence(enterprise)
    dataset_class = registry.dataset_class(dataset)
    return policies.AccessRequest(
        enterprise=enterprise,
        computation=computation,
        dataset=dataset,
        purpose=purpose,
        time=when,
        enterprise_attrs=licence.attrs(),
        dataset_attrs=dataset_class.attrs(),
        dataset_groups=dataset_class.group_attrs(),
        epsilon=epsilon,
        columns=columns,
        result_size=result_size,
        grants={g.id: g.attrs() for g in registry.grants(enterprise)},
    )


def spec_with_obligations(spec: DatasetSpec, obligations: Mapping[str, str]) -> DatasetSpec:
    """``spec`` with the stricter of its and the obligations' minimum group size."""
    raw = obligations.get("min_group_size")
    if raw is None:
        return spec
    required = int(raw)
    if required <= spec.min_group_size:
        return spec
    return spec.model_copy(update={"min_group_size": required})


def with_obligations(spec: DatasetSpec, decision: policies.Decision) -> DatasetSpec:
    """:func:`spec_with_obligations` for an allow's obligations."""
    return spec_with_obligations(spec, getattr(decision, "obligations", {}))
