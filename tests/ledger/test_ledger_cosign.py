"""Witness cosignatures (C2SP tlog-cosignature, Ed25519, type 0x04), and what they defend.

A witness cosigns only a checkpoint consistent with the last one it cosigned; a client
requiring a quorum of witnesses is not fooled by a fork served to it alone.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Ledger,
    LedgerError,
    LedgerForkError,
    LedgerVerificationError,
    WitnessNotAccepted,
    accept_witness,
    accepted_witnesses,
    cosign,
    open_checkpoint,
    open_cosigned,
    remove_witness,
    verify_cosignature,
    verify_ledger,
    witness_checkpoint,
    witness_key,
)
from ledger._store import MAX_WITNESSES
from tests.ledger.conftest import ORIGIN

W1 = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
W2 = Ed25519PrivateKey.from_private_bytes(bytes(range(140, 172)))


def _open(directory: Path) -> tuple[Ledger, str]:
    log = Ledger.open(directory)
    return log, log.verifier_key


def test_the_cosignature_is_exactly_the_c2sp_format(make_ledger: Callable[..., Path]):
    log, key = _open(make_ledger(3))
    with log:
        checkpoint = open_checkpoint(log.checkpoint(), key)
    line = cosign(checkpoint, name="witness.example/w1", private_key=W1, timestamp=1679315147)
    prefix, name, encoded = line.rstrip("\n").split(" ")
    assert (prefix, name) == ("\u2014", "witness.example/w1")
    raw = base64.b64decode(encoded)
    public = W1.public_key().public_bytes_raw()
    # key ID = SHA-256(name || "\n" || 0x04 || public key)[:4]
    assert raw[:4] == hashlib.sha256(b"witness.example/w1\n\x04" + public).digest()[:4]
    assert struct.unpack(">Q", raw[4:12]) == (1679315147,)
    message = b"cosignature/v1\ntime 1679315147\n" + checkpoint.body()
    W1.public_key().verify(raw[12:], message)  # raises if not exactly this message
    vkey = witness_key("witness.example/w1", W1.public_key())
    assert vkey.split("+")[1] == raw[:4].hex()
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == 0x04
    assert verify_cosignature(checkpoint, line, vkey) == 1679315147


def test_a_cosignature_does_not_transfer_to_another_checkpoint(make_ledger: Callable[..., Path]):
    log, key = _open(make_ledger(3))
    with log:
        three = open_checkpoint(log.checkpoint(), key)
        two = open_checkpoint(log.checkpoint_at(2), key)
    line = cosign(three, name="w1", private_key=W1)
    with pytest.raises(LedgerVerificationError, match="does not verify"):
        verify_cosignature(two, line, witness_key("w1", W1.public_key()))
    with pytest.raises(LedgerVerificationError, match="not by witness"):
        verify_cosignature(three, line, witness_key("w1", W2.public_key()))


def test_a_witness_refuses_to_cosign_a_fork_or_a_rollback(
    make_ledger: Callable[..., Path], tmp_path: Path, signing_key: Ed25519PrivateKey
):
    honest = make_ledger(6)
    with Ledger.open(honest) as log:
        kept, key = log.checkpoint_at(4), log.verifier_key
        good_proof = log.consistency_proof(4, 6)
        later = log.checkpoint()
    checkpoint, _ = witness_checkpoint(
        later, key, previous=kept, proof=good_proof, name="w1", private_key=W1
    )
    assert checkpoint.size == 6
    forked = tmp_path / "fork"
    with Ledger.create(forked, origin=ORIGIN, signing_key=signing_key) as log:
        for i in range(6):
            log.append("test.event", {"seq": i, "note": "rewritten"})
        fork_note, fork_proof = log.checkpoint(), log.consistency_proof(4, 6)
    with pytest.raises(LedgerForkError) as caught:
        witness_checkpoint(
            fork_note, key, previous=kept, proof=fork_proof, name="w1", private_key=W1
        )
    assert (caught.value.trusted, caught.value.latest) == (kept, fork_note)
    with pytest.raises(LedgerForkError, match="rolled back"):
        witness_checkpoint(kept, key, previous=later, proof=[], name="w1", private_key=W1)


def test_the_ledger_stores_and_serves_only_valid_cosignatures(make_ledger: Callable[..., Path]):
    directory = make_ledger(5)
    key_w1, key_w2 = witness_key("w1", W1.public_key()), witness_key("w2", W2.public_key())
    accept_witness(directory, key_w1)
    accept_witness(directory, key_w2)
    with Ledger.open(
        directory, signing_key=Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    ) as log:
        assert log.cosigned_checkpoint() is None
        key = log.verifier_key
        checkpoint = open_checkpoint(log.checkpoint_at(4), key)
        with pytest.raises(LedgerVerificationError):  # W2's signature under W1's name
            log.add_cosignature(4, key_w1, cosign(checkpoint, name="w1", private_key=W2))
        with pytest.raises(LedgerVerificationError):  # a cosignature of size 4 offered for 5
            log.add_cosignature(5, key_w1, cosign(checkpoint, name="w1", private_key=W1))
        with pytest.raises(LedgerError):
            log.add_cosignature(9, key_w1, cosign(checkpoint, name="w1", private_key=W1))
        log.add_cosignature(4, key_w1, cosign(checkpoint, name="w1", private_key=W1))
        log.add_cosignature(4, key_w2, cosign(checkpoint, name="w2", private_key=W2))
        note = log.cosigned_checkpoint()
    assert note is not None
    opened, seen = open_cosigned(note, key, [key_w1, key_w2], quorum=2)
    assert opened.size == 4 and set(seen) == {"w1", "w2"}
    # Cosignature lines are ignored by a plain checkpoint verifier (C2SP signed-note).
    assert open_checkpoint(note, key).size == 4
    assert verify_ledger(directory, key, trusted_checkpoint=note).size == 5


def test_a_quorum_is_required_and_unknown_witnesses_do_not_count(make_ledger: Callable[..., Path]):
    log, key = _open(make_ledger(2))
    with log:
        note = log.checkpoint()
    checkpoint = open_checkpoint(note, key)
    stranger = Ed25519PrivateKey.generate()
    cosigned = (
        note
        + cosign(checkpoint, name="w1", private_key=W1)
        + cosign(checkpoint, name="w2", private_key=stranger)
    )
    key_w1, key_w2 = witness_key("w1", W1.public_key()), witness_key("w2", W2.public_key())
    assert set(open_cosigned(cosigned, key, [key_w1, key_w2], quorum=1)[1]) == {"w1"}
    with pytest.raises(LedgerVerificationError, match="2 required"):
        open_cosigned(cosigned, key, [key_w1, key_w2], quorum=2)


def test_a_tampered_cosignature_by_a_configured_witness_fails_the_note(
    make_ledger: Callable[..., Path],
):
    log, key = _open(make_ledger(2))
    with log:
        note = log.checkpoint()
    line = cosign(open_checkpoint(note, key), name="w1", private_key=W1)
    raw = bytearray(base64.b64decode(line.rstrip("\n").split(" ")[2]))
    raw[-1] ^= 1
    bad = f"\u2014 w1 {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(LedgerVerificationError, match="does not verify"):
        open_cosigned(note + bad, key, [witness_key("w1", W1.public_key())], quorum=1)


def test_an_exported_ledger_carries_its_cosigned_checkpoint(
    make_ledger: Callable[..., Path], tmp_path: Path, signing_key: Ed25519PrivateKey
):
    from ledger import export_ledger

    directory = make_ledger(3)
    accept_witness(directory, witness_key("w1", W1.public_key()))
    with Ledger.open(directory, signing_key=signing_key) as log:
        checkpoint = open_checkpoint(log.checkpoint(), log.verifier_key)
        log.add_cosignature(
            3, witness_key("w1", W1.public_key()), cosign(checkpoint, name="w1", private_key=W1)
        )
        served = log.cosigned_checkpoint()
    export_ledger(directory, tmp_path / "out")
    assert (tmp_path / "out" / "cosigned-checkpoint").read_text() == served


def test_a_cosignature_under_a_stolen_witness_name_cannot_displace_the_real_one(
    make_ledger: Callable[..., Path],
):
    directory = make_ledger(3)
    real = witness_key("w1", W1.public_key())
    impostor_key = Ed25519PrivateKey.generate()
    impostor = witness_key("w1", impostor_key.public_key())  # same name, the attacker's key
    accept_witness(directory, real)
    with Ledger.open(
        directory, signing_key=Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    ) as log:
        key = log.verifier_key
        checkpoint = open_checkpoint(log.checkpoint_at(2), key)
        log.add_cosignature(2, real, cosign(checkpoint, name="w1", private_key=W1))
        with pytest.raises(WitnessNotAccepted):  # valid, but by a key nobody configured
            log.add_cosignature(
                2, impostor, cosign(checkpoint, name="w1", private_key=impostor_key)
            )
        note = log.cosigned_checkpoint()
    assert note is not None
    opened, seen = open_cosigned(note, key, [real], quorum=1)
    assert opened.size == 2 and set(seen) == {"w1"}
    assert note.count("\u2014 w1 ") == 1  # only the real witness cosigned


def test_strangers_cannot_crowd_out_the_configured_witnesses(make_ledger: Callable[..., Path]):
    """The attack: fill a checkpoint's cosignature slots with valid cosignatures by throwaway
    keys, so the witness auditors rely on can no longer cosign. Only configured keys count."""
    directory = make_ledger(3)
    real = witness_key("w1", W1.public_key())
    accept_witness(directory, real)
    with Ledger.open(
        directory, signing_key=Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    ) as log:
        checkpoint = open_checkpoint(log.checkpoint_at(3), log.verifier_key)
        for number in range(MAX_WITNESSES + 1):
            junk = Ed25519PrivateKey.generate()
            name = f"junk{number}"
            line = cosign(checkpoint, name=name, private_key=junk)
            with pytest.raises(WitnessNotAccepted, match="witness add"):
                log.add_cosignature(3, witness_key(name, junk.public_key()), line)
        log.add_cosignature(3, real, cosign(checkpoint, name="w1", private_key=W1))
        note = log.cosigned_checkpoint()
    assert note is not None and "junk" not in note
    assert set(open_cosigned(note, log.verifier_key, [real], quorum=1)[1]) == {"w1"}


def test_the_operator_configures_which_witnesses_are_accepted(make_ledger: Callable[..., Path]):
    directory = make_ledger(2)
    key_w1, key_w2 = witness_key("w1", W1.public_key()), witness_key("w2", W2.public_key())
    assert accepted_witnesses(directory) == []
    assert accept_witness(directory, key_w2) and accept_witness(directory, key_w1)
    assert not accept_witness(directory, key_w1)  # already there
    assert accepted_witnesses(directory) == sorted([key_w1, key_w2])
    assert remove_witness(directory, key_w2) and not remove_witness(directory, key_w2)
    assert accepted_witnesses(directory) == [key_w1]
    with pytest.raises(LedgerError, match="malformed witness key"):
        accept_witness(directory, "w3+00000000+AAAA")
    with pytest.raises(LedgerError, match="no ledger"):
        accept_witness(directory / "nothing", key_w1)
    with Ledger.open(
        directory, signing_key=Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    ) as log:
        checkpoint = open_checkpoint(log.checkpoint_at(2), log.verifier_key)
        with pytest.raises(WitnessNotAccepted):  # removed: no new cosignatures
            log.add_cosignature(2, key_w2, cosign(checkpoint, name="w2", private_key=W2))


def test_witness_and_verifier_keys_are_not_interchangeable():
    """Same format, different type byte (0x04 cosignature, 0x01 note): each parser refuses
    the other's key, so a checkpoint key cannot pose as a witness or the reverse."""
    from ledger import verifier_key
    from ledger._cosign import parse_witness_key
    from ledger._note import parse_verifier_key

    witness, note_key = witness_key("w1", W1.public_key()), verifier_key("w1", W1.public_key())
    assert witness.split("+")[:1] == note_key.split("+")[:1] and witness != note_key
    assert (
        parse_witness_key(witness).public_key.public_bytes_raw()
        == W1.public_key().public_bytes_raw()
    )
    with pytest.raises(LedgerError, match="witness key is not an Ed25519 key of type 0x04"):
        parse_witness_key(note_key)
    with pytest.raises(LedgerError, match="verifier key is not an Ed25519 key of type 0x01"):
        parse_verifier_key(witness)
    with pytest.raises(LedgerError, match="witness name"):
        witness_key("bad name", W1.public_key())
