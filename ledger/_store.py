"""SQLite storage for one ledger: ``<dir>/ledger.sqlite``.

Why SQLite rather than append-only flat files or tiles: one append must write the entry,
its stored hashes and a signed checkpoint *atomically*, several threads and processes
must get contiguous unique indexes, and a crash must never leave half an append.
SQLite in WAL mode with ``synchronous=FULL`` gives exactly that: each append is one
``BEGIN IMMEDIATE`` transaction (the write lock is taken before the size is read, so two
writers cannot both claim index n), and the WAL is fsynced before COMMIT returns. It is
one file an auditor can copy, and it is in the standard library. The Merkle code sees it
only through :class:`~ledger._merkle.HashReader`, so tiles (C2SP tlog-tiles) could
replace it later.

Tables: ``entries`` (index -> canonical bytes), ``hashes`` (Go tlog stored-hash index ->
hash), ``checkpoints`` (size -> signed note), ``meta`` (format, origin, key name, key).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ledger._errors import LedgerError

FILENAME = "ledger.sqlite"
FORMAT = "indomain-ledger/1"
BUSY_TIMEOUT_SECONDS = 60.0  # how long an append waits for another process's append
ROWS_PER_INSERT = 64  # rows per multi-row INSERT (see insert_run)
# Prepared statements kept per connection: one multi-row INSERT per row count up to
# ROWS_PER_INSERT for each of the two tables, plus the few other statements.
CACHED_STATEMENTS = 2 * ROWS_PER_INSERT + 64

SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE entries (idx INTEGER PRIMARY KEY CHECK (idx >= 0),"
    " data BLOB NOT NULL CHECK (typeof(data) = 'blob'))",
    "CREATE TABLE hashes (idx INTEGER PRIMARY KEY CHECK (idx >= 0),"
    " hash BLOB NOT NULL CHECK (typeof(hash) = 'blob' AND length(hash) = 32))",
    "CREATE TABLE checkpoints (size INTEGER PRIMARY KEY CHECK (size >= 0), note TEXT NOT NULL)",
)
# Added after format 1 shipped; created on demand so older ledgers open unchanged.
COSIGNATURE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cosignatures (size INTEGER NOT NULL, witness TEXT NOT NULL,"
    " line TEXT NOT NULL, PRIMARY KEY (size, witness))"
)
MAX_WITNESSES = 64  # cosignatures kept per checkpoint: bounds what anyone can make us store
# The witness keys whose cosignatures the operator accepts (added after format 1 shipped).
WITNESS_SCHEMA = "CREATE TABLE IF NOT EXISTS witnesses (key TEXT PRIMARY KEY)"


def database_path(directory: Path) -> Path:
    """Return where the ledger in ``directory`` keeps its data."""
    return Path(directory) / FILENAME


def connect(directory: Path, *, read_only: bool, create: bool = False) -> sqlite3.Connection:
    """Open the ledger database; raises :class:`LedgerError` when it is missing or unusable.

    The connection is in autocommit mode (we issue BEGIN ourselves) and may be used from
    any thread; callers serialise access.
    """
    path = database_path(directory)
    if create:
        if path.exists():
            raise LedgerError(f"a ledger already exists in {directory}")
        mode = "rwc"
    else:
        if not path.is_file():
            raise LedgerError(f"no ledger in {directory} (missing {FILENAME})")
        mode = "ro" if read_only else "rw"
    uri = f"{path.resolve().as_uri()}?mode={mode}"
    try:
        connection = sqlite3.connect(
            uri,
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=CACHED_STATEMENTS,
        )
        if not read_only:
            connection.execute("PRAGMA journal_mode=WAL")
        # Durability: fsync the WAL at every commit, so a returned append survives a crash.
        connection.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger database in {directory}: {exc}") from exc
    return connection


def fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def transaction(connection: sqlite3.Connection, *, write: bool) -> Iterator[None]:
    """Run a block in one transaction: IMMEDIATE for writes, a consistent snapshot for reads.

    SQLite errors become :class:`LedgerError`; any error rolls back.
    """
    try:
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot start a ledger transaction: {exc}") from exc
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise LedgerError(f"cannot commit to the ledger: {exc}") from exc


@contextlib.contextmanager
def sql_errors(what: str) -> Iterator[None]:
    """Translate :class:`sqlite3.Error` raised in the block into :class:`LedgerError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise LedgerError(f"ledger storage failed while {what}: {exc}") from exc


class SqliteHashReader:
    """:class:`~ledger._merkle.HashReader` over the ``hashes`` table of one connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Return the hashes at ``indexes``; raises :class:`LedgerError` if any is missing."""
        wanted = sorted(set(indexes))
        found: dict[int, bytes] = {}
        with sql_errors("reading stored hashes"):
            for start in range(0, len(wanted), 500):  # stay under SQLite's parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._connection.execute(
                    f"SELECT idx, hash FROM hashes WHERE idx IN ({marks})", chunk
                )
                found.update((int(idx), bytes(value)) for idx, value in rows)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise LedgerError(f"ledger storage is corrupt: stored hash {missing[0]} is missing")
        return [found[i] for i in indexes]


_RUN_TABLES = {"entries": "data", "hashes": "hash"}


@functools.lru_cache(maxsize=2 * ROWS_PER_INSERT)
def _insert_sql(table: str, rows: int) -> str:
    # Row i is (?1 + i, ?(i + 2)): the first index is bound once, then one value per row.
    values = ",".join(f"(?1+{i},?{i + 2})" for i in range(rows))
    return f"INSERT INTO {table} (idx, {_RUN_TABLES[table]}) VALUES {values}"


def insert_run(
    connection: sqlite3.Connection, table: str, first: int, values: Sequence[bytes]
) -> None:
    """Insert ``values`` into ``table`` (``entries`` or ``hashes``) at indexes ``first``,
    ``first + 1``, ... (in the caller's transaction).

    Multi-row INSERTs of up to :data:`ROWS_PER_INSERT` rows: one statement step per
    chunk instead of one per row, and the GIL is released for the whole chunk, where
    ``executemany`` binds and steps each row from Python (a third of the insert time
    for a commit of 16 entries and their 31 hashes).
    """
    with sql_errors("appending"):
        for start in range(0, len(values), ROWS_PER_INSERT):
            chunk = values[start : start + ROWS_PER_INSERT]
            connection.execute(_insert_sql(table, len(chunk)), (first + start, *chunk))


def read_meta(connection: sqlite3.Connection) -> dict[str, str]:
    """Return the meta table; raises :class:`LedgerError` for an unknown format."""
    with sql_errors("reading ledger metadata"):
        meta = {str(k): str(v) for k, v in connection.execute("SELECT key, value FROM meta")}
    if meta.get("format") != FORMAT:
        raise LedgerError(f"not an {FORMAT} ledger (format {meta.get('format')!r})")
    for key in ("origin", "key_name", "verifier_key"):
        if key not in meta:
            raise LedgerError(f"ledger metadata lacks {key!r}")
    return meta


def size(connection: sqlite3.Connection) -> int:
    """Return the number of entries (one past the highest index)."""
    with sql_errors("reading the ledger size"):
        (value,) = connection.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM entries").fetchone()
    return int(value)


def data_version(connection: sqlite3.Connection) -> int:
    """Return ``PRAGMA data_version``: it changes when *another* connection commits."""
    with sql_errors("reading the data version"):
        (value,) = connection.execute("PRAGMA data_version").fetchone()
    return int(value)


def hash_count(connection: sqlite3.Connection) -> int:
    """Return one past the highest stored hash index."""
    with sql_errors("reading the stored hash count"):
        (value,) = connection.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM hashes").fetchone()
    return int(value)


def raw_entry(connection: sqlite3.Connection, index: int) -> bytes | None:
    """Return the stored bytes of entry ``index``, or ``None`` when there is none."""
    with sql_errors("reading an entry"):
        row = connection.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()
    return None if row is None else bytes(row[0])


def raw_entries(connection: sqlite3.Connection, start: int, end: int) -> list[tuple[int, bytes]]:
    """Return (index, bytes) for stored entries with start <= index < end, in order."""
    with sql_errors("reading entries"):
        rows = connection.execute(
            "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
    return [(int(idx), bytes(data)) for idx, data in rows]


def latest_checkpoint(connection: sqlite3.Connection) -> tuple[int, str] | None:
    """Return (size, note) of the checkpoint with the largest size, or ``None``."""
    with sql_errors("reading the latest checkpoint"):
        row = connection.execute(
            "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def checkpoint_note(connection: sqlite3.Connection, size: int) -> str | None:
    """Return the signed note for tree ``size``, or ``None`` when there is none."""
    with sql_errors("reading a checkpoint"):
        row = connection.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
    return None if row is None else str(row[0])


def covering_checkpoint(connection: sqlite3.Connection, index: int, limit: int) -> str | None:
    """The signed note of the first checkpoint covering entry ``index`` (the commit that
    wrote it), among sizes up to ``limit``; ``None`` when there is none."""
    with sql_errors("reading a checkpoint"):
        row = connection.execute(
            "SELECT note FROM checkpoints WHERE size > ? AND size <= ? ORDER BY size LIMIT 1",
            (index, limit),
        ).fetchone()
    return None if row is None else str(row[0])


def _has_cosignatures(connection: sqlite3.Connection) -> bool:
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cosignatures'"
    ).fetchone()
    return row is not None


def insert_cosignature(connection: sqlite3.Connection, size: int, witness: str, line: str) -> None:
    """Store ``witness``'s cosignature line for the checkpoint of ``size``; a witness that
    already cosigned that size keeps its first line (nothing is ever replaced)."""
    with sql_errors("storing a cosignature"):
        connection.execute(COSIGNATURE_SCHEMA)
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM cosignatures WHERE size = ? AND witness != ?", (size, witness)
        ).fetchone()
        if count >= MAX_WITNESSES:
            raise LedgerError(f"the checkpoint for size {size} has {MAX_WITNESSES} cosignatures")
        connection.execute(
            "INSERT OR IGNORE INTO cosignatures (size, witness, line) VALUES (?, ?, ?)",
            (size, witness, line),
        )


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    row = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def accepted_witnesses(connection: sqlite3.Connection) -> list[str]:
    """Return the witness keys whose cosignatures are accepted, in key order."""
    with sql_errors("reading the accepted witnesses"):
        if not _has_table(connection, "witnesses"):
            return []
        return [str(key) for (key,) in connection.execute("SELECT key FROM witnesses ORDER BY key")]


def set_witness(connection: sqlite3.Connection, key: str, *, accepted: bool) -> bool:
    """Accept (or stop accepting) ``key``; return whether that changed anything."""
    with sql_errors("configuring witnesses"):
        connection.execute(WITNESS_SCHEMA)
        if accepted:
            cursor = connection.execute("INSERT OR IGNORE INTO witnesses (key) VALUES (?)", (key,))
        else:
            cursor = connection.execute("DELETE FROM witnesses WHERE key = ?", (key,))
    return cursor.rowcount > 0


def latest_cosigned(connection: sqlite3.Connection) -> tuple[int, list[str]] | None:
    """Return (size, cosignature lines) for the largest cosigned size, or ``None``."""
    with sql_errors("reading cosignatures"):
        if not _has_cosignatures(connection):
            return None
        row = connection.execute("SELECT MAX(size) FROM cosignatures").fetchone()
        if row is None or row[0] is None:
            return None
        size = int(row[0])
        lines = [
            str(line)
            for (line,) in connection.execute(
                "SELECT line FROM cosignatures WHERE size = ? ORDER BY witness", (size,)
            )
        ]
    return size, lines


def active_keys(meta: Mapping[str, str]) -> list[str]:
    """Return the verifier keys that sign new checkpoints (oldest first)."""
    if "active_keys" not in meta:
        return [meta["verifier_key"]]
    try:
        keys = json.loads(meta["active_keys"])
    except ValueError:
        raise LedgerError("ledger metadata: active_keys is not JSON") from None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise LedgerError("ledger metadata: active_keys must be a non-empty list of keys")
    return keys


def write_active_keys(connection: sqlite3.Connection, keys: list[str]) -> None:
    """Record the active verifier keys (in the caller's transaction)."""
    with sql_errors("recording the active keys"):
        connection.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('active_keys', ?)",
            (json.dumps(keys),),
        )
