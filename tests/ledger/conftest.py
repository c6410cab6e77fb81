"""Fixtures for the ledger tests: a signing key and small ledgers on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import Ledger

ORIGIN = "ledger.test.example/audit"


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


@pytest.fixture
def make_ledger(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Callable[[int], Path]:
    """Create a closed ledger with ``count`` entries in a fresh folder; return the folder."""

    def make(count: int, name: str = "ledger") -> Path:
        directory = tmp_path / name
        with Ledger.create(directory, origin=ORIGIN, signing_key=signing_key) as ledger:
            for i in range(count):
                ledger.append("test.event", {"seq": i, "note": f"event-{i}"})
        return directory

    return make


@pytest.fixture(params=["whole", "chunks of 2", "chunks of 2 in 2 workers"])
def verify_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a verification test as one chunk, as many small chunks, and in worker processes.

    Chunk boundaries (the chain across them, the stored hashes above them, events checked
    in order) are where parallel verification could differ from a sequential scan.
    """
    from ledger import _verify

    if request.param != "whole":
        monkeypatch.setattr(_verify, "CHUNK_LEVEL", 1)
    if request.param.endswith("workers"):
        monkeypatch.setattr(_verify, "default_workers", lambda total: 2)
    return str(request.param)
