"""Witness cosignatures: C2SP tlog-cosignature, Ed25519 (signature type 0x04).

A witness (an auditor, another bureau) keeps the last checkpoint it cosigned, checks that
the ledger's new checkpoint is consistent with it, and only then signs

    cosignature/v1\\n
    time <POSIX seconds>\\n
    <the checkpoint body>

adding a note signature line ``— <witness name> base64(key ID || u64 time || signature)``.
A client that requires a quorum of witnesses cannot be shown a split view (a fork served
only to it) unless the witnesses collude with the operator.
"""

from __future__ import annotations

import base64
import struct
import time as _time
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger._errors import LedgerError, LedgerForkError, LedgerVerificationError
from ledger._note import (
    KEY_ID_SIZE,
    SIGNATURE_PREFIX,
    Checkpoint,
    ParsedKey,
    VerifierKeys,
    _b64decode_strict,
    _key_id,
    _raw_public_key,
    _valid_key_name,
    encode_key,
    open_checkpoint,
    parse_key,
)
from ledger._proofs import verify_consistency

# C2SP tlog-cosignature §Format: Ed25519 cosignature key IDs use algorithm byte 0x04.
COSIGNATURE_TYPE_ED25519 = 0x04
# C2SP tlog-cosignature §Ed25519 signed message: the fixed header line.
COSIGNATURE_HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1


def witness_key(name: str, public_key: Ed25519PublicKey) -> str:
    """Return the witness verifier key ``<name>+<hex key ID>+<base64(0x04 || public key)>``."""
    return encode_key(name, public_key, key_type=COSIGNATURE_TYPE_ED25519, what="witness")


def parse_witness_key(key: str) -> ParsedKey:
    """Parse a witness verifier key; raise :class:`LedgerError` when it is malformed."""
    return parse_key(key, key_type=COSIGNATURE_TYPE_ED25519, what="witness key")


def _message(body: bytes, timestamp: int) -> bytes:
    return COSIGNATURE_HEADER.encode() + f"time {timestamp}\n".encode() + body


def cosign(
    checkpoint: Checkpoint,
    *,
    name: str,
    private_key: Ed25519PrivateKey,
    timestamp: int | None = None,
) -> str:
    """Return the cosignature line (with its newline) for ``checkpoint``.

    Only call this after checking the checkpoint is consistent with the last one you
    cosigned: that is what a cosignature asserts.
    """
    if not _valid_key_name(name):
        raise LedgerError("witness name must be non-empty, without spaces, plus or control chars")
    when = int(_time.time()) if timestamp is None else timestamp
    if not 0 <= when <= MAX_TIMESTAMP:
        raise LedgerError("cosignature timestamp out of range")
    key_id = _key_id(name, _raw_public_key(private_key.public_key()), COSIGNATURE_TYPE_ED25519)
    signature = private_key.sign(_message(checkpoint.body(), when))
    encoded = base64.b64encode(key_id + struct.pack(">Q", when) + signature).decode("ascii")
    return f"{SIGNATURE_PREFIX}{name} {encoded}\n"


def verify_cosignature(checkpoint: Checkpoint, line: str, key: str) -> int:
    """Check one cosignature line for ``checkpoint`` by witness ``key``; return its time.

    Raises :class:`LedgerVerificationError` unless the line is that witness's valid
    cosignature of exactly this checkpoint.
    """
    witness = parse_witness_key(key)
    if not isinstance(line, str) or not line.startswith(SIGNATURE_PREFIX):
        raise LedgerVerificationError("malformed cosignature line")
    name, _, encoded = line.rstrip("\n").removeprefix(SIGNATURE_PREFIX).partition(" ")
    raw = _b64decode_strict(encoded)
    if raw is None or len(raw) != KEY_ID_SIZE + 8 + 64:
        raise LedgerVerificationError("malformed cosignature line")
    if name != witness.name or raw[:KEY_ID_SIZE] != witness.key_id:
        raise LedgerVerificationError(f"cosignature is not by witness {witness.name}")
    (when,) = struct.unpack(">Q", raw[KEY_ID_SIZE : KEY_ID_SIZE + 8])
    if when > MAX_TIMESTAMP:
        raise LedgerVerificationError("cosignature timestamp out of range")
    try:
        witness.public_key.verify(raw[KEY_ID_SIZE + 8 :], _message(checkpoint.body(), when))
    except InvalidSignature:
        raise LedgerVerificationError(f"cosignature by {witness.name} does not verify") from None
    return int(when)


def open_cosigned(
    note: str, verifier_key: VerifierKeys, witness_keys: list[str], *, quorum: int
) -> tuple[Checkpoint, dict[str, int]]:
    """Verify a checkpoint note and at least ``quorum`` cosignatures by ``witness_keys``.

    Returns the checkpoint and {witness name: cosignature time} for the witnesses whose
    cosignature verified. Lines by other keys are ignored (C2SP signed-note); a bad line
    by a configured witness fails the note. Raises :class:`LedgerVerificationError`.
    """
    checkpoint = open_checkpoint(note, verifier_key)
    witnesses = {parse_witness_key(k).name: k for k in witness_keys}
    lines = note[note.rfind("\n\n") + 2 :].splitlines()
    seen: dict[str, int] = {}
    for line in lines:
        name = line.removeprefix(SIGNATURE_PREFIX).partition(" ")[0]
        key = witnesses.get(name)
        if key is None:
            continue
        raw = _b64decode_strict(line.partition(" ")[2].partition(" ")[2])
        if raw is None or raw[:KEY_ID_SIZE] != parse_witness_key(key).key_id:
            continue  # same name, another key: not the configured witness
        seen[name] = verify_cosignature(checkpoint, line, key)
    if len(seen) < quorum:
        raise LedgerVerificationError(
            f"checkpoint for size {checkpoint.size} has {len(seen)} valid cosignatures "
            f"from the configured witnesses; {quorum} required"
        )
    return checkpoint, seen


def witness_checkpoint(
    note: str,
    verifier_key: VerifierKeys,
    *,
    previous: str | None,
    proof: Sequence[bytes],
    name: str,
    private_key: Ed25519PrivateKey,
    timestamp: int | None = None,
) -> tuple[Checkpoint, str]:
    """Act as a witness: cosign ``note`` only if it extends ``previous``, the last one cosigned.

    ``proof`` is the consistency proof from ``previous``'s size to ``note``'s (ignored
    when there is no previous checkpoint or it is empty). Returns the new checkpoint and
    the cosignature line. Raises :class:`LedgerForkError`, carrying both notes, when the
    log rolled back or forked, and :class:`LedgerVerificationError` for a bad signature.
    """
    new = open_checkpoint(note, verifier_key)
    if previous is not None:
        old = open_checkpoint(previous, verifier_key)
        if old.origin != new.origin:
            raise LedgerVerificationError("the checkpoint is for another log (origin differs)")
        if new.size < old.size:
            raise LedgerForkError(
                f"the log shrank from {old.size} to {new.size} entries (rolled back)",
                None,
                previous,
                note,
            )
        if old.size > 0:
            try:
                verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
            except LedgerVerificationError as exc:
                raise LedgerForkError(
                    f"the checkpoint is not consistent with the one cosigned before: {exc}",
                    None,
                    previous,
                    note,
                ) from None
    return new, cosign(new, name=name, private_key=private_key, timestamp=timestamp)
