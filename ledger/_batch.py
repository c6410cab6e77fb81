"""What one commit works with: queued appends, key changes, and the batch's hash view.

Split from :mod:`ledger._ledger` so the :class:`~ledger.Ledger` class reads as its
public behaviour; everything here is private to the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger._entry import PreparedEvent
from ledger._errors import LedgerError
from ledger._note import parse_verifier_key

# A key change rides with its entry: ("add", verifier key, private key) or ("retire", key, None)
KeyChange = tuple[str, str, Ed25519PrivateKey | None]
# the event (checked and canonicalised by its appender), and its key change or None
Append = tuple[PreparedEvent, KeyChange | None]
SigningKeys = Ed25519PrivateKey | Sequence[Ed25519PrivateKey]
Signer = tuple[str, Ed25519PrivateKey]  # (key name, private key)


def signers_for(active: list[str], keys: SigningKeys) -> list[tuple[str, Signer]]:
    """Pair each active verifier key with its private key; every active key needs one."""
    given = [keys] if isinstance(keys, Ed25519PrivateKey) else list(keys)
    if not given or not all(isinstance(k, Ed25519PrivateKey) for k in given):
        raise LedgerError("signing_key must be an Ed25519 private key (or a list of them)")
    by_public = {k.public_key().public_bytes_raw(): k for k in given}
    signers = []
    for vkey in active:
        parsed = parse_verifier_key(vkey)
        private = by_public.pop(parsed.public_key.public_bytes_raw(), None)
        if private is None:
            raise LedgerError(
                f"signing_key is not this ledger's key (missing {vkey.rsplit('+', 1)[0]})"
            )
        signers.append((vkey, (parsed.name, private)))
    if by_public:
        raise LedgerError("signing_key is not this ledger's key (a given key is not active)")
    return signers


def applicable(change: KeyChange, signers: dict[str, Signer]) -> bool:
    kind, vkey, _ = change
    if kind == "add":
        return vkey not in signers
    return vkey in signers and len(signers) > 1


def apply_change(change: KeyChange, signers: dict[str, Signer]) -> None:
    kind, vkey, private = change
    if kind == "add" and private is not None:
        signers[vkey] = (parse_verifier_key(vkey).name, private)
    else:
        del signers[vkey]


MAX_BATCH = 4096  # appends per group commit: bounds one transaction's size and latency


@dataclass(frozen=True, slots=True)
class Tip:
    """The top of the tree as this process's last commit left it.

    Valid while SQLite's ``PRAGMA data_version`` is unchanged: it changes exactly when
    another connection (another process, or another :class:`~ledger.Ledger` on the same
    folder) commits, and never for this connection's own commits. While it holds, the
    next commit extends ``frontier`` and ``prev`` directly instead of reading the size,
    the frontier hashes, the last entry and the latest checkpoint back from storage and
    re-checking them (five queries and a root, most of a lone append's CPU); when it
    changes, the commit re-reads and re-checks everything as before.
    """

    version: int  # PRAGMA data_version read inside that commit's transaction
    size: int
    frontier: list[bytes]  # perfect-subtree roots, largest first (:func:`_merkle.frontier`)
    prev: str  # hex leaf hash of entry size - 1 (GENESIS_PREV when empty)
