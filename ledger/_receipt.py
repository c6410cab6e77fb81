"""Receipts: what an enterprise keeps to prove later that its event is on the ledger.

A receipt is the leaf index, an inclusion proof and the signed checkpoint the proof leads
to. Checking one needs the entry bytes and the ledger's verifier key, nothing else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger._entry import LedgerEntry
from ledger._errors import LedgerError, LedgerVerificationError
from ledger._merkle import HASH_SIZE, leaf_hash
from ledger._note import Checkpoint, VerifierKeys, open_checkpoint
from ledger._proofs import verify_inclusion

RECEIPT_KEYS = frozenset({"index", "tree_size", "leaf_hash", "proof", "checkpoint"})
MAX_PROOF_LENGTH = 64  # a tree of 2**63 leaves needs at most 63 hashes


@dataclass(frozen=True)
class Receipt:
    """Proof that entry ``index`` is in the tree of ``tree_size`` signed in ``checkpoint``.

    Checks its own shape on construction (raises :class:`LedgerError`); whether it is
    *true* is for :func:`verify_receipt`. ``proof`` is stored as a tuple.
    """

    index: int
    tree_size: int
    leaf_hash: bytes
    proof: Sequence[bytes]
    checkpoint: str

    def __post_init__(self) -> None:
        for name in ("index", "tree_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise LedgerError(f"receipt {name} must be a non-negative integer")
        if not isinstance(self.leaf_hash, bytes) or len(self.leaf_hash) != HASH_SIZE:
            raise LedgerError(f"receipt leaf hash must be {HASH_SIZE} bytes")
        if isinstance(self.proof, str | bytes) or not isinstance(self.proof, Sequence):
            raise LedgerError("receipt proof must be a sequence of hashes")
        proof = tuple(self.proof)
        if len(proof) > MAX_PROOF_LENGTH or any(
            not isinstance(h, bytes) or len(h) != HASH_SIZE for h in proof
        ):
            raise LedgerError(f"receipt proof must hold at most {MAX_PROOF_LENGTH} hashes")
        object.__setattr__(self, "proof", proof)
        if not isinstance(self.checkpoint, str):
            raise LedgerError("receipt checkpoint must be a signed note (text)")

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict; hashes are standard base64."""
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": _b64(self.leaf_hash),
            "proof": [_b64(h) for h in self.proof],
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Receipt:
        """Build a receipt from :meth:`to_json` output.

        Raises :class:`LedgerVerificationError` on unknown or missing keys, wrong types or
        bad base64.
        """
        if not isinstance(data, Mapping) or set(data) != RECEIPT_KEYS:
            raise LedgerVerificationError(
                f"malformed receipt: want exactly the keys {sorted(RECEIPT_KEYS)}"
            )
        proof = data["proof"]
        if not isinstance(proof, list) or not all(isinstance(h, str) for h in proof):
            raise LedgerVerificationError("malformed receipt: proof must be a list of strings")
        try:
            return cls(
                index=data["index"],
                tree_size=data["tree_size"],
                leaf_hash=_unb64(data["leaf_hash"]),
                proof=[_unb64(h) for h in proof],
                checkpoint=data["checkpoint"],
            )
        except LedgerError as exc:
            raise LedgerVerificationError(f"malformed receipt: {exc}") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise LedgerError("hashes must be base64 strings")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise LedgerError("hash is not standard base64") from None
    if _b64(raw) != text:
        raise LedgerError("hash is not canonical base64")
    return raw


def verify_receipt(receipt: Receipt, entry_bytes: bytes, verifier_key: VerifierKeys) -> Checkpoint:
    """Check ``receipt`` for ``entry_bytes`` against the ledger key; return its checkpoint.

    Verifies the checkpoint signature, that the entry is canonical and sits at the
    receipt's index, that its leaf hash is the receipt's, that the checkpoint is for the
    receipt's tree size, and the inclusion proof against the checkpoint root. Raises
    :class:`LedgerVerificationError` naming the receipt's index.
    """
    if not isinstance(receipt, Receipt):
        raise LedgerError("verify_receipt needs a Receipt")
    checkpoint = open_checkpoint(receipt.checkpoint, verifier_key)
    index = receipt.index
    if checkpoint.size != receipt.tree_size:
        raise LedgerVerificationError(
            f"receipt is for tree size {receipt.tree_size} "
            f"but its checkpoint is for {checkpoint.size}",
            index,
        )
    try:
        entry = LedgerEntry.parse(entry_bytes)
    except LedgerVerificationError as exc:
        raise LedgerVerificationError(exc.reason, index) from None
    if entry.index != index:
        raise LedgerVerificationError(f"entry says it is entry {entry.index}", index)
    if leaf_hash(entry_bytes) != receipt.leaf_hash:
        raise LedgerVerificationError("entry bytes do not match the receipt's leaf hash", index)
    try:
        verify_inclusion(
            receipt.leaf_hash, index, checkpoint.size, receipt.proof, checkpoint.root_hash
        )
    except LedgerVerificationError as exc:
        raise LedgerVerificationError(exc.reason, index) from None
    return checkpoint
