"""Stored uploads: a per-enterprise byte quota, and clean-up once nothing needs them.

Quota. An enterprise's stored uploads (its folder under ``<home>/uploads``) may hold at
most :attr:`Sandbox.upload_quota` bytes together. The gateway asks :func:`upload_room`
before it reads a body and refuses one whose declared length does not fit (507,
``upload_quota_exceeded``); it caps the stream at the room left; and the upload is kept
only if it still fits when it is moved into place (``encrypted_jobs.store_upload``,
under :data:`~indomain.encrypted_jobs.UPLOADS_LOCK`, so two uploads at once cannot both
take the same room).

Clean-up (:func:`prune_uploads`). An upload is removed when no unfinished job names it
and either

- a job that named it has finished and the upload was last stored before that (its
  result is stored; the ledger and the receipts hold only digests; a job that may still
  be resumed is unfinished, so its uploads stay), or
- it is older than ``max_age`` (uploaded and never used).

Storing an upload that is already kept refreshes its time, so re-sending an input for a
new job keeps it. A job that names an upload removed meanwhile is refused at admission
("upload it first"), before anything is charged. Pruning and the admission of encrypted
jobs hold one lock in the gateway process, so no upload is removed under a job being
admitted; ``indomain serve`` prunes at start and every ``--prune-every-minutes``, and
``indomain uploads prune`` does it by hand while no gateway serves the home.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gateway import FINAL_STATUSES
from indomain.encrypted_jobs import (
    RESOLVED_COMPUTATIONS,
    UPLOAD_KINDS,
    UPLOADS_LOCK,
    upload_folder,
    upload_path,
    used_bytes,
)
from indomain.errors import ConfigError, IndomainError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from indomain.sandbox import Sandbox

#: Bytes one enterprise's stored uploads may hold unless the operator sets otherwise:
#: room for two of the largest jobs' inputs (request, reply, context and values caps).
DEFAULT_UPLOAD_QUOTA: Final = 2 << 30
#: How long an upload no job has used is kept.
DEFAULT_MAX_AGE: Final = timedelta(days=7)
#: How often ``indomain serve`` prunes.
DEFAULT_PRUNE_EVERY: Final = timedelta(hours=1)


def _uploads_root(sandbox: Sandbox) -> Path:
    return sandbox.home.root / "uploads"


def upload_room(sandbox: Sandbox, enterprise: str, *, kind: str = "", digest: str = "") -> int:
    """Bytes ``enterprise`` may still upload before its quota is full; sending again an
    upload of ``kind`` and ``digest`` that is already kept takes no more room."""
    room = max(0, sandbox.upload_quota - used_bytes(upload_folder(sandbox, enterprise)))
    if kind and digest.startswith("sha256:") and "/" not in digest:
        try:
            room += upload_path(sandbox, enterprise, kind, digest).stat().st_size
        except OSError:
            pass
    return room


@dataclass(frozen=True)
class PruneReport:
    """What one clean-up removed: ``used`` inputs of finished jobs, ``expired`` uploads
    no job used, stale ``partial`` files of interrupted uploads, and the bytes freed."""

    used: int
    expired: int
    partial: int
    kept: int
    freed_bytes: int


def _timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _named_uploads(sandbox: Sandbox) -> tuple[set[Path], dict[Path, float]]:
    """Uploads named by unfinished jobs, and for the others the time the last job that
    named them finished."""
    pending: set[Path] = set()
    finished: dict[Path, float] = {}
    for record in sandbox.store.jobs_of(*sorted(RESOLVED_COMPUTATIONS)):
        try:
            params = json.loads(record.document).get("params", {})
        except ValueError:
            continue
        if not isinstance(params, dict):
            continue
        for kind in UPLOAD_KINDS:
            digest = params.get(kind)
            if not (isinstance(digest, str) and digest.startswith("sha256:")):
                continue
            path = upload_path(sandbox, record.enterprise, kind, digest)
            if record.status not in FINAL_STATUSES:
                pending.add(path)
            else:
                finished[path] = max(finished.get(path, 0.0), _timestamp(record.updated_at))
    return pending, finished


def prune_uploads(
    sandbox: Sandbox, *, max_age: timedelta = DEFAULT_MAX_AGE, now: float | None = None
) -> PruneReport:
    """Remove the uploads nothing needs any more (module docstring); returns what went."""
    if max_age < timedelta(0):
        raise ConfigError("the upload age limit cannot be negative")
    root = _uploads_root(sandbox)
    used = expired = partial = kept = freed = 0
    with UPLOADS_LOCK:
        now = time.time() if now is None else now
        pending, finished = _named_uploads(sandbox)
        folders = sorted(root.iterdir()) if root.is_dir() else []
        for folder in folders:
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                old = now - stat.st_mtime > max_age.total_seconds()
                if path.name.startswith("."):
                    # An upload interrupted mid-check (the gateway died): debris once old.
                    if old:
                        path.unlink(missing_ok=True)
                        partial, freed = partial + 1, freed + stat.st_size
                    continue
                if path in pending:
                    kept += 1
                elif path in finished and stat.st_mtime <= finished[path]:
                    path.unlink(missing_ok=True)
                    used, freed = used + 1, freed + stat.st_size
                elif old:
                    path.unlink(missing_ok=True)
                    expired, freed = expired + 1, freed + stat.st_size
                else:
                    kept += 1
    return PruneReport(used, expired, partial, kept, freed)


class UploadJanitor:
    """Prunes a sandbox's uploads now and then every ``every``, on a daemon thread, until
    :meth:`stop` (what ``indomain serve`` runs beside the gateway)."""

    def __init__(
        self, sandbox: Sandbox, *, every: timedelta, max_age: timedelta = DEFAULT_MAX_AGE
    ) -> None:
        if every <= timedelta(0):
            raise ConfigError("the pruning interval must be positive")
        self._sandbox, self._every, self._max_age = sandbox, every, max_age
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="indomain-uploads", daemon=True)
        self.runs = 0
        self.last: PruneReport | None = None

    def _run(self) -> None:
        while True:
            try:
                self.last = prune_uploads(self._sandbox, max_age=self._max_age)
            except (IndomainError, OSError):  # try again next time; the gateway goes on
                log.exception("pruning the stored uploads failed")
            self.runs += 1
            if self._stop.wait(self._every.total_seconds()):
                return

    def start(self) -> UploadJanitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@contextmanager
def janitor(
    sandbox: Sandbox, *, every: timedelta, max_age: timedelta = DEFAULT_MAX_AGE
) -> Iterator[UploadJanitor]:
    """Run an :class:`UploadJanitor` for the ``with`` block."""
    running = UploadJanitor(sandbox, every=every, max_age=max_age).start()
    try:
        yield running
    finally:
        running.stop()
