"""The :class:`Ledger`: durable appends, proofs and receipts over one storage folder."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import _merkle, _store
from ledger._batch import (
    MAX_BATCH,
    Append,
    SigningKeys,
    Tip,
    applicable,
    apply_change,
    signers_for,
)
from ledger._cosign import parse_witness_key, verify_cosignature
from ledger._entry import GENESIS_PREV, LedgerEntry, format_time, prepare_event, splice_next
from ledger._errors import LedgerError, WitnessNotAccepted
from ledger._group import GroupCommit
from ledger._merkle import LEAF_PREFIX
from ledger._note import (
    Checkpoint,
    open_checkpoint,
    sign_checkpoint,
    sign_checkpoint_as,
    verifier_key,
)
from ledger._receipt import Receipt

_T = TypeVar("_T")


class Ledger:
    """An append-only audit ledger stored in one folder.

    Build one with :meth:`create` or :meth:`open`. Every method is safe to call from
    several threads; several processes may append to the same folder at once and still
    get contiguous, unique indexes. Opened without a signing key, the ledger is read-only.
    """

    def __init__(
        self,
        *,
        directory: Path,
        connection: sqlite3.Connection,
        meta: Mapping[str, str],
        signing_key: SigningKeys | None,
    ) -> None:
        """Wrap an open storage connection; use :meth:`create` or :meth:`open` instead."""
        self._directory = Path(directory)
        self._connection: sqlite3.Connection | None = connection
        self._origin = meta["origin"]
        self._active = _store.active_keys(meta)
        self._signers = None if signing_key is None else signers_for(self._active, signing_key)
        self._lock = threading.Lock()
        # (size, note, root) of the last checkpoint this object committed: the next commit
        # finds exactly this note on top unless another process appended meanwhile.
        self._head: tuple[int, str, bytes] | None = None
        # What the last commit left on top, kept while no other connection commits.
        self._tip: Tip | None = None
        self._group: GroupCommit[Append, LedgerEntry] = GroupCommit(
            self._commit_batch, max_batch=MAX_BATCH
        )

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        origin: str,
        signing_key: Ed25519PrivateKey,
        key_name: str | None = None,
    ) -> Ledger:
        """Create a new, empty ledger in ``directory`` and sign its size-0 checkpoint.

        ``key_name`` (the signed-note key name) defaults to ``origin``. Raises
        :class:`LedgerError` if a ledger already exists there or an argument is invalid.
        """
        if not isinstance(signing_key, Ed25519PrivateKey):
            raise LedgerError("signing_key must be an Ed25519 private key")
        name = origin if key_name is None else key_name
        empty = Checkpoint(origin, 0, _merkle.EMPTY_ROOT)  # validates the origin
        key = verifier_key(name, signing_key.public_key())  # validates the key name
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger folder {directory}: {exc}") from exc
        connection = _store.connect(directory, read_only=False, create=True)
        meta = {
            "format": _store.FORMAT,
            "origin": origin,
            "key_name": name,
            "verifier_key": key,
        }
        try:
            with _store.transaction(connection, write=True), _store.sql_errors("creating"):
                for statement in _store.SCHEMA:
                    connection.execute(statement)
                connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                note = sign_checkpoint(empty, key_name=name, private_key=signing_key)
                connection.execute("INSERT INTO checkpoints (size, note) VALUES (0, ?)", (note,))
        except BaseException:
            connection.close()
            raise
        _store.fsync_directory(directory)
        return cls(directory=directory, connection=connection, meta=meta, signing_key=signing_key)

    @classmethod
    def open(cls, directory: Path, *, signing_key: SigningKeys | None = None) -> Ledger:
        """Open an existing ledger; read-only unless ``signing_key`` is given.

        During a key rotation's overlap, ``signing_key`` is the list of every active key.
        Raises :class:`LedgerError` when there is no ledger, its format is unknown, or the
        signing keys are not exactly the ledger's active keys.
        """
        directory = Path(directory)
        connection = _store.connect(directory, read_only=signing_key is None)
        try:
            meta = _store.read_meta(connection)
            if signing_key is not None:
                signers_for(_store.active_keys(meta), signing_key)
        except BaseException:
            connection.close()
            raise
        return cls(directory=directory, connection=connection, meta=meta, signing_key=signing_key)

    # -- plumbing -----------------------------------------------------------------------

    def _run(self, body: Callable[[sqlite3.Connection], _T], *, write: bool = False) -> _T:
        with self._lock:
            if self._connection is None:
                raise LedgerError("the ledger is closed")
            with _store.transaction(self._connection, write=write):
                return body(self._connection)

    def close(self) -> None:
        """Close the storage connection; later calls raise :class:`LedgerError`."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------

    def append(
        self, type: str, fields: Mapping[str, Any], *, time: datetime | None = None
    ) -> LedgerEntry:
        """Append one event and return its entry once it is durably committed.

        Concurrent appends from threads of this process share one transaction and one
        fsync (group commit, see :mod:`ledger._group`). Each transaction writes the
        entries (each chained to its predecessor), their stored hashes and one newly
        signed checkpoint for the new size; a lone append therefore still gets a
        checkpoint for its own size. ``time`` defaults to the commit time (UTC).
        Raises :class:`LedgerError` when read-only, on invalid input, when storage fails
        (then this append is not acknowledged and nothing of its batch is written), or
        if the stored tree no longer matches the last signed checkpoint.
        """
        if self._signers is None:
            raise LedgerError("the ledger was opened read-only (no signing key)")
        stamp = None if time is None else format_time(time)
        return self._group.submit((prepare_event(type, fields, stamp), None))

    def append_many(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[LedgerEntry]:
        """Append several (type, fields) events in one commit, all or none; return the entries.

        For bulk loads (imports, benchmarks): one transaction, one fsync, one checkpoint.
        Raises :class:`LedgerError` before writing anything if any event is invalid.
        """
        if self._signers is None:
            raise LedgerError("the ledger was opened read-only (no signing key)")
        # Fails before writing: an event's validity does not depend on its place.
        requests: list[Append] = [
            (prepare_event(type_, fields, None), None) for type_, fields in events
        ]
        entries = []
        for outcome in self._group.submit_batch(requests):
            if isinstance(outcome, BaseException):
                # A failed commit (full disk, EIO) fails every request alike: nothing was
                # written. (A lone failure would be an entry pushed over the size limit by
                # its index's digits, which the pre-check cannot know.)
                raise outcome
            entries.append(outcome)
        return entries

    def add_signing_key(
        self, key: Ed25519PrivateKey, *, key_name: str | None = None
    ) -> LedgerEntry:
        """Start a key rotation: append ``ledger.key_added`` and sign with ``key`` too.

        From the commit holding that entry on, every checkpoint carries a signature by each
        active key, so verifiers configured with either key keep verifying during the
        overlap; the entry tells auditors the new verifier key. ``key_name`` defaults to
        the origin. Returns the entry. Raises :class:`LedgerError` if read-only.
        """
        if self._signers is None:
            raise LedgerError("the ledger was opened read-only (no signing key)")
        if not isinstance(key, Ed25519PrivateKey):
            raise LedgerError("key must be an Ed25519 private key")
        name = self._origin if key_name is None else key_name
        new = verifier_key(name, key.public_key())
        if new in self._active:
            raise LedgerError("that key is already active")
        event = prepare_event("ledger.key_added", {"verifier_key": new}, None)
        return self._group.submit((event, ("add", new, key)))

    def retire_signing_key(self, retired: str) -> LedgerEntry:
        """End a key rotation: append ``ledger.key_retired`` and stop signing with ``retired``.

        The checkpoint of the commit holding the entry is still signed by the retired key
        (so its holders see the retirement); later ones are not. Raises
        :class:`LedgerError` unless ``retired`` is active and another key stays active.
        """
        if self._signers is None:
            raise LedgerError("the ledger was opened read-only (no signing key)")
        if retired not in self._active or len(self._active) < 2:
            raise LedgerError("only an active key can be retired, and one must remain")
        event = prepare_event("ledger.key_retired", {"verifier_key": retired}, None)
        return self._group.submit((event, ("retire", retired, None)))

    def _commit_batch(self, requests: Sequence[Append]) -> list[LedgerEntry | BaseException]:
        """Write ``requests`` in one transaction; one outcome per request (leader thread)."""
        if self._signers is None:
            raise LedgerError("the ledger was opened read-only (no signing key)")
        signers = dict(self._signers)  # verifier key -> (name, private key), in order
        signed_by = dict(signers)  # every key active at any point of this batch signs
        head: list[tuple[int, str, bytes]] = []
        tips: list[Tip] = []

        def write(connection: sqlite3.Connection) -> list[LedgerEntry | BaseException]:
            version = _store.data_version(connection)
            tip = self._tip
            if tip is not None and tip.version == version:
                # Nobody else committed since our last commit: storage holds exactly what
                # that commit wrote, so its frontier and last leaf need no reading back.
                n, stack, prev = tip.size, list(tip.frontier), tip.prev
            else:
                n = _store.size(connection)
                reader = _store.SqliteHashReader(connection)
                stack = self._checked_frontier(connection, n, reader)
                prev = GENESIS_PREV if n == 0 else self._previous_leaf(connection, n - 1, reader)
            first_index, first_hash = n, _merkle.stored_hash_count(n)
            now = format_time(datetime.now(UTC))
            outcomes: list[LedgerEntry | BaseException] = []
            rows: list[bytes] = []
            hashes: list[bytes] = []
            for event, change in requests:
                if change is not None and not applicable(change, signers):
                    outcomes.append(LedgerError("the key change no longer applies"))
                    continue
                try:
                    # n counts stored entries and prev is a leaf hash's hex: no re-check
                    entry = splice_next(event, n, prev, event.time or now)
                except LedgerError as exc:  # this request alone fails
                    outcomes.append(exc)
                    continue
                data = entry.canonical()
                leaf = sha256(LEAF_PREFIX + data).digest()  # RFC 9162 §2.1.1, no copy
                _merkle.extend_frontier(stack, n, leaf, hashes)
                rows.append(data)
                outcomes.append(entry)
                prev = leaf.hex()
                n += 1
                if change is not None:
                    apply_change(change, signers)
                    signed_by.update(signers)
            tips.append(Tip(version, n, list(stack), prev))
            if not rows:
                return outcomes
            _store.insert_run(connection, "entries", first_index, rows)
            _store.insert_run(connection, "hashes", first_hash, hashes)
            with _store.sql_errors("appending"):
                checkpoint = Checkpoint(self._origin, n, _merkle.frontier_root(stack))
                note = sign_checkpoint_as(
                    checkpoint, [(vkey, private) for vkey, (_, private) in signed_by.items()]
                )
                connection.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (n, note))
                head.append((n, note, checkpoint.root_hash))
                if list(signers) != self._active:
                    _store.write_active_keys(connection, list(signers))
            return outcomes

        try:
            outcomes = self._run(write, write=True)
        except BaseException:
            self._tip = None  # a failed COMMIT may or may not have landed: read it back
            raise
        self._tip = tips[-1] if tips else None
        # Committed: from now on sign with the keys active after this batch.
        self._active = list(signers)
        self._signers = list(signers.items())
        if head:
            self._head = head[-1]
        return outcomes

    @staticmethod
    def _previous_leaf(
        connection: sqlite3.Connection, index: int, reader: _store.SqliteHashReader
    ) -> str:
        """Return the hex leaf hash of entry ``index``, which must match its stored hash."""
        previous = _store.raw_entry(connection, index)
        if previous is None:
            raise LedgerError(f"ledger storage is corrupt: entry {index} is missing")
        leaf = _merkle.leaf_hash(previous)
        if reader.read_hashes([_merkle.stored_hash_index(0, index)]) != [leaf]:
            raise LedgerError(f"ledger storage is corrupt: entry {index} differs from its hash")
        return leaf.hex()

    def _checked_frontier(
        self, connection: sqlite3.Connection, n: int, reader: _store.SqliteHashReader
    ) -> list[bytes]:
        """Return the stored tree's frontier, refusing storage that differs from the last
        signed checkpoint.

        C2SP tlog-checkpoint: a log MUST NOT sign a checkpoint inconsistent with an earlier one.
        """
        if _store.hash_count(connection) != _merkle.stored_hash_count(n):
            raise LedgerError("ledger storage is corrupt: stored hashes do not match the size")
        latest = _store.latest_checkpoint(connection)
        if latest is None or latest[0] != n:
            raise LedgerError("ledger storage is corrupt: no signed checkpoint for its size")
        if self._head is not None and self._head[:2] == latest:
            root = self._head[2]  # the very note this object signed last: no need to re-verify
        else:
            signed = open_checkpoint(latest[1], self._active)
            if signed.size != n:
                raise LedgerError("ledger storage is corrupt: checkpoint size is wrong")
            root = signed.root_hash
        stack = _merkle.frontier(n, reader)
        if root != _merkle.frontier_root(stack):
            raise LedgerError("ledger storage is corrupt: tree differs from the signed checkpoint")
        return stack

    # -- reading ------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The folder holding this ledger."""
        return self._directory

    @property
    def origin(self) -> str:
        """The checkpoint origin line of this ledger."""
        return self._origin

    @property
    def verifier_key(self) -> str:
        """The newest active verifier key: ``name+keyid+base64(0x01||pub)``."""
        return self._active[-1]

    @property
    def verifier_keys(self) -> list[str]:
        """Every active verifier key (more than one during a key rotation's overlap)."""
        return list(self._active)

    @property
    def size(self) -> int:
        """The number of entries."""
        return self._run(_store.size)

    def raw_entry(self, index: int) -> bytes:
        """Return the stored canonical bytes of entry ``index``; raises :class:`LedgerError`."""
        _check_index("index", index)

        def read(connection: sqlite3.Connection) -> bytes:
            data = _store.raw_entry(connection, index)
            if data is None:
                raise LedgerError(f"there is no entry {index}")
            return data

        return self._run(read)

    def raw_entries(self, start: int, end: int) -> list[bytes]:
        """Return the stored bytes of entries ``start`` (inclusive) to ``end`` (exclusive).

        Raises :class:`LedgerError` unless ``start <= end <= size``.
        """
        _check_index("start", start)
        _check_index("end", end)

        def read(connection: sqlite3.Connection) -> list[bytes]:
            n = _store.size(connection)
            if not start <= end <= n:
                raise LedgerError(f"entries [{start}, {end}) are not within the size {n}")
            rows = _store.raw_entries(connection, start, end)
            if [i for i, _ in rows] != list(range(start, end)):
                raise LedgerError("ledger storage is corrupt: entries are missing")
            return [data for _, data in rows]

        return self._run(read)

    def entry(self, index: int) -> LedgerEntry:
        """Return entry ``index``; raises :class:`LedgerError` if absent or not canonical."""
        return LedgerEntry.parse(self.raw_entry(index))

    def entries(self, start: int, end: int) -> list[LedgerEntry]:
        """Return entries ``start`` (inclusive) to ``end`` (exclusive), in order."""
        _check_index("start", start)
        _check_index("end", end)

        def read(connection: sqlite3.Connection) -> list[LedgerEntry]:
            n = _store.size(connection)
            if not start <= end <= n:
                raise LedgerError(f"entries [{start}, {end}) are not within the size {n}")
            rows = _store.raw_entries(connection, start, end)
            if [i for i, _ in rows] != list(range(start, end)):
                raise LedgerError("ledger storage is corrupt: entries are missing")
            return [LedgerEntry.parse(data) for _, data in rows]

        return self._run(read)

    def root(self, size: int | None = None) -> bytes:
        """Return the tree root at ``size`` (default: the current size)."""
        if size is not None:
            _check_index("size", size)

        def read(connection: sqlite3.Connection) -> bytes:
            n = _store.size(connection)
            wanted = n if size is None else size
            if wanted > n:
                raise LedgerError(f"size {wanted} is beyond the ledger size {n}")
            return _merkle.tree_root(wanted, _store.SqliteHashReader(connection))

        return self._run(read)

    def checkpoint(self) -> str:
        """Return the latest signed checkpoint note."""

        def read(connection: sqlite3.Connection) -> str:
            latest = _store.latest_checkpoint(connection)
            if latest is None:
                raise LedgerError("ledger storage is corrupt: no signed checkpoint")
            return latest[1]

        return self._run(read)

    def checkpoint_at(self, size: int) -> str:
        """Return the signed checkpoint note for tree ``size`` (one is signed per commit)."""
        _check_index("size", size)

        def read(connection: sqlite3.Connection) -> str:
            note = _store.checkpoint_note(connection, size)
            if note is None:
                raise LedgerError(f"there is no signed checkpoint for size {size}")
            return note

        return self._run(read)

    def checkpoint_covering(self, index: int) -> str:
        """Return the signed checkpoint of the commit that wrote entry ``index``.

        A verifier following a key rotation needs it for each ``ledger.key_added`` entry:
        that commit is signed by the keys active before it. Raises :class:`LedgerError`
        when no checkpoint covers ``index``.
        """
        _check_index("index", index)

        def read(connection: sqlite3.Connection) -> str:
            note = _store.covering_checkpoint(connection, index, _store.size(connection))
            if note is None:
                raise LedgerError(f"no signed checkpoint covers entry {index}")
            return note

        return self._run(read)

    def add_cosignature(self, size: int, witness_key: str, line: str) -> None:
        """Store a witness's cosignature of the checkpoint for ``size`` (C2SP tlog-cosignature).

        Only witnesses the operator accepts (:func:`~ledger.accept_witness`) may cosign,
        so strangers' keys cannot crowd the slots of a checkpoint; the line must verify
        with ``witness_key`` over that checkpoint. Raises :class:`WitnessNotAccepted` for
        another key, :class:`LedgerVerificationError` for a bad cosignature,
        :class:`LedgerError` when there is no such checkpoint.
        """
        _check_index("size", size)
        witness = parse_witness_key(witness_key)
        self._run(lambda connection: _accepted(connection, witness_key))
        checkpoint = open_checkpoint(self.checkpoint_at(size), self._active)
        verify_cosignature(checkpoint, line, witness_key)
        text = line if line.endswith("\n") else line + "\n"

        def write(connection: sqlite3.Connection) -> None:
            _accepted(connection, witness_key)  # not removed meanwhile
            # Keyed by the whole verifier key, first one kept: a cosignature made with
            # another key under the same witness name can never displace the real one.
            _store.insert_cosignature(connection, size, f"{witness.name} {witness_key}", text)

        self._run(write, write=True)

    def cosigned_checkpoint(self) -> str | None:
        """Return the largest cosigned checkpoint with all its cosignatures, or ``None``."""

        def read(connection: sqlite3.Connection) -> str | None:
            found = _store.latest_cosigned(connection)
            if found is None:
                return None
            size, lines = found
            note = _store.checkpoint_note(connection, size)
            if note is None:
                raise LedgerError(f"ledger storage is corrupt: no checkpoint for size {size}")
            return note + "".join(lines)

        return self._run(read)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Return the inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        _check_index("size", size)

        def read(connection: sqlite3.Connection) -> list[bytes]:
            n = _store.size(connection)
            if size > n:
                raise LedgerError(f"size {size} is beyond the ledger size {n}")
            return _merkle.inclusion_proof(index, size, _store.SqliteHashReader(connection))

        return self._run(read)

    def consistency_proof(self, old: int, new: int) -> list[bytes]:
        """Return the proof that the tree of ``old`` entries is a prefix of that of ``new``."""
        _check_index("new", new)

        def read(connection: sqlite3.Connection) -> list[bytes]:
            n = _store.size(connection)
            if new > n:
                raise LedgerError(f"size {new} is beyond the ledger size {n}")
            return _merkle.consistency_proof(old, new, _store.SqliteHashReader(connection))

        return self._run(read)

    def receipt(self, index: int, size: int | None = None) -> Receipt:
        """Return a receipt for entry ``index`` against the signed checkpoint for ``size``.

        ``size`` defaults to the latest checkpoint's. Raises :class:`LedgerError` when the
        entry is not covered or there is no checkpoint for that size.
        """
        _check_index("index", index)
        if size is not None:
            _check_index("size", size)

        def read(connection: sqlite3.Connection) -> Receipt:
            if size is None:
                latest = _store.latest_checkpoint(connection)
                if latest is None:
                    raise LedgerError("ledger storage is corrupt: no signed checkpoint")
                tree_size, note = latest
            else:
                found = _store.checkpoint_note(connection, size)
                if found is None:
                    raise LedgerError(f"there is no signed checkpoint for size {size}")
                tree_size, note = size, found
            if index >= tree_size:
                raise LedgerError(f"entry {index} is not covered by the checkpoint")
            data = _store.raw_entry(connection, index)
            if data is None:
                raise LedgerError(f"ledger storage is corrupt: entry {index} is missing")
            reader = _store.SqliteHashReader(connection)
            proof = _merkle.inclusion_proof(index, tree_size, reader)
            return Receipt(index, tree_size, _merkle.leaf_hash(data), proof, note)

        return self._run(read)

    def __repr__(self) -> str:
        return f"Ledger({str(self._directory)!r}, origin={self._origin!r})"


def _accepted(connection: sqlite3.Connection, witness_key: str) -> None:
    if witness_key not in _store.accepted_witnesses(connection):
        raise WitnessNotAccepted(
            f"witness {witness_key.split('+')[0]!r} is not one this ledger accepts "
            "cosignatures from; its operator adds it with `indomain ledger witness add KEY`"
        )


def _check_index(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LedgerError(f"{name} must be a non-negative integer")
