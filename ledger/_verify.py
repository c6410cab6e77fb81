"""Offline verification of a whole ledger folder from its verifier key alone.

Trust nothing stored but what the key signed: every leaf hash and the root are
recomputed from the entry bytes, the chain of ``prev`` hashes is re-walked, and the
result must equal the latest signed checkpoint. Stored hashes are checked last, as
derived data. When something is wrong, the signed checkpoints for smaller sizes (the
ledger signs one per commit) locate the first altered entry by binary search.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ledger import _merkle, _store
from ledger._errors import LedgerError, LedgerVerificationError
from ledger._note import Checkpoint, VerifierKeys, open_checkpoint, parse_verifier_keys
from ledger._scan import (
    EntryScanner,
    Progress,
    Trusted,
    VerificationReport,
    check_all_trusted,
    open_trusted,
)

_CHUNK = 1000  # rows fetched (and progress reported) at a time


def verify_ledger(
    directory: Path,
    verifier_key: VerifierKeys,
    *,
    progress: Progress | None = None,
    trusted_checkpoint: Trusted = None,
) -> VerificationReport:
    """Verify the ledger in ``directory`` against ``verifier_key``, reading it read-only.

    Every entry must be canonical, sit at its own index and name its predecessor's leaf
    hash; the recomputed root must equal the latest checkpoint signed by the key, which
    must cover exactly the stored entries; the stored hashes must match the entries.
    ``trusted_checkpoint`` (a note the auditor kept from earlier) must be a prefix of the
    ledger, which catches a truncation that also removed the later checkpoints.
    ``progress(done, total)`` is called as entries are checked.

    Returns a :class:`VerificationReport`. Raises :class:`LedgerVerificationError` naming
    the first bad entry (``index``) when there is one, and :class:`LedgerError` when the
    folder holds no ledger or the key is malformed.
    """
    parse_verifier_keys(verifier_key)  # a malformed key is the caller's error: fail first
    trusted = open_trusted(trusted_checkpoint, verifier_key)
    connection = _store.connect(Path(directory), read_only=True)
    try:
        with _store.transaction(connection, write=False), _store.sql_errors("verifying"):
            return _verify(connection, verifier_key, progress, trusted)
    finally:
        connection.close()


def _verify(
    connection: sqlite3.Connection,
    key: VerifierKeys,
    progress: Progress | None,
    trusted: list[tuple[Checkpoint, str]],
) -> VerificationReport:
    (total,) = connection.execute("SELECT COUNT(*) FROM entries").fetchone()
    leaves, failure = _scan_entries(connection, int(total), progress)
    if failure is not None:
        # The scan stopped at the first entry that is wrong on its own terms; an earlier
        # entry may have been altered into another valid entry, which only the signed
        # checkpoints can show.
        raise _locate(connection, key, leaves, len(leaves)) or failure
    n = len(leaves)
    root = _merkle.root_from_leaf_hashes(leaves)
    checkpoint, problem = _latest_checkpoint(connection, key)
    latest_note = (_store.latest_checkpoint(connection) or (0, ""))[1]
    if checkpoint is not None:
        if checkpoint.size > n:
            problem = LedgerVerificationError(
                f"entry is missing: the latest signed checkpoint covers {checkpoint.size} "
                f"entries but {n} are stored (truncated)",
                n,
            )
        elif checkpoint.size < n:
            problem = LedgerVerificationError(
                f"entry is not covered by a signed checkpoint (latest covers {checkpoint.size})",
                checkpoint.size,
            )
        elif root != checkpoint.root_hash:
            problem = LedgerVerificationError(
                "recomputed root does not match the latest signed checkpoint"
            )
    if problem is not None or checkpoint is None:
        raise (
            _locate(connection, key, leaves, n)
            or problem
            or LedgerVerificationError("the ledger holds no signed checkpoint")
        )
    check_all_trusted(trusted, leaves, latest_note)
    _check_stored_hashes(connection, leaves)
    return VerificationReport(size=n, root_hash=root, checkpoint=checkpoint)


def _latest_checkpoint(
    connection: sqlite3.Connection, key: VerifierKeys
) -> tuple[Checkpoint | None, LedgerVerificationError | None]:
    latest = _store.latest_checkpoint(connection)
    if latest is None:
        return None, LedgerVerificationError("the ledger holds no signed checkpoint")
    try:
        return open_checkpoint(latest[1], key), None
    except LedgerVerificationError as exc:
        return None, LedgerVerificationError(f"latest checkpoint: {exc.reason}")


def _scan_entries(
    connection: sqlite3.Connection, total: int, progress: Progress | None
) -> tuple[list[bytes], LedgerVerificationError | None]:
    """Check each entry on its own and against its predecessor; return the good leaf hashes.

    Stops at the first bad entry and returns the error for it alongside the leaf hashes
    of the entries before it.
    """
    scanner = EntryScanner()
    if progress is not None:
        progress(0, total)
    cursor = connection.execute("SELECT idx, data FROM entries ORDER BY idx")
    while rows := cursor.fetchmany(_CHUNK):
        for idx, data in rows:
            position = len(scanner.leaves)
            if idx != position:
                return scanner.leaves, LedgerVerificationError("entry is missing", position)
            try:
                scanner.add(data)
            except LedgerVerificationError as exc:
                return scanner.leaves, exc
        if progress is not None:
            progress(len(scanner.leaves), total)
    return scanner.leaves, None


def _locate(
    connection: sqlite3.Connection, key: VerifierKeys, leaves: list[bytes], limit: int
) -> LedgerVerificationError | None:
    """Find the first entry below ``limit`` that differs from what the key signed.

    A signed checkpoint for size s matches the recomputed root of the first s leaves
    exactly when none of them was altered, so "matches" holds up to the first altered
    entry and fails after it: binary search over the checkpoints that verify. Returns
    ``None`` when no verifying checkpoint in range disagrees.
    """
    sizes = [
        int(s)
        for (s,) in connection.execute(
            "SELECT size FROM checkpoints WHERE size BETWEEN 1 AND ? ORDER BY size", (limit,)
        )
    ]
    lo, hi = 0, len(sizes)  # invariant: sizes[:lo] match, sizes[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        verdict = _matches(connection, key, leaves, sizes[mid])
        if verdict is None:  # unreadable or not signed by the key: no evidence either way
            del sizes[mid]
            hi -= 1
        elif verdict:
            lo = mid + 1
        else:
            hi = mid
    if hi == len(sizes):
        return None
    bad_size = sizes[hi]
    good_size = sizes[hi - 1] if hi > 0 else 0
    if good_size == bad_size - 1:
        reason = f"entry differs from the one signed in the checkpoint for size {bad_size}"
    else:
        reason = (
            f"entries {good_size} to {bad_size - 1} differ from those signed in the "
            f"checkpoint for size {bad_size}; this is the first that is not proven intact"
        )
    return LedgerVerificationError(reason, good_size)


def _matches(
    connection: sqlite3.Connection, key: VerifierKeys, leaves: list[bytes], size: int
) -> bool | None:
    row = connection.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
    if row is None or not isinstance(row[0], str):
        return None
    try:
        checkpoint = open_checkpoint(row[0], key)
    except LedgerError:
        return None
    if checkpoint.size != size:
        return None
    return _merkle.root_from_leaf_hashes(leaves[:size]) == checkpoint.root_hash


def _expected_stored_hashes(leaves: list[bytes]) -> Iterator[bytes]:
    accumulator = _merkle.RootAccumulator()
    for leaf in leaves:
        yield from accumulator.append(leaf)


def _check_stored_hashes(connection: sqlite3.Connection, leaves: list[bytes]) -> None:
    """Compare the stored-hash table with the one the entries imply (proofs are served from it)."""
    expected = _expected_stored_hashes(leaves)
    cursor = connection.execute("SELECT idx, hash FROM hashes ORDER BY idx")
    position = 0
    while rows := cursor.fetchmany(_CHUNK):
        for idx, value in rows:
            want = next(expected, None)
            if idx != position or want is None or value != want:
                level, node = _merkle.split_stored_hash_index(position)
                raise LedgerVerificationError(
                    f"stored hash {position} (level {level}, node {node}) does not match "
                    "the entries: proofs served from it would not verify"
                )
            position += 1
    if next(expected, None) is not None:
        raise LedgerVerificationError(f"stored hash {position} is missing")
