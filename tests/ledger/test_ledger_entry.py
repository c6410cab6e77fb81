"""Entries are RFC 8785 canonical JSON with exactly one encoding; receipts round-trip JSON."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
from datetime import UTC, datetime

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import LedgerEntry, LedgerError, LedgerVerificationError, Receipt, leaf_hash
from ledger._entry import MAX_ENTRY_BYTES

ZERO = "0" * 64
TIME = "2026-11-22T10:00:00.123456Z"


def entry(**overrides):
    values = {"index": 0, "type": "job.run", "time": TIME, "prev": ZERO, "fields": {"a": 1}}
    values.update(overrides)
    return LedgerEntry(**values)


def test_canonical_bytes_known_answer():
    e = entry(fields={"z": [True, None, "é", 1.5], "a": {"y": 2, "b": -0.0}})
    assert e.canonical() == (
        b'{"fields":{"a":{"b":0,"y":2},"z":[true,null,"\xc3\xa9",1.5]},"index":0,'
        b'"prev":"' + ZERO.encode() + b'","time":"2026-11-22T10:00:00.123456Z","type":"job.run"}'
    )
    assert e.leaf_hash == leaf_hash(e.canonical())
    assert e.leaf_hash == hashlib.sha256(b"\x00" + e.canonical()).digest()


def test_parse_round_trips():
    e = entry(index=7, prev="ab" * 32, fields={"list": [1, [2, {"k": "v"}]], "n": None})
    assert LedgerEntry.parse(e.canonical()) == e


def test_fields_are_deeply_frozen_and_normalised():
    e = entry(fields={"list": [1, 2], "obj": {"x": 1.0}})
    assert e.fields["list"] == (1, 2)
    assert e.fields["obj"]["x"] == 1 and isinstance(e.fields["obj"]["x"], int)
    with pytest.raises(TypeError):
        e.fields["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        e.fields["obj"]["x"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        e.index = 3  # type: ignore[misc]


def test_caller_mutation_after_construction_does_not_change_the_entry():
    fields = {"list": [1, 2]}
    e = entry(fields=fields)
    before = e.canonical()
    fields["list"].append(3)
    assert e.canonical() == before


def test_equality_and_hash_follow_canonical_bytes():
    assert entry(fields={"a": 1}) == entry(fields={"a": 1.0})
    assert entry(fields={"a": 1}) != entry(fields={"a": True})
    assert len({entry(), entry(), entry(index=1)}) == 2


CANONICAL = entry(fields={"a": 1, "b": "x"}).canonical()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (CANONICAL + b"\n", "trailing newline"),
        (b" " + CANONICAL, "leading space"),
        (CANONICAL.replace(b'"a":1', b'"a": 1'), "extra whitespace"),
        (CANONICAL.replace(b'{"a":1,"b":"x"}', b'{"b":"x","a":1}'), "reordered field keys"),
        (
            b'{"index":0,"fields":{"a":1,"b":"x"},"prev":"'
            + ZERO.encode()
            + b'","time":"'
            + TIME.encode()
            + b'","type":"job.run"}',
            "reordered top-level keys",
        ),
        (CANONICAL.replace(b'"a":1', b'"a":1.0'), "1.0 for 1"),
        (CANONICAL.replace(b'"a":1', b'"a":1e0'), "exponent"),
        (CANONICAL.replace(b'"b":"x"', b'"b":"\\u0078"'), "escaped ASCII"),
        (CANONICAL.replace(b'"a":1,', b'"a":1,"a":1,'), "duplicate key"),
        (CANONICAL.replace(b'"a":1', b'"a":NaN'), "NaN"),
        (CANONICAL.replace(b'"a":1', b'"a":9007199254740993'), "integer beyond 2**53"),
        (CANONICAL[:-1] + b',"extra":1}', "unknown key"),
        (CANONICAL.replace(b'"index":0,', b""), "missing key"),
        (CANONICAL.replace(b'"index":0', b'"index":"0"'), "index as string"),
        (CANONICAL.replace(b'"index":0', b'"index":true'), "index as bool"),
        (CANONICAL.replace(b'"index":0', b'"index":-1'), "negative index"),
        (CANONICAL.replace(b'{"a":1,"b":"x"}', b"[1]"), "fields not an object"),
        (CANONICAL.replace(TIME.encode(), b"2026-11-22T10:00:00Z"), "time without micros"),
        (CANONICAL.replace(TIME.encode(), b"2026-11-22T10:00:00.123456+00:00"), "offset"),
        (CANONICAL.replace(TIME.encode(), b"2026-02-30T10:00:00.123456Z"), "no such day"),
        (CANONICAL.replace(ZERO.encode(), ZERO.upper().replace("0", "A").encode()), "upper hex"),
        (CANONICAL.replace(b"job.run", b"job run"), "type with space"),
        (b"\xef\xbb\xbf" + CANONICAL, "byte order mark"),
        (CANONICAL.decode().encode("utf-16"), "UTF-16"),
        (CANONICAL.replace(b'"x"', b'"\xff"'), "invalid UTF-8"),
        (b"[]", "array"),
        (b"", "empty"),
        (b"[" * 100000, "deep nesting"),
    ],
)
def test_parse_rejects_non_canonical_or_invalid_bytes(data, why):
    with pytest.raises(LedgerVerificationError):
        LedgerEntry.parse(data)


def test_parse_rejects_non_bytes():
    with pytest.raises(LedgerVerificationError):
        LedgerEntry.parse(CANONICAL.decode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {"index": -1},
        {"index": True},
        {"index": 1.0},
        {"type": ""},
        {"type": "has space"},
        {"type": "x" * 200},
        {"type": 3},
        {"time": "2026-11-22 10:00:00.123456Z"},
        {"time": "2026-11-22T10:00:00.123456"},
        {"time": "2026-13-01T10:00:00.123456Z"},
        {"prev": "0" * 63},
        {"prev": "g" * 64},
        {"fields": [("a", 1)]},
        {"fields": {"when": datetime(2026, 1, 1)}},
        {"fields": {"raw": b"bytes"}},
        {"fields": {"set": {1, 2}}},
        {"fields": {1: "non-string key"}},
        {"fields": {"big": 2**53}},
        {"fields": {"nan": math.nan}},
        {"fields": {"float that prints as a huge int": 2.0**53}},
        {"fields": {"also": 1e20}},
        {"fields": {"inf": math.inf}},
        {"fields": {"surrogate": "\ud800"}},
        {"fields": {"huge": "x" * (1 << 20)}},
        {"fields": {"deep": functools.reduce(lambda inner, _: [inner], range(5000), [])}},
    ],
)
def test_construction_refuses_invalid_values_with_ledger_error(overrides):
    with pytest.raises(LedgerError) as raised:
        entry(**overrides)
    assert not isinstance(raised.value, LedgerVerificationError)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: abs(f) < 2**53)
    | st.text(st.characters(blacklist_categories=("Cs",)))
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5),
    index=st.integers(0, 2**53 - 1),
)
def test_any_entry_round_trips_through_its_canonical_bytes(fields, index):
    e = entry(index=index, fields=fields)
    data = e.canonical()
    parsed = LedgerEntry.parse(data)
    assert parsed == e and parsed.canonical() == data
    assert json.loads(data)["index"] == index


ASCII_HEAVY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)  # beyond ±(2^53 - 1) too: those must be refused
    | st.text(st.characters(max_codepoint=0x7F))
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(max_codepoint=0x7F), max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=250, deadline=None)
@given(fields=st.dictionaries(st.text(max_size=6), ASCII_HEAVY, max_size=5))
def test_the_fast_encoder_agrees_with_the_rfc8785_reference(fields):
    """The stdlib fast path must give exactly the reference bytes, or refuse alike."""
    document = {"fields": fields, "index": 1, "prev": "0" * 64, "time": TIME, "type": "t"}
    try:
        reference = rfc8785.dumps(document)
    except rfc8785.CanonicalizationError:
        reference = None
    try:
        data = entry(index=1, type="t", fields=fields).canonical()
    except LedgerError:
        data = None
    assert data == reference
    if reference is not None:
        assert LedgerEntry.parse(reference).canonical() == reference


# Bytes that make JSON differ from its RFC 8785 form, or change its type or nesting.
TRICKY = st.sampled_from(
    [
        b".0",
        b"e5",
        b"E-1",
        b"-0",
        b"0",
        b"99999999999999999",
        b"[",
        b"]",
        b"{",
        b"}",
        b" ",
        b",",
        b":",
        b'"',
        b"\\",
        b"\\u0041",
        b"\\n",
        b"\xc3\xa9",
        b"\x7f",
        b"\x01",
        b"true",
        b"null",
        b'"index":1,',
        b'"fields":{},',
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=6), ASCII_HEAVY, max_size=4),
    edit=st.tuples(st.integers(0, 400), st.binary(max_size=3) | TRICKY, st.integers(0, 3)),
)
def test_the_quick_parse_accepts_only_what_the_reference_parse_accepts(fields, edit):
    """Verification's fast path accepts only RFC 8785 bytes, and reads them as the reference."""
    from ledger._entry import quick_parse
    from ledger._events import thaw

    try:
        data = entry(index=3, fields=fields).canonical()
    except LedgerError:
        return
    at, insert, cut = edit
    for candidate in (data, data[:at] + insert + data[at + cut :]):
        quick = quick_parse(candidate)
        if quick is None:
            continue
        # Exactly the reference canonical form of what the bytes say (the rfc8785 package).
        assert rfc8785.dumps(json.loads(candidate)) == candidate
        reference = LedgerEntry.parse(candidate)  # must not raise
        assert (quick.index, quick.type, quick.prev, quick.time) == (
            reference.index,
            reference.type,
            reference.prev,
            reference.time,
        )
        assert thaw(quick.fields) == thaw(reference.fields)  # dict/list against frozen


@pytest.mark.parametrize(
    "fields",
    [
        {"x": 1.5},
        {"x": 2**53},
        {"x": [1, {"y": 0.5}]},
        {"x": [1e21]},
        {"x": "caf\u00e9"},
        {"x": "a\nb"},
        {"x": 'say "hi"'},
        {"x": "\u2028"},
    ],
)
def test_the_quick_parse_leaves_floats_big_integers_and_escapes_to_the_reference(fields):
    from ledger._entry import quick_parse

    try:
        data = entry(index=3, fields=fields).canonical()
    except LedgerError:  # 2**53 and friends cannot be entries at all
        return
    assert quick_parse(data) is None
    assert LedgerEntry.parse(data).canonical() == data


@pytest.mark.parametrize("number", [b"9007199254740992", b"-9007199254740992", b"1e400"])
def test_the_quick_parse_refuses_numbers_beyond_what_a_double_holds(number):
    # Hand-made: LedgerEntry refuses to create such entries, but a stored one may hold them.
    for value in (number, b"[" + number + b"]", b'{"y":' + number + b"}"):
        data = b'{"fields":{"x":%s},"index":3,"prev":"%s","time":"%s","type":"t"}' % (
            value,
            b"0" * 64,
            TIME.encode(),
        )
        from ledger._entry import quick_parse

        assert quick_parse(data) is None


def test_a_typical_entry_takes_the_quick_path():
    """Else verification silently runs at the reference path's speed."""
    from ledger._entry import quick_parse

    fields = {"job_id": "job_1", "rows": 12, "ok": True, "none": None, "nested": {"a": [1, "b"]}}
    data = entry(index=3, fields=fields).canonical()
    quick = quick_parse(data)
    assert quick is not None and quick.fields == fields


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_verification_errors(junk):
    try:
        LedgerEntry.parse(junk)
    except LedgerVerificationError:
        pass


# -- receipts as JSON -----------------------------------------------------------------

HASH = hashlib.sha256(b"leaf").digest()


def receipt_json():
    return Receipt(3, 10, HASH, [HASH, HASH[::-1]], "note\n").to_json()


def test_receipt_json_round_trip():
    data = receipt_json()
    assert data == {
        "index": 3,
        "tree_size": 10,
        "leaf_hash": base64.b64encode(HASH).decode(),
        "proof": [base64.b64encode(HASH).decode(), base64.b64encode(HASH[::-1]).decode()],
        "checkpoint": "note\n",
    }
    assert json.loads(json.dumps(data)) == data
    receipt = Receipt.from_json(data)
    assert receipt == Receipt(3, 10, HASH, (HASH, HASH[::-1]), "note\n")
    assert isinstance(receipt.proof, tuple)


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"index": "3"},
        {"index": True},
        {"index": -1},
        {"tree_size": 1.5},
        {"leaf_hash": HASH.hex()},
        {"leaf_hash": base64.b64encode(HASH[:31]).decode()},
        {"leaf_hash": base64.b64encode(HASH).decode().rstrip("=")},
        {"proof": "not a list"},
        {"proof": [1]},
        {"proof": ["!!"]},
        {"proof": [base64.b64encode(HASH).decode()] * 65},
        {"checkpoint": None},
    ],
)
def test_receipt_from_json_validates(change):
    data = receipt_json() | change
    with pytest.raises(LedgerVerificationError, match="malformed receipt"):
        Receipt.from_json(data)


def test_receipt_from_json_requires_every_key():
    data = receipt_json()
    del data["proof"]
    with pytest.raises(LedgerVerificationError):
        Receipt.from_json(data)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=6), ASCII_HEAVY, max_size=4),
    index=st.integers(0, 2**53 - 1),
    prev=st.binary(min_size=32, max_size=32),
    stamped=st.booleans(),
)
def test_an_entry_spliced_by_the_committing_thread_is_the_entry(fields, index, prev, stamped):
    """Appenders canonicalise their fields; the leader splices index, prev, time and type."""
    from ledger._entry import prepare_event, splice_entry
    from ledger._events import thaw

    try:
        expected = LedgerEntry(index=index, type="job.x", time=TIME, prev=prev.hex(), fields=fields)
    except LedgerError:
        with pytest.raises(LedgerError):
            prepare_event("job.x", fields, TIME if stamped else None)
        return
    event = prepare_event("job.x", fields, TIME if stamped else None)
    spliced = splice_entry(event, index=index, prev=prev.hex(), time=TIME)
    assert spliced.canonical() == expected.canonical()
    assert spliced == LedgerEntry.parse(spliced.canonical())
    assert (spliced.index, spliced.type, spliced.time, spliced.prev) == (
        index,
        "job.x",
        TIME,
        prev.hex(),
    )
    assert thaw(spliced.fields) == thaw(expected.fields)


def test_splicing_refuses_what_an_entry_refuses():
    from ledger._entry import prepare_event, splice_entry

    event = prepare_event("t", {"a": 1}, None)
    for index, prev, time in [
        (-1, "0" * 64, TIME),
        (2**53, "0" * 64, TIME),
        (1, "0" * 63, TIME),
        (1, "A" * 64, TIME),
        (1, "0" * 64, "2026-11-22T10:00:00Z"),
        (1, "0" * 64, "2026-13-22T10:00:00.000000Z"),
    ]:
        with pytest.raises(LedgerError):
            splice_entry(event, index=index, prev=prev, time=time)
    big = prepare_event("t", {"a": "x" * (MAX_ENTRY_BYTES - 156)}, None)  # 5 bytes to spare
    with pytest.raises(LedgerError, match="larger"):
        splice_entry(big, index=10**15, prev="0" * 64, time=TIME)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=6), ASCII_HEAVY, max_size=4),
    index=st.integers(0, 2**53 - 1),
    prev=st.binary(min_size=32, max_size=32),
)
def test_the_committing_threads_splice_is_the_checked_splice(fields, index, prev):
    """splice_next skips only the checks its caller's index and leaf hash make redundant."""
    from ledger._entry import prepare_event, splice_entry, splice_next

    try:
        event = prepare_event("job.x", fields, None)
    except LedgerError:
        return
    checked = splice_entry(event, index=index, prev=prev.hex(), time=TIME)
    fast = splice_next(event, index, prev.hex(), TIME)
    assert fast.canonical() == checked.canonical()
    assert (fast.index, fast.type, fast.time, fast.prev) == (index, "job.x", TIME, prev.hex())
    assert fast.fields is checked.fields


def test_the_committing_threads_splice_still_refuses_bad_times_and_sizes():
    from ledger._entry import prepare_event, splice_next

    event = prepare_event("t", {"a": 1}, None)
    for time in ("2026-11-22T10:00:00Z", "2026-13-22T10:00:00.000000Z"):
        with pytest.raises(LedgerError, match="time"):
            splice_next(event, 1, "0" * 64, time)
    with pytest.raises(LedgerError, match="index"):
        splice_next(event, 2**53, "0" * 64, TIME)
    big = prepare_event("t", {"a": "x" * (MAX_ENTRY_BYTES - 156)}, None)  # 5 bytes to spare
    splice_next(big, 10**4, "0" * 64, TIME)
    with pytest.raises(LedgerError, match="larger"):
        splice_next(big, 10**15, "0" * 64, TIME)


@pytest.mark.parametrize(
    "fields",
    [
        {"a": {1, 2}},
        {"a": (1, 2)},
        {"a": b"raw"},
        {1: "int key"},
        {"a": datetime(2026, 1, 1, tzinfo=UTC)},
        {"a": 1.0},
        {"a": [0.5]},
        {"a": 2**53},
        {"a": "caf\u00e9", "b": "line\nbreak"},
        {"a": {"b": [1, {"c": None}]}, "z": True},
    ],
)
def test_preparing_an_event_agrees_with_building_the_entry(fields):
    """The appender-side fast path must accept and print exactly what LedgerEntry does."""
    from ledger._entry import prepare_event, splice_entry
    from ledger._events import thaw

    try:
        expected = LedgerEntry(index=5, type="t", time=TIME, prev="0" * 64, fields=fields)
    except LedgerError:
        with pytest.raises(LedgerError):
            prepare_event("t", fields, None)
        return
    spliced = splice_entry(prepare_event("t", fields, None), index=5, prev="0" * 64, time=TIME)
    assert spliced.canonical() == expected.canonical()
    assert thaw(spliced.fields) == thaw(expected.fields)
