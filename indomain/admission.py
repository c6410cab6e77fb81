"""Admission of a signed job: decide, check, reserve budget, and record the outcome.

Every path ends on the ledger (``job.accepted``, ``job.denied`` or ``job.refused``), so
an auditor sees each signed request whatever became of it. The order matters: the policy
decides before the computation's own checks refuse, so a denial never depends on how the
query was written, and budget is reserved last, only for a job that will run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import policies
from computations import (
    ComputationError,
    DatasetSpec,
    QueryRefused,
    code_hash_of,
    get_computation,
    join_partner,
    plan_cost,
)
from enclave import DatasetError
from gateway import Admission, JobDocument
from indomain import budgets
from indomain.approvals import computation_for, resolve_params
from indomain.errors import ConfigError, IndomainError
from indomain.policy_requests import columns_of, result_size_of, spec_with_obligations
from indomain.proposals import REVIEW_COUNTS, ProposalError

if TYPE_CHECKING:
    from indomain.sandbox import Sandbox


class NoLongerAllowed(IndomainError):
    """An accepted job that the policies, licence or grants no longer allow at run time."""

    exit_code = 3


def digest(data: bytes) -> str:
    """``sha256:<hex>``, the digest form used on the ledger."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def admit(sandbox: Sandbox, job: JobDocument, *, job_id: str, signature: str) -> Admission:
    """Decide on ``job`` and record the outcome; see the module docstring."""
    request = {
        "job_id": job_id,
        "enterprise": job.enterprise,
        "computation": job.computation,
        "dataset": job.dataset,
        "purpose": job.purpose,
        "request": job.model_dump(exclude_none=True),
        "request_signature": signature,
        "request_digest": digest(job.canonical()),
    }
    try:
        computation = get_computation(job.computation)
    except ComputationError as exc:
        return refuse(sandbox, request, "unknown_computation", str(exc))
    try:
        record = sandbox.enclave.dataset(job.dataset)
    except DatasetError as exc:
        return refuse(sandbox, request, "unknown_dataset", str(exc))
    try:
        params = resolve_params(sandbox, job)
    except ProposalError as exc:
        code = getattr(exc, "code", "proposal_not_approved")
        return refuse(sandbox, request, code, str(exc))
    computation = computation_for(sandbox, job, computation)  # an approved module's runner
    now = datetime.now(UTC)
    try:
        decided_on = _decide(sandbox, job, computation, record.spec, params, now)
    except _NotDecidable as exc:
        request.update(exc.recorded)
        return refuse(sandbox, request, "policy_denied", exc.reason)
    partner, partners, decisions = decided_on.partner, decided_on.partners, decided_on.decisions
    columns, size, theirs = decided_on.columns, decided_on.result_size, decided_on.partner_columns
    if partner is not None:
        request["partner_dataset"] = partner
    # What the decision was made with, so `policy diff` can replay it exactly later (the
    # columns of a proposal's rendered template, the gateway's time, not the job's).
    request["decided_with"] = {
        "columns": list(columns),
        "result_size": size,
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        **({"partner_columns": list(theirs)} if partner is not None else {}),
        **({"epsilon": str(decided_on.epsilon)} if decided_on.epsilon is not None else {}),
    }
    decision = decisions[0][1]
    decided = {
        "allowed": decision.allowed,
        "policies": list(decision.determining_policies),
        "reason": decision.reason,
        "policy_version": decision.policy_version,
        "code": decision.code,
        "obligations": dict(decision.obligations),
    }
    if partner is not None:
        other = decisions[1][1]
        decided["datasets"] = {
            dataset: {
                "allowed": d.allowed,
                "policies": list(d.determining_policies),
                "reason": d.reason,
                "code": d.code,
                "obligations": dict(d.obligations),
            }
            for dataset, d in decisions
        }
        if decision.allowed and not other.allowed:
            decision = other  # the partner's denial is the one to report
        decided["allowed"] = decision.allowed and other.allowed
    for dataset, denial in decisions:
        if denial.allowed:
            continue
        where = f"dataset {dataset}: " if partner is not None else ""
        entry = sandbox.ledger.append(
            "job.denied",
            {**request, "decision": decided, **({"denied_dataset": dataset} if partner else {})},
        )
        return Admission(
            outcome="denied",
            code="policy_denied",
            reason=where + denial.reason,
            ledger_index=entry.index,
            policies=denial.determining_policies,
            policy_version=denial.policy_version,
            details={
                "decision_code": denial.code,
                **({"denied_dataset": dataset} if partner is not None else {}),
                "messages": {
                    lang: where + policies.message(denial.code, denial.details, lang=lang)
                    for lang in ("en", "zh")
                },
            },
        )
    obligations = dict(
        policies.merge_obligations([d.obligations for _, d in decisions])
        if partner is not None
        else decision.obligations
    )
    if partner is not None:
        decided["obligations"] = obligations  # the stricter of both datasets' decisions
    review = str(obligations.get("review", "none"))
    if review != "none" and "proposal" not in job.params:
        # A grant that requires review covers reviewed computations only.
        return refuse(
            sandbox,
            request,
            "review_required",
            f"the grant requires {review} review: run an approved proposal "
            '(params {"proposal": ..., "values": ...}) instead of ad-hoc SQL',
            decided=decided,
        )
    if review != "none" and "proposal" in job.params:
        # The proposal was approved by the reviewers its submission required; this job's
        # own decision may demand more (a permit conditioned on its columns, or a policy
        # tightened since): the stricter count must have approved it.
        approved = sandbox.reviews.get(job.params["proposal"]).approvals
        needed = REVIEW_COUNTS[review]
        if len(approved) < needed:
            return refuse(
                sandbox,
                request,
                "review_required",
                f"the grant requires {review} review, but proposal "
                f"{job.params['proposal']} was approved by {len(approved)} reviewer(s): "
                "propose it again to be reviewed under the current policy",
                decided=decided,
            )
    try:
        plan = computation.check(
            params,
            spec_with_obligations(record.spec, obligations),
            obligations=obligations,
            **_partners_arg(
                computation,
                {name: spec_with_obligations(spec, obligations) for name, spec in partners.items()},
            ),
        )
        if join_partner(plan) != partner:  # the shape check and this one must agree
            raise ComputationError("the query's join changed between checks")
    except QueryRefused as exc:
        return refuse(
            sandbox,
            request,
            "query_refused",
            str(exc),
            decided=decided,
            details={"rule": exc.rule, "fragment": exc.fragment},
        )
    except ComputationError as exc:
        return refuse(sandbox, request, "query_refused", str(exc), decided=decided)
    try:  # the privacy budget is reserved before anything runs (indomain/budgets.py)
        budget = budgets.reserve_for_plan(
            sandbox.accountant,
            plan,
            spec=record.spec,
            enterprise=job.enterprise,
            job_id=job_id,
            obligations=obligations,
            is_released=sandbox.has_released,
            partner=partners[partner] if partner is not None else None,
        )
    except (budgets.BudgetExhausted, ConfigError) as exc:
        return refuse(sandbox, request, "budget_exhausted", str(exc), decided=decided)
    entry = sandbox.ledger.append(
        "job.accepted",
        {
            **request,
            "decision": decided,
            "code_hash": code_hash_of(plan),  # an approved module: its approved hash
            "params_digest": plan.params_digest,
            "budget": budget,
        },
    )
    return Admission(
        outcome="accepted",
        code="accepted",
        reason=decision.reason,
        ledger_index=entry.index,
        policies=decision.determining_policies,
        policy_version=decision.policy_version,
        details={
            **({"obligations": dict(obligations)} if obligations else {}),
            "budget": budget,
        },
    )


def joinable(sandbox: Sandbox, spec: DatasetSpec) -> dict[str, DatasetSpec]:
    """The specs of the imported datasets ``spec``'s manifest declares joins to."""
    found = {}
    for join in spec.joins:
        try:
            found[join.dataset] = sandbox.enclave.dataset(join.dataset).spec
        except DatasetError:
            continue  # not imported (yet): a query joining it is refused by the checker
    return found


def partners_arg(
    sandbox: Sandbox, computation: Any, spec: DatasetSpec, obligations: Mapping[str, str]
) -> dict[str, Any]:
    """The ``partners=`` argument of ``computation.check`` for a job on ``spec`` under
    ``obligations`` (empty when no join is declared); execution re-checks with it."""
    partners = joinable(sandbox, spec)
    return _partners_arg(
        computation,
        {name: spec_with_obligations(other, obligations) for name, other in partners.items()},
    )


def _partners_arg(computation: Any, partners: dict[str, DatasetSpec]) -> dict[str, Any]:
    """``partners=`` for the computation that takes it (``aggregate``), else nothing."""
    return {"partners": partners} if partners and computation.name == "aggregate" else {}


def _joined_result_size(plan: Any, specs: Mapping[str, DatasetSpec]) -> int | None:
    """:func:`result_size_of` for a join plan, whose group columns are ``<dataset>.<column>``:
    the product of each column's declared keys in its own manifest, ``None`` if one has none."""
    size = 1
    for name in plan.body.get("group_by", ()):
        dataset, _, column = str(name).partition(".")
        spec = specs.get(dataset)
        found = spec.column(column) if spec is not None else None
        if found is None or not found.keys:
            return None
        size *= len(found.keys)
    return size


def _split_columns(columns: tuple[str, ...], dataset: str) -> tuple[str, ...]:
    """The columns of ``dataset`` among a join plan's ``<dataset>.<column>`` names."""
    prefix = dataset + "."
    return tuple(c.removeprefix(prefix) for c in columns if c.startswith(prefix))


def refuse(
    sandbox: Sandbox,
    request: dict[str, Any],
    code: str,
    reason: str,
    *,
    decided: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
) -> Admission:
    """Record a refusal (``job.refused``) and return it as the admission outcome."""
    fields = {**request, "refusal": {"code": code, "reason": reason, **(details or {})}}
    if decided is not None:
        fields["decision"] = decided
    entry = sandbox.ledger.append("job.refused", fields)
    return Admission(
        outcome="refused",
        code=code,
        reason=reason,
        ledger_index=entry.index,
        details=details or {},
    )


class _NotDecidable(Exception):
    """The registry facts for a job do not form a policy request (a policy error)."""

    def __init__(self, reason: str, recorded: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recorded = recorded


@dataclass(frozen=True)
class _Decided:
    """The policy decisions for one job and what they were made with."""

    partner: str | None
    partners: dict[str, DatasetSpec]
    columns: tuple[str, ...]
    result_size: int | None
    epsilon: Decimal | None
    decisions: list[tuple[str, policies.Decision]]
    partner_columns: tuple[str, ...]


def _decide(
    sandbox: Sandbox,
    job: JobDocument,
    computation: Any,
    spec: DatasetSpec,
    params: dict[str, Any],
    now: datetime,
) -> _Decided:
    """The policy decisions for ``job``: one per dataset it reads (its own, and a declared
    join partner, each for its own columns), with what they were made with.

    ``context.job.epsilon`` is what the checked plan spends (the plan's ``plan_cost``):
    a job names no epsilon of its own, so a policy condition on it must see the cost the
    job will be charged, before any obligation lowers it (so a condition can only deny
    more, never less). A plan that does not check decides with none (and is refused
    right after the decision).
    """
    partners = joinable(sandbox, spec)
    partner: str | None = None
    shape: Any = None
    epsilon: Decimal | None = None
    try:
        shape = computation.check(params, spec, **_partners_arg(computation, partners))
        columns, size = columns_of(shape), result_size_of(shape, spec)
        partner = join_partner(shape)
        epsilon = Decimal(repr(plan_cost(shape)[0]))
    except ComputationError:
        columns, size = (), None  # refused after the policy decision
    theirs: tuple[str, ...] = ()
    if partner is not None:
        mine, theirs = _split_columns(columns, job.dataset), _split_columns(columns, partner)
        size = _joined_result_size(shape, {job.dataset: spec, **partners})
        columns = mine
    datasets = [(job.dataset, columns)] + ([(partner, theirs)] if partner is not None else [])
    decisions = []
    for dataset, used in datasets:
        try:
            access = sandbox.access_request(
                job.model_copy(update={"dataset": dataset}),
                columns=used,
                result_size=size,
                when=now,
                epsilon=epsilon,
            )
        except policies.PolicyError as exc:
            where = f" on dataset {dataset}" if partner is not None else ""
            recorded = {"partner_dataset": partner} if partner is not None else {}
            raise _NotDecidable(f"denied{where}: {exc}", recorded) from None
        decisions.append((dataset, policies.decide(sandbox.policy_set, access)))
    return _Decided(partner, partners, columns, size, epsilon, decisions, theirs)


def recheck(sandbox: Sandbox, job: JobDocument) -> None:
    """Decide on an accepted job again just before it runs; raise :class:`NoLongerAllowed`
    if it is now denied (on its dataset or a join partner).

    A job normally runs milliseconds after its admission, but one resumed after a restart
    may run much later: a licence suspended or a grant revoked meanwhile must stop it.
    """
    record = sandbox.enclave.dataset(job.dataset)
    params = resolve_params(sandbox, job)
    computation = computation_for(sandbox, job, get_computation(job.computation))
    try:
        decisions = _decide(
            sandbox, job, computation, record.spec, params, datetime.now(UTC)
        ).decisions
    except _NotDecidable as exc:
        raise NoLongerAllowed(f"no longer allowed at run time: {exc.reason}") from None
    for _, decision in decisions:
        if not decision.allowed:
            raise NoLongerAllowed(f"no longer allowed at run time: {decision.reason}")
