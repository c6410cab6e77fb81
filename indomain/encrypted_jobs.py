"""Wiring for encrypted jobs: checked uploads, and resolving a job's session and uploads.

An ``encrypted_group_sum`` job names a ``psi`` job (its session) and five uploads by
digest. Uploads arrive first (``PUT /v1/uploads/{kind}/{digest}``); each is checked
before it is kept, in a separate short-lived process (``computations._encrypted.
_validate``, at most :data:`MAX_VALIDATORS` at once): points must be canonical, distinct
ristretto255 encodings, shuffle proofs well formed (they are verified in the worker,
against the session's offer), HE contexts and vectors are parsed by TenSEAL. A malformed or
malicious object is refused with a clear error, nothing is charged and nothing runs. A
kept upload is recorded on the ledger by kind and digest only (its size would tell the
size of a list). At admission and again at execution the job's parameters are resolved:
the session's public description from the stored offer, and the paths of the caller's
own checked uploads. What a job's parameters say under the resolved names is
overwritten, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from computations import session_of, table_from_ipc
from indomain.errors import IndomainError

if TYPE_CHECKING:
    from gateway import JobDocument, UploadQuotaExceeded
    from indomain.sandbox import Sandbox

#: Computations whose parameters this module resolves.
RESOLVED_COMPUTATIONS: Final = frozenset({"encrypted_group_sum", "encrypted_linear_score"})
UPLOAD_KINDS: Final = ("request", "reply", "proof", "context", "values")
#: Most bytes one upload may hold, per kind (a context with Galois keys for 8192 is ~35 MB).
MAX_UPLOAD_BYTES: Final = {
    "request": 32 * 1_000_000,
    "reply": 32 * 4_000_000,
    # A, the offered lists and per list its shuffle proof: 160 bytes per reply point.
    "proof": 8 + 32 + 160 * 4_000_000 + 160 * 4096,
    "context": 64 << 20,
    "values": 512 << 20,
}
_VALIDATOR: Final = "computations._encrypted._validate"
_VALIDATE_TIMEOUT_S: Final = 300.0
#: Most checking processes at once (each may use up to 4 GiB), and how long an upload
#: waits for one before it is refused as busy.
MAX_VALIDATORS: Final = 2
_VALIDATOR_WAIT_S: Final = 120.0
_VALIDATORS: Final = threading.BoundedSemaphore(MAX_VALIDATORS)


class UploadRefused(IndomainError):
    """An upload was refused: wrong kind, digest or size, or an object that does not
    hold up (the message says which and what to do)."""


#: Held while an upload is checked against the quota and moved into place, while
#: uploads are pruned (:mod:`indomain.uploads`) and while an encrypted job is admitted:
#: no upload is removed under a job being admitted, and two uploads at once cannot
#: both take the same room.
UPLOADS_LOCK: Final = threading.RLock()


def upload_folder(sandbox: Sandbox, enterprise: str) -> Path:
    """The folder of ``enterprise``'s kept uploads."""
    # One folder per enterprise: a job can only name its own enterprise's uploads.
    name = hashlib.sha256(enterprise.encode()).hexdigest()[:32]
    return sandbox.home.root / "uploads" / name


def upload_path(sandbox: Sandbox, enterprise: str, kind: str, digest: str) -> Path:
    """Where ``enterprise``'s checked upload of ``kind`` and ``digest`` is kept."""
    return upload_folder(sandbox, enterprise) / f"{kind}-{digest.removeprefix('sha256:')}"


def used_bytes(folder: Path) -> int:
    """Bytes the kept uploads in ``folder`` hold (``.upload-…`` files still being
    checked are not counted)."""
    total = 0
    for path in folder.iterdir() if folder.is_dir() else ():
        if not path.name.startswith("."):
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # pruned meanwhile
                continue
    return total


def quota_exceeded(*, quota: int, room: int, size: int | None) -> UploadQuotaExceeded:
    """The refusal of an upload of ``size`` bytes (``None``: not declared) that does not
    fit in the ``room`` left of the enterprise's ``quota``."""
    from gateway import UploadQuotaExceeded

    this = f"this one holds {size}; " if size is not None else ""
    return UploadQuotaExceeded(
        f"your stored uploads may hold at most {quota} bytes together and {room} are "
        f"left; {this}run the jobs that use your uploads (their inputs are removed once "
        "the results are stored) or ask the operator for a larger quota",
        quota=quota,
        room=room,
    )


def upload_limit(kind: str) -> int:
    """The most bytes an upload of ``kind`` may hold; raises :class:`UploadRefused` for an
    unknown kind. The gateway asks before it reads the body."""
    if kind not in UPLOAD_KINDS:
        raise UploadRefused(f"unknown upload kind {kind[:40]!r}; one of {', '.join(UPLOAD_KINDS)}")
    return MAX_UPLOAD_BYTES[kind]


def store_upload(
    sandbox: Sandbox,
    *,
    enterprise: str,
    kind: str,
    digest: str,
    source: Path,
    sha256: str | None = None,
    context: str | None = None,
    quota: int | None = None,
) -> dict[str, Any]:
    """Check and keep one upload, whose bytes are in the file ``source`` (moved away or
    left for the caller to delete); returns ``{"kind", "digest", "bytes", …}``.

    ``sha256`` is the digest the caller computed while the bytes streamed in (computed
    here, streaming, if ``None``). ``context`` (a digest) names the caller's checked
    context a ``values`` upload is under. ``quota`` is the most bytes the enterprise's
    kept uploads may hold together. Raises :class:`UploadRefused` naming the problem, or
    :class:`gateway.UploadQuotaExceeded`; nothing is kept then. Storing an upload that
    is already kept refreshes its time (:mod:`indomain.uploads` prunes by it).
    """
    cap = upload_limit(kind)
    size = source.stat().st_size
    if size > cap:
        raise UploadRefused(f"a {kind} upload holds at most {cap} bytes")
    if sha256 is None:
        with source.open("rb") as f:
            sha256 = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
    if sha256 != digest:
        raise UploadRefused("the body's SHA-256 is not the digest in the path; upload again")
    path = upload_path(sandbox, enterprise, kind, digest)
    found: dict[str, Any] = {}
    with UPLOADS_LOCK:
        kept = path.exists()
        if kept:
            os.utime(path)  # used again: not old, and newer than any job that finished
    if not kept:
        folder = upload_folder(sandbox, enterprise)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        os.close(fd)
        try:
            shutil.move(source, tmp)  # a rename on one file system, else a streamed copy
            found = _check(sandbox, enterprise, kind, Path(tmp), context)
            with UPLOADS_LOCK:
                room = None if quota is None else quota - used_bytes(folder)
                if room is not None and not path.exists() and size > room:
                    raise quota_exceeded(quota=quota or 0, room=max(0, room), size=size)
                os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # Kind and digest only: a byte count would tell everyone the list's size.
        sandbox.ledger.append(
            "upload.stored", {"enterprise": enterprise, "kind": kind, "digest": digest}
        )
    return {"kind": kind, "digest": digest, "bytes": size, **found}


def _check(
    sandbox: Sandbox,
    enterprise: str,
    kind: str,
    path: Path,
    context: str | None,
) -> dict[str, Any]:
    if kind in ("request", "reply"):
        # Valid, canonical, distinct, non-identity points: checked in the validator
        # process (millions of points cost tens of CPU seconds; not the gateway's).
        return _validate({"kind": "points", "what": kind, "path": str(path)})
    if kind == "proof":
        return _validate({"kind": "proof", "path": str(path)})
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
    # At most MAX_VALIDATORS checking processes at once, each memory- and CPU-capped, so
    # concurrent uploads cannot multiply the sandbox's memory.
    if not _VALIDATORS.acquire(timeout=_VALIDATOR_WAIT_S):
        raise UploadRefused("the sandbox is busy checking other uploads; try again shortly")
    try:
        return _run_validator(request)
    finally:
        _VALIDATORS.release()


def _run_validator(request: dict[str, Any]) -> dict[str, Any]:
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
        raise UploadRefused("the upload took too long to check; it is refused") from None
    except ValueError:
        raise UploadRefused(
            "the upload could not be checked (the checking process ended without an "
            "answer); it is refused"
        ) from None
    if not answer.get("ok"):
        what = request.get("what", request["kind"])
        raise UploadRefused(f"the {what} upload is refused: {answer.get('error')}")
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
