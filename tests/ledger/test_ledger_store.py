"""The Ledger: appends, reopening, proofs, receipts, concurrency and crash safety."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ledger._ledger
from ledger import (
    Ledger,
    LedgerEntry,
    LedgerError,
    LedgerVerificationError,
    Receipt,
    leaf_hash,
    open_checkpoint,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
    verify_ledger,
    verify_receipt,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "ledger.test.example/audit"  # as in conftest.make_ledger


def test_create_append_and_reopen_keep_everything(tmp_path, signing_key):
    directory = tmp_path / "audit"
    with Ledger.create(directory, origin=ORIGIN, signing_key=signing_key) as led:
        assert led.size == 0
        assert open_checkpoint(led.checkpoint(), led.verifier_key).size == 0
        appended = [led.append("job.run", {"n": i}) for i in range(12)]
        root, note, key = led.root(), led.checkpoint(), led.verifier_key
    assert (directory / "ledger.sqlite").is_file()
    with Ledger.open(directory) as reopened:
        assert reopened.size == 12
        assert reopened.entries(0, 12) == appended
        assert reopened.root() == root == root_from_leaf_hashes([e.leaf_hash for e in appended])
        assert reopened.checkpoint() == note
        assert reopened.verifier_key == key
        assert reopened.origin == ORIGIN
        assert [reopened.raw_entry(i) for i in range(12)] == [e.canonical() for e in appended]


def test_appended_entries_are_chained(make_ledger):
    with Ledger.open(make_ledger(5)) as led:
        entries = led.entries(0, 5)
    assert [e.index for e in entries] == list(range(5))
    assert entries[0].prev == "0" * 64
    for previous, current in itertools.pairwise(entries):
        assert current.prev == previous.leaf_hash.hex()
    assert entries[3].fields == {"seq": 3, "note": "event-3"}


def test_every_append_signs_a_checkpoint_for_its_size(make_ledger, signing_key):
    directory = make_ledger(6)
    with Ledger.open(directory) as led:
        key = led.verifier_key
        roots = [led.root(size) for size in range(7)]
    with sqlite3.connect(directory / "ledger.sqlite") as db:
        notes = dict(db.execute("SELECT size, note FROM checkpoints"))
    assert sorted(notes) == list(range(7))
    for size, note in notes.items():
        checkpoint = open_checkpoint(note, key)
        assert (checkpoint.origin, checkpoint.size, checkpoint.root_hash) == (
            ORIGIN,
            size,
            roots[size],
        )


def test_storage_is_wal_with_one_file(make_ledger):
    directory = make_ledger(1)
    with sqlite3.connect(directory / "ledger.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {p.name for p in directory.iterdir()} <= {
        "ledger.sqlite",
        "ledger.sqlite-wal",
        "ledger.sqlite-shm",
    }


def test_time_is_rfc3339_utc(tmp_path, signing_key):
    with Ledger.create(tmp_path / "l", origin=ORIGIN, signing_key=signing_key) as led:
        plus_two = timezone(timedelta(hours=2))
        e = led.append("t", {}, time=datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=plus_two))
        assert e.time == "2026-11-22T10:00:00.123456Z"
        before = datetime.now(UTC)
        now = led.append("t", {})
        parsed = datetime.strptime(now.time, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        assert before - timedelta(seconds=1) <= parsed <= datetime.now(UTC)
        with pytest.raises(LedgerError):
            led.append("t", {}, time=datetime(2026, 1, 1))  # naive: ambiguous
        assert led.size == 2


def test_invalid_appends_write_nothing(tmp_path, signing_key):
    with Ledger.create(tmp_path / "l", origin=ORIGIN, signing_key=signing_key) as led:
        led.append("ok", {"a": 1})
        for bad_type, bad_fields in (("has space", {}), ("ok", {"x": object()}), ("ok", [])):
            with pytest.raises(LedgerError):
                led.append(bad_type, bad_fields)  # type: ignore[arg-type]
        assert led.size == 1
        led.append("ok", {"a": 2})
        assert [e.index for e in led.entries(0, 2)] == [0, 1]


def test_a_failure_mid_append_rolls_everything_back(tmp_path, signing_key, monkeypatch):
    directory = tmp_path / "l"
    with Ledger.create(directory, origin=ORIGIN, signing_key=signing_key) as led:
        led.append("ok", {"a": 1})
        key = led.verifier_key

        def explode(*args, **kwargs):
            raise RuntimeError("power cut while signing")

        monkeypatch.setattr(ledger._ledger, "sign_checkpoint_as", explode)
        with pytest.raises(RuntimeError):
            led.append("lost", {"a": 2})
        monkeypatch.undo()
        assert led.size == 1
        led.append("ok", {"a": 3})
    assert verify_ledger(directory, key).size == 2


@pytest.mark.parametrize("count", [0, 1, 63, 64, 65, 130])
def test_runs_of_rows_are_inserted_whole_across_statement_chunks(count):
    """insert_run writes multi-row INSERTs of up to ROWS_PER_INSERT rows: every value
    lands at its own index, in order, whatever the chunking."""
    from ledger import _store

    db = sqlite3.connect(":memory:", isolation_level=None)
    for statement in _store.SCHEMA:
        db.execute(statement)
    values = [bytes([i % 256]) * 32 for i in range(count)]
    _store.insert_run(db, "hashes", 7, values)
    _store.insert_run(db, "entries", 3, [b"entry %d" % i for i in range(count)])
    assert db.execute("SELECT idx, hash FROM hashes ORDER BY idx").fetchall() == [
        (7 + i, value) for i, value in enumerate(values)
    ]
    assert db.execute("SELECT idx, data FROM entries ORDER BY idx").fetchall() == [
        (3 + i, b"entry %d" % i) for i in range(count)
    ]
    _store.insert_run(db, "hashes", 7 + count, [b"z" * 32])
    with pytest.raises(LedgerError, match="appending"):  # an index taken twice
        _store.insert_run(db, "hashes", 6 + count, [b"x" * 32, b"y" * 32])


@pytest.mark.parametrize("count", [1, 63, 64, 65, 129])
def test_bulk_appends_across_statement_chunks_verify(tmp_path, signing_key, count):
    directory = tmp_path / "l"
    with Ledger.create(directory, origin=ORIGIN, signing_key=signing_key) as led:
        led.append("first", {"n": -1})  # the batch starts at an odd index
        entries = led.append_many([("t", {"n": n}) for n in range(count)])
        assert [e.index for e in entries] == list(range(1, count + 1))
        assert led.entries(1, count + 1) == entries
        key = led.verifier_key
    assert verify_ledger(directory, key).size == count + 1


def test_create_refuses_an_existing_ledger_and_bad_arguments(tmp_path, signing_key):
    directory = tmp_path / "l"
    Ledger.create(directory, origin=ORIGIN, signing_key=signing_key).close()
    with pytest.raises(LedgerError, match="already exists"):
        Ledger.create(directory, origin=ORIGIN, signing_key=signing_key)
    for origin, key_name in (
        ("", None),
        ("two\nlines", None),
        ("has space", None),
        (ORIGIN, "a+b"),
    ):
        with pytest.raises(LedgerError):
            Ledger.create(
                tmp_path / "other", origin=origin, signing_key=signing_key, key_name=key_name
            )
    with pytest.raises(LedgerError):
        Ledger.create(tmp_path / "x", origin=ORIGIN, signing_key="not a key")  # type: ignore[arg-type]


def test_key_name_defaults_to_origin_and_can_differ(tmp_path, signing_key):
    with Ledger.create(tmp_path / "a", origin=ORIGIN, signing_key=signing_key) as a:
        assert a.verifier_key.startswith(ORIGIN + "+")
    with Ledger.create(
        tmp_path / "b", origin="origin with spaces", signing_key=signing_key, key_name="k.example"
    ) as b:
        assert b.verifier_key.startswith("k.example+")
        b.append("e", {})
        assert open_checkpoint(b.checkpoint(), b.verifier_key).origin == "origin with spaces"


def test_open_refuses_missing_ledger_and_foreign_key(tmp_path, make_ledger):
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(tmp_path / "nothing")
    directory = make_ledger(1)
    with pytest.raises(LedgerError, match="not this ledger's key"):
        Ledger.open(directory, signing_key=Ed25519PrivateKey.generate())


def test_read_only_and_closed_ledgers_refuse_to_write(make_ledger, signing_key):
    directory = make_ledger(2)
    with Ledger.open(directory) as reader:
        with pytest.raises(LedgerError, match="read-only"):
            reader.append("x", {})
        assert reader.size == 2
    with pytest.raises(LedgerError, match="closed"):
        _ = reader.size
    writer = Ledger.open(directory, signing_key=signing_key)
    writer.append("x", {})
    writer.close()
    writer.close()  # closing twice is harmless
    with pytest.raises(LedgerError, match="closed"):
        writer.append("x", {})


def test_reads_outside_the_ledger_are_ledger_errors(make_ledger):
    with Ledger.open(make_ledger(3)) as led:
        for call in (
            lambda: led.entry(3),
            lambda: led.raw_entry(-1),
            lambda: led.entries(2, 1),
            lambda: led.entries(0, 4),
            lambda: led.root(4),
            lambda: led.inclusion_proof(3, 3),
            lambda: led.inclusion_proof(0, 4),
            lambda: led.consistency_proof(0, 3),
            lambda: led.consistency_proof(2, 4),
            lambda: led.receipt(3),
        ):
            with pytest.raises(LedgerError):
                call()
        assert led.entries(1, 1) == []
        assert [e.index for e in led.entries(1, 3)] == [1, 2]


def test_all_proofs_from_the_ledger_verify(make_ledger):
    with Ledger.open(make_ledger(20)) as led:
        roots = [led.root(size) for size in range(21)]
        leaves = [e.leaf_hash for e in led.entries(0, 20)]
        for size in range(1, 21):
            assert roots[size] == root_from_leaf_hashes(leaves[:size])
            for index in range(size):
                verify_inclusion(
                    leaves[index], index, size, led.inclusion_proof(index, size), roots[size]
                )
            for old in range(1, size + 1):
                verify_consistency(
                    old, size, roots[old], roots[size], led.consistency_proof(old, size)
                )


def test_receipts_verify_offline(make_ledger):
    with Ledger.open(make_ledger(9)) as led:
        key = led.verifier_key
        receipts = [(led.receipt(i), led.raw_entry(i)) for i in range(9)]
    for receipt, data in receipts:
        checkpoint = verify_receipt(receipt, data, key)
        assert checkpoint.size == 9 and checkpoint.origin == ORIGIN
        # It survives a JSON trip, as an enterprise would store it.
        verify_receipt(Receipt.from_json(receipt.to_json()), data, key)


def test_receipts_reject_the_wrong_entry_key_or_proof(make_ledger, tmp_path, signing_key):
    with Ledger.open(make_ledger(9)) as led:
        key = led.verifier_key
        receipt, data, other = led.receipt(4), led.raw_entry(4), led.raw_entry(5)
    with pytest.raises(LedgerVerificationError) as raised:
        verify_receipt(receipt, other, key)
    assert raised.value.index == 4
    with pytest.raises(LedgerVerificationError):
        verify_receipt(receipt, data.replace(b"event-4", b"event-X"), key)
    stranger = Ed25519PrivateKey.generate()
    with Ledger.create(tmp_path / "s", origin=ORIGIN, signing_key=stranger) as s:
        with pytest.raises(LedgerVerificationError, match="no signature"):
            verify_receipt(receipt, data, s.verifier_key)
    moved = Receipt(5, receipt.tree_size, leaf_hash(data), receipt.proof, receipt.checkpoint)
    with pytest.raises(LedgerVerificationError):
        verify_receipt(moved, data, key)
    bent = Receipt(
        4, 9, receipt.leaf_hash, [receipt.proof[0][::-1], *receipt.proof[1:]], receipt.checkpoint
    )
    with pytest.raises(LedgerVerificationError):
        verify_receipt(bent, data, key)
    wrong_size = Receipt(4, 8, receipt.leaf_hash, receipt.proof, receipt.checkpoint)
    with pytest.raises(LedgerVerificationError, match="tree size"):
        verify_receipt(wrong_size, data, key)


def test_eight_threads_get_contiguous_unique_indexes(make_ledger, signing_key):
    directory = make_ledger(0)
    got: list[int] = []
    errors: list[BaseException] = []
    with Ledger.open(directory, signing_key=signing_key) as led:

        def work(worker: int) -> None:
            try:
                for i in range(50):
                    got.append(led.append("thread", {"worker": worker, "i": i}).index)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert sorted(got) == list(range(400))
        entries = led.entries(0, 400)
        key = led.verifier_key
    for worker in range(8):
        mine = [e.fields["i"] for e in entries if e.fields["worker"] == worker]
        assert mine == list(range(50))  # each thread's appends in its own order
    assert verify_ledger(directory, key).size == 400


APPENDER = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ledger import Ledger

key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
count = int(sys.argv[4])
with Ledger.open(Path(sys.argv[1]), signing_key=key) as led:
    print("ready", flush=True)
    sys.stdin.readline()  # start together, so the appends really interleave
    i = 0
    while count < 0 or i < count:
        led.append("process", {"process": sys.argv[3], "i": i})
        i += 1
"""


def start_appender(directory: Path, key: Ed25519PrivateKey, name: str, count: int):
    seed = key.private_bytes_raw().hex()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(directory), seed, name, str(count)],
        env=env,
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def release(*processes) -> None:
    """Wait until every appender has opened the ledger, then let them all go at once."""
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.close()


def finish(process) -> int:
    code = process.wait(timeout=60)
    process.stdout.close()
    return code


def test_two_processes_append_concurrently(make_ledger, signing_key):
    directory = make_ledger(0)
    processes = [start_appender(directory, signing_key, name, 100) for name in ("a", "b")]
    release(*processes)
    assert [finish(process) for process in processes] == [0, 0]
    with Ledger.open(directory) as led:
        entries = led.entries(0, led.size)
        key = led.verifier_key
    assert [e.index for e in entries] == list(range(200))
    for name in ("a", "b"):
        assert [e.fields["i"] for e in entries if e.fields["process"] == name] == list(range(100))
    assert verify_ledger(directory, key).size == 200


def test_killing_a_writer_mid_stream_leaves_a_valid_ledger(make_ledger, signing_key):
    directory = make_ledger(3)
    process = start_appender(directory, signing_key, "doomed", -1)
    release(process)
    # Leaves as soon as 30 are in; the minute is for a loaded machine's slow fsyncs.
    deadline = time.monotonic() + 60
    with Ledger.open(directory) as led:
        while led.size < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        key = led.verifier_key
    process.send_signal(signal.SIGKILL)
    assert finish(process) == -signal.SIGKILL
    report = verify_ledger(directory, key)
    assert report.size >= 30
    with Ledger.open(directory, signing_key=signing_key) as led:
        assert led.append("after", {}).index == report.size
    assert verify_ledger(directory, key).size == report.size + 1


def test_entry_and_parse_agree(make_ledger):
    with Ledger.open(make_ledger(2)) as led:
        assert led.entry(1) == LedgerEntry.parse(led.raw_entry(1))
