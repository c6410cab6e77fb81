"""Ledger key rotation: the new key signs alongside the old for an overlap, both changes are
ledger entries, and verifiers accept exactly the key set they were configured with."""

from __future__ import annotations

import base64
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
    with pytest.raises(LedgerVerificationError, match="no signature"):
        verify_ledger(rotated, K_OLD)  # the retired key no longer signs the latest checkpoint


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
