"""Uploads for encrypted jobs: the large inputs a job names by digest.

``PUT /v1/uploads/{kind}/{digest}``   the body is the object's bytes; ``kind`` is
                                      ``request``, ``reply``, ``context`` or ``values``
                                      (``?context=sha256:…`` names the context values
                                      are under); ``digest`` is ``sha256:<hex>`` of the body

Authenticated like a read (headers ``X-Indomain-Enterprise``, ``-Timestamp``,
``-Signature`` over method, path with query, and time): the signed path carries the
digest, so the signature covers the body. The sandbox checks the object before keeping
it (201, or 422 ``upload_refused`` saying why); job parameters, which go on the ledger,
then name it by digest and stay small.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway._body import read_capped
from gateway._errors import GatewayError
from gateway._store import Enterprise
from indomain.errors import IndomainError

#: Largest upload the route reads at all; each kind has its own smaller cap behind it.
DEFAULT_MAX_UPLOAD = 512 << 20


class UploadDesk(Protocol):
    def __call__(
        self, *, enterprise: str, kind: str, digest: str, data: bytes, context: str | None
    ) -> dict[str, Any]:
        """Check and keep the upload; raises IndomainError with a reason if refused."""


def register_upload_routes(
    app: FastAPI,
    *,
    store_upload: UploadDesk,
    authenticate: Callable[[Request], Enterprise],
    max_bytes: int = DEFAULT_MAX_UPLOAD,
) -> None:
    """Add ``PUT /v1/uploads/{kind}/{digest}`` to ``app``."""

    @app.put("/v1/uploads/{kind}/{digest}", status_code=201)
    async def upload(request: Request, kind: str, digest: str) -> JSONResponse:
        enterprise = authenticate(request)  # before a byte of the body is read
        data = await read_capped(request, max_bytes)
        context = request.query_params.get("context")
        try:
            stored = await run_in_threadpool(
                lambda: store_upload(
                    enterprise=enterprise.name,
                    kind=kind,
                    digest=digest,
                    data=data,
                    context=context,
                )
            )
        except GatewayError:
            raise
        except IndomainError as exc:
            error = {"code": "upload_refused", "message": str(exc)}
            return JSONResponse({"error": error}, status_code=422)
        return JSONResponse({"upload": stored}, status_code=201)
