"""The audit ledger: an append-only, tamper-evident record of every run, refusal and change.

Entries are canonical JSON (RFC 8785), each naming its predecessor's hash, and are the
leaves of an RFC 9162 Merkle tree. After every commit the ledger signs a C2SP checkpoint
(a signed note, Ed25519), so an auditor holding only the ledger's verifier key can check
a receipt (:func:`verify_receipt`) or the whole folder (:func:`verify_ledger`) offline.

The Merkle functions are pure and read stored hashes through :class:`HashReader`, in the
stored-hash layout of Go's ``sumdb/tlog``; :class:`Ledger` is the SQLite-backed driver.
"""

from ledger._cosign import (
    cosign,
    open_cosigned,
    verify_cosignature,
    witness_checkpoint,
    witness_key,
)
from ledger._entry import LedgerEntry
from ledger._errors import (
    LedgerError,
    LedgerForkError,
    LedgerVerificationError,
    WitnessNotAccepted,
)
from ledger._export import export_ledger, verify_export
from ledger._ledger import Ledger
from ledger._merkle import (
    HashReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    stored_hash_index,
    stored_hashes,
    tree_root,
)
from ledger._note import Checkpoint, open_checkpoint, sign_checkpoint, verifier_key
from ledger._proofs import verify_consistency, verify_inclusion
from ledger._receipt import Receipt, verify_receipt
from ledger._scan import VerificationReport, claimed_size, verify_entries
from ledger._tlogproof import TlogProof, tlog_proof, verify_tlog_proof
from ledger._verify import verify_ledger
from ledger._witnesses import accept_witness, accepted_witnesses, remove_witness

__all__ = [
    "Checkpoint",
    "HashReader",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerForkError",
    "LedgerVerificationError",
    "Receipt",
    "TlogProof",
    "VerificationReport",
    "WitnessNotAccepted",
    "accept_witness",
    "accepted_witnesses",
    "claimed_size",
    "consistency_proof",
    "cosign",
    "export_ledger",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "open_checkpoint",
    "open_cosigned",
    "remove_witness",
    "root_from_leaf_hashes",
    "sign_checkpoint",
    "stored_hash_index",
    "stored_hashes",
    "tlog_proof",
    "tree_root",
    "verifier_key",
    "verify_consistency",
    "verify_cosignature",
    "verify_entries",
    "verify_export",
    "verify_inclusion",
    "verify_ledger",
    "verify_receipt",
    "verify_tlog_proof",
    "witness_checkpoint",
    "witness_key",
]
