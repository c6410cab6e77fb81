"""The common case of verification, a whole chunk at a time: every entry takes the quick path.

:func:`~ledger._entry.quick_parse` accepts an entry at C speed, but called once per entry
from a Python loop, its glue (the checks around the decode, the call itself, the loop in
:func:`~ledger._chunks.scan_chunk`) cost as much as the decode and re-encode it wraps.
:func:`quick_chunk` makes the same checks over a whole chunk with one C-level pass each
(``map`` over the decoder and the encoder, list equality, byte scans of the joined
chunk), and accepts the chunk only if *every* entry passes exactly what ``quick_parse``
plus the per-entry index and chain checks would accept. Otherwise it returns ``None`` and
the caller runs the per-entry loop, which also finds and names the first bad entry; so
the fast path never decides a failure, only a success the slow path would reach too.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from operator import attrgetter

import msgspec

from ledger._entry import (
    _PREV,
    _QUICK_DECODER,
    _QUICK_ENCODER,
    MAX_ENTRY_BYTES,
    QuickEntry,
    _plain,
    _valid_type_and_time,
)
from ledger._merkle import LEAF_PREFIX

_INDEX = attrgetter("index")
_PREV_OF = attrgetter("prev")
_TYPE_OF = attrgetter("type")
_TIME_OF = attrgetter("time")


def quick_chunk(blobs: list[bytes], start: int) -> tuple[list[bytes], list[QuickEntry]] | None:
    """Check entries ``start, start + 1, ...`` (their stored bytes) all at once.

    Returns (leaf hashes, parsed entries) when every entry is canonical by the quick
    path's argument, sits at its index, and names its predecessor *within* the chunk
    (the first entry's ``prev`` is only checked to be hex: the caller compares it with
    the previous chunk's last leaf); ``None`` when any is not, or is not bytes.
    """
    if not blobs:
        return [], []
    try:
        joined = b"".join(blobs)  # TypeError for a row that is not bytes
    except TypeError:
        return None
    # quick_parse's byte checks, once: ASCII without a backslash means no string needed
    # an escape; each entry is at most MAX_ENTRY_BYTES.
    if not joined.isascii() or b"\\" in joined or max(map(len, blobs)) > MAX_ENTRY_BYTES:
        return None
    try:
        entries: list[QuickEntry] = list(map(_QUICK_DECODER.decode, blobs))
    except (msgspec.DecodeError, RecursionError):
        return None
    # Values nested below ``fields`` are decoded untyped: walk them for floats and unsafe
    # integers, as quick_parse does, unless no entry holds a nested object or an array
    # (each entry then has exactly its own two braces).
    if b"[" in joined or joined.count(b"{") != 2 * len(blobs):
        for data, entry in zip(blobs, entries, strict=True):
            if (data.count(b"{") != 2 or b"[" in data) and not _plain(entry.fields):
                return None
    # Exactly the bytes msgspec re-encodes (sorted keys, no whitespace, one form per value).
    if list(map(_QUICK_ENCODER.encode, entries)) != blobs:
        return None
    if list(map(_INDEX, entries)) != list(range(start, start + len(blobs))):
        return None
    sha256 = hashlib.sha256
    leaves = [sha256(LEAF_PREFIX + data).digest() for data in blobs]  # RFC 9162 §2.1.1
    prevs = list(map(_PREV_OF, entries))
    if prevs[1:] != list(map(bytes.hex, leaves[:-1])) or _PREV.fullmatch(prevs[0]) is None:
        return None
    kinds = set(zip(map(_TYPE_OF, entries), map(_TIME_OF, entries), strict=True))
    if not all(_valid_type_and_time(kind, time) for kind, time in kinds):
        return None
    return leaves, entries
