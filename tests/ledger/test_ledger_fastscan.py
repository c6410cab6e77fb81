"""The whole-chunk fast path of verification accepts exactly what the per-entry path does.

``quick_chunk`` may only ever *accept* a chunk the per-entry loop (``quick_parse`` or the
reference parse, the index and the chain) would accept in full, with the same leaves and
the same parsed fields; anything else must go to that loop, which names the first bad
entry. So: build a valid chain, damage it in the ways that matter, compare.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import LedgerEntry, LedgerError, LedgerVerificationError
from ledger._events import thaw
from ledger._fastscan import quick_chunk
from ledger._scan import check_entry
from tests.ledger.test_ledger_entry import ASCII_HEAVY, TIME, TRICKY

ZERO = "0" * 64


def chain(fields: list[dict[str, object]], start: int, first_prev: str) -> list[bytes]:
    """Canonical entries ``start, start + 1, ...``, each naming its predecessor."""
    blobs, prev = [], first_prev
    for offset, value in enumerate(fields):
        data = LedgerEntry(
            index=start + offset, type="t", time=TIME, prev=prev, fields=value
        ).canonical()
        blobs.append(data)
        prev = hashlib.sha256(b"\x00" + data).hexdigest()
    return blobs


def per_entry(blobs: list[bytes], start: int) -> list[bytes] | None:
    """The slow path: every entry checked on its own and against its predecessor."""
    prev, leaves = None, []
    for position, data in enumerate(blobs, start=start):
        try:
            check_entry(data, position, prev)
        except LedgerVerificationError:
            return None
        leaf = hashlib.sha256(b"\x00" + data).digest()
        leaves.append(leaf)
        prev = leaf.hex()
    return leaves


SIMPLE = st.dictionaries(st.text(max_size=6), ASCII_HEAVY, max_size=4)
DAMAGE = st.sampled_from(["none", "edit", "swap", "drop", "index", "prev", "str", "space"])


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(SIMPLE, min_size=1, max_size=6),
    start=st.integers(0, 2**40),
    damage=DAMAGE,
    where=st.integers(0, 5),
    edit=st.tuples(st.integers(0, 400), st.binary(max_size=3) | TRICKY, st.integers(0, 3)),
)
def test_a_chunk_is_accepted_whole_only_if_every_entry_passes_alone(
    fields, start, damage, where, edit
):
    try:
        blobs: list = chain(fields, start, ZERO)
    except LedgerError:  # fields the ledger refuses (integers beyond 2^53 - 1)
        return
    at = where % len(blobs)
    if damage == "edit":
        position, insert, cut = edit
        data = blobs[at]
        blobs[at] = data[:position] + insert + data[position + cut :]
    elif damage == "swap" and len(blobs) > 1:
        blobs[0], blobs[-1] = blobs[-1], blobs[0]
    elif damage == "drop" and len(blobs) > 1:
        del blobs[at]
    elif damage == "index":
        blobs[at] = blobs[at].replace(b'"index":%d' % (start + at), b'"index":%d' % (start + 1))
    elif damage == "prev" and at > 0:
        spot = blobs[at].index(b'"prev":"') + 8
        digit = b"1" if blobs[at][spot : spot + 1] != b"1" else b"2"
        blobs[at] = blobs[at][:spot] + digit + blobs[at][spot + 1 :]
    elif damage == "space":  # still valid JSON, same values: only the canonical check sees it
        blobs[at] = blobs[at].replace(b'"fields":', b'"fields": ', 1)
    elif damage == "str":
        blobs[at] = blobs[at].decode("ascii", "replace")
    quick = quick_chunk(blobs, start)
    if quick is None:
        return  # the per-entry loop decides (it may accept: the fast path is conservative)
    slow = per_entry(blobs, start)
    assert slow is not None, "the fast path accepted a chunk the per-entry path refuses"
    leaves, entries = quick
    assert leaves == slow
    for data, parsed in zip(blobs, entries, strict=True):
        reference = LedgerEntry.parse(data)
        assert rfc8785.dumps(json.loads(data)) == data
        assert (parsed.index, parsed.type, parsed.time, parsed.prev) == (
            reference.index,
            reference.type,
            reference.time,
            reference.prev,
        )
        assert thaw(parsed.fields) == thaw(reference.fields)


def test_typical_chunks_take_the_fast_path():
    """The common case must actually be fast: plain fields, and nested ones (the sandbox's
    signed requests and attestations nest objects)."""
    plain = [{"job_id": f"job_{i}", "n": i, "ok": True, "note": None} for i in range(50)]
    nested = [{"request": {"a": [1, "x", {"b": False}]}, "i": i} for i in range(50)]
    for fields in (plain, nested):
        blobs = chain(fields, 7, "ab" * 32)
        quick = quick_chunk(blobs, 7)
        assert quick is not None
        assert quick[0] == per_entry(blobs, 7)


def test_a_float_or_unsafe_integer_anywhere_leaves_the_chunk_to_the_slow_path():
    for bad in (0.5, 1e21, [1, {"x": 1.5}]):
        blobs = chain([{"a": 1}, {"deep": {"v": bad}}, {"a": 2}], 0, ZERO)
        assert quick_chunk(blobs, 0) is None


@pytest.mark.parametrize(
    "number", [b"9007199254740992", b"-9007199254740992", b"12345678901234567890123"]
)
def test_an_unsafe_integer_anywhere_leaves_the_chunk_to_the_slow_path(number):
    """Hand-made (no entry can be created with one): directly in the fields, in an array,
    in a nested object. The decoder takes any integer; only the walk refuses these."""
    for value in (number, b"[1," + number + b"]", b'{"y":' + number + b"}"):
        blobs = chain([{"a": 1}, {"a": 2}, {"x": "PLACEHOLDER"}], 0, ZERO)
        blobs[-1] = blobs[-1].replace(b'"PLACEHOLDER"', value)  # the last: nobody names it
        assert quick_chunk(blobs, 0) is None
        assert per_entry(blobs, 0) is None


def test_long_digit_runs_that_are_no_unsafe_number_keep_the_fast_path():
    """The byte scan for numbers of 16 digits or more also fires on strings and on the
    largest safe integer; the walk then accepts them."""
    fields = [{"note": "at:12345678901234567890"}, {"n": 2**53 - 1}, {"v": [-(2**53) + 1]}]
    blobs = chain(fields, 0, ZERO)
    quick = quick_chunk(blobs, 0)
    assert quick is not None
    assert quick[0] == per_entry(blobs, 0)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d.replace(b'"fields":', b'"fields" :', 1),  # whitespace
        lambda d: b'{"type":"t",' + d[1:].replace(b',"type":"t"', b""),  # key order
        lambda d: d.replace(b'"a":1', b'"a":1.0', 1),  # another spelling of the number
        lambda d: d.replace(b'"a":1', b'"a":1,"a":1', 1),  # a duplicate key
        lambda d: d.replace(b'"t"}', b'"t","extra":0}', 1),  # an unknown key
    ],
)
def test_a_non_canonical_entry_anywhere_leaves_the_chunk_to_the_slow_path(spoil):
    blobs = chain([{"a": 1}] * 3, 0, ZERO)
    blobs[-1] = spoil(blobs[-1])  # the last: no successor names its hash
    assert blobs[-1] != chain([{"a": 1}] * 3, 0, ZERO)[-1]
    assert quick_chunk(blobs, 0) is None
    assert per_entry(blobs, 0) is None
