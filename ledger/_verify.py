"""Offline verification of a whole ledger folder from its verifier key alone.

Trust nothing stored but what the key signed: every leaf hash and the root are
recomputed from the entry bytes, the chain of ``prev`` hashes is re-walked, and the
result must equal the latest signed checkpoint. Stored hashes are checked last, as
derived data. When something is wrong, the signed checkpoints for smaller sizes (the
ledger signs one per commit) locate the first altered entry by binary search.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
from collections.abc import Generator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from ledger import _merkle, _store
from ledger._chunks import ChunkResult, chunk_tasks, scan_chunk, worker_scan
from ledger._entry import GENESIS_PREV
from ledger._errors import LedgerError, LedgerVerificationError
from ledger._events import EventChecker
from ledger._leaves import CHUNK_LEVEL, LeafHashes
from ledger._merkle import HASH_SIZE
from ledger._note import Checkpoint, VerifierKeys, open_checkpoint, parse_verifier_keys
from ledger._rotation import follow_rotations
from ledger._scan import (
    Progress,
    Trusted,
    VerificationReport,
    chain_error,
    check_all_trusted,
    open_trusted,
)

# Below this many entries, starting worker processes (~0.5 s here) costs more than it saves.
PARALLEL_THRESHOLD = 1 << 16


def default_workers(total: int) -> int:
    """Worker processes for ``total`` entries: one per usable CPU, none for small ledgers."""
    if total < PARALLEL_THRESHOLD:
        return 1
    if hasattr(os, "sched_getaffinity"):  # Linux: the CPUs this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def verify_ledger(
    directory: Path,
    verifier_key: VerifierKeys,
    *,
    progress: Progress | None = None,
    trusted_checkpoint: Trusted = None,
    workers: int | None = None,
) -> VerificationReport:
    """Verify the ledger in ``directory`` against ``verifier_key``, reading it read-only.

    Every entry must be canonical, sit at its own index and name its predecessor's leaf
    hash; the recomputed root must equal the latest checkpoint signed by the key, which
    must cover exactly the stored entries; the stored hashes must match the entries.
    ``trusted_checkpoint`` (a note the auditor kept from earlier) must be a prefix of the
    ledger, which catches a truncation that also removed the later checkpoints.
    ``progress(done, total)`` is called as entries are checked. ``workers`` processes
    check chunks of entries in parallel (default: one per CPU for large ledgers, none
    below :data:`PARALLEL_THRESHOLD` entries; 1 checks everything in this process).

    Returns a :class:`VerificationReport`. Raises :class:`LedgerVerificationError` naming
    the first bad entry (``index``) when there is one, and :class:`LedgerError` when the
    folder holds no ledger or the key is malformed.
    """
    return verify_folder(
        Path(directory), verifier_key, progress, trusted_checkpoint, workers, CHUNK_LEVEL
    )


def verify_folder(
    directory: Path,
    key: VerifierKeys,
    progress: Progress | None,
    trusted_checkpoint: Trusted,
    workers: int | None,
    level: int,
) -> VerificationReport:
    """:func:`verify_ledger` with the chunk size (``2**level`` entries) as a parameter."""
    parse_verifier_keys(key)  # a malformed key is the caller's error: fail first
    trusted = open_trusted(trusted_checkpoint, key)
    if workers is not None and workers < 1:
        raise LedgerError("workers must be at least 1")
    connection = _store.connect(directory, read_only=True)
    try:
        with _store.transaction(connection, write=False), _store.sql_errors("verifying"):
            return _verify(connection, directory, key, progress, trusted, workers, level)
    finally:
        connection.close()


def _verify(
    connection: sqlite3.Connection,
    directory: Path,
    key: VerifierKeys,
    progress: Progress | None,
    trusted: list[tuple[Checkpoint, str]],
    workers: int | None,
    level: int,
) -> VerificationReport:
    (total,) = connection.execute("SELECT COUNT(*) FROM entries").fetchone()
    if workers is None:
        workers = default_workers(int(total))
    checker = EventChecker()
    leaves, failure, stored_bad = _scan_entries(
        connection, directory, int(total), progress, workers, level, checker
    )

    def covered(index: int, keys: list[str]) -> bool:
        return _covered(connection, keys, leaves, index)

    configured = [key] if isinstance(key, str) else list(key)
    trusted_keys, key = follow_rotations(configured, checker.key_changes, covered)
    if failure is not None:
        # The scan stopped at the first entry that is wrong on its own terms; an earlier
        # entry may have been altered into another valid entry, which only the signed
        # checkpoints can show.
        raise _locate(connection, key, leaves, len(leaves)) or failure
    n = len(leaves)
    root = leaves.root()
    checkpoint, problem = _latest_checkpoint(connection, trusted_keys)
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
    _check_stored_hashes(connection, leaves, stored_bad)
    return VerificationReport(size=n, root_hash=root, checkpoint=checkpoint)


def _latest_checkpoint(
    connection: sqlite3.Connection, key: VerifierKeys
) -> tuple[Checkpoint | None, LedgerVerificationError | None]:
    latest = _store.latest_checkpoint(connection)
    if latest is None:
        return None, LedgerVerificationError("the ledger holds no signed checkpoint")
    if not key:
        return None, LedgerVerificationError(
            "latest checkpoint: the ledger retired every key you trust, and announced no "
            "key that a checkpoint signed by a trusted key covers"
        )
    try:
        return open_checkpoint(latest[1], key), None
    except LedgerVerificationError as exc:
        return None, LedgerVerificationError(f"latest checkpoint: {exc.reason}")


COVER_TRIES = 8  # checkpoints looked at above a key announcement: the first should do


def _covered(
    connection: sqlite3.Connection, keys: list[str], leaves: LeafHashes, index: int
) -> bool:
    """Whether a checkpoint signed by one of ``keys`` covers entry ``index`` as recomputed.

    The ledger signs the commit holding a ``ledger.key_added`` entry with every key
    active then, so the first checkpoint above it is signed by the old key; a few more
    are tried, no more (each costs a signature check).
    """
    rows = connection.execute(
        "SELECT size, note FROM checkpoints WHERE size > ? AND size <= ? ORDER BY size LIMIT ?",
        (index, len(leaves), COVER_TRIES),
    ).fetchall()
    for size, note in rows:
        try:
            checkpoint = open_checkpoint(note, keys)
        except LedgerError:
            continue
        if checkpoint.size == size and checkpoint.root_hash == leaves.root(size):
            return True
    return False


def _chunk_results(
    connection: sqlite3.Connection, directory: Path, total: int, workers: int, level: int
) -> Generator[ChunkResult, None, None]:
    """Scan every chunk, in order: in worker processes when asked, else here.

    Workers come from a fork server (cheap after its first start, and safe when this
    process runs threads). Should the pool break (for instance, a script without an
    ``if __name__ == "__main__"`` guard cannot start one), the rest is scanned here.
    """
    tasks = chunk_tasks(total, level)
    done = 0
    if min(workers, len(tasks)) > 1:
        method = (
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(["ledger._chunks"])
        try:
            with ProcessPoolExecutor(
                max_workers=min(workers, len(tasks)), mp_context=context
            ) as pool:
                futures = [
                    pool.submit(worker_scan, str(directory), start, end, level)
                    for start, end in tasks
                ]
                try:
                    for future in futures:
                        result = future.result()
                        if isinstance(result, str):
                            raise LedgerError(result)
                        done += 1
                        yield result
                finally:  # stopped early (a bad entry): drop the chunks not yet started
                    for future in futures:
                        future.cancel()
        except BrokenProcessPool:
            pass  # finish in this process
    for start, end in tasks[done:]:
        yield scan_chunk(connection, start, end, level)


def _scan_entries(
    connection: sqlite3.Connection,
    directory: Path,
    total: int,
    progress: Progress | None,
    workers: int,
    level: int,
    checker: EventChecker,
) -> tuple[LeafHashes, LedgerVerificationError | None, int | None]:
    """Check every entry, on its own and against its predecessor; return the good leaves.

    Stops at the first bad entry and returns the error for it alongside the leaf hashes
    of the entries before it, and the first stored hash the chunks found wrong.
    """
    leaves = LeafHashes(level)
    expected_prev = GENESIS_PREV
    stored_bad: list[int] = []
    if progress is not None:
        progress(0, total)
    results = _chunk_results(connection, directory, total, workers, level)
    with contextlib.closing(results):
        for chunk in results:
            start = chunk.start
            if chunk.failure is not None and chunk.failure[0] == start:
                return leaves, LedgerVerificationError(chunk.failure[1], start), None
            if chunk.first_prev is not None and chunk.first_prev != expected_prev:
                return leaves, chain_error(start, chunk.first_prev, expected_prev), None
            for event in chunk.events:
                problem = checker.check(event)
                if problem is not None:
                    cut = (event.index - start) * HASH_SIZE
                    leaves.add_chunk(chunk.leaves[:cut], None)
                    return leaves, LedgerVerificationError(problem, event.index), None
            leaves.add_chunk(chunk.leaves, chunk.root)
            if chunk.failure is not None:
                return leaves, LedgerVerificationError(chunk.failure[1], chunk.failure[0]), None
            expected_prev = (leaves.last() or b"").hex()
            if chunk.stored_bad is not None:
                stored_bad.append(chunk.stored_bad)
            if progress is not None:
                progress(len(leaves), total)
    return leaves, None, min(stored_bad, default=None)


def _locate(
    connection: sqlite3.Connection, key: VerifierKeys, leaves: LeafHashes, limit: int
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
    connection: sqlite3.Connection, key: VerifierKeys, leaves: LeafHashes, size: int
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
    return leaves.root(size) == checkpoint.root_hash


def _check_stored_hashes(
    connection: sqlite3.Connection, leaves: LeafHashes, chunk_bad: int | None
) -> None:
    """Compare the stored-hash table with the one the entries imply (proofs are served from it).

    The chunks compared the hashes within their subtrees (``chunk_bad`` is the first
    they found wrong); this compares the ones above the chunks, and that there are no more.
    """
    bad = [] if chunk_bad is None else [chunk_bad]
    upper = _merkle.RootAccumulator()
    wanted: dict[int, bytes] = {}
    level = leaves.chunk.bit_length() - 1
    for number, root in enumerate(leaves.chunk_roots()):
        last = (number + 1) * leaves.chunk - 1
        above = _merkle.stored_hash_index(0, last) + level  # this chunk's root
        for offset, value in enumerate(upper.append(root)[1:], start=1):
            wanted[above + offset] = value
    found: dict[int, bytes] = {}
    positions = sorted(wanted)
    for begin in range(0, len(positions), 500):  # stay under SQLite's parameter limit
        part = positions[begin : begin + 500]
        marks = ",".join("?" * len(part))
        found.update(
            (int(idx), bytes(value))
            for idx, value in connection.execute(
                f"SELECT idx, hash FROM hashes WHERE idx IN ({marks})", part
            )
        )
    bad.extend(position for position in positions if found.get(position) != wanted[position])
    count = _merkle.stored_hash_count(len(leaves))
    (extra,) = connection.execute("SELECT MIN(idx) FROM hashes WHERE idx >= ?", (count,)).fetchone()
    if extra is not None:
        bad.append(count)
    if bad:
        position = min(bad)
        level_, node = _merkle.split_stored_hash_index(position)
        raise LedgerVerificationError(
            f"stored hash {position} (level {level_}, node {node}) does not match "
            "the entries: proofs served from it would not verify"
        )
