"""Which past decisions a new policy set would change, replayed from the ledger.

Every ``job.accepted`` / ``job.denied`` / ``job.refused`` entry carries the signed job
document, so each past request is rebuilt (at the time it was issued, with the columns
its query uses) and decided under both sets. The registry facts are those *of the time*:
the ledger records every registry change (``enterprise.registered``,
``enterprise.licence``, ``dataset.classified``, ``grant.issued``, ``grant.status``), so
:class:`HistoricalRegistry` replays them in ledger order and each job is decided with the
licences, grants and dataset classes in force just before its entry. Only the policies
differ between the two decisions, so every change shown is the policy change: a licence
suspended since cannot hide one, nor invent one.

A job that joined a partner dataset was decided on both datasets, each for its own
columns (:func:`indomain.admission._decide`), and allowed only if both allowed; it is
replayed the same way, so a policy change on the partner alone shows up too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import policies
from computations import ComputationError, get_computation, join_partner
from enclave import DatasetError
from gateway import JobDocument
from indomain.admission import partners_arg
from indomain.errors import IndomainError
from indomain.policy_requests import build_request, columns_of, result_size_of
from indomain.registry import (
    RESTRICTED,
    UNLICENSED,
    DatasetClass,
    Grant,
    Licence,
    parse_expiry,
)

_JOB_EVENTS = ("job.accepted", "job.denied", "job.refused")


class HistoricalRegistry:
    """The registry as it was at one point of the ledger: fed its entries in order.

    It answers like :class:`indomain.registry.Registry` (``licence``, ``dataset_class``,
    ``grants``), so the same request builder serves today's decisions and past ones. An
    entry it cannot read is skipped: the facts before it stay, which fails closed for a
    licence (an enterprise never seen registered is ``unlicensed``).
    """

    def __init__(self) -> None:
        self._licences: dict[str, Licence] = {}
        self._classes: dict[str, DatasetClass] = {}
        self._grants: dict[str, Grant] = {}

    def feed(self, entry_type: str, fields: Any) -> None:
        """Apply one ledger entry's registry change (other entries change nothing)."""
        try:
            if entry_type in ("enterprise.registered", "enterprise.licence"):
                data = _thaw(fields["licence"])
                expires = data.get("licence_expires")
                self._licences[str(data["enterprise"])] = Licence(
                    enterprise=str(data["enterprise"]),
                    licence_number=str(data.get("licence_number") or ""),
                    licence_expires=parse_expiry(str(expires)) if expires else None,
                    status=str(data["status"]),
                )
            elif entry_type == "dataset.classified":
                self._classes[str(fields["dataset"])] = DatasetClass(
                    str(fields["dataset"]),
                    int(fields["sensitivity"]),
                    tuple(str(g) for g in fields["groups"]),
                )
            elif entry_type in ("grant.issued", "grant.status"):
                grant = Grant.from_json(_thaw(fields["grant"]))
                self._grants[grant.id] = grant
        except (KeyError, TypeError, ValueError, IndomainError):
            return

    def licence(self, enterprise: str) -> Licence:
        return self._licences.get(enterprise) or Licence(enterprise, "", None, UNLICENSED)

    def dataset_class(self, dataset: str) -> DatasetClass:
        return self._classes.get(dataset) or DatasetClass(dataset, RESTRICTED, ())

    def grants(self, holder: str | None = None) -> list[Grant]:
        return [g for _, g in sorted(self._grants.items()) if holder is None or g.holder == holder]


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


def _decided_with(
    sandbox: Any, job: JobDocument, fields: Any
) -> tuple[tuple[str, ...], int | None, datetime, tuple[str, ...]]:
    """The columns, result size and time a recorded decision was made with, and the
    columns it read from its join partner (empty without one).

    Entries since admission records them (``decided_with``, with ``partner_columns`` for
    a join); what an older entry lacks is recomputed from the job's parameters (and its
    own issue time), as before.
    """
    recorded = fields.get("decided_with")
    if recorded is not None:
        try:
            size = recorded["result_size"]
            columns = tuple(str(c) for c in recorded["columns"])
            when = datetime.fromisoformat(str(recorded["time"]).replace("Z", "+00:00"))
            result_size = None if size is None else int(size)
        except (KeyError, TypeError, ValueError):
            recorded = None
    if recorded is not None and "partner_columns" in recorded:
        return columns, result_size, when, tuple(str(c) for c in recorded["partner_columns"])
    found, found_size, theirs = _recompute(sandbox, job)
    if recorded is not None:
        return columns, result_size, when, theirs
    return found, found_size, job.issued, theirs


def _recorded_epsilon(fields: Any) -> Decimal | None:
    """The epsilon a recorded decision was made with (``decided_with.epsilon``: what the
    checked plan spent), or ``None`` for entries from before it was recorded, which were
    decided with none."""
    recorded = fields.get("decided_with")
    value = recorded.get("epsilon") if isinstance(recorded, Mapping) else None
    if not isinstance(value, str):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _recompute(
    sandbox: Any, job: JobDocument
) -> tuple[tuple[str, ...], int | None, tuple[str, ...]]:
    """Columns, result size and partner columns from the job's parameters, as admission
    derived them (``(), None, ()`` if the query does not check)."""
    try:
        spec = sandbox.enclave.dataset(job.dataset).spec
        computation = get_computation(job.computation)
        plan = computation.check(job.params, spec, **partners_arg(sandbox, computation, spec, {}))
        columns, size = columns_of(plan), result_size_of(plan, spec)
    except (ComputationError, DatasetError):
        return (), None, ()
    partner = join_partner(plan)
    if partner is None:
        return columns, size, ()
    mine, theirs = (
        tuple(c.removeprefix(prefix) for c in columns if c.startswith(prefix))
        for prefix in (f"{job.dataset}.", f"{partner}.")
    )
    return mine, size, theirs


def _joint_outcome(
    policy_set: policies.PolicySet | None, requests: list[tuple[str, policies.AccessRequest]]
) -> str:
    """The outcome of deciding every dataset a job read, as admission did: allowed only
    if each is; the first denial (its own dataset before the partner) is the one shown."""
    for dataset, request in requests:
        decision = policies.decide(policy_set, request)
        if not decision.allowed:
            where = f" on {dataset}" if len(requests) > 1 else ""
            return _outcome(decision) + where
    return "allow"


def replay(
    sandbox: Any, old: policies.PolicySet | None, new: policies.PolicySet
) -> tuple[int, list[ChangedDecision]]:
    """``(decisions replayed, those that change)`` over the whole ledger, each decided
    with the registry facts recorded on the ledger before it."""
    replayed = 0
    changed = []
    registry = HistoricalRegistry()
    size = sandbox.ledger.size
    for start in range(0, size, 500):
        for entry in sandbox.ledger.entries(start, min(size, start + 500)):
            registry.feed(entry.type, entry.fields)
            if entry.type not in _JOB_EVENTS or "request" not in entry.fields:
                continue
            try:
                job = JobDocument.model_validate(dict(_thaw(entry.fields["request"])))
            except ValueError:  # pydantic's ValidationError: not a job we can rebuild
                continue
            columns, result_size, when, theirs = _decided_with(sandbox, job, entry.fields)
            epsilon = _recorded_epsilon(entry.fields)
            reads = [(job.dataset, job, columns)]
            partner = entry.fields.get("partner_dataset")
            if isinstance(partner, str) and partner:
                reads.append((partner, job.model_copy(update={"dataset": partner}), theirs))
            try:
                requests = [
                    (
                        dataset,
                        build_request(
                            registry,
                            read,
                            columns=used,
                            result_size=result_size,
                            when=when,
                            epsilon=epsilon,
                        ),
                    )
                    for dataset, read, used in reads
                ]
            except policies.PolicyError:
                continue
            replayed += 1
            before = _joint_outcome(old, requests)
            after = _joint_outcome(new, requests)
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
    before = dict(old.bodies()) if old is not None else {}
    after = dict(new.bodies())
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
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value
