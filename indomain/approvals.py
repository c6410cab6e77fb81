"""The approval workflow wired to the sandbox: policy for the reviewer count, the ledger
for every proposal, vote and approved hash, and resolving a job that runs a proposal.

Every vote from outside the code (``POST /v1/reviews`` and ``indomain review approve /
reject`` alike) is the same signed review document, canonical JSON (RFC 8785) signed
with the reviewer's registered Ed25519 key::

    {"kind": "indomain.review", "proposal", "code_hash", "reviewer", "verdict", "reason",
     "issued_at"}

verified before anything is recorded, and recorded on the ledger with its signature, so
an auditor can check each vote against the key registered on the ledger. Opening the
home is not being a reviewer: the console refuses an unsigned vote.

See :mod:`indomain.reviews` for the rules; this module only connects them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

import policies
from computations import MODULE_RUNNER, Computation
from indomain import encrypted_jobs
from indomain.modules import MODULE_KIND, ModuleStore, check_module
from indomain.policy_requests import registry_request
from indomain.proposals import (
    Proposal,
    ProposalError,
    check_columns,
    check_proposal,
    render,
    required_reviewers,
    runnable,
)

PROPOSAL_KEYS = frozenset({"proposal", "values"})
REVIEW_KIND = "indomain.review"
REVIEW_FIELDS = frozenset(
    {"kind", "proposal", "code_hash", "reviewer", "verdict", "reason", "issued_at"}
)
MAX_SKEW = timedelta(minutes=5)


class ReviewDenied(ProposalError):
    """A vote not signed by the registered key of the reviewer it names (exit code 3)."""

    exit_code = 3


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
    columns = check_proposal(
        name=name,
        template=template,
        parameters=parameters,
        datasets=datasets,
        purpose=purpose,
        expected_epsilon=expected_epsilon,
    )
    reviewers, version = _coverage(
        sandbox, requester, datasets, purpose, expected_epsilon, columns=columns
    )
    proposal: Proposal = sandbox.reviews.add(
        requester=requester,
        name=name,
        template=template,
        parameters=parameters,
        purpose=purpose,
        datasets=tuple(datasets),
        expected_epsilon=str(expected_epsilon),
        required_reviewers=reviewers,
    )
    _record_submission(sandbox, proposal, version)
    return proposal


def propose_module(
    sandbox: Any,
    *,
    requester: str,
    name: str,
    source: str,
    purpose: str,
    datasets: list[str] | tuple[str, ...],
    columns: list[str] | tuple[str, ...],
    expected_epsilon: str,
) -> Proposal:
    """Store a computation-module proposal (see :mod:`indomain.modules`): the same grant
    check and reviewer count as a template; the source checked, its exact bytes stored
    in the home under their SHA-256, and recorded on the ledger with that hash. Raises
    :class:`ProposalError`."""
    data = check_module(source)
    check_columns(columns)
    # The same field checks as the store's, before the bytes are saved: a refused
    # proposal leaves no file behind.
    check_proposal(
        name=name,
        template="SELECT 1",
        parameters={},
        datasets=datasets,
        purpose=purpose,
        expected_epsilon=str(expected_epsilon),
    )
    reviewers, version = _coverage(
        sandbox, requester, datasets, purpose, expected_epsilon, columns=tuple(columns)
    )
    digest = module_store(sandbox).save(data)
    proposal: Proposal = sandbox.reviews.add_module(
        requester=requester,
        kind=MODULE_KIND,
        name=name,
        source=source,
        code_hash=digest,
        purpose=purpose,
        datasets=tuple(datasets),
        columns=tuple(columns),
        expected_epsilon=str(expected_epsilon),
        required_reviewers=reviewers,
    )
    _record_submission(sandbox, proposal, version)
    return proposal


def module_store(sandbox: Any) -> ModuleStore:
    """Where the home keeps proposed modules' exact bytes."""
    return ModuleStore(Path(sandbox.home.root) / "modules")


def _coverage(
    sandbox: Any,
    requester: str,
    datasets: Any,
    purpose: str,
    expected_epsilon: str,
    *,
    columns: tuple[str, ...],
) -> tuple[int, str]:
    """``(reviewers required, policy version)`` if a grant lets ``requester`` run
    aggregates on every dataset for ``purpose``; raises :class:`ProposalError`.

    Decided with the columns the computation reads, so permits and forbids conditioned
    on columns (and the reviewers they demand) apply as they will to its jobs."""
    if not isinstance(datasets, list | tuple) or not datasets:
        raise ProposalError("datasets: name at least one dataset")
    policy_set = sandbox.policy_set
    obligations = []
    for dataset in datasets:
        try:
            request = registry_request(
                sandbox.registry,
                enterprise=requester,
                computation="aggregate",
                dataset=str(dataset),
                purpose=str(purpose),
                when=datetime.now(UTC),
                epsilon=Decimal(str(expected_epsilon)),
                columns=columns,
            )
        except (policies.PolicyError, ArithmeticError, ValueError):
            raise ProposalError("the proposal's fields do not form a valid request") from None
        decision = policies.decide(policy_set, request)
        if not decision.allowed:
            raise ProposalError(f"no grant covers this proposal: {decision.reason}")
        obligations.append(decision.obligations)
    merged = policies.merge_obligations(obligations)
    return required_reviewers(merged), policy_set.version if policy_set is not None else ""


def _record_submission(sandbox: Any, proposal: Proposal, version: str) -> None:
    sandbox.ledger.append(
        "proposal.submitted",
        {
            "proposal": proposal.id,
            "kind": proposal.kind,
            "requester": proposal.requester,
            "name": proposal.name,
            "code_hash": proposal.code_hash,
            "purpose": proposal.purpose,
            "datasets": list(proposal.datasets),
            "columns": list(proposal.columns),
            "expected_epsilon": proposal.expected_epsilon,
            "required_reviewers": proposal.required_reviewers,
            "policy_version": version,
        },
    )


def review(
    sandbox: Any,
    proposal_id: str,
    *,
    reviewer: str,
    verdict: str,
    reason: str = "",
    signed: Mapping[str, Any] | None = None,
) -> Proposal:
    """Record a vote on the ledger; an approval that completes the count also records
    ``proposal.approved`` with the approved code hash. Raises :class:`ProposalError`.

    This records whatever it is given: callers outside the code go through
    :func:`signed_review` (or the HTTP route), which pass the verified ``signed``
    document (``{"review": ..., "signature": ...}``) to be recorded beside the vote.
    """
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
            **({"signed": dict(signed)} if signed is not None else {}),
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


def review_document(
    proposal: Proposal, *, reviewer: str, verdict: str, reason: str, issued_at: datetime
) -> dict[str, str]:
    """The review document a reviewer signs: it names the exact code hash they saw."""
    return {
        "kind": REVIEW_KIND,
        "proposal": proposal.id,
        "code_hash": proposal.code_hash,
        "reviewer": reviewer,
        "verdict": verdict,
        "reason": reason,
        "issued_at": issued_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def sign_review(document: Mapping[str, str], key: Ed25519PrivateKey) -> str:
    """Base64 Ed25519 signature over the RFC 8785 canonical ``document``."""
    return base64.b64encode(key.sign(rfc8785.dumps(dict(document)))).decode()


def load_reviewer_key(path: Path) -> Ed25519PrivateKey:
    """A reviewer's Ed25519 private key (PEM, unencrypted); raises :class:`ProposalError`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ProposalError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise ProposalError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ProposalError(f"{path} is not an Ed25519 private key")
    return key


def verify_review(
    sandbox: Any, document: Any, signature: Any, *, now: datetime | None = None
) -> None:
    """Check a signed review document; raises :class:`ProposalError` (malformed, stale)
    or :class:`ReviewDenied` (unknown reviewer, signature not by their registered key)."""
    if not isinstance(document, Mapping) or set(document) != REVIEW_FIELDS:
        raise ProposalError(f"a review has exactly the fields {sorted(REVIEW_FIELDS)}")
    if document["kind"] != REVIEW_KIND or not all(isinstance(v, str) for v in document.values()):
        raise ProposalError(f'every review field is a string and kind is "{REVIEW_KIND}"')
    if not isinstance(signature, str):
        raise ProposalError("the signature must be a base64 string")
    raw = sandbox.reviews.reviewer_key(document["reviewer"])
    if raw is None:
        raise ReviewDenied(
            f"{document['reviewer']!r} is not a registered reviewer: the bureau registers "
            "reviewers with `indomain review register-reviewer NAME --public-key FILE`"
        )
    try:
        sig = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, rfc8785.dumps(dict(document)))
    except (ValueError, InvalidSignature):
        raise ReviewDenied(
            f"the review is not signed by the registered key of reviewer "
            f"{document['reviewer']!r}: sign with that reviewer's own private key"
        ) from None
    try:
        issued = datetime.strptime(document["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ProposalError(
            "issued_at must be an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)"
        ) from None
    if abs((now or datetime.now(UTC)) - issued) > MAX_SKEW:
        raise ProposalError("the review was signed more than 5 minutes from now: sign it again")


def signed_review(
    sandbox: Any, document: Mapping[str, Any], signature: str, *, now: datetime | None = None
) -> Proposal:
    """Verify a signed review document (:func:`verify_review`), check that it names the
    proposal's current code hash, and record it with its signature. Raises
    :class:`ProposalError` or :class:`ReviewDenied`; nothing is recorded then."""
    verify_review(sandbox, document, signature, now=now)
    proposal: Proposal = sandbox.reviews.get(document["proposal"])
    if document["code_hash"] != proposal.code_hash:
        raise ProposalError("the review names another code hash than the proposal's")
    return review(
        sandbox,
        proposal.id,
        reviewer=document["reviewer"],
        verdict=document["verdict"],
        reason=document["reason"],
        signed={"review": dict(document), "signature": signature},
    )


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
    if proposal.kind == MODULE_KIND:
        return _module_params(sandbox, proposal, params)
    sql = render(proposal, params.get("values"))
    rest = {k: v for k, v in params.items() if k not in PROPOSAL_KEYS}
    return {**rest, "sql": sql}


def _module_params(sandbox: Any, proposal: Proposal, params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``module`` computation's parameters for a job running an approved module: its
    stored bytes, re-hashed against the approved hash now (and again in the enclave), the
    proposal's epsilon and columns, and the job's ``values`` (its ``params``)."""
    extra = sorted(str(k) for k in params if k not in PROPOSAL_KEYS)
    if extra:
        raise ProposalError(
            f"a job running a module takes only proposal and values, not {', '.join(extra)}"
        )
    values = params.get("values") or {}
    if not isinstance(values, Mapping):
        raise ProposalError("values: an object, handed to the module's run() as params")
    data = module_store(sandbox).verified(proposal.code_hash)  # the exact approved bytes
    return {
        "module": data.decode("utf-8"),
        "code_hash": proposal.code_hash,
        "epsilon": proposal.expected_epsilon,
        "columns": list(proposal.columns),
        "values": dict(values),
    }


def computation_for(sandbox: Any, job: Any, computation: Computation) -> Computation:
    """What runs ``job``: the module runner if it names an approved module proposal (after
    :func:`resolve_params` passed), otherwise ``computation``. Decided by the proposal's
    kind, never by the parameters, so no job can hand the runner source of its own."""
    if job.computation == "aggregate" and isinstance(job.params.get("proposal"), str):
        if sandbox.reviews.get(job.params["proposal"]).kind == MODULE_KIND:
            return MODULE_RUNNER
    return computation


class ProposalDesk:
    """What the gateway's proposal endpoints call (see gateway/_review_routes.py)."""

    def __init__(self, sandbox: Any) -> None:
        self._sandbox = sandbox

    def propose(self, enterprise: str, proposal: dict[str, Any]) -> dict[str, Any]:
        """Store the enterprise's proposal; raises :class:`ProposalError` if refused."""
        if proposal.get("kind") == MODULE_KIND:
            try:
                module = propose_module(
                    self._sandbox,
                    requester=enterprise,
                    name=proposal["name"],
                    source=proposal["module"],
                    purpose=proposal["purpose"],
                    datasets=proposal["datasets"],
                    columns=proposal["columns"],
                    expected_epsilon=str(proposal["expected_epsilon"]),
                )
            except (KeyError, TypeError):
                raise ProposalError(
                    "a module proposal needs kind, name, module, purpose, datasets, "
                    "columns and expected_epsilon"
                ) from None
            return module.to_json()
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

    def claim_nonce(self, enterprise: str, nonce: str) -> bool:
        """Record a signed proposal's nonce; ``False`` for a replay."""
        fresh: bool = self._sandbox.reviews.claim_nonce(enterprise, nonce)
        return fresh

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
        self,
        reviewer: str,
        proposal_id: str,
        *,
        code_hash: str,
        verdict: str,
        reason: str,
        signed: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record an authenticated reviewer's vote on exactly the code hash they saw,
        with the signed document it came in (recorded on the ledger)."""
        proposal = self._sandbox.reviews.get(proposal_id)
        if code_hash != proposal.code_hash:
            raise ProposalError("the review names another code hash than the proposal's")
        done = review(
            self._sandbox,
            proposal_id,
            reviewer=reviewer,
            verdict=verdict,
            reason=reason,
            signed=signed,
        )
        return done.to_json()


def register_reviewer(sandbox: Any, name: str, public_key_pem: bytes) -> None:
    """Register a reviewer's Ed25519 public key (PEM); recorded on the ledger."""
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
