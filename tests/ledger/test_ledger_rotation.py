"""Ledger key rotation: the new key signs alongside the old for an overlap, both changes are
ledger entries, and verifiers accept exactly the key set they were configured with."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Checkpoint,
    Ledger,
    LedgerError,
    LedgerVerificationError,
    open_checkpoint,
    sign_checkpoint,
    verifier_key,
    verify_ledger,
)
from tests.ledger.conftest import ORIGIN

OLD = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))  # the conftest signing key
NEW = Ed25519PrivateKey.from_private_bytes(bytes(range(200, 232)))
K_OLD = verifier_key(ORIGIN, OLD.public_key())
K_NEW = verifier_key(ORIGIN, NEW.public_key())


def _signers(note: str) -> int:
    return len(note.split("\n\n", 1)[1].splitlines())


@pytest.fixture
def rotated(tmp_path: Path) -> Path:
    """A ledger that went through a whole rotation: old only, overlap, new only."""
    directory = tmp_path / "l"
    with Ledger.create(directory, origin=ORIGIN, signing_key=OLD) as log:
        log.append("t", {"phase": "old"})
    with Ledger.open(directory, signing_key=OLD) as log:
        added = log.add_signing_key(NEW)
        assert (added.type, added.fields["verifier_key"]) == ("ledger.key_added", K_NEW)
        log.append("t", {"phase": "overlap"})
    with Ledger.open(directory, signing_key=[OLD, NEW]) as log:
        assert log.verifier_keys == [K_OLD, K_NEW]
        retired = log.retire_signing_key(K_OLD)
        assert (retired.type, retired.fields["verifier_key"]) == ("ledger.key_retired", K_OLD)
    with Ledger.open(directory, signing_key=NEW) as log:
        log.append("t", {"phase": "new"})
    return directory


def test_checkpoints_are_signed_by_every_key_active_at_the_time(rotated: Path):
    with Ledger.open(rotated) as log:
        notes = [log.checkpoint_at(size) for size in range(log.size + 1)]
        types = [e.type for e in log.entries(0, log.size)]
    assert types == ["t", "ledger.key_added", "t", "ledger.key_retired", "t"]
    # sizes 0-1 old key; 2 (the key_added commit) to 4 (the key_retired commit) both; 5 new
    assert [_signers(n) for n in notes] == [1, 1, 2, 2, 2, 1]
    for note in notes[:5]:
        open_checkpoint(note, K_OLD)  # holders of the old key follow up to the retirement
    for note in notes[2:]:
        open_checkpoint(note, K_NEW)


def test_a_configured_key_set_verifies_across_the_rotation(rotated: Path):
    assert verify_ledger(rotated, [K_OLD, K_NEW]).size == 5
    assert verify_ledger(rotated, K_NEW).size == 5


def test_an_auditor_with_only_the_old_key_follows_the_rotation(rotated: Path):
    """The new key is trusted on the old key's word: the old key signed the checkpoint
    covering the ledger.key_added entry."""
    report = verify_ledger(rotated, K_OLD)
    assert report.size == 5 and report.checkpoint.size == 5


def _resign(directory: Path, from_size: int, *keys: Ed25519PrivateKey) -> None:
    """Replace the checkpoints for sizes >= from_size by ones signed by ``keys`` only."""
    with sqlite3.connect(directory / "ledger.sqlite") as db:
        for size, note in db.execute(
            "SELECT size, note FROM checkpoints WHERE size >= ?", (from_size,)
        ).fetchall():
            checkpoint = open_checkpoint(note, [K_OLD, K_NEW])
            body = sign_checkpoint(checkpoint, key_name=ORIGIN, private_key=keys[0])
            for extra in keys[1:]:
                line = sign_checkpoint(checkpoint, key_name=ORIGIN, private_key=extra)
                body += line.split("\n\n", 1)[1]
            db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (body, size))
    db.close()


def test_a_key_announcement_the_trusted_key_never_signed_is_not_honoured(tmp_path: Path):
    """The attack: someone without the old key appends ledger.key_added for a key of
    their own and signs everything from then on with it alone."""
    directory = tmp_path / "l"
    with Ledger.create(directory, origin=ORIGIN, signing_key=OLD) as log:
        log.append("t", {"phase": "old"})
        log.append("ledger.key_added", {"verifier_key": K_NEW})  # index 1
        log.append("t", {"phase": "after"})
    assert verify_ledger(directory, K_OLD).size == 3  # announced under the old key: fine
    _resign(directory, 2, NEW)  # every checkpoint covering the announcement: new key only
    with pytest.raises(LedgerVerificationError, match="no signature"):
        verify_ledger(directory, K_OLD)
    assert verify_ledger(directory, K_NEW).size == 3  # it is the new key's own ledger


def test_a_retired_key_is_not_followed_past_its_retirement(rotated: Path):
    """A stolen old key re-signs the checkpoints after its retirement: auditors who only
    configured that old key have followed the rotation and refuse them."""
    _resign(rotated, 5, OLD)  # size 5: the commit after ledger.key_retired (entry 3)
    with pytest.raises(LedgerVerificationError, match="no signature"):
        verify_ledger(rotated, K_OLD)
    _resign(rotated, 5, NEW)
    assert verify_ledger(rotated, K_OLD).size == 5


def test_a_stolen_retired_key_cannot_sign_for_verifiers_that_moved_on(rotated: Path):
    with Ledger.open(rotated) as log:
        root = log.root()
    forged = sign_checkpoint(Checkpoint(ORIGIN, 5, root), key_name=ORIGIN, private_key=OLD)
    with pytest.raises(LedgerVerificationError):
        open_checkpoint(forged, K_NEW)


def test_a_key_never_announced_on_the_ledger_is_not_accepted(rotated: Path):
    rogue = Ed25519PrivateKey.generate()
    with Ledger.open(rotated) as log:
        root = log.root()
    forged = sign_checkpoint(Checkpoint(ORIGIN, 5, root), key_name=ORIGIN, private_key=rogue)
    with pytest.raises(LedgerVerificationError):
        open_checkpoint(forged, [K_OLD, K_NEW])


def test_one_bad_signature_by_a_configured_key_fails_the_note_even_beside_a_good_one(
    rotated: Path,
):
    with Ledger.open(rotated) as log:
        note = log.checkpoint_at(3)
    body, lines = note.split("\n\n", 1)
    first, second = lines.splitlines()
    prefix, encoded = first.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    damaged = f"{body}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n{second}\n"
    with pytest.raises(LedgerVerificationError, match="does not verify"):
        open_checkpoint(damaged, [K_OLD, K_NEW])


def test_appending_needs_every_active_key(tmp_path: Path):
    directory = tmp_path / "l"
    with Ledger.create(directory, origin=ORIGIN, signing_key=OLD) as log:
        log.add_signing_key(NEW)
    with pytest.raises(LedgerError, match="not this ledger's key"):
        Ledger.open(directory, signing_key=OLD)  # would sign checkpoints new-key holders reject
    with pytest.raises(LedgerError, match="not this ledger's key"):
        Ledger.open(directory, signing_key=[OLD, NEW, Ed25519PrivateKey.generate()])
    with Ledger.open(directory, signing_key=[NEW, OLD]) as log:  # any order
        assert log.append("t", {}).index == 1


def test_rotation_mistakes_are_refused(tmp_path: Path):
    with Ledger.create(tmp_path / "l", origin=ORIGIN, signing_key=OLD) as log:
        with pytest.raises(LedgerError):
            log.retire_signing_key(K_OLD)  # the last key cannot go
        with pytest.raises(LedgerError):
            log.add_signing_key(OLD)  # already active
        with pytest.raises(LedgerError):
            log.retire_signing_key(K_NEW)  # not active
        assert log.size == 0


def test_an_export_carries_what_an_old_key_holder_needs_to_follow(rotated: Path, tmp_path: Path):
    from ledger import export_ledger, verify_export

    out = tmp_path / "out"
    export_ledger(rotated, out)
    rotation = out / "rotation-checkpoints.jsonl"
    assert len(rotation.read_text().splitlines()) == 1  # one ledger.key_added entry
    assert verify_export(out, K_OLD).size == 5
    assert verify_export(out, K_NEW).size == 5
    kept = rotation.read_text()
    # The attack: the announcement's covering checkpoint re-signed by the new key alone.
    note = json.loads(kept)["checkpoint"]
    forged = sign_checkpoint(open_checkpoint(note, K_NEW), key_name=ORIGIN, private_key=NEW)
    rotation.write_text(json.dumps({"checkpoint": forged}) + "\n")
    with pytest.raises(LedgerVerificationError, match="retired every key you trust"):
        verify_export(out, K_OLD)
    rotation.unlink()  # without it, the old key alone cannot follow
    with pytest.raises(LedgerVerificationError, match="retired every key you trust"):
        verify_export(out, K_OLD)
    rotation.write_text("not json\n")
    with pytest.raises(LedgerVerificationError, match="malformed"):
        verify_export(out, K_OLD)


def test_verify_entries_follows_a_rotation_through_fetched_covering_checkpoints(rotated: Path):
    """What ``verify --url`` does: the entries and latest note come from a gateway, and the
    note of the commit that wrote each ``ledger.key_added`` entry is fetched on demand."""
    from ledger import claimed_size, verify_entries

    with Ledger.open(rotated) as log:
        entries = log.raw_entries(0, log.size)
        latest = log.checkpoint()
        honest = log.checkpoint_covering
        assert claimed_size(latest) == 5
        asked: list[int] = []

        def fetch(index: int) -> str:
            asked.append(index)
            return honest(index)

        assert verify_entries(entries, latest, K_OLD, covering=fetch).size == 5
        assert asked == [1]  # the one ledger.key_added entry
        # The attack: a gateway answers with a covering checkpoint the old key never
        # signed (the new key's own, which does cover the announcement).
        forged = sign_checkpoint(
            open_checkpoint(honest(1), K_NEW), key_name=ORIGIN, private_key=NEW
        )
        with pytest.raises(LedgerVerificationError, match="retired every key you trust"):
            verify_entries(entries, latest, K_OLD, covering=lambda _: forged)
        with pytest.raises(LedgerVerificationError, match="retired every key you trust"):
            verify_entries(entries, latest, K_OLD, covering=lambda _: None)
        assert verify_entries(entries, latest, K_NEW).size == 5  # the new key needs none
        with pytest.raises(LedgerError, match="no signed checkpoint covers entry 5"):
            log.checkpoint_covering(5)
