"""The HTTP API (FastAPI): authenticate, store, hand to the sandbox, answer.

Every refusal is a JSON document ``{"error": {"code", "message", ...}}`` with the right
status; a request refused before it was authenticated leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from computations import table_from_ipc, table_to_rows
from gateway._body import read_json
from gateway._errors import (
    AuthenticationError,
    GatewayError,
    MalformedRequest,
    NotFound,
    NotReady,
)
from gateway._jobs import (
    RECEIPT_HEADER,
    JobDocument,
    check_audience,
    check_fresh,
    parse_job,
    parse_time,
    request_message,
    verify_signature,
)
from gateway._ledger_routes import register_ledger_routes
from gateway._processor import Admission, JobProcessor
from gateway._review_routes import register_review_routes
from gateway._store import FINAL_STATUSES, Enterprise, JobRecord, StateStore
from gateway._upload_routes import register_upload_routes
from indomain.errors import IndomainError
from ledger import Ledger

log = logging.getLogger("indomain.gateway")

DEFAULT_MAX_BODY = 1 << 20
#: Longest a status request may wait for its job to end (``GET /v1/jobs/{id}?wait=``).
MAX_STATUS_WAIT_S = 30.0
ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: The largest receipt header sent (RECEIPT_HEADER): well inside the header limits of HTTP
#: clients (h11: 16 KiB in all).
MAX_RECEIPT_HEADER = 8 * 1024


def create_app(
    *,
    store: StateStore,
    processor: JobProcessor,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    workers: int = 2,
    ledger: Ledger | None = None,
    exclusive: AbstractContextManager[object] | None = None,
    audience: str | None = None,
) -> FastAPI:
    """Build the gateway app. Accepted jobs run on a small thread pool in this process.

    With ``ledger``, the public ledger endpoints (entries, proofs) are served from it.
    ``exclusive`` is held from startup to shutdown: a lock that keeps a second gateway
    from resuming (and running again) the jobs of the same store. ``audience`` is the
    name signed jobs and reads must carry (default: the ledger's origin).
    """
    if audience is not None:
        ours = audience
    elif ledger is not None:
        ours = ledger.origin
    else:
        raise ValueError("the gateway needs an audience (its ledger origin)")
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="indomain-job")
    running: set[str] = set()
    running_lock = threading.Lock()
    job_ended = _Signal()

    def run_job(job_id: str) -> None:
        with running_lock:
            if job_id in running:
                return
            running.add(job_id)
        try:
            _execute(store, processor, job_id)
        finally:
            with running_lock:
                running.discard(job_id)
            job_ended.fire()

    def admit_and_store(job_id: str, job: JobDocument, signature: str) -> Admission:
        admission = processor.admit(job, job_id=job_id, signature=signature)
        store.update_job(job_id, status=admission.outcome, outcome=admission.to_json())
        if admission.outcome == "accepted":
            pool.submit(run_job, job_id)
        return admission

    def resume() -> None:
        """Nothing stored is lost: jobs a crash left undecided or unfinished go on now.

        One job that cannot be admitted again fails on its own; it never keeps the gateway
        from starting."""
        for job_id in store.jobs_with_status("received"):
            record = store.job(job_id)
            job = parse_job(json.loads(record.document))
            try:
                admit_and_store(job_id, job, record.signature)
            except Exception:
                log.exception("job %s could not be admitted after a restart", job_id)
                reason = "could not be admitted after a restart; the operator has the log"
                index = processor.record_failure(job, job_id=job_id, reason=reason)
                store.update_job(
                    job_id,
                    status="failed",
                    outcome={"error": reason, "failure_ledger_index": index},
                )
        for job_id in store.jobs_with_status("accepted", "running"):
            pool.submit(run_job, job_id)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with exclusive if exclusive is not None else nullcontext():
            await run_in_threadpool(resume)
            yield
            pool.shutdown(wait=True, cancel_futures=False)

    app = FastAPI(
        title="indomain gateway",
        version="1",
        lifespan=lifespan,
        description="Submit signed computation jobs over data that never leaves the domain.",
    )

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        body = {"error": {"code": "invalid_request", "message": f"invalid fields: {fields}"}}
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": {"code": "http_error", "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code)

    def authenticate(request: Request) -> Enterprise:
        headers = request.headers
        try:
            name = base64.b64decode(headers["x-indomain-enterprise"], validate=True).decode()
            timestamp = headers["x-indomain-timestamp"]
            signature = headers["x-indomain-signature"]
        except (KeyError, ValueError):
            raise AuthenticationError(
                "missing or malformed X-Indomain-Enterprise/-Timestamp/-Signature headers",
                code="unauthenticated",
            ) from None
        enterprise = store.enterprise(name)
        if enterprise is None:
            raise AuthenticationError("unknown enterprise", code="unknown_enterprise")
        try:
            issued = parse_time(timestamp)
        except ValueError:
            raise AuthenticationError("malformed timestamp", code="stale_timestamp") from None
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        message = request_message(
            enterprise=name,
            method=request.method,
            path=path,
            timestamp=timestamp,
            audience=ours,
        )
        verify_signature(message, signature, enterprise.public_key)
        check_fresh(issued, clock())
        return enterprise

    def own_job(request: Request, job_id: str) -> JobRecord:
        enterprise = authenticate(request)
        try:
            job = store.job(job_id)
        except NotFound:
            job = None
        # Another enterprise's job looks exactly like a missing one.
        if job is None or job.enterprise != enterprise.name:
            raise NotFound(f"no job {job_id!r} for this enterprise")
        return job

    @app.post("/v1/jobs", status_code=202)
    async def submit(request: Request) -> JSONResponse:
        data = await read_json(request, max_body_bytes)
        if not isinstance(data, dict) or set(data) != {"job", "signature"}:
            raise MalformedRequest(
                'the body must be {"job": {...}, "signature": "<base64 Ed25519>"}',
                code="invalid_job",
            )
        if not isinstance(data["signature"], str):
            raise MalformedRequest("signature must be a base64 string", code="invalid_job")
        job = parse_job(data["job"])
        enterprise = store.enterprise(job.enterprise)
        if enterprise is None:
            raise AuthenticationError(
                "unknown enterprise: ask the data bureau to register your public key",
                code="unknown_enterprise",
            )
        verify_signature(job.canonical(), data["signature"], enterprise.public_key)
        check_audience(job, ours)
        check_fresh(job.issued, clock())
        job_id = "job_" + secrets.token_hex(16)
        await run_in_threadpool(
            store.insert_job,
            job_id=job_id,
            enterprise=job.enterprise,
            nonce=job.nonce,
            computation=job.computation,
            dataset=job.dataset,
            purpose=job.purpose,
            document=job.canonical(),
            signature=data["signature"],
        )
        admission = await run_in_threadpool(admit_and_store, job_id, job, data["signature"])
        if admission.outcome != "accepted":
            status = 403 if admission.outcome == "denied" else _refusal_status(admission.code)
            error = {"code": admission.code, "message": admission.reason, "job_id": job_id}
            outcome = admission.to_json()
            error.update({k: v for k, v in outcome.items() if k not in ("code", "reason")})
            return JSONResponse({"error": error}, status_code=status)
        return JSONResponse(
            {"job_id": job_id, "status": "accepted", "ledger_index": admission.ledger_index},
            status_code=202,
        )

    @app.get("/v1/jobs/{job_id}")
    async def status(request: Request, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The job's status; with ``wait`` (seconds, at most :data:`MAX_STATUS_WAIT_S`) the
        answer comes as soon as the job has ended, or when the time is up: a long poll, so a
        client learns of the end at once without polling (which also took CPU time from
        the run)."""
        if not 0.0 <= wait <= MAX_STATUS_WAIT_S:
            raise GatewayError(
                f"wait must be between 0 and {MAX_STATUS_WAIT_S:g} seconds",
                code="invalid_request",
            )
        ended = job_ended.event()  # taken before the read: an end after it still wakes us
        job = await run_in_threadpool(own_job, request, job_id)
        deadline = time.monotonic() + wait
        while job.status not in FINAL_STATUSES and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(ended.wait(), timeout=left)
            except TimeoutError:
                break
            ended = job_ended.event()
            job = await run_in_threadpool(store.job, job_id)
        return job.public_view()

    @app.get("/v1/jobs/{job_id}/result")
    def result(request: Request, job_id: str, format: str = "arrow") -> Response:
        job = own_job(request, job_id)
        if job.status != "succeeded":
            raise NotReady(
                f"job {job_id} is {job.status}; a result exists only once it has succeeded",
                status=job.status,
            )
        ipc, receipt = store.job_result(job_id)
        if format == "json":
            table = table_from_ipc(ipc)
            return JSONResponse(
                {
                    "job_id": job_id,
                    "columns": table.column_names,
                    "rows": table_to_rows(table),
                    "receipt": receipt,
                }
            )
        if format != "arrow":
            raise GatewayError("format must be arrow or json", code="invalid_request")
        headers = {"X-Indomain-Job": job_id}
        # The receipt rides along (what GET .../receipt answers), so a client verifying the
        # result needs one request, not two; a receipt too big for a header is left out.
        carried = base64.b64encode(json.dumps(receipt, separators=(",", ":")).encode())
        if len(carried) <= MAX_RECEIPT_HEADER:
            headers[RECEIPT_HEADER] = carried.decode()
        return Response(ipc, media_type=ARROW_STREAM, headers=headers)

    @app.get("/v1/jobs/{job_id}/receipt")
    def receipt(request: Request, job_id: str) -> dict[str, Any]:
        job = own_job(request, job_id)
        if job.status != "succeeded":
            raise NotReady(f"job {job_id} is {job.status}", status=job.status)
        return store.job_result(job_id)[1]

    @app.get("/v1/catalogue")
    def catalogue(request: Request) -> dict[str, Any]:
        enterprise = authenticate(request)
        # With the caller's name: what its grants allow, and a synthetic sample.
        view = getattr(processor, "catalogue_for", None)
        return {"datasets": view(enterprise.name) if view else processor.catalogue()}

    @app.get("/v1/budgets")
    def budgets(request: Request) -> dict[str, Any]:
        """The caller's privacy budgets: spent and remaining epsilon per dataset."""
        enterprise = authenticate(request)
        view = getattr(processor, "budgets", None)
        return {"enterprise": enterprise.name, "budgets": view(enterprise.name) if view else []}

    @app.get("/v1/ledger/checkpoint", response_class=PlainTextResponse)
    def checkpoint() -> str:
        return processor.checkpoint()

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    if ledger is not None:
        register_ledger_routes(app, ledger)
    desk = getattr(processor, "proposal_desk", None)
    if desk is not None:
        register_review_routes(
            app,
            desk=desk,
            store=store,
            authenticate=authenticate,
            clock=clock,
            audience=ours,
        )
    store_upload = getattr(processor, "store_upload", None)
    if store_upload is not None:
        register_upload_routes(
            app,
            store_upload=store_upload,
            authenticate=authenticate,
            upload_limit=getattr(processor, "upload_limit", None),
            upload_room=getattr(processor, "upload_room", None),
        )
    return app


class _Signal:
    """Wakes the status requests waiting on the event loop whenever a job ends; fired from
    the job threads. Each end sets the current event and puts a fresh one in its place."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def event(self) -> asyncio.Event:
        """The event the next job end sets (called on the event loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop or self._event is None:
                self._loop, self._event = loop, asyncio.Event()
            return self._event

    def fire(self) -> None:
        with self._lock:
            loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._swap)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting
                pass

    def _swap(self) -> None:
        with self._lock:
            ended, self._event = self._event, asyncio.Event()
        if ended is not None:
            ended.set()


def _refusal_status(code: str) -> int:
    return 404 if code == "unknown_dataset" else 422


def _execute(store: StateStore, processor: JobProcessor, job_id: str) -> None:
    record = store.job(job_id)
    if record.status in FINAL_STATUSES:
        return
    job = parse_job(json.loads(record.document))
    # Not fsynced (an fsync on the path of every job): lost in a crash, the job is still
    # "accepted", which resume() runs exactly as it runs a "running" one. The outcome
    # written below is fsynced, and with it this write (WAL keeps commits in order).
    store.update_job(job_id, status="running", synced=False)
    outcome = record.outcome or {}
    try:
        execution = processor.execute(job, job_id=job_id, admission=Admission.from_json(outcome))
    except Exception as exc:
        if isinstance(exc, IndomainError):
            reason = str(exc)  # our errors carry no row data
        else:
            log.exception("job %s failed with an internal error", job_id)
            reason = "internal error in the sandbox; the operator has the log"
        index = processor.record_failure(job, job_id=job_id, reason=reason)
        store.update_job(
            job_id,
            status="failed",
            outcome={**outcome, "error": reason, "failure_ledger_index": index},
        )
        return
    store.update_job(
        job_id,
        status="succeeded",
        outcome={**outcome, **execution.summary},
        result=execution.result_ipc,
        receipt=execution.receipt,
    )
