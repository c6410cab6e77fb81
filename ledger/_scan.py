"""Verification that needs only entry bytes in order and a signed checkpoint.

This is the whole of what an auditor must trust: :class:`EntryScanner` checks each entry
on its own (canonical bytes, its index, its ``prev`` hash, the signatures it embeds) and
collects its leaf hash; :func:`verify_entries` recomputes the RFC 9162 root and compares
it with the checkpoint the ledger key signed, and with a checkpoint the auditor kept.
The source of the bytes (a ledger folder, an export, the HTTP API) does not matter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ledger._entry import GENESIS_PREV, LedgerEntry, QuickEntry, quick_parse
from ledger._errors import LedgerError, LedgerForkError, LedgerVerificationError
from ledger._events import EventChecker
from ledger._leaves import LeafHashes, leaf_hash_fast
from ledger._note import (
    Checkpoint,
    VerifierKeys,
    open_checkpoint,
    parse_checkpoint_body,
    parse_verifier_keys,
)
from ledger._rotation import follow_rotations

Progress = Callable[[int, int], None]
PROGRESS_EVERY = 1000  # entries between progress calls


@dataclass(frozen=True)
class VerificationReport:
    """What a successful verification established."""

    size: int
    root_hash: bytes
    checkpoint: Checkpoint


def check_entry(data: bytes, position: int, prev: str | None) -> QuickEntry | LedgerEntry:
    """Check one entry on its own: canonical, at ``position``, naming ``prev`` (when known).

    Raises :class:`LedgerVerificationError` naming ``position``. Shared by the sequential
    scanner and the chunk workers, so both say the same thing about the same entry.
    """
    entry: QuickEntry | LedgerEntry | None = quick_parse(data)
    if entry is None:  # the reference path, which also says what is wrong
        try:
            entry = LedgerEntry.parse(data)
        except LedgerVerificationError as exc:
            raise LedgerVerificationError(exc.reason, position) from None
    if entry.index != position:
        raise LedgerVerificationError(
            f"entry says it is entry {entry.index} (moved or swapped)", position
        )
    if prev is not None and entry.prev != prev:
        raise chain_error(position, entry.prev, prev)
    return entry


def chain_error(position: int, prev: str, expected: str) -> LedgerVerificationError:
    """The error for an entry whose ``prev`` is not its predecessor's leaf hash."""
    return LedgerVerificationError(
        f"leaf data does not match the chain (prev hash {prev[:16]}… "
        f"but entry {position - 1} hashes to {expected[:16]}…)",
        position,
    )


class EntryScanner:
    """Checks entries in log order; :attr:`leaves` holds the leaf hashes of those that passed."""

    def __init__(self) -> None:
        self.leaves = LeafHashes()
        self._prev = GENESIS_PREV
        self._events = EventChecker()

    @property
    def key_changes(self) -> list[tuple[int, str, str]]:
        """(index, type, verifier key) of the key rotation entries seen, in order."""
        return self._events.key_changes

    def add(self, data: bytes) -> None:
        """Check the next entry; raise :class:`LedgerVerificationError` naming its index."""
        position = len(self.leaves)
        entry = check_entry(data, position, self._prev)
        problem = self._events.check(entry)
        if problem is not None:
            raise LedgerVerificationError(problem, position)
        leaf = leaf_hash_fast(data)
        self.leaves.append(leaf)
        self._prev = leaf.hex()


Trusted = str | Sequence[str] | None  # one kept checkpoint note, several, or none


def open_trusted(trusted: Trusted, verifier_key: VerifierKeys) -> list[tuple[Checkpoint, str]]:
    """Open the kept checkpoint notes (each must be signed by the key) with their text."""
    notes = [] if trusted is None else [trusted] if isinstance(trusted, str) else list(trusted)
    return [(open_checkpoint(note, verifier_key), note) for note in notes]


def check_all_trusted(
    trusted: list[tuple[Checkpoint, str]], leaves: LeafHashes, latest: str
) -> None:
    """Run :func:`check_trusted` for every kept checkpoint."""
    for checkpoint, note in trusted:
        check_trusted(checkpoint, leaves, trusted_note=note, latest=latest)


def check_trusted(
    trusted: Checkpoint, leaves: LeafHashes, *, trusted_note: str, latest: str
) -> None:
    """Raise :class:`LedgerForkError` unless ``leaves`` extend the ``trusted`` checkpoint.

    The error carries both signed notes (the one kept and the ledger's latest) as evidence.
    """
    if trusted.size > len(leaves):
        raise LedgerForkError(
            f"entry is missing: the trusted checkpoint covers {trusted.size} entries "
            f"but {len(leaves)} are stored (truncated or rolled back)",
            len(leaves),
            trusted_note,
            latest,
        )
    if leaves.root(trusted.size) != trusted.root_hash:
        raise LedgerForkError(
            f"the first {trusted.size} entries differ from the trusted checkpoint "
            "(history was rewritten and re-signed: a fork)",
            None,
            trusted_note,
            latest,
        )


def verify_entries(
    entries: Iterable[bytes],
    checkpoint: str,
    verifier_key: VerifierKeys,
    *,
    trusted_checkpoint: Trusted = None,
    progress: Progress | None = None,
    checkpoints: Sequence[str] = (),
    covering: Callable[[int], str | None] | None = None,
) -> VerificationReport:
    """Verify ``entries`` (canonical bytes, from index 0, in order) against a signed checkpoint.

    Every entry must pass :class:`EntryScanner`; there must be exactly as many as the
    checkpoint (signed by a trusted key) covers, with the same root; the ledger must
    extend ``trusted_checkpoint`` (one note or several) when given. The trusted keys are
    ``verifier_key`` and the keys the ledger announced under a checkpoint a trusted key
    signed (``checkpoints``: earlier signed notes covering those announcements, or
    ``covering(index)``, which fetches the note of the commit that wrote entry ``index``
    on demand, e.g. from a gateway), less those it retired (see :mod:`ledger._rotation`).
    ``progress(done, total)`` is called as entries are checked.

    Returns a :class:`VerificationReport`. Raises :class:`LedgerVerificationError` naming
    the first bad entry (:class:`LedgerForkError` for a rollback or fork), and
    :class:`~ledger.LedgerError` for a malformed key.
    """
    configured = [
        k.strip() for k in ([verifier_key] if isinstance(verifier_key, str) else verifier_key)
    ]
    parse_verifier_keys(configured)
    trusted = open_trusted(trusted_checkpoint, configured)
    total = _claimed_size(checkpoint, configured)  # checked against a trusted key below
    scanner = EntryScanner()
    if progress is not None:
        progress(0, total)
    for data in entries:
        if len(scanner.leaves) >= total:
            raise LedgerVerificationError(
                f"entry is not covered by the signed checkpoint (it covers {total})", total
            )
        scanner.add(data)
        if progress is not None and len(scanner.leaves) % PROGRESS_EVERY == 0:
            progress(len(scanner.leaves), total)
    leaves = scanner.leaves
    if progress is not None:
        progress(len(leaves), total)
    available = [checkpoint, *checkpoints, *(note for _, note in trusted)]

    def covers(note: str, index: int, keys: list[str]) -> bool:
        try:
            cp = open_checkpoint(note, keys)
        except LedgerError:
            return False
        return index < cp.size <= len(leaves) and leaves.root(cp.size) == cp.root_hash

    def covered(index: int, keys: list[str]) -> bool:
        if any(covers(note, index, keys) for note in available):
            return True
        fetched = None if covering is None else covering(index)
        return fetched is not None and covers(fetched, index, keys)

    keys, _ = follow_rotations(configured, scanner.key_changes, covered)
    if not keys:
        raise LedgerVerificationError(
            "latest checkpoint: the ledger retired every key you trust, and announced no "
            "key that a checkpoint signed by a trusted key covers"
        )
    try:
        signed = open_checkpoint(checkpoint, keys)
    except LedgerVerificationError as exc:
        raise LedgerVerificationError(f"latest checkpoint: {exc.reason}") from None
    if len(leaves) < total:
        raise LedgerVerificationError(
            f"entry is missing: the signed checkpoint covers {total} entries but "
            f"{len(leaves)} were given (truncated)",
            len(leaves),
        )
    root = leaves.root()
    if root != signed.root_hash:
        raise LedgerVerificationError("recomputed root does not match the signed checkpoint")
    check_all_trusted(trusted, leaves, checkpoint)
    return VerificationReport(size=len(leaves), root_hash=root, checkpoint=signed)


def claimed_size(note: str) -> int:
    """The tree size a checkpoint note states, its signature not yet checked.

    For fetching that many entries to verify (:func:`verify_entries` then checks the
    signature, following key rotations). Raises :class:`LedgerVerificationError` for a
    malformed note.
    """
    if not isinstance(note, str):
        raise LedgerVerificationError("malformed checkpoint note: not text")
    text, separator, _ = note.partition("\n\n")
    if not separator:
        raise LedgerVerificationError("malformed checkpoint note: no signature lines")
    try:
        return parse_checkpoint_body(text + "\n").size
    except LedgerVerificationError as exc:
        raise LedgerVerificationError(f"latest checkpoint: {exc.reason}") from None


def _claimed_size(note: str, keys: list[str]) -> int:
    """The size a checkpoint note states, before its signature is checked (to bound the scan).

    Raises what opening it with ``keys`` raises when the note is malformed.
    """
    if isinstance(note, str):
        text, separator, _ = note.partition("\n\n")
        if separator:
            with contextlib.suppress(LedgerVerificationError):
                return parse_checkpoint_body(text + "\n").size
    try:
        return open_checkpoint(note, keys).size  # raises, saying what is wrong
    except LedgerVerificationError as exc:
        raise LedgerVerificationError(f"latest checkpoint: {exc.reason}") from None
