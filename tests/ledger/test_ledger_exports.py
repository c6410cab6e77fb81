"""The front door: ``ledger.__all__`` is exactly what the package exports, and errors behave."""

from __future__ import annotations

import pickle

import pytest

import ledger
from indomain.errors import IndomainError
from ledger import LedgerError, LedgerVerificationError

EXPECTED = {
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
}


def test_all_lists_every_public_name_and_nothing_else():
    public = {name for name in vars(ledger) if not name.startswith("_")}
    assert set(ledger.__all__) == public == EXPECTED
    assert len(ledger.__all__) == len(set(ledger.__all__))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exports_are_implemented_in_private_modules(name):
    module = getattr(ledger, name).__module__
    assert module.startswith("ledger._"), module


def test_error_hierarchy():
    assert issubclass(LedgerError, IndomainError)
    assert issubclass(LedgerVerificationError, LedgerError)
    assert not issubclass(LedgerError, ValueError)


def test_verification_error_names_the_entry():
    error = LedgerVerificationError("leaf data does not match the chain (prev hash ab…)", 3)
    assert error.index == 3
    assert error.reason == "leaf data does not match the chain (prev hash ab…)"
    assert str(error) == "entry 3: leaf data does not match the chain (prev hash ab…)"
    general = LedgerVerificationError("no signature")
    assert general.index is None
    assert str(general) == "no signature"


def test_verification_error_survives_pickling():
    error = pickle.loads(pickle.dumps(LedgerVerificationError("bad", 7)))
    assert (error.index, error.reason, str(error)) == (7, "bad", "entry 7: bad")
