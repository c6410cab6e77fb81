"""Shared fixtures: where the published test vectors live, and whether they must be there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = PROJECT_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The shared vectors folder; skips where it is absent, fails when CI requires it."""
    if VECTORS_DIR.is_dir():
        return VECTORS_DIR
    reason = f"test vectors not found at {VECTORS_DIR} (they live beside the project in CI)"
    if os.environ.get("INDOMAIN_REQUIRE_VECTORS") == "1":
        pytest.fail(f"INDOMAIN_REQUIRE_VECTORS=1 but {reason}")
    pytest.skip(reason)
