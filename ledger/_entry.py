"""Ledger entries: one event, canonical JSON (RFC 8785), chained to the previous entry.

The canonical bytes are what the Merkle tree hashes, so the format has exactly one
encoding per entry: :meth:`LedgerEntry.parse` re-canonicalises and refuses anything else
(whitespace, key order, duplicate keys, ``1.0`` for ``1``, unknown keys). ``prev`` makes
each entry name its predecessor, so a reordered or spliced log breaks twice: in the tree
and in the chain.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple

import msgspec
import rfc8785

from indomain.errors import InternalError
from ledger._errors import LedgerError, LedgerVerificationError
from ledger._merkle import leaf_hash

GENESIS_PREV = "0" * 64  # entry 0 has no predecessor
MAX_ENTRY_BYTES = 1 << 20  # audit events carry digests, not data: 1 MiB is generous
ENTRY_KEYS = frozenset({"index", "type", "time", "prev", "fields"})

_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", re.ASCII)
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z", re.ASCII)
_PREV = re.compile(r"[0-9a-f]{64}", re.ASCII)


def format_time(moment: datetime) -> str:
    """Return ``moment`` as RFC 3339 UTC with microseconds, e.g. 2026-11-22T10:00:00.123456Z.

    Raises :class:`LedgerError` for a naive datetime: a ledger time must be unambiguous.
    """
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise LedgerError("entry time must be a timezone-aware datetime")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "Z"


@functools.lru_cache(maxsize=4096)  # pure; the entries of one commit share their time
def _valid_time(text: str) -> bool:
    if _TIME.fullmatch(text) is None:
        return False
    try:
        datetime.fromisoformat(text[:-1])  # the shape is checked above; this checks ranges
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=1024)  # pure; an appender's types repeat (a third of a regex)
def _valid_type(text: str) -> bool:
    return _TYPE.fullmatch(text) is not None


MAX_SAFE_INTEGER = 2**53 - 1  # RFC 8785 §3.2.2.3: numbers are IEEE 754 doubles


def _to_json(value: Any, path: str, simple: list[bool]) -> Any:
    """Return ``value`` as plain JSON types (dict, list, ...), or raise naming where it fails.

    Sets ``simple[0]`` to False when a float or an integer beyond ±(2^53 - 1) appears.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            simple[0] = False
        return value
    if isinstance(value, float):
        simple[0] = False
        return value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise LedgerError(f"{path}: object keys must be strings")
            result[key] = _to_json(item, f"{path}.{key}", simple)
        return result
    if isinstance(value, list | tuple):
        return [_to_json(item, f"{path}[{i}]", simple) for i, item in enumerate(value)]
    raise LedgerError(f"{path}: {type(value).__name__} is not a JSON value")


def _fast_canonical(document: Any) -> bytes | None:
    """RFC 8785 bytes from the standard library's C encoder, when it provably agrees.

    For a document with no floats and only safe integers whose output is ASCII, JCS and
    ``json.dumps(sort_keys, compact, ensure_ascii=False)`` produce the same bytes: the
    same string escapes (RFC 8785 §3.2.2.2: quote, backslash, the five short control
    escapes, other controls as lowercase u00hh), integers printed exactly, and keys
    sorted by code point, which for ASCII is the UTF-16 order JCS asks for (§3.2.3).
    Anything else takes the reference implementation. A property test checks both agree.
    """
    try:
        text = _ENCODER.encode(document)
    except (ValueError, RecursionError):
        return None
    return text.encode("ascii") if text.isascii() else None


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 bytes of a JSON value (read-only mappings and tuples allowed).

    The stdlib fast path where it provably agrees (see :func:`_fast_canonical`), else the
    reference. Raises :class:`LedgerError` for a value JSON cannot hold and
    ``rfc8785.CanonicalizationError`` for one JCS refuses (e.g. an unsafe integer).
    """
    simple = [True]
    document = _to_json(value, "value", simple)
    fast = _fast_canonical(document) if simple[0] else None
    return fast if fast is not None else rfc8785.dumps(document)


def _freeze(value: Any) -> Any:
    """Deep-freeze parsed JSON: objects become read-only mappings, arrays tuples."""
    if isinstance(value, dict):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


# Built once: json.loads/dumps with options would build a new decoder/encoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _loads(data: bytes) -> Any:
    # Strict UTF-8 first: json.loads would otherwise guess UTF-16/32 from the bytes.
    return _DECODER.decode(data.decode("utf-8"))


@dataclass(frozen=True, eq=False)
class LedgerEntry:
    """One ledger event; checks itself on construction and raises :class:`LedgerError`.

    ``fields`` is stored deep-frozen (read-only mappings, tuples for arrays) and
    normalised to what its canonical JSON says (``1.0`` becomes ``1``). Two entries are
    equal when their canonical bytes are.
    """

    index: int
    type: str
    time: str
    prev: str
    fields: Mapping[str, Any]
    _canonical: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise LedgerError("entry index must be a non-negative integer")
        if not isinstance(self.type, str) or _TYPE.fullmatch(self.type) is None:
            raise LedgerError("entry type must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
        if not isinstance(self.time, str) or not _valid_time(self.time):
            raise LedgerError("entry time must be RFC 3339 UTC like 2026-11-22T10:00:00.123456Z")
        if not isinstance(self.prev, str) or _PREV.fullmatch(self.prev) is None:
            raise LedgerError("entry prev must be 64 lowercase hex digits")
        if not isinstance(self.fields, Mapping):
            raise LedgerError("entry fields must be a mapping")
        simple = [True]
        try:
            document = {
                "index": self.index,
                "type": self.type,
                "time": self.time,
                "prev": self.prev,
                "fields": _to_json(self.fields, "fields", simple),
            }
        except RecursionError:
            raise LedgerError("entry fields are nested too deeply") from None
        fast = _fast_canonical(document) if simple[0] else None
        canonical = fast if fast is not None else self._reference_canonical(document)
        if len(canonical) > MAX_ENTRY_BYTES:
            raise LedgerError(f"entry is larger than {MAX_ENTRY_BYTES} bytes")
        parsed = document if fast is not None else _loads(canonical)
        object.__setattr__(self, "_canonical", canonical)
        object.__setattr__(self, "fields", _freeze(parsed["fields"]))

    @staticmethod
    def _reference_canonical(document: dict[str, Any]) -> bytes:
        """RFC 8785 bytes by the reference implementation, checked to round-trip."""
        try:
            canonical = rfc8785.dumps(document)
        except rfc8785.CanonicalizationError as exc:
            raise LedgerError(f"entry is not canonical JSON: {exc}") from exc
        except RecursionError:
            raise LedgerError("entry fields are nested too deeply") from None
        # The bytes must parse back to themselves, or the ledger would hold an entry that
        # verification refuses: e.g. the float 2.0**53 prints as an integer too large for JCS.
        try:
            again = rfc8785.dumps(_loads(canonical))
        except (rfc8785.CanonicalizationError, ValueError, RecursionError):
            again = None
        if again != canonical:
            raise LedgerError("entry fields hold a number that does not survive a JSON round trip")
        return canonical

    def canonical(self) -> bytes:
        """Return the RFC 8785 canonical JSON of the entry: the bytes the ledger hashes."""
        return self._canonical

    @property
    def leaf_hash(self) -> bytes:
        """The RFC 9162 leaf hash of :meth:`canonical`; the next entry's ``prev`` is its hex."""
        return leaf_hash(self._canonical)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LedgerEntry):
            return NotImplemented
        return self._canonical == other._canonical

    def __hash__(self) -> int:
        return hash(self._canonical)

    @classmethod
    def parse(cls, data: bytes) -> LedgerEntry:
        """Parse canonical entry bytes.

        Raises :class:`LedgerVerificationError` unless ``data`` is exactly the canonical
        form of a valid entry with no unknown or missing keys.
        """
        if not isinstance(data, bytes):
            raise LedgerVerificationError("entry data is not bytes")
        if len(data) > MAX_ENTRY_BYTES:
            raise LedgerVerificationError(f"entry is larger than {MAX_ENTRY_BYTES} bytes")
        try:
            document = _loads(data)
        except (ValueError, RecursionError):
            raise LedgerVerificationError("entry is not valid JSON") from None
        if not isinstance(document, dict):
            raise LedgerVerificationError("entry is not a JSON object")
        if set(document) != ENTRY_KEYS:
            unknown = sorted(set(document) - ENTRY_KEYS)
            missing = sorted(ENTRY_KEYS - set(document))
            raise LedgerVerificationError(
                f"entry keys are wrong (unknown: {unknown}, missing: {missing})"
            )
        if not isinstance(document["fields"], dict):
            raise LedgerVerificationError("entry fields is not a JSON object")
        try:
            entry = cls(
                index=document["index"],
                type=document["type"],
                time=document["time"],
                prev=document["prev"],
                fields=document["fields"],
            )
        except LedgerError as exc:
            raise LedgerVerificationError(f"invalid entry: {exc}") from None
        if entry.canonical() != data:
            raise LedgerVerificationError("entry bytes are not in canonical form (RFC 8785)")
        return entry


_FIELDS_PREFIX = b'{"fields":'
_TEMPLATE_TIME = "2000-01-01T00:00:00.000000Z"  # any valid time: only its length matters


def _suffix(index: int, prev: str, time: str, type_: str) -> bytes:
    return b',"index":%d,"prev":"%s","time":"%s","type":"%s"}' % (
        index,
        prev.encode("ascii"),
        time.encode("ascii"),
        type_.encode("ascii"),
    )


class PreparedEvent(NamedTuple):
    """An event its appender checked and canonicalised, for the committing thread to splice.

    Built by :func:`prepare_event`; ``fields_json`` is the RFC 8785 bytes of ``fields``.
    (A named tuple: built once per append, and a frozen dataclass's ``__init__`` costs a
    ``object.__setattr__`` per field.)
    """

    type: str
    time: str | None
    fields: Mapping[str, Any]
    fields_json: bytes


def prepare_event(type_: str, fields: Mapping[str, Any], time: str | None) -> PreparedEvent:
    """Check an event and canonicalise its fields, as :class:`LedgerEntry` would.

    Raises :class:`LedgerError` for what :class:`LedgerEntry` refuses. Runs in the
    appender's thread, so the committing thread only splices (:func:`splice_entry`).
    """
    quick = _quick_prepare(type_, fields, time)
    if quick is not None:
        return quick
    template = LedgerEntry(
        index=0,
        type=type_,
        time=_TEMPLATE_TIME if time is None else time,
        prev=GENESIS_PREV,
        fields=fields,
    )
    data = template.canonical()
    suffix = _suffix(0, GENESIS_PREV, template.time, type_)
    if not (data.startswith(_FIELDS_PREFIX) and data.endswith(suffix)):
        raise InternalError("a canonical entry does not start with its fields")
    return PreparedEvent(type_, time, template.fields, data[len(_FIELDS_PREFIX) : -len(suffix)])


def _quick_prepare(type_: str, fields: Any, time: str | None) -> PreparedEvent | None:
    """:func:`prepare_event` by msgspec, where its output provably is RFC 8785; else ``None``.

    The same argument as :func:`quick_parse`: sorted ASCII output without a backslash has
    no string that needed an escape; decoding it back with the typed decoder refuses
    floats and unsafe integers; and it must decode to ``fields`` itself, so msgspec did
    not turn something JSON cannot hold (a set, a date, bytes, a non-string key) into JSON.
    """
    if type(fields) is not dict or type(type_) is not str or not _valid_type(type_):
        return None
    if time is not None and (not isinstance(time, str) or not _valid_time(time)):
        return None
    try:
        data = _QUICK_ENCODER.encode(fields)
        if len(data) > MAX_ENTRY_BYTES or not data.isascii() or b"\\" in data:
            return None
        decoded = _FIELDS_DECODER.decode(data)
        nested = data.count(b"{") != 1 or b"[" in data
        if (nested and not _plain(decoded)) or decoded != fields:
            return None
    except (TypeError, ValueError, RecursionError, msgspec.MsgspecError):
        return None
    frozen = _freeze(decoded) if nested else MappingProxyType(decoded)
    return PreparedEvent(type_, time, frozen, data)


def splice_entry(event: PreparedEvent, *, index: int, prev: str, time: str) -> LedgerEntry:
    """Return the entry for ``event`` at ``index``, without canonicalising it again.

    RFC 8785 sorts the keys (§3.2.3), and ``fields`` < ``index`` < ``prev`` < ``time`` <
    ``type``; the fields' bytes are already canonical, and the other four values print
    verbatim (an integer within ±(2^53 - 1), lowercase hex, and a time and a type whose
    patterns admit no character JCS escapes). So the concatenation is the canonical form;
    a property test checks it against :class:`LedgerEntry`. Raises :class:`LedgerError`
    for a bad index, prev or time, or an entry over the size limit.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_SAFE_INTEGER:
        raise LedgerError("entry index must be a non-negative integer")
    if not isinstance(prev, str) or _PREV.fullmatch(prev) is None:
        raise LedgerError("entry prev must be 64 lowercase hex digits")
    return splice_next(event, index, prev, time)


_ENTRY_BYTES = b'{"fields":%s,"index":%d,"prev":"%s","time":"%s","type":"%s"}'  # keys sorted


def splice_next(event: PreparedEvent, index: int, prev: str, time: str) -> LedgerEntry:
    """:func:`splice_entry` for the committing thread, which checked ``index`` and ``prev``.

    Its ``index`` is its own count of stored entries and its ``prev`` the hex of a leaf
    hash (``bytes.hex``, or :data:`GENESIS_PREV`): both valid by construction, and
    checking them again was a fifth of the committing thread's work per entry. The time
    and the size are still checked. Raises :class:`LedgerError` for a bad time, an index
    beyond ±(2^53 - 1) or an entry over the size limit.
    """
    if index > MAX_SAFE_INTEGER:
        raise LedgerError("entry index must be a non-negative integer")
    if time != event.time and not _valid_time(time):
        raise LedgerError("entry time must be RFC 3339 UTC like 2026-11-22T10:00:00.123456Z")
    data = _ENTRY_BYTES % (
        event.fields_json,
        index,
        prev.encode("ascii"),
        time.encode("ascii"),
        event.type.encode("ascii"),
    )
    if len(data) > MAX_ENTRY_BYTES:
        raise LedgerError(f"entry is larger than {MAX_ENTRY_BYTES} bytes")
    entry = object.__new__(LedgerEntry)
    # Frozen only forbids __setattr__: filling the instance dict directly is the cheapest
    # way past __post_init__ (this runs once per append, in the committing thread).
    entry.__dict__.update(
        index=index,
        type=event.type,
        time=time,
        prev=prev,
        fields=event.fields,
        _canonical=data,
    )
    return entry


# RFC 8785 §3.2.2.3: integers print exactly only within ±(2^53 - 1); a float never
# takes the quick path. msgspec enforces both for the values directly in ``fields``.
_SafeInt = Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER)]
_Value = str | bool | None | _SafeInt | list[Any] | dict[str, Any]


class QuickEntry(msgspec.Struct, forbid_unknown_fields=True):
    """An entry as :func:`quick_parse` decodes it: exactly the five keys, in sorted order."""

    fields: dict[str, _Value]
    index: Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INTEGER)]
    prev: str
    time: str
    type: str


_QUICK_DECODER = msgspec.json.Decoder(QuickEntry)
_FIELDS_DECODER = msgspec.json.Decoder(dict[str, _Value])
_QUICK_ENCODER = msgspec.json.Encoder(order="sorted")


def _plain(value: Any) -> bool:
    """True when ``value`` holds no float and no integer beyond ±(2^53 - 1)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:  # a loop, not all(...): this runs once per value of every entry
        if type(item) is not str and not _plain(item):
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _valid_type_and_time(type_: str, time: str) -> bool:
    # Cached: entries of one commit share their time, and types repeat.
    return _TYPE.fullmatch(type_) is not None and _valid_time(time)


def quick_parse(data: bytes, prev: str | None = None) -> QuickEntry | None:
    """Parse valid canonical entry bytes at C speed, or return ``None`` to take
    :meth:`LedgerEntry.parse` (which then also explains what is wrong).

    Accepts only bytes that are exactly msgspec's sorted re-encoding of what it decoded,
    and only where that provably equals RFC 8785: ASCII with no backslash (so every string
    is printed verbatim: no escapes, which is where JCS and other encoders differ,
    §3.2.2.2), no float and no integer beyond ±(2^53 - 1) (so every number is printed as
    its exact decimal, §3.2.2.3), keys sorted by code point, which for ASCII is the UTF-16
    order of §3.2.3. Duplicate keys, whitespace, ``1.0``, ``-0`` or a missing or unknown
    key all make the re-encoding differ. Anything else takes the reference path. A
    property test checks agreement with the ``rfc8785`` package.
    ``fields`` is the parsed dict itself: callers must not mutate it. ``prev``, when given,
    is the ``prev`` the caller expects (valid hex): an entry naming it needs no other check.
    """
    if (
        not isinstance(data, bytes)
        or len(data) > MAX_ENTRY_BYTES
        or not data.isascii()
        or b"\\" in data
    ):
        return None
    try:
        document = _QUICK_DECODER.decode(data)
        # Only the two objects' braces and no bracket: no nested value to walk.
        plain = (data.count(b"{") == 2 and b"[" not in data) or _plain(document.fields)
    except (msgspec.DecodeError, RecursionError):
        return None
    if (
        not plain
        or _QUICK_ENCODER.encode(document) != data
        or (document.prev != prev and _PREV.fullmatch(document.prev) is None)
        or not _valid_type_and_time(document.type, document.time)
    ):
        return None
    return document
