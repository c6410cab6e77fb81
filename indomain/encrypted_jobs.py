"""Wiring for encrypted jobs: checked uploads, and resolving a job's session and uploads.

An ``encrypted_group_sum`` job names a ``psi`` job (its session) and four uploads by
digest. Uploads arrive first (``PUT /v1/uploads/{kind}/{digest}``); each is checked
before it is kept: points must be valid ristretto255 encodings, HE contexts and vectors
are parsed by TenSEAL in a separate short-lived process (``computations._encrypted.
_validate``), so a malformed or malicious object is refused with a clear error, nothing
is charged and nothing runs. A kept upload is recorded on the ledger by kind, digest and
size only. At admission and again at execution the job's parameters are resolved: the
session's public description from the stored offer, and the paths of the caller's own
checked uploads. What a job's parameters say under the resolved names is overwritten,
never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from computations import (
    ComputationError,
    PsiError,
    PsiRequest,
    digest_of,
    session_of,
    split_points,
    table_from_ipc,
)
from indomain.errors import IndomainError

if TYPE_CHECKING:
    from gateway import JobDocument
    from indomain.sandbox import Sandbox

#: Computations whose parameters this module resolves.
RESOLVED_COMPUTATIONS: Final = frozenset({"encrypted_group_sum", "encrypted_linear_score"})
UPLOAD_KINDS: Final = ("request", "reply", "context", "values")
#: Most bytes one upload may hold, per kind (a context with Galois keys for 8192 is ~35 MB).
MAX_UPLOAD_BYTES: Final = {
    "request": 32 * 1_000_000,
    "reply": 32 * 4_000_000,
    "context": 64 << 20,
    "values": 512 << 20,
}
_VALIDATOR: Final = "computations._encrypted._validate"
_VALIDATE_TIMEOUT_S: Final = 300.0


class UploadRefused(IndomainError):
    """An upload was refused: wrong kind, digest or size, or an object that does not
    hold up (the message says which and what to do)."""


def _folder(sandbox: Sandbox, enterprise: str) -> Path:
    # One folder per enterprise: a job can only name its own enterprise's uploads.
    name = hashlib.sha256(enterprise.encode()).hexdigest()[:32]
    return sandbox.home.root / "uploads" / name


def upload_path(sandbox: Sandbox, enterprise: str, kind: str, digest: str) -> Path:
    """Where ``enterprise``'s checked upload of ``kind`` and ``digest`` is kept."""
    return _folder(sandbox, enterprise) / f"{kind}-{digest.removeprefix('sha256:')}"


def store_upload(
    sandbox: Sandbox,
    *,
    enterprise: str,
    kind: str,
    digest: str,
    data: bytes,
    context: str | None = None,
) -> dict[str, Any]:
    """Check and keep one upload; returns ``{"kind", "digest", "bytes", …}``.

    ``context`` (a digest) names the caller's checked context a ``values`` upload is
    under. Raises :class:`UploadRefused` naming the problem; nothing is kept then.
    """
    if kind not in UPLOAD_KINDS:
        raise UploadRefused(f"unknown upload kind {kind[:40]!r}; one of {', '.join(UPLOAD_KINDS)}")
    if digest_of(data) != digest:
        raise UploadRefused("the body's SHA-256 is not the digest in the path; upload again")
    if len(data) > MAX_UPLOAD_BYTES[kind]:
        raise UploadRefused(f"a {kind} upload holds at most {MAX_UPLOAD_BYTES[kind]} bytes")
    path = upload_path(sandbox, enterprise, kind, digest)
    found: dict[str, Any] = {}
    if not path.exists():
        folder = _folder(sandbox, enterprise)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            found = _check(sandbox, enterprise, kind, Path(tmp), data, context)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        sandbox.ledger.append(
            "upload.stored",
            {"enterprise": enterprise, "kind": kind, "digest": digest, "bytes": len(data)},
        )
    return {"kind": kind, "digest": digest, "bytes": len(data), **found}


def _check(
    sandbox: Sandbox,
    enterprise: str,
    kind: str,
    path: Path,
    data: bytes,
    context: str | None,
) -> dict[str, Any]:
    if kind in ("request", "reply"):
        try:
            points = split_points(data)
            PsiRequest(points)  # valid, distinct, non-identity points
        except (ComputationError, PsiError) as exc:
            raise UploadRefused(f"the {kind} upload is refused: {exc}") from None
        return {"points": len(points)}
    if kind == "context":
        return _validate({"kind": "context", "context_path": str(path)})
    if context is None:
        raise UploadRefused(
            "a values upload names its context: PUT /v1/uploads/values/<digest>"
            "?context=sha256:<digest of your checked context upload>"
        )
    context_path = upload_path(sandbox, enterprise, "context", context)
    if not context_path.exists():
        raise UploadRefused("upload the context first; it is not among your checked uploads")
    return _validate({"kind": "values", "path": str(path), "context_path": str(context_path)})


def _validate(request: dict[str, Any]) -> dict[str, Any]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH") if k in os.environ}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", _VALIDATOR],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=_VALIDATE_TIMEOUT_S,
            env=env,
            check=False,
        )
        answer = json.loads(proc.stdout)
    except subprocess.TimeoutExpired:
        raise UploadRefused("the HE object took too long to check; it is refused") from None
    except ValueError:
        raise UploadRefused(
            "the HE object could not be checked (the checking process ended without an "
            "answer); it is refused"
        ) from None
    if not answer.get("ok"):
        raise UploadRefused(f"the {request['kind']} upload is refused: {answer.get('error')}")
    return {k: v for k, v in answer.items() if k != "ok"}


def resolve_params(sandbox: Sandbox, job: JobDocument) -> dict[str, Any]:
    """``job``'s parameters plus ``resolved_session`` and ``resolved_blobs`` (the checker
    refuses a job whose session or uploads are not found; this never raises)."""
    params = dict(job.params)
    params["resolved_session"] = _session(sandbox, job, params.get("session"))
    blobs = {}
    for kind in UPLOAD_KINDS:
        digest = params.get(kind)
        if isinstance(digest, str) and digest.startswith("sha256:") and len(digest) == 71:
            path = upload_path(sandbox, job.enterprise, kind, digest)
            if path.is_file():
                blobs[kind] = str(path)
    params["resolved_blobs"] = blobs
    return params


def _session(sandbox: Sandbox, job: JobDocument, session: object) -> dict[str, Any] | None:
    """The public description of the caller's finished psi job ``session`` on the job's
    dataset, or ``None``."""
    if not isinstance(session, str):
        return None
    try:
        record = sandbox.store.job(session)
        if (
            record.enterprise != job.enterprise
            or record.computation != "psi"
            or record.dataset != job.dataset
            or record.status != "succeeded"
        ):
            return None
        ipc, _ = sandbox.store.job_result(session)
        return session_of(table_from_ipc(ipc))
    except IndomainError:
        return None
