"""Offline verification of a whole ledger folder, and an attack test for each defence.

Each tamper test edits ``ledger.sqlite`` directly, as an operator with disk access could,
and checks that :func:`verify_ledger` names the first bad entry (or the reason).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Checkpoint,
    Ledger,
    LedgerEntry,
    LedgerError,
    LedgerVerificationError,
    open_checkpoint,
    sign_checkpoint,
    stored_hash_index,
    verifier_key,
    verify_ledger,
    verify_receipt,
)

SIZE = 10
pytestmark = pytest.mark.usefixtures("verify_mode")


@pytest.fixture
def good(make_ledger) -> tuple[Path, str]:
    directory = make_ledger(SIZE)
    with Ledger.open(directory) as led:
        return directory, led.verifier_key


def sql(directory: Path, statement: str, *params) -> list[tuple]:
    with sqlite3.connect(directory / "ledger.sqlite") as db:
        rows = db.execute(statement, params).fetchall()
    db.close()
    return rows


def raw(directory: Path, index: int) -> bytes:
    return sql(directory, "SELECT data FROM entries WHERE idx = ?", index)[0][0]


def put(directory: Path, index: int, data: bytes) -> None:
    sql(directory, "UPDATE entries SET data = ? WHERE idx = ?", data, index)


def failure(directory: Path, key: str, **kwargs) -> LedgerVerificationError:
    with pytest.raises(LedgerVerificationError) as raised:
        verify_ledger(directory, key, **kwargs)
    return raised.value


# -- the good case --------------------------------------------------------------------


def test_a_good_ledger_verifies_and_reports_progress(good):
    directory, key = good
    calls: list[tuple[int, int]] = []
    report = verify_ledger(directory, key, progress=lambda done, total: calls.append((done, total)))
    assert report.size == SIZE
    assert report.checkpoint == Checkpoint(report.checkpoint.origin, SIZE, report.root_hash)
    with Ledger.open(directory) as led:
        assert report.root_hash == led.root()
    assert calls[0] == (0, SIZE) and calls[-1] == (SIZE, SIZE)


def test_an_empty_ledger_verifies(make_ledger, signing_key):
    directory = make_ledger(0)
    report = verify_ledger(
        directory, verifier_key("ledger.test.example/audit", signing_key.public_key())
    )
    assert report.size == 0


def test_verification_opens_read_only(good):
    directory, key = good
    before = (directory / "ledger.sqlite").read_bytes()
    verify_ledger(directory, key)
    assert (directory / "ledger.sqlite").read_bytes() == before


def test_a_trusted_checkpoint_from_earlier_must_be_a_prefix(good, signing_key):
    directory, key = good
    with Ledger.open(directory, signing_key=signing_key) as led:
        earlier = led.checkpoint()
        led.append("later", {})
    assert verify_ledger(directory, key, trusted_checkpoint=earlier).size == SIZE + 1
    with pytest.raises(LedgerVerificationError):
        verify_ledger(directory, key, trusted_checkpoint=earlier.replace("\n10\n", "\n9\n"))


def test_missing_folder_and_bad_key_are_caller_errors(tmp_path, good):
    directory, _ = good
    with pytest.raises(LedgerError) as raised:
        verify_ledger(tmp_path / "nothing", good[1])
    assert not isinstance(raised.value, LedgerVerificationError)
    with pytest.raises(LedgerError) as raised:
        verify_ledger(directory, "not a key")
    assert not isinstance(raised.value, LedgerVerificationError)


# -- tampering with entries -----------------------------------------------------------


@pytest.mark.parametrize("index", [0, 3, SIZE - 1])
def test_one_changed_byte_that_breaks_the_json_names_the_entry(good, index):
    directory, key = good
    data = bytearray(raw(directory, index))
    data[0] = ord("[")
    put(directory, index, bytes(data))
    assert failure(directory, key).index == index


@pytest.mark.parametrize("index", [0, 3, SIZE - 1])
def test_one_changed_byte_that_keeps_valid_json_names_the_entry(good, index):
    # Still a canonical entry: only the signed checkpoints can tell which entry changed.
    directory, key = good
    data = raw(directory, index)
    altered = data.replace(b"event-", b"evfnt-")
    assert altered != data and LedgerEntry.parse(altered).index == index
    put(directory, index, altered)
    error = failure(directory, key)
    assert error.index == index
    assert "signed" in error.reason


def test_every_single_byte_change_is_detected_at_that_entry(good):
    directory, key = good
    original = raw(directory, 4)
    for position in range(0, len(original), 7):
        data = bytearray(original)
        data[position] ^= 0x01
        put(directory, 4, bytes(data))
        assert failure(directory, key).index == 4, position
    put(directory, 4, original)
    verify_ledger(directory, key)


def test_changed_prev_hash_breaks_the_chain(good):
    directory, key = good
    entry = LedgerEntry.parse(raw(directory, 5))
    forged = LedgerEntry(5, entry.type, entry.time, "ab" * 32, entry.fields)
    put(directory, 5, forged.canonical())
    error = failure(directory, key)
    assert error.index == 5
    assert str(error).startswith("entry 5: leaf data does not match the chain (prev hash abab")


def test_a_non_canonical_rewrite_of_the_same_entry_is_rejected(good):
    directory, key = good
    put(directory, 2, raw(directory, 2).replace(b'"seq":2', b'"seq": 2'))
    error = failure(directory, key)
    assert error.index == 2 and "canonical" in error.reason


def test_a_deleted_entry_is_named(good):
    directory, key = good
    sql(directory, "DELETE FROM entries WHERE idx = 6")
    error = failure(directory, key)
    assert error.index == 6 and "missing" in error.reason


def test_swapped_entries_name_the_first(good):
    directory, key = good
    two, six = raw(directory, 2), raw(directory, 6)
    put(directory, 2, six)
    put(directory, 6, two)
    error = failure(directory, key)
    assert error.index == 2 and "entry 6" in error.reason


def test_a_truncated_tail_is_detected(good):
    directory, key = good
    sql(directory, "DELETE FROM entries WHERE idx >= 7")
    error = failure(directory, key)
    assert error.index == 7 and "truncated" in error.reason


def test_truncation_hiding_its_checkpoints_needs_a_trusted_checkpoint(good):
    directory, key = good
    with Ledger.open(directory) as led:
        kept_by_auditor = led.checkpoint()
        stored_before = led.root(7)
    # Roll the whole storage back to size 7: entries, stored hashes and checkpoints.
    sql(directory, "DELETE FROM entries WHERE idx >= 7")
    sql(directory, "DELETE FROM checkpoints WHERE size > 7")
    sql(directory, "DELETE FROM hashes WHERE idx >= 11")  # stored_hash_count(7) == 11
    assert verify_ledger(directory, key).root_hash == stored_before  # self-consistent...
    error = failure(directory, key, trusted_checkpoint=kept_by_auditor)
    assert error.index == 7 and "trusted" in error.reason  # ...but not what was promised


def test_an_unsigned_extra_entry_is_detected(good, signing_key):
    directory, key = good
    last = LedgerEntry.parse(raw(directory, SIZE - 1))
    extra = LedgerEntry(SIZE, "sneaky", last.time, last.leaf_hash.hex(), {})
    sql(directory, "INSERT INTO entries (idx, data) VALUES (?, ?)", SIZE, extra.canonical())
    error = failure(directory, key)
    assert error.index == SIZE and "not covered" in error.reason


def test_a_rewritten_history_fails_a_trusted_checkpoint_even_if_re_signed(
    make_ledger, signing_key, tmp_path
):
    # The operator holds the key and rebuilds the ledger with different history: the
    # stored data is self-consistent, only an earlier checkpoint shows the fork.
    directory = make_ledger(SIZE, name="real")
    with Ledger.open(directory) as led:
        kept_by_auditor, key = led.checkpoint(), led.verifier_key
    forged = tmp_path / "forged"
    with Ledger.create(forged, origin="ledger.test.example/audit", signing_key=signing_key) as led:
        for i in range(SIZE + 2):
            led.append("test.event", {"seq": i, "note": "rewritten"})
    assert verify_ledger(forged, key).size == SIZE + 2
    error = failure(forged, key, trusted_checkpoint=kept_by_auditor)
    assert error.index is None and "rewritten" in error.reason


# -- tampering with checkpoints and stored hashes -------------------------------------


def test_a_checkpoint_signed_by_another_key_is_refused(good):
    directory, key = good
    (note,) = sql(directory, "SELECT note FROM checkpoints WHERE size = ?", SIZE)[0]
    checkpoint = open_checkpoint(note, key)
    impostor = Ed25519PrivateKey.generate()
    forged = sign_checkpoint(checkpoint, key_name=key.split("+")[0], private_key=impostor)
    sql(directory, "UPDATE checkpoints SET note = ? WHERE size = ?", forged, SIZE)
    error = failure(directory, key)
    assert error.index is None
    # Another key has another key ID, so its signature is ignored as unknown.
    assert error.reason.startswith("latest checkpoint:") and "no signature" in error.reason


def test_a_checkpoint_by_an_unknown_key_name_is_refused(good):
    directory, key = good
    (note,) = sql(directory, "SELECT note FROM checkpoints WHERE size = ?", SIZE)[0]
    impostor = Ed25519PrivateKey.generate()
    forged = sign_checkpoint(
        open_checkpoint(note, key), key_name="evil.example", private_key=impostor
    )
    sql(directory, "UPDATE checkpoints SET note = ? WHERE size = ?", forged, SIZE)
    error = failure(directory, key)
    assert error.index is None and "no signature" in error.reason


def test_a_missing_latest_checkpoint_is_detected(good):
    directory, key = good
    sql(directory, "DELETE FROM checkpoints WHERE size = ?", SIZE)
    error = failure(directory, key)
    assert error.index == SIZE - 1 and "not covered" in error.reason


def test_no_checkpoint_at_all_is_detected(good):
    directory, key = good
    sql(directory, "DELETE FROM checkpoints")
    assert "no signed checkpoint" in failure(directory, key).reason


def test_a_tampered_stored_hash_is_detected(good):
    directory, key = good
    sql(directory, "UPDATE hashes SET hash = ? WHERE idx = 6", b"\x00" * 32)  # node (2, 0)
    error = failure(directory, key)
    assert error.index is None and "stored hash 6 (level 2, node 0)" in error.reason
    with Ledger.open(directory) as led:  # and proofs served from it do not verify
        with pytest.raises(LedgerVerificationError):
            verify_receipt(led.receipt(5), led.raw_entry(5), key)  # its proof holds (2, 0)


def test_a_crafted_table_order_cannot_hide_swapped_stored_hashes(good):
    # The verifier concatenates a range of stored hashes inside SQLite, whose order is
    # not promised. An attacker holding the file rebuilds ``hashes`` without the rowid
    # key, storing nodes 6 and 7 swapped but in a row order that reads back as before.
    directory, key = good
    rows = sql(directory, "SELECT idx, hash FROM hashes ORDER BY idx")
    swapped = {6: rows[7][1], 7: rows[6][1]}
    statements = [
        "ALTER TABLE hashes RENAME TO old_hashes",
        "CREATE TABLE hashes (idx INTEGER NOT NULL, hash BLOB NOT NULL)",
    ]
    with sqlite3.connect(directory / "ledger.sqlite") as db:
        for statement in statements:
            db.execute(statement)
        for idx, digest in rows:
            if idx == 6:  # row order 6, 7 carries the true hashes, under swapped indices
                db.execute("INSERT INTO hashes VALUES (7, ?)", (swapped[7],))
            elif idx == 7:
                db.execute("INSERT INTO hashes VALUES (6, ?)", (swapped[6],))
            else:
                db.execute("INSERT INTO hashes VALUES (?, ?)", (idx, digest))
        db.execute("DROP TABLE old_hashes")
    db.close()
    assert [r[1] for r in sql(directory, "SELECT idx, hash FROM hashes")] == [r[1] for r in rows]
    error = failure(directory, key)
    assert error.index is None and "stored hash 6" in error.reason


def test_a_tampered_stored_hash_on_the_tree_edge_stops_appends(good, signing_key):
    directory, _ = good
    # Node (3, 0) covers leaves 0-7: the root of size 10 is read through it.
    sql(
        directory, "UPDATE hashes SET hash = ? WHERE idx = ?", b"\x00" * 32, stored_hash_index(3, 0)
    )
    with Ledger.open(directory, signing_key=signing_key) as led:
        with pytest.raises(LedgerError, match="differs from the signed checkpoint"):
            led.append("more", {})


def test_appends_refuse_storage_without_a_checkpoint_for_its_size(good, signing_key):
    directory, _ = good
    sql(directory, "DELETE FROM checkpoints WHERE size = ?", SIZE)
    with Ledger.open(directory, signing_key=signing_key) as led:
        with pytest.raises(LedgerError, match="no signed checkpoint"):
            led.append("more", {})
        assert led.size == SIZE


def test_appends_refuse_to_chain_onto_an_altered_last_entry(good, signing_key):
    directory, _ = good
    put(directory, SIZE - 1, raw(directory, SIZE - 1).replace(b"event-", b"evfnt-"))
    with Ledger.open(directory, signing_key=signing_key) as led:
        with pytest.raises(LedgerError, match="differs from its hash"):
            led.append("more", {})
