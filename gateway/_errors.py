"""Errors of the gateway and its client. Each carries the HTTP status and a stable code."""

from __future__ import annotations

from typing import Any

from indomain.errors import IndomainError


class GatewayError(IndomainError):
    """A request was refused; ``code`` is stable for scripts, ``message`` is for people."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class InvalidJob(GatewayError):
    status, code = 422, "invalid_job"


class MalformedRequest(GatewayError):
    status, code = 400, "malformed_json"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class UploadQuotaExceeded(GatewayError):
    """The enterprise's stored uploads would exceed its quota (``quota`` and ``room`` say
    how many bytes it may keep and how many are left)."""

    status, code = 507, "upload_quota_exceeded"


class AuthenticationError(GatewayError):
    status, code = 401, "bad_signature"


class ReplayError(GatewayError):
    status, code = 409, "replayed_nonce"


class NotFound(GatewayError):
    status, code = 404, "not_found"


class NotReady(GatewayError):
    status, code = 409, "not_ready"


class PolicyDenied(GatewayError):
    status, code = 403, "policy_denied"


class Refused(GatewayError):
    """The job is well formed and signed, but cannot run (bad query, unknown dataset)."""

    status, code = 422, "refused"


class BudgetExhausted(Refused):
    """The job would spend more privacy budget than the enterprise has left in this window."""

    code = "budget_exhausted"


class ServerError(GatewayError):
    status, code = 500, "internal"


class TransportError(GatewayError):
    """The client could not reach the gateway or got an answer it could not read."""

    status, code = 0, "transport"


_BY_CODE: dict[str, type[GatewayError]] = {
    "invalid_job": InvalidJob,
    "malformed_json": MalformedRequest,
    "payload_too_large": PayloadTooLarge,
    "unknown_enterprise": AuthenticationError,
    "bad_signature": AuthenticationError,
    "stale_timestamp": AuthenticationError,
    "replayed_nonce": ReplayError,
    "not_found": NotFound,
    "not_ready": NotReady,
    "policy_denied": PolicyDenied,
    "query_refused": Refused,
    "unknown_dataset": Refused,
    "unknown_computation": Refused,
    "refused": Refused,
    "job_failed": Refused,
    "proposal_not_approved": Refused,
    "proposal_refused": Refused,
    "wrong_audience": AuthenticationError,
    "review_required": Refused,
    "budget_exhausted": BudgetExhausted,
    "upload_refused": Refused,
    "upload_quota_exceeded": UploadQuotaExceeded,
    "unauthenticated": AuthenticationError,
    "invalid_request": InvalidJob,
    "unknown_witness": PolicyDenied,
}


def error_from_json(status: int, body: Any) -> GatewayError:
    """Rebuild the server's error on the client side, keeping code and extra fields."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return TransportError(f"gateway answered {status} without an error document")
    code = str(error.get("code", "internal"))
    extra = {k: v for k, v in error.items() if k not in ("code", "message")}
    cls = _BY_CODE.get(code, ServerError)
    exc = cls(str(error.get("message", "")), code=code, **extra)
    exc.status = status
    return exc
