"""Endpoints for enterprises' proposals of new computations.

``POST /v1/proposals``        ``{"proposal": {...}, "signature": "<base64 Ed25519>"}``, the
                              signature over the RFC 8785 canonical proposal, which names
                              its ``enterprise`` and carries a fresh ``issued_at`` and a
                              ``nonce`` never used before by this enterprise for a
                              proposal (a replay answers 409 ``replayed_nonce``), and
                              names its ``audience``, this sandbox's ledger origin (one
                              signed for another sandbox answers 401 ``wrong_audience``);
                              201.
                              A template proposal has ``template`` and ``parameters``; a
                              computation module (``indomain/modules.py``) has instead
                              ``"kind": "computation_module"``, ``module`` (the source)
                              and ``columns``
``GET /v1/proposals``         the caller's proposals and their review state
``GET /v1/proposals/{id}``    one of the caller's proposals (another's looks missing)

Reviewers registered with an Ed25519 key (``indomain review register-reviewer``) may
also review over HTTP:

``GET /v1/reviews``           pending proposals; headers ``X-Indomain-Reviewer`` (base64
                              name), ``-Timestamp``, ``-Signature`` over the read-request
                              message with ``"reviewer:<name>"`` in the enterprise slot (so
                              an enterprise's signed read can never pass as a reviewer's)
``POST /v1/reviews``          ``{"review": {...}, "signature": ...}``; the review names the
                              proposal *and its code hash*, so a vote approves exactly the
                              code the reviewer saw; ``kind`` must be ``"indomain.review"``
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway._body import read_json
from gateway._errors import (
    AuthenticationError,
    GatewayError,
    MalformedRequest,
    NotFound,
    ReplayError,
)
from gateway._jobs import check_fresh, parse_time, request_message, verify_signature
from gateway._store import Enterprise, StateStore
from indomain.errors import IndomainError

_MAX_BODY = 64 * 1024
PROPOSAL_FIELDS = frozenset(
    {
        "enterprise",
        "name",
        "template",
        "parameters",
        "purpose",
        "datasets",
        "expected_epsilon",
        "issued_at",
        "nonce",
        "audience",
    }
)
# Fields that authenticate the submission; the desk stores the rest.
_ENVELOPE = ("enterprise", "issued_at", "nonce", "audience")
# A proposed computation module (indomain/modules.py) instead of a template.
MODULE_KIND = "computation_module"
MODULE_FIELDS = (PROPOSAL_FIELDS - {"template", "parameters"}) | {"kind", "module", "columns"}
_NONCE = re.compile(r"[A-Za-z0-9_-]{22,128}")


REVIEW_FIELDS = frozenset(
    {"kind", "proposal", "code_hash", "reviewer", "verdict", "reason", "issued_at"}
)
REVIEW_KIND = "indomain.review"


class ProposalDesk(Protocol):
    def propose(self, enterprise: str, proposal: dict[str, Any]) -> dict[str, Any]:
        """Store a proposal for review; raises IndomainError with a reason if refused."""

    def proposals(self, enterprise: str) -> list[dict[str, Any]]:
        """The enterprise's proposals."""

    def claim_nonce(self, enterprise: str, nonce: str) -> bool:
        """Record a proposal's nonce; ``False`` if this enterprise already used it."""

    def reviewer_key(self, reviewer: str) -> bytes | None:
        """A registered reviewer's raw Ed25519 public key."""

    def pending(self) -> list[dict[str, Any]]:
        """Proposals waiting for review."""

    def review(
        self,
        reviewer: str,
        proposal_id: str,
        *,
        code_hash: str,
        verdict: str,
        reason: str,
        signed: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record a vote (with its signed document); raises IndomainError if refused."""


def _check_audience(said: object, ours: str) -> None:
    """Refuse a proposal signed for another sandbox: captured within its 5-minute window,
    it would otherwise be accepted wherever the enterprise uses the same key."""
    if said == ours:
        return
    raise AuthenticationError(
        f"this proposal was signed for sandbox {said!r}; this sandbox is {ours!r} (the first "
        "line of GET /v1/ledger/checkpoint): sign a new proposal naming it as the audience",
        code="wrong_audience",
    )


def register_review_routes(
    app: FastAPI,
    *,
    desk: ProposalDesk,
    store: StateStore,
    authenticate: Callable[[Request], Enterprise],
    clock: Callable[[], datetime],
    audience: str,
) -> None:
    """Add the proposal endpoints to ``app``."""

    @app.post("/v1/proposals", status_code=201)
    async def submit_proposal(request: Request) -> JSONResponse:
        data = await read_json(request, _MAX_BODY)
        if not isinstance(data, dict) or set(data) != {"proposal", "signature"}:
            raise MalformedRequest('the body must be {"proposal": {...}, "signature": "..."}')
        proposal, signature = data["proposal"], data["signature"]
        expected = (
            MODULE_FIELDS if isinstance(proposal, dict) and "kind" in proposal else PROPOSAL_FIELDS
        )
        if not isinstance(proposal, dict) or set(proposal) != expected:
            raise MalformedRequest(
                f"a proposal has exactly the fields {sorted(PROPOSAL_FIELDS)} (a template), "
                f"or {sorted(MODULE_FIELDS)} (a computation module)"
            )
        if proposal.get("kind", MODULE_KIND) != MODULE_KIND:
            raise MalformedRequest(f'kind is "{MODULE_KIND}" for a module, or absent')
        if not isinstance(signature, str) or not isinstance(proposal["enterprise"], str):
            raise MalformedRequest("enterprise and signature must be strings")
        if not isinstance(proposal["nonce"], str) or not _NONCE.fullmatch(proposal["nonce"]):
            raise MalformedRequest(
                "nonce: 22 to 128 characters of A-Z a-z 0-9 _ -, fresh each time"
            )
        enterprise = store.enterprise(proposal["enterprise"])
        if enterprise is None:
            raise AuthenticationError("unknown enterprise", code="unknown_enterprise")
        try:
            canonical = rfc8785.dumps(proposal)
            issued = parse_time(str(proposal["issued_at"]))
        except (ValueError, rfc8785.CanonicalizationError):
            raise MalformedRequest("the proposal cannot be canonicalised") from None
        verify_signature(canonical, signature, enterprise.public_key)
        _check_audience(proposal["audience"], audience)
        check_fresh(issued, clock())
        if not await run_in_threadpool(desk.claim_nonce, enterprise.name, proposal["nonce"]):
            raise ReplayError(
                "this proposal's nonce was already used by this enterprise: the request is "
                "a replay; sign a new proposal with a fresh nonce"
            )
        fields = {k: v for k, v in proposal.items() if k not in _ENVELOPE}
        try:
            stored = await run_in_threadpool(desk.propose, enterprise.name, fields)
        except GatewayError:
            raise
        except IndomainError as exc:
            error = {"code": "proposal_refused", "message": str(exc)}
            return JSONResponse({"error": error}, status_code=422)
        return JSONResponse({"proposal": stored}, status_code=201)

    @app.get("/v1/proposals")
    def list_proposals(request: Request) -> dict[str, Any]:
        enterprise = authenticate(request)
        return {"proposals": desk.proposals(enterprise.name)}

    @app.get("/v1/proposals/{proposal_id}")
    def one_proposal(request: Request, proposal_id: str) -> dict[str, Any]:
        enterprise = authenticate(request)
        for proposal in desk.proposals(enterprise.name):
            if proposal["id"] == proposal_id:
                return {"proposal": proposal}
        raise NotFound(f"no proposal {proposal_id!r} for this enterprise")

    def reviewer_of(request: Request) -> str:
        headers = request.headers
        try:
            name = base64.b64decode(headers["x-indomain-reviewer"], validate=True).decode()
            timestamp = headers["x-indomain-timestamp"]
            signature = headers["x-indomain-signature"]
            issued = parse_time(timestamp)
        except (KeyError, ValueError):
            raise AuthenticationError(
                "missing or malformed X-Indomain-Reviewer/-Timestamp/-Signature headers",
                code="unauthenticated",
            ) from None
        raw = desk.reviewer_key(name)
        if raw is None:
            raise AuthenticationError("unknown reviewer", code="unknown_reviewer")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = request_message(
            enterprise=f"reviewer:{name}",
            method=request.method,
            path=path,
            timestamp=timestamp,
            audience=audience,
        )
        verify_signature(message, signature, Ed25519PublicKey.from_public_bytes(raw))
        check_fresh(issued, clock())
        return name

    @app.get("/v1/reviews")
    def pending_reviews(request: Request) -> dict[str, Any]:
        reviewer_of(request)
        return {"proposals": desk.pending()}

    @app.post("/v1/reviews")
    async def submit_review(request: Request) -> JSONResponse:
        data = await read_json(request, _MAX_BODY)
        if not isinstance(data, dict) or set(data) != {"review", "signature"}:
            raise MalformedRequest('the body must be {"review": {...}, "signature": "..."}')
        review, signature = data["review"], data["signature"]
        if not isinstance(review, dict) or set(review) != REVIEW_FIELDS:
            raise MalformedRequest(f"a review has exactly the fields {sorted(REVIEW_FIELDS)}")
        if review["kind"] != REVIEW_KIND or not all(
            isinstance(review[k], str) for k in REVIEW_FIELDS
        ):
            raise MalformedRequest(f'every field is a string and kind is "{REVIEW_KIND}"')
        if not isinstance(signature, str):
            raise MalformedRequest("signature must be a base64 string")
        raw = desk.reviewer_key(review["reviewer"])
        if raw is None:
            raise AuthenticationError("unknown reviewer", code="unknown_reviewer")
        try:
            issued = parse_time(review["issued_at"])
        except ValueError:
            raise MalformedRequest("issued_at is not an RFC 3339 UTC time") from None
        verify_signature(rfc8785.dumps(review), signature, Ed25519PublicKey.from_public_bytes(raw))
        check_fresh(issued, clock())
        try:
            done = await run_in_threadpool(
                lambda: desk.review(
                    review["reviewer"],
                    review["proposal"],
                    code_hash=review["code_hash"],
                    verdict=review["verdict"],
                    reason=review["reason"],
                    signed={"review": review, "signature": signature},
                )
            )
        except GatewayError:
            raise
        except IndomainError as exc:
            error = {"code": "review_refused", "message": str(exc)}
            return JSONResponse({"error": error}, status_code=409)
        return JSONResponse({"proposal": done}, status_code=200)
