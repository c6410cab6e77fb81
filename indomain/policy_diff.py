"""Which past decisions a new policy set would change, replayed from the ledger.

Every ``job.accepted`` / ``job.denied`` / ``job.refused`` entry carries the signed job
document, so each past request is rebuilt (at the time it was issued, with today's
registry facts, the columns its query uses) and decided under both sets; only the
policies differ between the two decisions, so every change shown is the policy change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import policies
from computations import ComputationError, get_computation
from enclave import DatasetError
from gateway import JobDocument
from indomain.policy_requests import build_request, columns_of, result_size_of

_JOB_EVENTS = ("job.accepted", "job.denied", "job.refused")


@dataclass(frozen=True)
class ChangedDecision:
    ledger_index: int
    enterprise: str
    computation: str
    dataset: str
    purpose: str
    old: str
    new: str

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _outcome(decision: policies.Decision) -> str:
    return "allow" if decision.allowed else f"deny ({decision.code})"


def replay(
    sandbox: Any, old: policies.PolicySet | None, new: policies.PolicySet
) -> tuple[int, list[ChangedDecision]]:
    """``(decisions replayed, those that change)`` over the whole ledger."""
    replayed = 0
    changed = []
    size = sandbox.ledger.size
    for start in range(0, size, 500):
        for entry in sandbox.ledger.entries(start, min(size, start + 500)):
            if entry.type not in _JOB_EVENTS or "request" not in entry.fields:
                continue
            try:
                job = JobDocument.model_validate(dict(_thaw(entry.fields["request"])))
            except ValueError:  # pydantic's ValidationError: not a job we can rebuild
                continue
            columns: tuple[str, ...] = ()
            result_size: int | None = None
            try:
                spec = sandbox.enclave.dataset(job.dataset).spec
                plan = get_computation(job.computation).check(job.params, spec)
                columns, result_size = columns_of(plan), result_size_of(plan, spec)
            except (ComputationError, DatasetError):
                pass
            try:
                request = build_request(
                    sandbox.registry, job, columns=columns, result_size=result_size, when=job.issued
                )
            except policies.PolicyError:
                continue
            replayed += 1
            before = _outcome(policies.decide(old, request))
            after = _outcome(policies.decide(new, request))
            if before != after:
                changed.append(
                    ChangedDecision(
                        entry.index,
                        job.enterprise,
                        job.computation,
                        job.dataset,
                        job.purpose,
                        before,
                        after,
                    )
                )
    return replayed, changed


def policy_changes(old: policies.PolicySet | None, new: policies.PolicySet) -> dict[str, list[str]]:
    """Policy ids added, removed and changed (by their Cedar text) between two sets."""
    before = dict(old._handles().bodies) if old is not None else {}
    after = dict(new._handles().bodies)
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(p for p in set(after) & set(before) if after[p] != before[p]),
    }


def summary(
    sandbox: Any, old: policies.PolicySet | None, new: policies.PolicySet
) -> dict[str, Any]:
    """What the ledger records when ``new`` replaces ``old``."""
    replayed, changed = replay(sandbox, old, new)
    return {
        "previous_version": old.version if old is not None else None,
        **policy_changes(old, new),
        "replayed_decisions": replayed,
        "changed_decisions": len(changed),
    }


def _thaw(value: Any) -> Any:
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value
