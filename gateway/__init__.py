"""The gateway: the HTTP front of the sandbox, and the client enterprises use with it.

Jobs are RFC 8785 canonical JSON documents signed with the enterprise's Ed25519 key; a nonce
and a timestamp stop replays. Nothing row-level leaves through here: results are the
enclave's aggregated output, the catalogue carries schema and classes only.
"""

from gateway._app import ARROW_STREAM, DEFAULT_MAX_BODY, create_app
from gateway._client import Client, JobResult, load_private_key, verify_result
from gateway._errors import (
    AuthenticationError,
    BudgetExhausted,
    GatewayError,
    InvalidJob,
    MalformedRequest,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PolicyDenied,
    Refused,
    ReplayError,
    ServerError,
    TransportError,
    UploadQuotaExceeded,
)
from gateway._jobs import (
    MAX_CLOCK_SKEW,
    JobDocument,
    format_time,
    new_job,
    parse_job,
    sign_job,
    sign_request,
)
from gateway._ledger_routes import LedgerFeed
from gateway._processor import Admission, Execution, JobProcessor
from gateway._store import FINAL_STATUSES, Enterprise, JobRecord, StateStore

__all__ = [
    "ARROW_STREAM",
    "DEFAULT_MAX_BODY",
    "FINAL_STATUSES",
    "MAX_CLOCK_SKEW",
    "Admission",
    "AuthenticationError",
    "BudgetExhausted",
    "Client",
    "Enterprise",
    "Execution",
    "GatewayError",
    "InvalidJob",
    "JobDocument",
    "JobProcessor",
    "JobRecord",
    "JobResult",
    "LedgerFeed",
    "MalformedRequest",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "PolicyDenied",
    "Refused",
    "ReplayError",
    "ServerError",
    "StateStore",
    "TransportError",
    "UploadQuotaExceeded",
    "create_app",
    "format_time",
    "load_private_key",
    "new_job",
    "parse_job",
    "sign_job",
    "sign_request",
    "verify_result",
]
