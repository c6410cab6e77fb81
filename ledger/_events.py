"""The signatures an entry carries inside it, checked against keys the ledger itself recorded.

The tree and the checkpoint prove an entry was not changed after it was logged; they say
nothing about whether the operator logged a *true* event. So the sandbox's entries embed
evidence signed by someone other than the ledger key:

- ``job.accepted`` / ``job.denied`` / ``job.refused``: the enterprise's Ed25519 signature
  over the RFC 8785 bytes of ``request``, verified with the key of that enterprise's
  latest earlier ``enterprise.registered`` entry;
- ``ledger.key_added`` / ``ledger.key_retired`` (key rotation): a well-formed verifier key;
- ``run.completed``: the enclave's Ed25519 signature over the RFC 8785 bytes of
  ``attestation``, verified with the key of the ``sandbox.created`` entry (entry 0 of a
  sandbox ledger), and the attestation must be for the job the run names;
- ``run.reused`` (a repeated query answered with an earlier release): ``reuse_of`` must
  name an earlier attested run whose ``result_digest`` is the one recorded.

An auditor therefore needs nothing but the ledger's verifier key: every other key is on
the ledger, before the entries it verifies. Entry types not named here carry no embedded
signature and pass (the ledger also serves other applications and the tests).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger._entry import canonical_json
from ledger._errors import LedgerError
from ledger._note import parse_verifier_key

SANDBOX_CREATED = "sandbox.created"
ENTERPRISE_REGISTERED = "enterprise.registered"
JOB_TYPES = frozenset({"job.accepted", "job.denied", "job.refused"})
RUN_COMPLETED = "run.completed"
RUN_REUSED = "run.reused"
KEY_ADDED, KEY_RETIRED = "ledger.key_added", "ledger.key_retired"  # key rotation
KEY_TYPES = frozenset({KEY_ADDED, KEY_RETIRED})
# Every type :class:`EventChecker` reads; it passes any other entry without looking.
CHECKED_TYPES = frozenset(
    {SANDBOX_CREATED, ENTERPRISE_REGISTERED, RUN_COMPLETED, RUN_REUSED} | JOB_TYPES | KEY_TYPES
)


class Event(Protocol):
    """What the checks read of an entry (a :class:`~ledger.LedgerEntry` or a quick parse)."""

    @property
    def index(self) -> int: ...

    @property
    def type(self) -> str: ...

    @property
    def fields(self) -> Mapping[str, Any]: ...


def thaw(value: Any) -> Any:
    """Return frozen entry fields (read-only mappings, tuples) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


def _b64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None


def _public_key(text: Any) -> Ed25519PublicKey | None:
    raw = _b64(text)
    if raw is None or len(raw) != 32:
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


def _signed_by(key: Ed25519PublicKey, signature: Any, document: Any) -> bool:
    raw = _b64(signature)
    if raw is None or not isinstance(document, Mapping):
        return False
    try:
        key.verify(raw, canonical_json(document))
    except (InvalidSignature, rfc8785.CanonicalizationError, ValueError, LedgerError):
        return False
    return True


class EventChecker:
    """Walks entries in order, learning keys and checking the signatures entries embed.

    :meth:`check` returns ``None`` when the entry is fine, else the reason it is not.
    """

    def __init__(self) -> None:
        self._enclave_key: Ed25519PublicKey | None = None
        self._enterprises: dict[str, Ed25519PublicKey] = {}
        self._accepted: dict[str, tuple[int, Mapping[str, Any]]] = {}
        self._results: dict[str, Any] = {}  # job id -> attested result digest
        # (index, type, verifier key) of each key rotation entry, in log order
        self.key_changes: list[tuple[int, str, str]] = []

    def check(self, entry: Event) -> str | None:
        """Check ``entry`` against what earlier entries recorded; remember what it records."""
        fields = entry.fields
        if entry.type == SANDBOX_CREATED:
            return self._created(entry)
        if entry.type == ENTERPRISE_REGISTERED:
            key = _public_key(fields.get("public_key"))
            name = fields.get("enterprise")
            if key is None or not isinstance(name, str):
                return "enterprise.registered needs an enterprise name and a raw Ed25519 key"
            self._enterprises[name] = key
            return None
        if entry.type in KEY_TYPES:
            key = fields.get("verifier_key")
            try:
                parse_verifier_key(key)  # type: ignore[arg-type]
            except LedgerError:
                return f"{entry.type} needs a valid verifier key"
            self.key_changes.append((entry.index, entry.type, key))  # type: ignore[arg-type]
            return None
        if entry.type in JOB_TYPES:
            return self._job(entry)
        if entry.type == RUN_COMPLETED:
            return self._run(entry)
        if entry.type == RUN_REUSED:
            return self._reused(entry)
        return None  # keep in step with CHECKED_TYPES

    def _created(self, entry: Event) -> str | None:
        if entry.index != 0:
            return "sandbox.created may only be entry 0"
        key = _public_key(entry.fields.get("enclave_public_key"))
        if key is None:
            return "sandbox.created needs the enclave's raw Ed25519 public key"
        self._enclave_key = key
        return None

    def _job(self, entry: Event) -> str | None:
        fields = entry.fields
        request = fields.get("request")
        name = fields.get("enterprise")
        if not isinstance(request, Mapping) or request.get("enterprise") != name:
            return "the signed request is missing or names another enterprise"
        key = self._enterprises.get(name) if isinstance(name, str) else None
        if key is None:
            return f"enterprise {name!r} has no earlier enterprise.registered entry"
        if not _signed_by(key, fields.get("request_signature"), request):
            return f"request signature does not verify with {name!r}'s registered key"
        digest = "sha256:" + hashlib.sha256(canonical_json(request)).hexdigest()
        if fields.get("request_digest") != digest:
            return "request_digest is not the SHA-256 of the signed request"
        for key_name in ("computation", "dataset", "purpose"):
            if fields.get(key_name) != request.get(key_name):
                return f"{key_name} differs from the signed request"
        if entry.type == "job.accepted" and isinstance(fields.get("job_id"), str):
            self._accepted[fields["job_id"]] = (entry.index, fields)
        return None

    def _run(self, entry: Event) -> str | None:
        fields = entry.fields
        if self._enclave_key is None:
            return "no enclave key on the ledger (no sandbox.created entry 0)"
        attestation = fields.get("attestation")
        if not isinstance(attestation, Mapping) or not _signed_by(
            self._enclave_key, fields.get("attestation_signature"), attestation
        ):
            return "run attestation signature does not verify with the enclave key"
        job_id = fields.get("job_id")
        if not isinstance(job_id, str) or attestation.get("job_id") != job_id:
            return "the run attestation is for another job"
        accepted = self._accepted.get(job_id)
        if accepted is None or fields.get("accepted_at_index") != accepted[0]:
            return "accepted_at_index does not name this job's earlier job.accepted entry"
        for key_name in ("code_hash", "params_digest"):
            if attestation.get(key_name) != accepted[1].get(key_name):
                return f"the attested {key_name} differs from the one accepted"
        self._results[job_id] = attestation.get("result_digest")
        return None

    def _reused(self, entry: Event) -> str | None:
        """A job answered with an earlier release: that release must be attested, same bytes."""
        fields = entry.fields
        job_id, original = fields.get("job_id"), fields.get("reuse_of")
        accepted = self._accepted.get(job_id) if isinstance(job_id, str) else None
        if (
            not isinstance(job_id, str)
            or accepted is None
            or fields.get("accepted_at_index") != accepted[0]
        ):
            return "accepted_at_index does not name this job's earlier job.accepted entry"
        attested = self._results.get(original) if isinstance(original, str) else None
        if attested is None:
            return "reuse_of names no earlier attested run"
        if fields.get("result_digest") != attested:
            return "the reused result's digest differs from the attested run's"
        self._results[job_id] = attested
        return None
