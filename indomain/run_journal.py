"""Enclave outputs kept durably until their job's result is stored.

A run is three writes in three places: the enclave's output, the ``run.completed`` ledger
entry, and the gateway's stored result. A crash between them must neither lose a result
whose run is on the ledger nor run the job a second time on restart (a second, freshly
noised release of the same query, and two results on the ledger for one job). So the
output is journalled here first; on restart the job resumes from the journal, and the
ledger entry is appended only if it is not already there.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from enclave import RunAttestation, RunOutput
from indomain.errors import InternalError
from indomain.state_db import shared_connection, unsynced

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enclave_outputs (
    job_id TEXT PRIMARY KEY,
    result_ipc BLOB NOT NULL,
    meta TEXT NOT NULL
)
"""


class RunJournal:
    """Enclave outputs by job id, in ``state.sqlite`` (WAL, fsynced at each commit).

    One connection for the journal's life, used under a lock: SQLite fsyncs the folder of
    a WAL file on a connection's first commit (it may have just created the file), so a
    connection per operation paid a second fsync on every journalled run. Other processes
    still coordinate through SQLite's own locks; every statement commits on its own.
    """

    def __init__(self, path: Path, *, timeout_s: float = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._con = shared_connection(path, timeout_s=timeout_s, owner=self)
        with self._connect() as con:
            con.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._con

    def put(self, job_id: str, output: RunOutput) -> RunOutput:
        """Keep ``output`` for ``job_id`` and return the output kept for it: the first one
        journalled wins, so two runs of one job can only ever release one of them."""
        meta = {
            "attestation": output.attestation.model_dump(),
            "signature": output.signature,
            "suppressed_groups": output.suppressed_groups,
            "notes": list(output.notes),
        }
        with self._connect() as con:
            con.execute(
                "INSERT OR IGNORE INTO enclave_outputs (job_id, result_ipc, meta) VALUES (?, ?, ?)",
                (job_id, output.result_ipc, json.dumps(meta, sort_keys=True)),
            )
            kept = _output(con, job_id)
        if kept is None:
            raise InternalError(f"the output of {job_id} was not journalled")
        return kept

    def get(self, job_id: str) -> RunOutput | None:
        """The journalled output of ``job_id``, or ``None``."""
        with self._connect() as con:
            return _output(con, job_id)

    def job_ids(self) -> list[str]:
        with self._connect() as con:
            return [str(r[0]) for r in con.execute("SELECT job_id FROM enclave_outputs")]

    def discard(self, job_ids: list[str]) -> None:
        """Forget outputs whose results are stored (or whose jobs ended otherwise)."""
        if not job_ids:
            return
        with self._connect() as con:
            # Not fsynced (NORMAL: WAL order, synced at the next FULL commit or checkpoint):
            # a delete lost in a crash only brings back an output whose job has ended, which
            # the next call deletes again. Its fsync was on the path of every job (5-11 ms).
            with unsynced(con):
                con.executemany(
                    "DELETE FROM enclave_outputs WHERE job_id = ?", [(j,) for j in job_ids]
                )


def _output(con: sqlite3.Connection, job_id: str) -> RunOutput | None:
    row = con.execute(
        "SELECT result_ipc, meta FROM enclave_outputs WHERE job_id = ?", (job_id,)
    ).fetchone()
    if row is None:
        return None
    meta = json.loads(row[1])
    return RunOutput(
        result_ipc=bytes(row[0]),
        attestation=RunAttestation.model_validate(meta["attestation"]),
        signature=meta["signature"],
        suppressed_groups=meta["suppressed_groups"],
        notes=tuple(meta["notes"]),
    )
