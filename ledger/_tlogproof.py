"""Offline inclusion proofs in the C2SP tlog-proof format (c2sp.org/tlog-proof).

::

    c2sp.org/tlog-proof@v1
    extra <base64>            optional, unauthenticated
    index <decimal, no leading zeros>
    <base64 hash>             zero or more, from the leaf's sibling up to the root's child
    <blank line>
    <the signed checkpoint, verbatim>

Parsing is strict (one encoding per proof); verifying needs the entry bytes and the
ledger's verifier key.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger._errors import LedgerVerificationError
from ledger._merkle import HASH_SIZE, leaf_hash
from ledger._note import Checkpoint, VerifierKeys, open_checkpoint
from ledger._proofs import verify_inclusion
from ledger._receipt import MAX_PROOF_LENGTH

# C2SP tlog-proof §Format: "The first line MUST be the string c2sp.org/tlog-proof@v1".
HEADER = "c2sp.org/tlog-proof@v1"
_INDEX = re.compile(r"index (0|[1-9][0-9]{0,18})", re.ASCII)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, ValueError):
        return None
    return raw if _b64(raw) == text else None


@dataclass(frozen=True)
class TlogProof:
    """A parsed tlog-proof: entry ``index``, inclusion ``hashes``, the ``checkpoint`` note."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str
    extra: bytes | None = None

    def format(self) -> str:
        """Return the proof text (C2SP tlog-proof@v1)."""
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {_b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(_b64(h) for h in self.hashes)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        """Parse proof text; raises :class:`LedgerVerificationError` if it is malformed."""
        if not isinstance(text, str) or "\r" in text:
            raise LedgerVerificationError("malformed tlog-proof")
        head, sep, checkpoint = text.partition("\n\n")
        lines = head.split("\n")
        if not sep or lines[0] != HEADER or len(lines) < 2:
            raise LedgerVerificationError("malformed tlog-proof: bad header")
        extra = None
        rest = lines[1:]
        if rest[0].startswith("extra "):
            extra = _unb64(rest[0][len("extra ") :])
            if extra is None:
                raise LedgerVerificationError("malformed tlog-proof: bad extra data")
            rest = rest[1:]
        if not rest or _INDEX.fullmatch(rest[0]) is None:
            raise LedgerVerificationError("malformed tlog-proof: bad index line")
        index = int(rest[0][len("index ") :])
        hashes = [_unb64(line) for line in rest[1:]]
        if len(hashes) > MAX_PROOF_LENGTH or any(h is None or len(h) != HASH_SIZE for h in hashes):
            raise LedgerVerificationError("malformed tlog-proof: bad proof hash")
        return cls(index, tuple(h for h in hashes if h is not None), checkpoint, extra)


def tlog_proof(index: int, hashes: Sequence[bytes], checkpoint: str) -> str:
    """Return the C2SP tlog-proof text for entry ``index`` under the signed ``checkpoint``."""
    return TlogProof(index, tuple(hashes), checkpoint).format()


def verify_tlog_proof(text: str, entry_bytes: bytes, verifier_key: VerifierKeys) -> Checkpoint:
    """Check that ``entry_bytes`` is entry ``index`` under the proof's signed checkpoint.

    Returns the checkpoint; raises :class:`LedgerVerificationError` naming the index.
    """
    proof = TlogProof.parse(text)
    checkpoint = open_checkpoint(proof.checkpoint, verifier_key)
    try:
        verify_inclusion(
            leaf_hash(entry_bytes),
            proof.index,
            checkpoint.size,
            proof.hashes,
            checkpoint.root_hash,
        )
    except LedgerVerificationError as exc:
        raise LedgerVerificationError(exc.reason, proof.index) from None
    return checkpoint
