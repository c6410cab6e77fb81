"""Job documents and the signatures that authenticate them.

An enterprise signs the RFC 8785 canonical JSON of its job document with Ed25519; the
signature travels detached next to the document. Reads (status, results, catalogue) are
authenticated by a signature over a small canonical request description instead, so no
bearer secret ever crosses the wire.

Both name their **audience**, the sandbox they are for (its ledger origin, the first line
of ``GET /v1/ledger/checkpoint``): nonces are remembered per gateway, so without it a job
signed for one sandbox could be replayed at another where the enterprise uses the same
key, spending its budget there.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway._errors import AuthenticationError, InvalidJob

MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_PARAMS_BYTES = 16 * 1024
#: The Arrow result's response header carrying its receipt (base64 of its JSON): the
#: gateway sends it, the client reads it (``_app.py``, ``_client.py``).
RECEIPT_HEADER = "X-Indomain-Receipt"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class JobDocument(BaseModel):
    """What an enterprise asks for. Unknown fields and loose types are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    enterprise: str = Field(min_length=1, max_length=200)
    computation: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    dataset: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    purpose: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    params: dict[str, Any]
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{22,128}$")
    issued_at: str
    #: The sandbox the job is for (its ledger origin). Optional in the model, so jobs on
    #: ledgers from before it still parse; the gateway refuses a job without its own.
    audience: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("issued_at")
    @classmethod
    def _rfc3339_utc(cls, value: str) -> str:
        parse_time(value)
        return value

    def canonical(self) -> bytes:
        return rfc8785.dumps(self.model_dump(exclude_none=True))

    @property
    def issued(self) -> datetime:
        return parse_time(self.issued_at)


def parse_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError("must be UTC time like 2026-11-22T10:00:00Z") from None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def parse_job(data: Any) -> JobDocument:
    """Validate a decoded job document; the error names fields, never echoes values."""
    try:
        job = JobDocument.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'job'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise InvalidJob("the job document is invalid: " + "; ".join(problems)) from None
    try:
        params_size = len(rfc8785.dumps(job.params))
    except rfc8785.CanonicalizationError:
        raise InvalidJob(
            "params: a value has no RFC 8785 canonical form (integers beyond ±2^53-1, "
            "NaN or infinite numbers); send such numbers as strings"
        ) from None
    if params_size > MAX_PARAMS_BYTES:
        # params are recorded on the ledger for good: they stay small.
        raise InvalidJob(f"params: at most {MAX_PARAMS_BYTES} bytes of canonical JSON")
    return job


def new_job(
    *,
    enterprise: str,
    computation: str,
    dataset: str,
    purpose: str,
    params: dict[str, Any],
    audience: str,
    now: datetime | None = None,
) -> JobDocument:
    return parse_job(
        {
            "enterprise": enterprise,
            "computation": computation,
            "dataset": dataset,
            "purpose": purpose,
            "params": params,
            "nonce": secrets.token_urlsafe(24),
            "issued_at": format_time(now or datetime.now(UTC)),
            "audience": audience,
        }
    )


def sign_job(job: JobDocument, key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.sign(job.canonical())).decode()


def verify_signature(message: bytes, signature_b64: str, key: Ed25519PublicKey) -> None:
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message)
    except (InvalidSignature, ValueError):
        raise AuthenticationError(
            "the signature does not verify with the enterprise's registered key",
            code="bad_signature",
        ) from None


def check_fresh(issued: datetime, now: datetime) -> None:
    if abs(now - issued) > MAX_CLOCK_SKEW:
        raise AuthenticationError(
            f"timestamp {format_time(issued)} is more than {MAX_CLOCK_SKEW} from the "
            f"gateway's clock ({format_time(now)}); check the client's clock and resubmit",
            code="stale_timestamp",
        )


def request_message(
    *, enterprise: str, method: str, path: str, timestamp: str, audience: str
) -> bytes:
    """What a read request signs: who, what, when, and at which sandbox."""
    return rfc8785.dumps(
        {
            "audience": audience,
            "enterprise": enterprise,
            "method": method,
            "path": path,
            "timestamp": timestamp,
        }
    )


def check_audience(job: JobDocument, audience: str) -> None:
    """Refuse a job signed for another sandbox (or for none)."""
    if job.audience == audience:
        return
    said = f"for sandbox {job.audience!r}" if job.audience else "for no sandbox (no audience)"
    raise AuthenticationError(
        f"this job was signed {said}; this sandbox is {audience!r} (the first line of "
        "GET /v1/ledger/checkpoint): sign a new job naming it as the audience",
        code="wrong_audience",
    )


def sign_request(
    *,
    enterprise: str,
    key: Ed25519PrivateKey,
    method: str,
    path: str,
    audience: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """Headers that authenticate one read request."""
    timestamp = format_time(now or datetime.now(UTC))
    message = request_message(
        enterprise=enterprise, method=method, path=path, timestamp=timestamp, audience=audience
    )
    return {
        "X-Indomain-Enterprise": base64.b64encode(enterprise.encode()).decode(),
        "X-Indomain-Timestamp": timestamp,
        "X-Indomain-Signature": base64.b64encode(key.sign(message)).decode(),
    }
