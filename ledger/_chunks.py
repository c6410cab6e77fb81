"""Verifying a ledger folder chunk by chunk, on every core.

A chunk is the aligned run of entries ``[start, start + 2**level)`` (the last one may be
shorter). :func:`scan_chunk` checks each of its entries on its own and against its
predecessor *within* the chunk (the checks of :func:`~ledger._scan.check_entry`), hashes
them, and compares the stored hashes that lie inside the chunk's subtree with those the
entries imply. It returns what the caller, who sees chunks in log order, must still check:

- the ``prev`` of the chunk's first entry, against the previous chunk's last leaf;
- the fields of entries whose embedded signatures depend on earlier entries
  (:data:`~ledger._events.CHECKED_TYPES`): the :class:`~ledger._events.EventChecker`
  keeps state across the whole log, so it runs in the caller, in order;
- the stored hashes above the chunk's root (they combine several chunks).

A chunk stops at its first bad entry and says which it is, so the caller reports exactly
what a sequential scan would: the first bad entry of the log, by index.

Workers are separate processes (``spawn``: safe even when the caller runs threads); each
opens the database read-only. A worker may see a later snapshot than the caller if
someone appends meanwhile, but only entries below the caller's size are read, and those
never change in a sound ledger; in an unsound one, whatever bytes a worker read are the
bytes it hashed, so the root the caller compares with the signed checkpoint is the root
of exactly what was checked.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger import _merkle, _store
from ledger._entry import LedgerEntry, QuickEntry, quick_parse
from ledger._errors import LedgerError, LedgerVerificationError
from ledger._events import CHECKED_TYPES, thaw
from ledger._fastscan import quick_chunk
from ledger._leaves import chunk_stored_hashes, perfect_stored_hashes
from ledger._merkle import HASH_SIZE, LEAF_PREFIX
from ledger._scan import check_entry


@dataclass(frozen=True, slots=True)
class Event:
    """An entry as :class:`~ledger._events.EventChecker` reads it."""

    index: int
    type: str
    fields: Any


@dataclass(frozen=True)
class ChunkResult:
    """What :func:`scan_chunk` found in entries ``[start, end)``."""

    start: int
    leaves: bytes  # leaf hashes of the entries that passed, joined
    root: bytes | None  # the chunk's subtree root, when the whole aligned chunk passed
    first_prev: str | None  # ``prev`` of entry ``start``, for the caller to check
    events: list[Event]  # entries for the EventChecker, in order
    failure: tuple[int, str] | None  # (index, reason) of the chunk's first bad entry
    stored_bad: int | None  # first stored-hash index in the chunk's range that is wrong


def chunk_tasks(total: int, level: int) -> list[tuple[int, int]]:
    """The (start, end) ranges of the chunks of a log of ``total`` entries."""
    size = 1 << level
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def stored_range(start: int, end: int, level: int) -> tuple[int, int]:
    """The stored-hash indexes a chunk checks: its leaves' hashes up to the chunk root.

    A whole chunk (``end - start == 2**level``) checks ``2 * 2**level - 1`` hashes, ending
    with its root; the hashes stored after it for the same last leaf (levels above the
    chunk) are the caller's. A shorter last chunk checks all its leaves' hashes.
    """
    first = _merkle.stored_hash_index(0, start)
    if end - start == 1 << level:
        return first, _merkle.stored_hash_index(0, end - 1) + level + 1
    return first, _merkle.stored_hash_count(end)


def scan_chunk(connection: sqlite3.Connection, start: int, end: int, level: int) -> ChunkResult:
    """Check entries ``[start, end)`` read through ``connection`` (see the module docstring).

    Raises :class:`LedgerError` only when storage cannot be read.
    """
    with _store.sql_errors("verifying"):
        rows = connection.execute(
            "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        if len(rows) != end - start:  # an index in the range is missing: find which
            indexed = connection.execute(
                "SELECT idx, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()
            present = 0
            while present < len(indexed) and indexed[present][0] == start + present:
                present += 1
            rows = [(data,) for _, data in indexed[:present]]
    leaves: list[bytes] = []
    events: list[Event] = []
    failure: tuple[int, str] | None = None
    first_prev: str | None = None
    prev: str | None = None
    position = start
    sha256 = hashlib.sha256
    quick = quick_chunk([data for (data,) in rows], start) if len(rows) == end - start else None
    if quick is not None:  # every entry passed: the loop below would find the same
        leaves, entries = quick
        first_prev = entries[0].prev if entries else None
        events = [
            Event(index, entry.type, entry.fields)
            for index, entry in enumerate(entries, start=start)
            if entry.type in CHECKED_TYPES
        ]
        rows = []
        position = end
    for (data,) in rows:
        # The quick parse accepts an entry whole; anything else goes through
        # check_entry, which takes the reference path and names what is wrong.
        entry: QuickEntry | LedgerEntry | None = quick_parse(data, prev)
        if entry is None or entry.index != position or (prev is not None and entry.prev != prev):
            try:
                entry = check_entry(data, position, prev)
            except LedgerVerificationError as exc:
                failure = (position, exc.reason)
                break
        if prev is None:
            first_prev = entry.prev
        if entry.type in CHECKED_TYPES:
            fields = thaw(entry.fields) if isinstance(entry, LedgerEntry) else entry.fields
            events.append(Event(position, entry.type, fields))
        leaf = sha256(LEAF_PREFIX + data).digest()  # RFC 9162 §2.1.1
        leaves.append(leaf)
        prev = leaf.hex()
        position += 1
    if failure is None and position < end:
        failure = (position, "entry is missing")
    whole = failure is None and end - start == 1 << level
    stored_bad = None
    root = None
    if failure is None:
        if whole:
            joined, root = perfect_stored_hashes(leaves)
        else:
            stored, _ = chunk_stored_hashes(leaves)
            joined = b"".join(stored)
        stored_bad = _first_bad_stored(connection, joined, *stored_range(start, end, level))
    return ChunkResult(start, b"".join(leaves), root, first_prev, events, failure, stored_bad)


# One row for the whole range, concatenated inside SQLite: fetching 2 * 16,384 rows one by
# one cost more than hashing them. A rowid range is scanned in rowid (= idx) order, so the
# concatenation is in index order; the counts make sure no index is missing and every
# value is a 32-byte blob, so equal bytes mean equal hashes, index by index. Anything else
# (including an order SQLite might one day choose differently) only sends the comparison
# to the row-by-row query below, which decides.
#
# SQLite does not promise group_concat's order, and the file is the untrusted party: a
# crafted file could declare ``hashes`` with idx not the rowid, or add an index the
# planner prefers, and so choose the order in which rows are concatenated (undoing a
# swap of stored hashes). So the fast path runs only when ``hashes`` is exactly our
# table, with no index or trigger of its own, and NOT INDEXED keeps it on the rowid.
_STORED_JOINED = (
    "SELECT count(*), sum(typeof(hash) = 'blob' AND length(hash) = 32),"
    " CAST(group_concat(hash, '') AS BLOB) FROM hashes NOT INDEXED WHERE idx >= ? AND idx < ?"
)
_HASHES_SQL = next(sql for sql in _store.SCHEMA if sql.startswith("CREATE TABLE hashes "))


def _plain_hashes_table(connection: sqlite3.Connection) -> bool:
    """Whether ``hashes`` is exactly the table the ledger creates, with nothing on it."""
    rows = connection.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'hashes'"
    ).fetchall()
    return rows == [("table", "hashes", _HASHES_SQL)]


def _first_bad_stored(
    connection: sqlite3.Connection, expected: bytes, first: int, end: int
) -> int | None:
    """Return the first stored-hash index in ``[first, end)`` whose hash is not the one at
    the same place in ``expected`` (the hashes joined)."""
    if len(expected) != (end - first) * HASH_SIZE:
        raise LedgerError("internal: stored-hash range and expected hashes differ")
    with _store.sql_errors("verifying stored hashes"):
        if _plain_hashes_table(connection):
            count, blobs, joined = connection.execute(_STORED_JOINED, (first, end)).fetchone()
            if count == blobs == end - first and (joined or b"") == expected:
                return None
        rows = connection.execute(
            "SELECT idx, hash FROM hashes WHERE idx >= ? AND idx < ? ORDER BY idx", (first, end)
        ).fetchall()
    wanted = [expected[i : i + HASH_SIZE] for i in range(0, len(expected), HASH_SIZE)]
    for position, want in enumerate(wanted, start=first):
        row = rows[position - first] if position - first < len(rows) else None
        if row is None or row[0] != position or row[1] != want:
            return position
    if len(rows) != len(wanted):  # more rows than indexes: idx is not unique in this file
        return first
    return None  # the row-by-row comparison, which decides, found every hash in place


# -- worker processes ------------------------------------------------------------------

_CONNECTIONS: dict[str, sqlite3.Connection] = {}  # one read-only connection per folder


def worker_scan(directory: str, start: int, end: int, level: int) -> ChunkResult | str:
    """:func:`scan_chunk` in a worker process; returns a storage error as its message."""
    try:
        connection = _CONNECTIONS.get(directory)
        if connection is None:
            connection = _store.connect(Path(directory), read_only=True)
            _CONNECTIONS[directory] = connection
        with _store.transaction(connection, write=False):
            return scan_chunk(connection, start, end, level)
    except LedgerError as exc:  # its pickled form would lose the message's context
        return str(exc)
