"""Endpoints for enterprises' proposals of new computations.

``POST /v1/proposals``        ``{"proposal": {...}, "signature": "<base64 Ed25519>"}``, the
                              signature over the RFC 8785 canonical proposal, which names
                              its ``enterprise`` and carries a fresh ``issued_at``; 201
``GET /v1/proposals``         the caller's proposals and their review state
``GET /v1/proposals/{id}``    one of the caller's proposals (another's looks missing)

Reviewing happens at the bureau (``indomain review approve / reject``): reviewers have
no gateway identity, so the gateway offers them nothing to call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import rfc8785
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway._errors import (
    AuthenticationError,
    GatewayError,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
)
from gateway._jobs import check_fresh, parse_time, verify_signature
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
    }
)


class ProposalDesk(Protocol):
    def propose(self, enterprise: str, proposal: dict[str, Any]) -> dict[str, Any]:
        """Store a proposal for review; raises IndomainError with a reason if refused."""

    def proposals(self, enterprise: str) -> list[dict[str, Any]]:
        """The enterprise's proposals."""


def register_review_routes(
    app: FastAPI,
    *,
    desk: ProposalDesk,
    store: StateStore,
    authenticate: Callable[[Request], Enterprise],
    clock: Callable[[], datetime],
) -> None:
    """Add the proposal endpoints to ``app``."""

    @app.post("/v1/proposals", status_code=201)
    async def submit_proposal(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise PayloadTooLarge(f"a proposal may be at most {_MAX_BODY} bytes")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedRequest("the body is not valid JSON") from None
        if not isinstance(data, dict) or set(data) != {"proposal", "signature"}:
            raise MalformedRequest('the body must be {"proposal": {...}, "signature": "..."}')
        proposal, signature = data["proposal"], data["signature"]
        if not isinstance(proposal, dict) or set(proposal) != PROPOSAL_FIELDS:
            raise MalformedRequest(f"a proposal has exactly the fields {sorted(PROPOSAL_FIELDS)}")
        if not isinstance(signature, str) or not isinstance(proposal["enterprise"], str):
            raise MalformedRequest("enterprise and signature must be strings")
        enterprise = store.enterprise(proposal["enterprise"])
        if enterprise is None:
            raise AuthenticationError("unknown enterprise", code="unknown_enterprise")
        try:
            canonical = rfc8785.dumps(proposal)
            issued = parse_time(str(proposal["issued_at"]))
        except (ValueError, rfc8785.CanonicalizationError):
            raise MalformedRequest("the proposal cannot be canonicalised") from None
        verify_signature(canonical, signature, enterprise.public_key)
        check_fresh(issued, clock())
        fields = {k: v for k, v in proposal.items() if k not in ("enterprise", "issued_at")}
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
