"""Signed checkpoints: C2SP signed-note and tlog-checkpoint, with Go's worked example as KAT."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import (
    Checkpoint,
    LedgerError,
    LedgerVerificationError,
    open_checkpoint,
    sign_checkpoint,
    verifier_key,
)
from ledger._note import open_note, sign_note

# The worked example documented in golang.org/x/mod/sumdb/note (note.go).
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIGNATURE = (
    "— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIGNATURE = (
    "— EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

ROOT = hashlib.sha256(b"root").digest()
ORIGIN = "example.org/ledger"


def go_private_key() -> Ed25519PrivateKey:
    encoded = GO_SIGNER_KEY.split("+", 4)[-1]  # the base64 key contains "+" itself
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01  # Ed25519
    return Ed25519PrivateKey.from_private_bytes(raw[1:])


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture(scope="module")
def vkey(key) -> str:
    return verifier_key(ORIGIN, key.public_key())


def raw_note(text: str, name: str, key: Ed25519PrivateKey, key_id: bytes | None = None) -> str:
    """Sign arbitrary text without any of our validation, to build hostile notes."""
    if key_id is None:
        key_id = bytes.fromhex(verifier_key(name, key.public_key()).split("+")[1])
    signature = key.sign(text.encode("utf-8"))
    return f"{text}\n— {name} {base64.b64encode(key_id + signature).decode()}\n"


# -- known answers from Go's note.go --------------------------------------------------


def test_go_worked_example_verifier_key():
    assert verifier_key("PeterNeumann", go_private_key().public_key()) == GO_VERIFIER_KEY


def test_go_worked_example_signature_is_reproduced():
    signed = sign_note(GO_TEXT, key_name="PeterNeumann", private_key=go_private_key())
    assert signed == GO_TEXT + "\n" + GO_SIGNATURE


def test_go_worked_example_opens_and_ignores_the_unknown_cosigner():
    assert open_note(GO_TEXT + "\n" + GO_SIGNATURE, GO_VERIFIER_KEY) == GO_TEXT
    doubly_signed = GO_TEXT + "\n" + GO_SIGNATURE + GO_ENOCH_SIGNATURE
    assert open_note(doubly_signed, GO_VERIFIER_KEY) == GO_TEXT
    with pytest.raises(LedgerVerificationError, match="no signature by PeterNeumann"):
        open_note(GO_TEXT + "\n" + GO_ENOCH_SIGNATURE, GO_VERIFIER_KEY)


# -- round trip -----------------------------------------------------------------------


def test_checkpoint_body_format():
    cp = Checkpoint(ORIGIN, 20852163, ROOT)
    expected = f"{ORIGIN}\n20852163\n{base64.b64encode(ROOT).decode()}\n".encode()
    assert cp.body() == expected


def test_sign_and_open_round_trip(key, vkey):
    cp = Checkpoint(ORIGIN, 42, ROOT)
    note = sign_checkpoint(cp, key_name=ORIGIN, private_key=key)
    body, _, signature_line = note.partition("\n\n")
    assert body + "\n" == cp.body().decode()
    assert signature_line.startswith(f"\u2014 {ORIGIN} ") and signature_line.endswith("\n")
    raw = base64.b64decode(signature_line.split(" ")[2])
    assert len(raw) == 4 + 64 and raw[:4].hex() == vkey.split("+")[1]
    assert open_checkpoint(note, vkey) == cp


def test_verifier_key_format(key, vkey):
    name, key_id, encoded = vkey.split("+", 2)
    raw_public = base64.b64decode(encoded)
    assert name == ORIGIN and len(key_id) == 8 and raw_public[0] == 0x01 and len(raw_public) == 33
    material = ORIGIN.encode() + b"\n" + raw_public
    assert key_id == hashlib.sha256(material).digest()[:4].hex()


def test_empty_tree_checkpoint(key, vkey):
    cp = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    assert open_checkpoint(sign_checkpoint(cp, key_name=ORIGIN, private_key=key), vkey) == cp


# -- rejection ------------------------------------------------------------------------


def test_wrong_key_fails(key):
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), key_name=ORIGIN, private_key=key)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(LedgerVerificationError, match="no signature"):
        open_checkpoint(note, verifier_key(ORIGIN, other.public_key()))
    with pytest.raises(LedgerVerificationError, match="no signature"):
        open_checkpoint(note, verifier_key("another.example", key.public_key()))


def test_known_key_with_bad_signature_fails_even_beside_a_good_one(key, vkey):
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), key_name=ORIGIN, private_key=key)
    text, _, line = note.partition("\n\n")
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[10] ^= 1
    forged = f"— {ORIGIN} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(LedgerVerificationError, match="does not verify"):
        open_checkpoint(text + "\n\n" + line + forged, vkey)


def test_altered_body_fails(key, vkey):
    note = sign_checkpoint(Checkpoint(ORIGIN, 17, ROOT), key_name=ORIGIN, private_key=key)
    for altered in (
        note.replace("\n17\n", "\n18\n"),
        note.replace(ORIGIN + "\n", "example.org/other\n", 1),
        note.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[::-1]).decode()),
    ):
        assert altered != note
        with pytest.raises(LedgerVerificationError):
            open_checkpoint(altered, vkey)


def test_signature_from_an_impostor_key_with_the_same_id_is_ignored(key, vkey):
    impostor = Ed25519PrivateKey.generate()
    key_id = bytes.fromhex(vkey.split("+")[1])
    note = raw_note(Checkpoint(ORIGIN, 1, ROOT).body().decode(), ORIGIN, impostor, key_id)
    with pytest.raises(LedgerVerificationError, match="does not verify"):
        open_checkpoint(note, vkey)


GOOD_ROOT = base64.b64encode(ROOT).decode()
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Same bytes, but the two unused low bits of the last sextet set: decoders that do not
# insist on canonical base64 accept it as the same root.
SLOPPY_ROOT = GOOD_ROOT[:-2] + _ALPHABET[_ALPHABET.index(GOOD_ROOT[-2]) | 1] + "="


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"{ORIGIN}\n01\n{GOOD_ROOT}\n", "leading zero"),
        (f"{ORIGIN}\n00\n{GOOD_ROOT}\n", "two zeros"),
        (f"{ORIGIN}\n+1\n{GOOD_ROOT}\n", "plus sign"),
        (f"{ORIGIN}\n 1\n{GOOD_ROOT}\n", "leading space"),
        (f"{ORIGIN}\n١\n{GOOD_ROOT}\n", "non-ASCII digit"),
        (f"{ORIGIN}\n-1\n{GOOD_ROOT}\n", "negative"),
        (f"{ORIGIN}\n{2**63}\n{GOOD_ROOT}\n", "size too large"),
        (f"{ORIGIN}\n1\n{GOOD_ROOT[:-1]}\n", "missing padding"),
        (f"{ORIGIN}\n1\n{SLOPPY_ROOT}\n", "non-canonical base64 bits"),
        (f"{ORIGIN}\n1\n!{GOOD_ROOT[1:]}\n", "bad base64 alphabet"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", "short root"),
        (f"{ORIGIN}\n1\n{GOOD_ROOT}\nextension\n", "extension line"),
        (f"\n1\n{GOOD_ROOT}\n", "empty origin"),
        (f"{ORIGIN}\n1\n", "missing root line"),
    ],
)
def test_non_canonical_bodies_are_rejected_even_when_signed(key, vkey, text, why):
    with pytest.raises(LedgerVerificationError, match="malformed"):
        open_checkpoint(raw_note(text, ORIGIN, key), vkey)


def test_non_canonical_envelopes_are_rejected(key, vkey):
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), key_name=ORIGIN, private_key=key)
    text = Checkpoint(ORIGIN, 3, ROOT).body().decode()
    signature_line = note[len(text) + 1 :]
    hostile = {
        "CRLF line ends": note.replace("\n", "\r\n"),
        "no final newline": note[:-1],
        "missing blank line": text + signature_line,
        "control char in origin": raw_note(text.replace("ledger", "led\tger"), ORIGIN, key),
        "NUL": note.replace("ledger", "led\x00ger", 1),
        "hyphen instead of em dash": note.replace("\u2014", "-"),
        "bad signature base64": note[:-3] + "!=\n",
        "no signature": text + "\n",
        "two blank lines": text + "\n\n" + signature_line,
        "lone surrogate": note.replace("ledger", "led\ud800ger", 1),
        "key name with plus": note.replace(f"— {ORIGIN} ", f"— {ORIGIN}+x "),
        "empty": "",
    }
    for why, bad in hostile.items():
        with pytest.raises(LedgerVerificationError):
            open_checkpoint(bad, vkey)
            pytest.fail(why)


def test_too_many_signatures_are_refused(key, vkey):
    note = sign_checkpoint(Checkpoint(ORIGIN, 3, ROOT), key_name=ORIGIN, private_key=key)
    junk = "— someone.else AAAAAAAA\n" * 100
    with pytest.raises(LedgerVerificationError, match="too many"):
        open_checkpoint(note + junk, vkey)


@pytest.mark.parametrize(
    "bad_key",
    [
        "",
        "name",
        "name+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper hex
        "PeterNeumann+c74f20a3+ApBc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # other alg
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys_are_caller_errors(bad_key):
    note = GO_TEXT + "\n" + GO_SIGNATURE
    with pytest.raises(LedgerError) as raised:
        open_note(note, bad_key)
    assert not isinstance(raised.value, LedgerVerificationError)


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "tab\tname", "nl\nname"])
def test_invalid_key_names_are_refused(key, name):
    with pytest.raises(LedgerError):
        sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), key_name=name, private_key=key)
    with pytest.raises(LedgerError):
        verifier_key(name, key.public_key())


@pytest.mark.parametrize(
    ("origin", "size", "root"),
    [
        ("", 1, ROOT),
        ("two\nlines", 1, ROOT),
        (ORIGIN, -1, ROOT),
        (ORIGIN, True, ROOT),
        (ORIGIN, 2**63, ROOT),
        (ORIGIN, 1, ROOT[:31]),
        (ORIGIN, 1, ROOT.hex()),
    ],
)
def test_checkpoint_checks_itself(origin, size, root):
    with pytest.raises(LedgerError):
        Checkpoint(origin, size, root)


# -- properties -----------------------------------------------------------------------

ORIGINS = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40).filter(
    lambda s: "\n" not in s
)


@settings(max_examples=100, deadline=None)
@given(origin=ORIGINS, size=st.integers(0, 2**63 - 1), root=st.binary(min_size=32, max_size=32))
def test_round_trip_for_any_checkpoint(key, vkey, origin, size, root):
    cp = Checkpoint(origin, size, root)
    assert open_checkpoint(sign_checkpoint(cp, key_name=ORIGIN, private_key=key), vkey) == cp


@settings(max_examples=300, deadline=None)
@given(junk=st.text(max_size=300))
def test_arbitrary_text_raises_only_ledger_errors(vkey, junk):
    with pytest.raises(LedgerVerificationError):
        open_checkpoint(junk, vkey)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_character_change_is_rejected(key, vkey, data):
    note = sign_checkpoint(Checkpoint(ORIGIN, 1234, ROOT), key_name=ORIGIN, private_key=key)
    position = data.draw(st.integers(0, len(note) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != note[position]))
    altered = note[:position] + replacement + note[position + 1 :]
    with pytest.raises(LedgerVerificationError):
        open_checkpoint(altered, vkey)


def test_signing_by_verifier_key_gives_the_same_note_as_by_key_name():
    """The ledger signs with key IDs taken from its verifier keys (no public key derived
    per commit); Ed25519 is deterministic, so the note must be byte for byte the same."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger import Checkpoint, open_checkpoint, verifier_key
    from ledger._note import sign_checkpoint_as, sign_checkpoint_by

    one = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    two = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
    checkpoint = Checkpoint("note.test.example/log", 42, bytes(range(32)))
    names = [("note.test.example/log", one), ("other.example/key", two)]
    keys = [verifier_key(name, key.public_key()) for name, key in names]
    by_name = sign_checkpoint_by(checkpoint, names)
    by_key = sign_checkpoint_as(checkpoint, [(keys[0], one), (keys[1], two)])
    assert by_key == by_name
    assert open_checkpoint(by_key, keys[1]) == checkpoint
