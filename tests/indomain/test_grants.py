"""Registry grants: issued at the console, on the ledger, enforced from the next job on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import policies
from gateway import JobDocument
from indomain.cli import app
from indomain.errors import ConfigError
from indomain.grants import issue_grant
from indomain.registry import Grant

GRANT_POLICY = """
@id("acme-g1")
permit (principal in Grant::"G-1", action == Action::"aggregate", resource in Grant::"G-1");
"""


def _job(purpose: str = "fiscal_research") -> JobDocument:
    return JobDocument.model_validate(
        {
            "enterprise": "Acme Credit",
            "computation": "aggregate",
            "dataset": "residents",
            "purpose": purpose,
            "params": {"sql": "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"},
            "nonce": "n" * 32,
            "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def test_issue_decide_revoke_without_restart(tmp_path: Path, home_builder: Any) -> None:
    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "schema.cedarschema").write_text(
        (sandbox.home.policies / "schema.cedarschema").read_text()
    )
    (folder / "grant.cedar").write_text(GRANT_POLICY)
    sandbox.apply_policies(folder)

    def decide(purpose: str = "fiscal_research") -> policies.Decision:
        return policies.decide(sandbox.policy_set, sandbox.access_request(_job(purpose)))

    assert decide().code == "no_permit"  # no grant issued yet
    runner = CliRunner()
    issued = runner.invoke(
        app,
        [
            *("policy", "grant", "issue", "G-1", "--enterprise", "Acme Credit"),
            *("--purpose", "fiscal_research", "--valid-until", "2099-01-01"),
            *("--dataset", "residents", "--obligation", "min_group_size=25"),
            *("--home", str(sandbox.home.root)),
        ],
    )
    assert issued.exit_code == 0, issued.output
    allowed = decide()
    assert allowed.allowed and allowed.obligations["min_group_size"] == "25"
    listed = runner.invoke(
        app, ["policy", "grant", "list", "--json", "--home", str(sandbox.home.root)]
    )
    assert listed.exit_code == 0, listed.output
    (only,) = json.loads(listed.output)
    assert only["id"] == "G-1" and only["holder"] == "Acme Credit"
    assert only["obligations"] == {"min_group_size": "25"} and only["status"] == "active"
    unknown = runner.invoke(
        app,
        [
            *("policy", "grant", "issue", "G-9", "--enterprise", "Nobody Ltd"),
            *("--purpose", "p", "--valid-until", "2099-01-01", "--dataset", "residents"),
            *("--home", str(sandbox.home.root)),
        ],
    )
    assert unknown.exit_code == 2 and "no registered enterprise" in unknown.output
    bad = runner.invoke(
        app,
        [
            *("policy", "grant", "issue", "G-9", "--enterprise", "Acme Credit"),
            *("--purpose", "p", "--valid-until", "2099-01-01", "--dataset", "residents"),
            *("--obligation", "min_group_size", "--home", str(sandbox.home.root)),
        ],
    )
    assert bad.exit_code == 2 and "name=value" in bad.output
    assert decide("credit_risk_model").code == "no_permit"  # bound to its purpose

    revoked = runner.invoke(
        app, ["policy", "grant", "revoke", "G-1", "--home", str(sandbox.home.root)]
    )
    assert revoked.exit_code == 0, revoked.output
    assert decide().code == "no_permit"  # the same open sandbox sees it at once
    checked = runner.invoke(
        app,
        [
            *("policy", "check", "--enterprise", "Acme Credit", "--dataset", "residents"),
            *("--purpose", "fiscal_research", "--explain", "--home", str(sandbox.home.root)),
        ],
    )
    assert checked.exit_code == 3 and "grant G-1: not in force: revoked" in checked.output

    types = [
        sandbox.ledger.entry(i).type for i in range(sandbox.ledger.size - 2, sandbox.ledger.size)
    ]
    assert types == ["grant.issued", "grant.status"]
    last = sandbox.ledger.entry(sandbox.ledger.size - 1).fields["grant"]
    assert last["id"] == "G-1" and last["status"] == "revoked"
    sandbox.close()


def test_an_expired_grant_denies_the_next_decision(tmp_path: Path, home_builder: Any) -> None:
    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "schema.cedarschema").write_text(
        (sandbox.home.policies / "schema.cedarschema").read_text()
    )
    (folder / "grant.cedar").write_text(GRANT_POLICY)
    sandbox.apply_policies(folder)
    now = datetime.now(UTC)
    grant = Grant(
        id="G-1",
        holder="Acme Credit",
        purpose="fiscal_research",
        valid_from=now - timedelta(days=30),
        valid_until=now + timedelta(hours=1),
        datasets=("residents",),
        groups=(),
        obligations={},
        status="active",
    )
    issue_grant(sandbox, grant)
    job = _job()
    assert policies.decide(sandbox.policy_set, sandbox.access_request(job)).allowed
    later = sandbox.access_request(job, when=now + timedelta(hours=2))
    assert policies.decide(sandbox.policy_set, later).code == "no_permit"
    sandbox.close()


def test_bad_grants_are_refused_and_leave_nothing(tmp_path: Path, home_builder: Any) -> None:
    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    size = sandbox.ledger.size
    now = datetime.now(UTC)
    good = dict(
        id="G-2",
        holder="Acme Credit",
        purpose="p",
        valid_from=now,
        valid_until=now + timedelta(days=1),
        datasets=("residents",),
        groups=(),
        obligations={},
        status="active",
    )
    for change in (
        {"holder": "Nobody Ltd"},
        {"obligations": {"min_grop_size": "10"}},
        {"valid_until": now - timedelta(days=1)},
        {"datasets": ()},
        {"id": "G 2; DROP"},
    ):
        with pytest.raises(ConfigError):
            issue_grant(sandbox, Grant(**{**good, **change}))  # type: ignore[arg-type]
    assert sandbox.ledger.size == size and sandbox.registry.grants() == []
    issue_grant(sandbox, Grant(**good))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="already exists"):
        issue_grant(sandbox, Grant(**good))  # type: ignore[arg-type]

    # A second enterprise claiming a licence number already held is refused, unstored.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.conftest import write_public_key

    sandbox.update_licence("Acme Credit", licence_number="L-2026-001")
    size = sandbox.ledger.size
    pem = write_public_key(tmp_path / "impostor.pub", Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="already held"):
        sandbox.register_enterprise("Impostor Ltd", pem, licence_number="L-2026-001")
    assert "Impostor Ltd" not in {e.name for e in sandbox.store.enterprises()}
    assert sandbox.ledger.size == size
    sandbox.close()


def test_a_licence_number_has_one_holder(tmp_path: Path) -> None:
    # Policies may say `principal in Licence::"L-1"`: a second enterprise registered
    # with the same number would otherwise be in that licence too.
    from indomain.registry import Registry

    registry = Registry(tmp_path / "state.sqlite")
    registry.set_licence("Acme Credit", licence_number="L-1")
    with pytest.raises(ConfigError, match="already held by 'Acme Credit'"):
        registry.set_licence("Impostor Ltd", licence_number="L-1")
    assert registry.licence("Impostor Ltd").status == "unlicensed"
    registry.set_licence("Acme Credit", licence_number="L-1", status="suspended")  # its own
    registry.close()


def test_a_licence_number_has_one_holder_even_when_two_registrations_race(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two registrations can both pass the check before either inserts; the unique index
    # still lets only one of them hold the number. Simulated by skipping the check.
    from indomain.registry import Registry

    first = Registry(tmp_path / "state.sqlite")
    second = Registry(tmp_path / "state.sqlite")
    monkeypatch.setattr(Registry, "check_licence_number", lambda *_: None)
    first.set_licence("Acme Credit", licence_number="L-1")
    with pytest.raises(ConfigError, match="already held"):
        second.set_licence("Impostor Ltd", licence_number="L-1")
    assert second.licence("Impostor Ltd").status == "unlicensed"
    second.set_licence("Beta Data", licence_number="")  # no number: not unique
    second.set_licence("Gamma Data", licence_number="")
    first.close()
    second.close()
