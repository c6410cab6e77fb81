"""The approval workflow wired to the sandbox: policy for the reviewer count, the ledger
for every proposal, vote and approved hash, and resolving a job that runs a proposal.

See :mod:`indomain.reviews` for the rules; this module only connects them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import policies
from indomain import encrypted_jobs
from indomain.reviews import Proposal, ProposalError, render, required_reviewers, runnable

PROPOSAL_KEYS = frozenset({"proposal", "values"})


def propose(
    sandbox: Any,
    *,
    requester: str,
    name: str,
    template: str,
    parameters: Mapping[str, str],
    purpose: str,
    datasets: list[str] | tuple[str, ...],
    expected_epsilon: str,
) -> Proposal:
    """Store a proposal after checking that policies let ``requester`` run aggregates on
    every dataset for ``purpose`` (and how many reviewers they require); recorded on the
    ledger. Raises :class:`ProposalError`."""
    if not isinstance(datasets, list | tuple) or not datasets:
        raise ProposalError("datasets: name at least one dataset")
    policy_set = sandbox.policy_set
    obligations = []
    for dataset in datasets:
        licence = sandbox.registry.licence(requester)
        dclass = sandbox.registry.dataset_class(str(dataset))
        try:
            request = policies.AccessRequest(
                enterprise=requester,
                computation="aggregate",
                dataset=str(dataset),
                purpose=str(purpose),
                time=datetime.now(UTC),
                enterprise_attrs=licence.attrs(),
                dataset_attrs=dclass.attrs(),
                dataset_groups=dclass.group_attrs(),
                epsilon=Decimal(str(expected_epsilon)),
            )
        except (policies.PolicyError, ArithmeticError, ValueError):
            raise ProposalError("the proposal's fields do not form a valid request") from None
        decision = policies.decide(policy_set, request)
        if not decision.allowed:
            raise ProposalError(f"no grant covers this proposal: {decision.reason}")
        obligations.append(decision.obligations)
    merged = policies.merge_obligations(obligations)
    proposal: Proposal = sandbox.reviews.add(
        requester=requester,
        name=name,
        template=template,
        parameters=parameters,
        purpose=purpose,
        datasets=tuple(datasets),
        expected_epsilon=str(expected_epsilon),
        required_reviewers=required_reviewers(merged),
    )
    sandbox.ledger.append(
        "proposal.submitted",
        {
            "proposal": proposal.id,
            "requester": requester,
            "name": proposal.name,
            "code_hash": proposal.code_hash,
            "purpose": proposal.purpose,
            "datasets": list(proposal.datasets),
            "columns": list(proposal.columns),
            "expected_epsilon": proposal.expected_epsilon,
            "required_reviewers": proposal.required_reviewers,
            "policy_version": policy_set.version if policy_set is not None else "",
        },
    )
    return proposal


def review(
    sandbox: Any, proposal_id: str, *, reviewer: str, verdict: str, reason: str = ""
) -> Proposal:
    """Record a vote on the ledger; an approval that completes the count also records
    ``proposal.approved`` with the approved code hash. Raises :class:`ProposalError`."""
    proposal: Proposal = sandbox.reviews.vote(
        proposal_id, reviewer=reviewer, verdict=verdict, reason=reason
    )
    sandbox.ledger.append(
        "proposal.reviewed",
        {
            "proposal": proposal.id,
            "reviewer": reviewer.strip(),
            "verdict": verdict,
            "reason": reason,
            "code_hash": proposal.code_hash,
        },
    )
    if proposal.status in ("approved", "rejected"):
        sandbox.ledger.append(
            f"proposal.{proposal.status}",
            {
                "proposal": proposal.id,
                "code_hash": proposal.code_hash,
                "approvals": list(proposal.approvals),
                "rejections": list(proposal.rejections),
                "required_reviewers": proposal.required_reviewers,
            },
        )
    return proposal


def resolve_params(sandbox: Any, job: Any) -> dict[str, Any]:
    """The parameters to check for ``job``: unchanged, unless it runs a proposal, then
    the approved template rendered with its values (plus any other parameters, such as
    a privacy budget). Raises :class:`ProposalError` if the proposal may not run."""
    if job.computation in encrypted_jobs.RESOLVED_COMPUTATIONS:
        return encrypted_jobs.resolve_params(sandbox, job)
    params = dict(job.params)
    if "proposal" not in params and "values" not in params:
        return params
    if job.computation != "aggregate":
        raise ProposalError("only aggregate jobs can run a proposal")
    if "sql" in params:
        raise ProposalError("a job runs either its own sql or a proposal, not both")
    proposal = sandbox.reviews.get(params.get("proposal"))
    runnable(proposal, enterprise=job.enterprise, dataset=job.dataset, purpose=job.purpose)
    sql = render(proposal, params.get("values"))
    rest = {k: v for k, v in params.items() if k not in PROPOSAL_KEYS}
    return {**rest, "sql": sql}


class ProposalDesk:
    """What the gateway's proposal endpoints call (see gateway/_review_routes.py)."""

    def __init__(self, sandbox: Any) -> None:
        self._sandbox = sandbox

    def propose(self, enterprise: str, proposal: dict[str, Any]) -> dict[str, Any]:
        """Store the enterprise's proposal; raises :class:`ProposalError` if refused."""
        try:
            stored = propose(
                self._sandbox,
                requester=enterprise,
                name=proposal["name"],
                template=proposal["template"],
                parameters=proposal["parameters"],
                purpose=proposal["purpose"],
                datasets=proposal["datasets"],
                expected_epsilon=str(proposal["expected_epsilon"]),
            )
        except (KeyError, TypeError):
            raise ProposalError(
                "a proposal needs name, template, parameters, purpose, "
                "datasets and expected_epsilon"
            ) from None
        return stored.to_json()

    def proposals(self, enterprise: str) -> list[dict[str, Any]]:
        """The enterprise's proposals, newest last."""
        return [p.to_json() for p in self._sandbox.reviews.list(requester=enterprise)]

    def reviewer_key(self, reviewer: str) -> bytes | None:
        """A registered reviewer's raw Ed25519 public key."""
        key: bytes | None = self._sandbox.reviews.reviewer_key(reviewer)
        return key

    def pending(self) -> list[dict[str, Any]]:
        """Proposals waiting for review, with everything a reviewer needs."""
        return [p.to_json() for p in self._sandbox.reviews.list(status="pending")]

    def review(
        self, reviewer: str, proposal_id: str, *, code_hash: str, verdict: str, reason: str
    ) -> dict[str, Any]:
        """Record an authenticated reviewer's vote on exactly the code hash they saw."""
        proposal = self._sandbox.reviews.get(proposal_id)
        if code_hash != proposal.code_hash:
            raise ProposalError("the review names another code hash than the proposal's")
        done = review(self._sandbox, proposal_id, reviewer=reviewer, verdict=verdict, reason=reason)
        return done.to_json()


def register_reviewer(sandbox: Any, name: str, public_key_pem: bytes) -> None:
    """Register a reviewer's Ed25519 public key (PEM); recorded on the ledger."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError:
        raise ProposalError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ProposalError("a reviewer key must be Ed25519")
    raw = key.public_bytes_raw()
    sandbox.reviews.add_reviewer(name, raw)
    sandbox.ledger.append(
        "reviewer.registered",
        {"reviewer": name.strip(), "public_key": base64.b64encode(raw).decode()},
    )
