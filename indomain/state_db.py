"""One connection to ``state.sqlite`` for a component's life, shared by its threads.

SQLite fsyncs the folder of a WAL file on each new connection's first commit (it may have
just created the file): a connection per operation paid that second fsync on the path of
every job. Components keep one connection and use it under their own lock.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def shared_connection(path: Path, *, timeout_s: float, owner: object) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL, ``synchronous=FULL`` (each commit fsynced),
    usable from any thread (callers serialise their use), closed with ``owner``."""
    con = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    # WAL, as the gateway's store sets for this file: ``unsynced`` relies on it.
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    weakref.finalize(owner, con.close)
    return con


@contextmanager
def unsynced(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Statements committed without their own fsync (``synchronous=NORMAL``; in WAL mode
    they stay in order and are synced by the next FULL commit or checkpoint), then FULL
    again. Only for a write whose loss in a crash is argued harmless where it is made."""
    con.execute("PRAGMA synchronous=NORMAL")
    try:
        yield con
    finally:
        con.execute("PRAGMA synchronous=FULL")
