"""Uploads for encrypted jobs: the large inputs a job names by digest.

``PUT /v1/uploads/{kind}/{digest}``   the body is the object's bytes; ``kind`` is
                                      ``request``, ``reply``, ``proof``, ``context``
                                      or ``values``
                                      (``?context=sha256:…`` names the context values
                                      are under); ``digest`` is ``sha256:<hex>`` of the body

Authenticated like a read (headers ``X-Indomain-Enterprise``, ``-Timestamp``,
``-Signature`` over method, path with query, and time): the signed path carries the
digest, so the signature covers the body. The sandbox checks the object before keeping
it (201, or 422 ``upload_refused`` saying why); job parameters, which go on the ledger,
then name it by digest and stay small.

The body is never held in memory: the kind's size cap is checked against the declared
Content-Length before a byte is read, then again while the body streams to a temporary
file and is hashed; the object is checked in a separate process (``UploadDesk``).
Each enterprise's kept uploads share a byte quota: a body whose declared length does not
fit in the room left (``upload_room``) is refused before it is read, 507
``upload_quota_exceeded``; the stream is capped at the room too, and the desk checks
again when it keeps the object.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from gateway._errors import GatewayError, UploadQuotaExceeded
from gateway._store import Enterprise
from indomain.errors import IndomainError

#: Largest upload the route reads when the desk states no cap per kind.
DEFAULT_MAX_UPLOAD = 512 << 20


class UploadDesk(Protocol):
    def __call__(
        self,
        *,
        enterprise: str,
        kind: str,
        digest: str,
        source: Path,
        sha256: str,
        context: str | None,
    ) -> dict[str, Any]:
        """Check and keep the upload whose bytes are in ``source`` (``sha256`` is their
        digest, computed while they streamed in); raises IndomainError if refused."""


def register_upload_routes(
    app: FastAPI,
    *,
    store_upload: UploadDesk,
    authenticate: Callable[[Request], Enterprise],
    upload_limit: Callable[[str], int] | None = None,
    upload_room: Callable[[str, str, str], int] | None = None,
    max_bytes: int = DEFAULT_MAX_UPLOAD,
) -> None:
    """Add ``PUT /v1/uploads/{kind}/{digest}`` to ``app``; ``upload_limit(kind)`` is the
    most bytes an upload of ``kind`` may hold (raising IndomainError for an unknown kind),
    ``upload_room(enterprise, kind, digest)`` the bytes left in the enterprise's quota
    for that upload."""

    @app.put("/v1/uploads/{kind}/{digest}", status_code=201)
    async def upload(request: Request, kind: str, digest: str) -> JSONResponse:
        enterprise = authenticate(request)  # before a byte of the body is read
        try:
            limit = upload_limit(kind) if upload_limit is not None else max_bytes
        except IndomainError as exc:
            return _refused(str(exc))
        too_big = f"a {kind} upload holds at most {limit} bytes"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _refused(f"{too_big}; this one declares {declared}")
        room = upload_room(enterprise.name, kind, digest) if upload_room is not None else None
        if room is not None and declared is not None and declared.isdigit():
            if int(declared) > room:
                return _over_quota(room, int(declared))
        context = request.query_params.get("context")
        fd, name = tempfile.mkstemp(prefix="indomain-upload-")
        source = Path(name)
        try:
            hasher, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return _refused(too_big)
                    if room is not None and size > room:
                        return _over_quota(room, None)
                    hasher.update(chunk)
                    out.write(chunk)
            sha256 = "sha256:" + hasher.hexdigest()
            stored = await run_in_threadpool(
                lambda: store_upload(
                    enterprise=enterprise.name,
                    kind=kind,
                    digest=digest,
                    source=source,
                    sha256=sha256,
                    context=context,
                )
            )
        except GatewayError:
            raise
        except IndomainError as exc:
            return _refused(str(exc))
        finally:
            source.unlink(missing_ok=True)
        return JSONResponse({"upload": stored}, status_code=201)


def _over_quota(room: int, size: int | None) -> JSONResponse:
    this = f"; this one declares {size}" if size is not None else ""
    error = UploadQuotaExceeded(
        f"your stored uploads have {room} bytes of quota left{this}: run the jobs that use "
        "them (their inputs are removed once the results are stored) or ask the operator "
        "for a larger quota",
        room=room,
    )
    return JSONResponse(error.to_json(), status_code=error.status, headers={"Connection": "close"})


def _refused(message: str) -> JSONResponse:
    # ``Connection: close``: a refusal may come before the body was read; closing tells
    # the client to stop sending the rest instead of the server draining it.
    return JSONResponse(
        {"error": {"code": "upload_refused", "message": message}},
        status_code=422,
        headers={"Connection": "close"},
    )
