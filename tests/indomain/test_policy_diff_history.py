"""``policy diff`` replays each past decision with the registry facts of its time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import policies
from gateway import new_job, sign_job
from indomain.policy_diff import HistoricalRegistry, replay

DEMO = Path(__file__).resolve().parents[2] / "indomain" / "demo" / "policies"
SQL = "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"
FORBID_ACME = '@id("stop-acme") forbid (principal == Enterprise::"Acme Credit", action, resource);'


def _admit(sandbox: Any, key: Any, job_id: str) -> Any:
    job = new_job(
        audience=sandbox.home.origin,
        enterprise="Acme Credit",
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL},
    )
    return sandbox.admit(job, job_id=job_id, signature=sign_job(job, key))


def test_a_licence_suspended_after_a_decision_neither_hides_nor_invents_a_change(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    assert _admit(sandbox, acme, "job_0001").outcome == "accepted"
    sandbox.update_licence("Acme Credit", status="suspended")
    demo = policies.PolicySet.load(DEMO)

    # The same policies, one comment changed: nothing would decide differently.
    commented = dict(demo.files)
    commented["acme_credit.cedar"] = "// reviewed\n" + demo.files["acme_credit.cedar"]
    replayed, changed = replay(sandbox, demo, policies.PolicySet.from_files(commented))
    assert replayed == 1 and changed == []

    # A forbid on Acme would have denied the job that was allowed then: that is a change,
    # even though today's registry (suspended) would deny it under both sets.
    stopped = policies.PolicySet.from_files({**demo.files, "stop.cedar": FORBID_ACME})
    replayed, changed = replay(sandbox, demo, stopped)
    assert replayed == 1 and len(changed) == 1
    assert changed[0].old == "allow" and changed[0].new == "deny (forbidden)"
    sandbox.close()


def test_a_job_decided_while_suspended_stays_denied_after_reinstatement(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    sandbox.update_licence("Acme Credit", status="suspended")
    assert _admit(sandbox, acme, "job_0002").outcome == "denied"
    sandbox.update_licence("Acme Credit", status="active")
    demo = policies.PolicySet.load(DEMO)
    stopped = policies.PolicySet.from_files({**demo.files, "stop.cedar": FORBID_ACME})
    replayed, changed = replay(sandbox, demo, stopped)
    # Then it was denied by the licence guard under both sets: no change to report.
    assert replayed == 1 and changed == []
    sandbox.close()


def test_the_historical_registry_applies_entries_in_order_and_fails_closed() -> None:
    history = HistoricalRegistry()
    assert history.licence("Acme").status == "unlicensed"
    licence = {"enterprise": "Acme", "licence_number": "L-1", "status": "active"}
    history.feed("enterprise.registered", {"licence": {**licence, "licence_expires": None}})
    history.feed("enterprise.licence", {"licence": {**licence, "status": "suspended"}})
    assert history.licence("Acme").status == "suspended"
    history.feed("enterprise.licence", {"licence": {"garbage": True}})  # unreadable: skipped
    assert history.licence("Acme").status == "suspended"
    history.feed("dataset.classified", {"dataset": "r", "sensitivity": 2, "groups": ["h"]})
    assert history.dataset_class("r").groups == ("h",)
    assert history.dataset_class("other").sensitivity == 4
    grant = {
        "id": "G-1",
        "holder": "Acme",
        "purpose": "p",
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2027-01-01T00:00:00Z",
        "datasets": ["r"],
        "groups": [],
        "obligations": {},
        "status": "active",
    }
    history.feed("grant.issued", {"grant": grant})
    history.feed("grant.status", {"grant": {**grant, "status": "revoked"}})
    assert [g.status for g in history.grants("Acme")] == ["revoked"]
    assert history.grants("Someone") == []
