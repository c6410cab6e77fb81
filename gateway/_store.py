"""The gateway's state in SQLite: registered enterprises, seen nonces and jobs.

WAL with synchronous=FULL: a job the gateway has answered 202 for is on disk. The nonce
and the job are written in one transaction, so a replay can never slip in between.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway._errors import GatewayError, InvalidJob, NotFound, ReplayError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enterprises (
    name TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    enterprise TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (enterprise, nonce)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    enterprise TEXT NOT NULL,
    computation TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    document BLOB NOT NULL,
    signature TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    result BLOB,
    receipt TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
"""

FINAL_STATUSES = frozenset({"succeeded", "failed", "denied", "refused"})


@dataclass(frozen=True)
class Enterprise:
    name: str
    public_key: Ed25519PublicKey
    registered_at: str

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key.public_bytes_raw()).decode()


@dataclass(frozen=True)
class JobRecord:
    id: str
    enterprise: str
    computation: str
    dataset: str
    purpose: str
    document: bytes
    signature: str
    status: str
    outcome: dict[str, Any] | None
    has_result: bool
    created_at: str
    updated_at: str

    def public_view(self) -> dict[str, Any]:
        """What the submitting enterprise may see about its job."""
        return {
            "job_id": self.id,
            "status": self.status,
            "computation": self.computation,
            "dataset": self.dataset,
            "purpose": self.purpose,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **(self.outcome or {}),
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StateStore:
    """Enterprises, nonces and jobs; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute("PRAGMA busy_timeout=10000")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextmanager
    def _tx(self, *, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, fsynced at commit; with ``synced=False`` committed without
        its own fsync (``synchronous=NORMAL``: in WAL it stays in order and is synced by
        the next fsynced commit), for a write whose loss in a crash is harmless."""
        with self._lock:
            if not synced:
                self._con.execute("PRAGMA synchronous=NORMAL")
            try:
                self._con.execute("BEGIN IMMEDIATE")
                try:
                    yield self._con
                except BaseException:
                    self._con.execute("ROLLBACK")
                    raise
                self._con.execute("COMMIT")
            finally:
                if not synced:
                    self._con.execute("PRAGMA synchronous=FULL")

    # enterprises ----------------------------------------------------------------------

    def register_enterprise(self, name: str, public_key: Ed25519PublicKey) -> Enterprise:
        if not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
            raise GatewayError(
                "enterprise names are 1-200 printable characters", code="invalid_name"
            )
        registered_at = _now()
        try:
            with self._tx() as con:
                con.execute(
                    "INSERT INTO enterprises VALUES (?, ?, ?)",
                    (name, public_key.public_bytes_raw(), registered_at),
                )
        except sqlite3.IntegrityError:
            raise GatewayError(
                f"enterprise {name!r} is already registered", code="already_registered"
            ) from None
        return Enterprise(name, public_key, registered_at)

    def enterprise(self, name: str) -> Enterprise | None:
        with self._lock:
            row = self._con.execute(
                "SELECT name, public_key, registered_at FROM enterprises WHERE name = ?", (name,)
            ).fetchone()
        if row is None:
            return None
        return Enterprise(row[0], Ed25519PublicKey.from_public_bytes(row[1]), row[2])

    def enterprises(self) -> list[Enterprise]:
        with self._lock:
            rows = self._con.execute(
                "SELECT name, public_key, registered_at FROM enterprises ORDER BY name"
            ).fetchall()
        return [Enterprise(r[0], Ed25519PublicKey.from_public_bytes(r[1]), r[2]) for r in rows]

    # jobs -----------------------------------------------------------------------------

    def insert_job(
        self,
        *,
        job_id: str,
        enterprise: str,
        nonce: str,
        computation: str,
        dataset: str,
        purpose: str,
        document: bytes,
        signature: str,
    ) -> None:
        """Record the nonce and the job together; a seen nonce raises ReplayError."""
        now = _now()
        with self._tx() as con:
            try:
                con.execute("INSERT INTO nonces VALUES (?, ?, ?)", (enterprise, nonce, now))
            except sqlite3.IntegrityError:
                raise ReplayError(
                    "this nonce was already used by this enterprise: the request is a replay; "
                    "sign a new job with a fresh nonce"
                ) from None
            con.execute(
                "INSERT INTO jobs (id, enterprise, computation, dataset, purpose, document,"
                " signature, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?)",
                (job_id, enterprise, computation, dataset, purpose, document, signature, now, now),
            )

    def update_job(
        self,
        job_id: str,
        *,
        status: str,
        outcome: dict[str, Any] | None = None,
        result: bytes | None = None,
        receipt: dict[str, Any] | None = None,
        synced: bool = True,
    ) -> None:
        """Change a job's status (and what it holds). ``synced=False`` skips the commit's
        fsync: only for a status a crash may lose harmlessly (see :meth:`_tx`)."""
        with self._tx(synced=synced) as con:
            cur = con.execute(
                "UPDATE jobs SET status = ?, outcome = COALESCE(?, outcome),"
                " result = COALESCE(?, result), receipt = COALESCE(?, receipt),"
                " updated_at = ? WHERE id = ?",
                (
                    status,
                    json.dumps(outcome) if outcome is not None else None,
                    result,
                    json.dumps(receipt) if receipt is not None else None,
                    _now(),
                    job_id,
                ),
            )
            if cur.rowcount != 1:
                raise InvalidJob(f"no job {job_id}")

    def job(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._con.execute(
                "SELECT id, enterprise, computation, dataset, purpose, document, signature,"
                " status, outcome, result IS NOT NULL, created_at, updated_at"
                " FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id!r} for this enterprise")
        return JobRecord(
            id=row[0],
            enterprise=row[1],
            computation=row[2],
            dataset=row[3],
            purpose=row[4],
            document=bytes(row[5]),
            signature=row[6],
            status=row[7],
            outcome=json.loads(row[8]) if row[8] else None,
            has_result=bool(row[9]),
            created_at=row[10],
            updated_at=row[11],
        )

    def job_result(self, job_id: str) -> tuple[bytes, dict[str, Any]]:
        with self._lock:
            row = self._con.execute(
                "SELECT result, receipt FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"job {job_id!r} has no result")
        return bytes(row[0]), json.loads(row[1])

    def jobs_with_status(self, *statuses: str) -> list[str]:
        marks = ",".join("?" * len(statuses))
        with self._lock:
            rows = self._con.execute(
                f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY created_at", statuses
            ).fetchall()
        return [r[0] for r in rows]

    def jobs_of(self, *computations: str) -> list[JobRecord]:
        """Every job of ``computations``, oldest first, with its document."""
        marks = ",".join("?" * len(computations))
        with self._lock:
            ids = [
                r[0]
                for r in self._con.execute(
                    f"SELECT id FROM jobs WHERE computation IN ({marks}) ORDER BY created_at",
                    computations,
                ).fetchall()
            ]
        return [self.job(job_id) for job_id in ids]

    def count_jobs(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM jobs").fetchone()[0])
