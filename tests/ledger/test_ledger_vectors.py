"""The published transparency-dev/merkle proof vectors (RFC 6962 / RFC 9162), every file.

They live outside the project in ``../shared/vectors`` (see its README). The file list is
collected at import time so each vector is its own test; the ``vectors_dir`` fixture
decides whether a missing folder skips or (with INDOMAIN_REQUIRE_VECTORS=1) fails.
The ``subtree*`` folders test a non-RFC 9162 extension and are not used.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ledger import LedgerVerificationError, verify_consistency, verify_inclusion

_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "vectors"
_TESTDATA = Path("merkle") / "testdata"


def _collect(kind: str) -> list[str]:
    folder = _DEFAULT / _TESTDATA / kind
    if not folder.is_dir():
        return ["<vectors missing>"]
    return sorted(str(path.relative_to(_DEFAULT)) for path in folder.rglob("*.json"))


INCLUSION = _collect("inclusion")
CONSISTENCY = _collect("consistency")


def _load(vectors_dir: Path, relative: str) -> dict:
    path = vectors_dir / relative
    assert path.is_file(), f"vector {relative} is missing"
    return json.loads(path.read_text(encoding="utf-8"))


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(values: list[str] | None) -> list[bytes]:
    return [_b64(value) for value in values or []]


def _outcome(check) -> bool:
    """True if the check passed, False if it raised LedgerVerificationError (nothing else)."""
    try:
        check()
    except LedgerVerificationError:
        return False
    return True


@pytest.mark.parametrize("relative", INCLUSION)
def test_inclusion_vector(vectors_dir, relative):
    vector = _load(vectors_dir, relative)
    passed = _outcome(
        lambda: verify_inclusion(
            _b64(vector["leafHash"]),
            vector["leafIdx"],
            vector["treeSize"],
            _proof(vector["proof"]),
            _b64(vector["root"]),
        )
    )
    assert passed is not vector["wantErr"], vector["desc"]


@pytest.mark.parametrize("relative", CONSISTENCY)
def test_consistency_vector(vectors_dir, relative):
    vector = _load(vectors_dir, relative)
    passed = _outcome(
        lambda: verify_consistency(
            vector["size1"],
            vector["size2"],
            _b64(vector["root1"]),
            _b64(vector["root2"]),
            _proof(vector["proof"]),
        )
    )
    assert passed is not vector["wantErr"], vector["desc"]


def test_every_vector_file_is_collected(vectors_dir):
    testdata = vectors_dir / _TESTDATA
    for kind, collected in (("inclusion", INCLUSION), ("consistency", CONSISTENCY)):
        on_disk = sorted(str(p.relative_to(vectors_dir)) for p in (testdata / kind).rglob("*.json"))
        assert on_disk, f"no {kind} vectors under {testdata}"
        assert collected == on_disk
    # The happy paths are there too, so passing is not just "everything fails".
    assert any(_load(vectors_dir, r)["wantErr"] is False for r in INCLUSION)
    assert any(_load(vectors_dir, r)["wantErr"] is False for r in CONSISTENCY)
