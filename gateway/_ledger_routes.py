"""Public ledger endpoints, and the client auditors use to read them.

Anyone may read the ledger, as anyone may read the checkpoint: entries carry digests,
decisions and signatures, never rows. Entries are served as the exact canonical bytes
(one per line, like ``entries.jsonl`` of an export), so a verifier hashes what it got.

``GET /v1/ledger/entries?start=&end=``            entries [start, end), at most
                                                  ``MAX_PAGE`` per answer (ask again)
``GET /v1/ledger/proof/inclusion?index=&size=``   receipt JSON: index, tree_size,
                                                  leaf_hash, proof, checkpoint for size
``GET /v1/ledger/proof/inclusion?...&format=tlog-proof``  the same as C2SP tlog-proof
``GET /v1/ledger/proof/consistency?old=&new=``    {"old", "new", "proof": [base64]}
``GET /v1/ledger/checkpoint/covering?index=``       the signed checkpoint of the commit
                                                  that wrote entry ``index`` (for
                                                  verifiers following a key rotation)
``GET /v1/ledger/checkpoint/cosigned``             the largest checkpoint witnesses cosigned,
                                                  with their cosignature lines (404: none)
``POST /v1/ledger/cosignatures``                  {"size", "witness_key", "cosignature"}:
                                                  stored only if it verifies and the
                                                  operator accepts that witness (else 403)
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

import ledger
from gateway._body import read_json
from gateway._errors import (
    GatewayError,
    MalformedRequest,
    NotFound,
    PolicyDenied,
    TransportError,
    error_from_json,
)

MAX_PAGE = 1000  # entries per answer: bounded work and memory per request
JSONL = "application/jsonl"


class CosignatureSubmission(BaseModel):
    """A witness's cosignature of the checkpoint for ``size``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    size: int
    witness_key: str = Field(max_length=400)
    cosignature: str = Field(max_length=400)


def register_ledger_routes(app: FastAPI, log: ledger.Ledger) -> None:
    """Add the public ledger endpoints to ``app``, served from ``log``."""

    def within(**values: int) -> None:
        for name, value in values.items():
            if value < 0:
                raise MalformedRequest(f"{name} must be >= 0", code="invalid_request")

    @app.get("/v1/ledger/entries")
    def entries(start: int = 0, end: int | None = None) -> Response:
        size = log.size
        stop = size if end is None else end
        within(start=start, end=stop)
        if not start <= stop <= size:
            raise NotFound(f"entries [{start}, {stop}) are not within the ledger size {size}")
        stop = min(stop, start + MAX_PAGE)
        body = b"".join(data + b"\n" for data in log.raw_entries(start, stop))
        return Response(body, media_type=JSONL, headers={"X-Indomain-Ledger-Size": str(size)})

    @app.get("/v1/ledger/proof/inclusion", response_model=None)
    def inclusion(index: int, size: int, format: str = "json") -> dict[str, Any] | Response:
        within(index=index, size=size)
        try:
            receipt = log.receipt(index, size)
        except ledger.LedgerError as exc:
            raise NotFound(str(exc)) from None
        if format == "tlog-proof":
            text = ledger.tlog_proof(receipt.index, receipt.proof, receipt.checkpoint)
            return PlainTextResponse(text)
        if format != "json":
            raise GatewayError("format must be json or tlog-proof", code="invalid_request")
        return receipt.to_json()

    @app.get("/v1/ledger/checkpoint/covering", response_class=PlainTextResponse)
    def covering(index: int) -> str:
        within(index=index)
        try:
            return log.checkpoint_covering(index)
        except ledger.LedgerError as exc:
            raise NotFound(str(exc)) from None

    @app.get("/v1/ledger/checkpoint/cosigned", response_class=PlainTextResponse)
    def cosigned() -> str:
        note = log.cosigned_checkpoint()
        if note is None:
            raise NotFound("no checkpoint has been cosigned yet")
        return note

    @app.post("/v1/ledger/cosignatures", status_code=201)
    async def add_cosignature(request: Request) -> dict[str, Any]:
        try:
            body = CosignatureSubmission.model_validate(await read_json(request, 4096))
        except ValidationError:
            raise MalformedRequest(
                'the body must be {"size": <int>, "witness_key": "...", "cosignature": "..."}'
            ) from None
        return await run_in_threadpool(_store_cosignature, body)

    def _store_cosignature(body: CosignatureSubmission) -> dict[str, Any]:
        within(size=body.size)
        try:
            log.add_cosignature(body.size, body.witness_key, body.cosignature)
        except ledger.WitnessNotAccepted as exc:
            raise PolicyDenied(str(exc), code="unknown_witness") from None
        except ledger.LedgerVerificationError as exc:
            raise GatewayError(str(exc), code="bad_cosignature") from None
        except ledger.LedgerError as exc:
            raise NotFound(str(exc)) from None
        return {"size": body.size, "stored": True}

    @app.get("/v1/ledger/proof/consistency")
    def consistency(old: int, new: int) -> dict[str, Any]:
        within(old=old, new=new)
        try:
            proof = log.consistency_proof(old, new)
        except ledger.LedgerError as exc:
            raise NotFound(str(exc)) from None
        return {"old": old, "new": new, "proof": [base64.b64encode(h).decode() for h in proof]}


class LedgerFeed:
    """Reads a gateway's public ledger endpoints; verification is the caller's (ledger's)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LedgerFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, **params: int | str) -> httpx.Response:
        try:
            answer = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the gateway: {exc}") from exc
        if answer.status_code != 200:
            raise TransportError(f"GET {path} answered {answer.status_code}")
        return answer

    def checkpoint(self) -> str:
        """Return the latest signed checkpoint note (not yet verified)."""
        return self._get("/v1/ledger/checkpoint").text

    def cosigned_checkpoint(self) -> str | None:
        """Return the largest cosigned checkpoint with its cosignatures, or ``None``."""
        try:
            answer = self._http.get("/v1/ledger/checkpoint/cosigned")
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the gateway: {exc}") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise TransportError(f"the cosigned checkpoint answered {answer.status_code}")
        return answer.text

    def covering_checkpoint(self, index: int) -> str | None:
        """Return the checkpoint of the commit that wrote entry ``index`` (not yet
        verified), or ``None`` when the gateway has none (or predates this endpoint)."""
        try:
            answer = self._http.get("/v1/ledger/checkpoint/covering", params={"index": index})
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the gateway: {exc}") from exc
        if answer.status_code == 404:
            return None
        if answer.status_code != 200:
            raise TransportError(f"the covering checkpoint answered {answer.status_code}")
        return answer.text

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Return the server's consistency proof from ``old`` to ``new`` (not yet verified)."""
        body = self._get("/v1/ledger/proof/consistency", old=old, new=new).json()
        try:
            return [base64.b64decode(h, validate=True) for h in body["proof"]]
        except (KeyError, TypeError, ValueError):
            raise TransportError("the gateway sent a malformed consistency proof") from None

    def submit_cosignature(self, size: int, witness_key: str, line: str) -> None:
        """Hand a cosignature to the ledger, which stores it if it verifies."""
        body = {"size": size, "witness_key": witness_key, "cosignature": line}
        try:
            answer = self._http.post("/v1/ledger/cosignatures", json=body)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the gateway: {exc}") from exc
        if answer.status_code != 201:
            try:
                raise error_from_json(answer.status_code, answer.json())
            except ValueError:  # not JSON
                raise TransportError(
                    f"the gateway refused the cosignature ({answer.status_code})"
                ) from None

    def entries(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the raw bytes of entries [start, end), page by page.

        Stops early if the server has fewer; the verifier then reports what is missing.
        """
        position = start
        while position < end:
            body = self._get("/v1/ledger/entries", start=position, end=end).content
            if not body:
                return
            if not body.endswith(b"\n"):
                raise TransportError("the gateway sent a torn page of entries")
            lines = body[:-1].split(b"\n")
            yield from lines
            position += len(lines)
