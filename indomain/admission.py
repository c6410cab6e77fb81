"""Admission of a signed job: decide, check, reserve budget, and record the outcome.

Every path ends on the ledger (``job.accepted``, ``job.denied`` or ``job.refused``), so
an auditor sees each signed request whatever became of it. The order matters: the policy
decides before the computation's own checks refuse, so a denial never depends on how the
query was written, and budget is reserved last, only for a job that will run.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import policies
from computations import (
    Computation,
    ComputationError,
    DatasetSpec,
    QueryRefused,
    code_hash_of,
    get_computation,
)
from enclave import DatasetError
from gateway import Admission, JobDocument
from indomain import budgets
from indomain.approvals import computation_for, resolve_params
from indomain.errors import ConfigError, IndomainError
from indomain.policy_requests import columns_of, result_size_of, with_obligations
from indomain.reviews import REVIEW_COUNTS, ProposalError

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
        "request": job.model_dump(),
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
    policy_set = sandbox.policy_set
    columns, size = _shape(computation, params, record.spec)
    now = datetime.now(UTC)
    # What the decision was made with, so `policy diff` can replay it exactly later (the
    # columns of a proposal's rendered template, the gateway's time, not the job's).
    request["decided_with"] = {
        "columns": list(columns),
        "result_size": size,
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    try:
        access = sandbox.access_request(job, columns=columns, result_size=size, when=now)
    except policies.PolicyError as exc:
        return refuse(sandbox, request, "policy_denied", f"denied: {exc}")
    decision = policies.decide(policy_set, access)
    decided = {
        "allowed": decision.allowed,
        "policies": list(decision.determining_policies),
        "reason": decision.reason,
        "policy_version": decision.policy_version,
        "code": decision.code,
        "obligations": dict(decision.obligations),
    }
    if not decision.allowed:
        entry = sandbox.ledger.append("job.denied", {**request, "decision": decided})
        return Admission(
            outcome="denied",
            code="policy_denied",
            reason=decision.reason,
            ledger_index=entry.index,
            policies=decision.determining_policies,
            policy_version=decision.policy_version,
            details={
                "decision_code": decision.code,
                "messages": {
                    lang: policies.message(decision.code, decision.details, lang=lang)
                    for lang in ("en", "zh")
                },
            },
        )
    obligations = dict(decision.obligations)
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
            params, with_obligations(record.spec, decision), obligations=obligations
        )
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
            **({"obligations": dict(decision.obligations)} if decision.obligations else {}),
            "budget": budget,
        },
    )


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


def recheck(sandbox: Sandbox, job: JobDocument) -> None:
    """Decide on an accepted job again just before it runs; raise :class:`NoLongerAllowed`
    if it is now denied.

    A job normally runs milliseconds after its admission, but one resumed after a restart
    may run much later: a licence suspended or a grant revoked meanwhile must stop it.
    """
    record = sandbox.enclave.dataset(job.dataset)
    params = resolve_params(sandbox, job)
    computation = computation_for(sandbox, job, get_computation(job.computation))
    columns, size = _shape(computation, params, record.spec)
    try:
        access = sandbox.access_request(job, columns=columns, result_size=size)
    except policies.PolicyError as exc:
        raise NoLongerAllowed(f"no longer allowed at run time: {exc}") from None
    decision = policies.decide(sandbox.policy_set, access)
    if not decision.allowed:
        raise NoLongerAllowed(f"no longer allowed at run time: {decision.reason}")


def _shape(
    computation: Computation, params: dict[str, Any], spec: DatasetSpec
) -> tuple[tuple[str, ...], int | None]:
    """The columns a job reads and its result size, as policies see them; nothing when
    the computation refuses it (the refusal comes after the policy decision)."""
    try:
        shape = computation.check(params, spec)
    except ComputationError:
        return (), None
    return columns_of(shape), result_size_of(shape, spec)
