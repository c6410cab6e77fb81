"""Shared fixtures: where the published test vectors live, and whether they must be there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example time limit: speed is measured by the benchmarks, never asserted in tests,
# and a loaded CI machine must not turn a slow example into a failure.
settings.register_profile("indomain", deadline=None)
settings.load_profile("indomain")

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


# A small sandbox world shared by gateway and end-to-end tests ----------------------------

from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

DEMO_POLICIES = PROJECT_ROOT / "indomain" / "demo" / "policies"
ACME = "Acme Credit"
BETA = "Beta Analytics"


@dataclass
class World:
    """A sandbox home with the residents dataset, the demo policies and two enterprises."""

    root: Path
    sandbox: object
    url: str
    acme_key: Ed25519PrivateKey
    beta_key: Ed25519PrivateKey
    ledger_key: str


def write_public_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def build_home(
    root: Path, source_dir: Path, rows: int = 3000
) -> tuple[object, Ed25519PrivateKey, Ed25519PrivateKey]:
    from indomain.demo_data import write_residents
    from indomain.sandbox import Sandbox

    data, manifest = write_residents(source_dir, rows)
    sandbox = Sandbox.init(root, origin="test.indomain.example/ledger")
    sandbox.import_dataset(data, name="residents", manifest=manifest)
    acme, beta = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sandbox.register_enterprise(ACME, write_public_key(source_dir / "acme.pub", acme))
    sandbox.register_enterprise(BETA, write_public_key(source_dir / "beta.pub", beta))
    sandbox.apply_policies(DEMO_POLICIES)
    return sandbox, acme, beta


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from indomain.server import serve_in_thread

    base = tmp_path_factory.mktemp("world")
    sandbox, acme, beta = build_home(base / "home", base / "source")
    with serve_in_thread(sandbox.app()) as url:  # type: ignore[attr-defined]
        yield World(
            root=base / "home",
            sandbox=sandbox,
            url=url,
            acme_key=acme,
            beta_key=beta,
            ledger_key=sandbox.verifier_key,  # type: ignore[attr-defined]
        )
    sandbox.close()  # type: ignore[attr-defined]


@pytest.fixture()
def home_builder() -> object:
    """``build_home(root, source_dir, rows)`` for tests that need a sandbox of their own."""
    return build_home
