"""Console votes are signed with the reviewer's registered key, like votes over HTTP:
opening the home is not being a reviewer. Each attack below must leave nothing recorded."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from typer.testing import CliRunner

import indomain
from indomain.approvals import (
    ReviewDenied,
    propose,
    review_document,
    sign_review,
    signed_review,
)
from indomain.cli import app
from indomain.proposals import ProposalError
from indomain.sandbox import Sandbox

BUREAU = Path(indomain.__file__).parent / "demo" / "bureau"
TEMPLATE = "SELECT district, COUNT(*) AS n FROM residents WHERE age_band = :band GROUP BY district"
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.conftest import build_home

    base = tmp_path_factory.mktemp("console-reviews")
    sandbox: Any
    sandbox, _, _ = build_home(base / "home", base / "source", rows=300)
    sandbox.apply_policies(BUREAU)
    sandbox.close()
    keys: dict[str, Path] = {}
    for name in ("wang", "zhao", "mallory"):
        key = Ed25519PrivateKey.generate()
        keys[name] = base / f"{name}.key"
        keys[name].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (base / f"{name}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    for name in ("wang", "zhao"):  # mallory holds a key but is not a registered reviewer
        args = ["review", "register-reviewer", name, "--public-key", str(base / f"{name}.pub")]
        assert runner.invoke(app, [*args, "--home", str(base / "home")]).exit_code == 0
    return {"home": base / "home", "keys": keys, "base": base}


def _proposal(home: Path, name: str) -> Any:
    with Sandbox.open(home) as sandbox:
        return propose(
            sandbox,
            requester="Acme Credit",
            name=name,
            template=TEMPLATE,
            parameters={"band": "string"},
            purpose="credit_risk_model",
            datasets=["residents"],
            expected_epsilon="0.5",
        )


def _vote(world: dict[str, Any], verdict: str, proposal: str, *args: str) -> Any:
    return runner.invoke(app, ["review", verdict, proposal, *args, "--home", str(world["home"])])


def _state(home: Path, proposal: str) -> tuple[int, tuple[str, ...]]:
    with Sandbox.open(home) as sandbox:
        return sandbox.ledger.size, sandbox.reviews.get(proposal).approvals


def test_a_signed_console_vote_is_recorded_with_its_signature(world: dict[str, Any]) -> None:
    p = _proposal(world["home"], "signed_counts")
    ok = _vote(world, "approve", p.id, "--reviewer", "wang", "--key", str(world["keys"]["wang"]))
    assert ok.exit_code == 0 and "1/2" in ok.output, ok.output
    done = _vote(world, "approve", p.id, "--reviewer", "zhao", "--key", str(world["keys"]["zhao"]))
    assert done.exit_code == 0 and "approved" in done.output, done.output
    with Sandbox.open(world["home"]) as sandbox:
        votes = [
            sandbox.ledger.entry(i)
            for i in range(sandbox.ledger.size)
            if sandbox.ledger.entry(i).type == "proposal.reviewed"
            and sandbox.ledger.entry(i).fields["proposal"] == p.id
        ]
        assert [v.fields["reviewer"] for v in votes] == ["wang", "zhao"]
        # An auditor checks each vote against the key registered on the ledger.
        for vote in votes:
            signed = vote.fields["signed"]
            raw = sandbox.reviews.reviewer_key(vote.fields["reviewer"])
            Ed25519PublicKey.from_public_bytes(raw).verify(
                base64.b64decode(signed["signature"]), rfc8785.dumps(dict(signed["review"]))
            )
            assert signed["review"]["code_hash"] == p.code_hash


def test_an_unsigned_console_vote_is_refused(world: dict[str, Any]) -> None:
    p = _proposal(world["home"], "unsigned_counts")
    before = _state(world["home"], p.id)
    result = _vote(world, "approve", p.id, "--reviewer", "wang")
    assert result.exit_code == 2 and "--key" in result.output
    assert _state(world["home"], p.id) == before


def test_another_reviewers_key_cannot_vote_in_their_name(world: dict[str, Any]) -> None:
    p = _proposal(world["home"], "stolen_name")
    before = _state(world["home"], p.id)
    result = _vote(
        world, "approve", p.id, "--reviewer", "wang", "--key", str(world["keys"]["zhao"])
    )
    assert result.exit_code == 3 and "registered key" in result.output
    assert _state(world["home"], p.id) == before


def test_an_unregistered_signer_is_refused(world: dict[str, Any]) -> None:
    p = _proposal(world["home"], "forged_counts")
    before = _state(world["home"], p.id)
    for reviewer in ("mallory", "wang"):
        key = str(world["keys"]["mallory"])
        result = _vote(world, "approve", p.id, "--reviewer", reviewer, "--key", key)
        assert result.exit_code == 3, result.output
    assert _state(world["home"], p.id) == before


def test_a_key_file_that_is_not_a_private_key_is_bad_input(world: dict[str, Any]) -> None:
    p = _proposal(world["home"], "bad_key")
    public = str(world["base"] / "wang.pub")
    result = _vote(world, "reject", p.id, "--reviewer", "wang", "--reason", "x", "--key", public)
    assert result.exit_code == 2 and "private key" in result.output
    missing = str(world["base"] / "nothing.key")
    result = _vote(world, "reject", p.id, "--reviewer", "wang", "--reason", "x", "--key", missing)
    assert result.exit_code == 2 and "cannot read" in result.output


def test_tampered_stale_and_other_hash_documents_are_refused(world: dict[str, Any]) -> None:
    p = _proposal(world["home"], "tampered")
    key = serialization.load_pem_private_key(world["keys"]["wang"].read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    now = datetime.now(UTC)
    doc = review_document(p, reviewer="wang", verdict="reject", reason="no", issued_at=now)
    signature = sign_review(doc, key)
    with Sandbox.open(world["home"]) as sandbox:
        size = sandbox.ledger.size
        with pytest.raises(ReviewDenied):  # the verdict flipped after signing
            signed_review(sandbox, {**doc, "verdict": "approve"}, signature)
        with pytest.raises(ProposalError, match="5 minutes"):
            signed_review(sandbox, doc, signature, now=now + timedelta(minutes=6))
        other = {**doc, "code_hash": "sha256:" + "0" * 64}
        with pytest.raises(ProposalError, match="another code hash"):
            signed_review(sandbox, other, sign_review(other, key))
        with pytest.raises(ProposalError, match="exactly the fields"):
            signed_review(sandbox, {**doc, "extra": "x"}, signature)
        assert sandbox.ledger.size == size
        assert signed_review(sandbox, doc, signature).status == "rejected"


def test_the_requester_cannot_review_even_with_a_registered_key(
    world: dict[str, Any], tmp_path: Path
) -> None:
    p = _proposal(world["home"], "own_counts")
    args = ["review", "register-reviewer", "Acme Credit"]
    args += ["--public-key", str(world["base"] / "mallory.pub"), "--home", str(world["home"])]
    assert runner.invoke(app, args).exit_code == 0
    key = str(world["keys"]["mallory"])
    result = _vote(world, "approve", p.id, "--reviewer", "Acme Credit", "--key", key)
    assert result.exit_code == 2 and "own proposal" in result.output
