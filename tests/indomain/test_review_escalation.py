"""A job that runs an approved proposal needs the reviewers its own decision demands.

A proposal's reviewer count is fixed when it is submitted; the decision for a job that
runs it may demand more (a permit conditioned on the columns it reads, or a policy
tightened since). The stricter count must have approved it, or the job is refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import new_job, sign_job
from indomain.approvals import (
    propose,
    register_reviewer,
    review_document,
    sign_review,
    signed_review,
)
from indomain.policy_diff import replay
from policies import PolicySet

ACME = "Acme Credit"
PURPOSE = "credit_risk_model"
TEMPLATE = (
    "SELECT district, AVG(income) AS mean_income FROM residents "
    "WHERE age_band = :band GROUP BY district"
)
PERMITS = """
@id("acme-aggregate") @review("one-person")
permit (principal == Enterprise::"Acme Credit", action == Action::"aggregate",
        resource == Dataset::"residents")
when { context.purpose == "credit_risk_model" };
"""
INCOME_NEEDS_THREE = """
@id("income-needs-three-reviewers") @review("three-person")
permit (principal == Enterprise::"Acme Credit", action == Action::"aggregate",
        resource == Dataset::"residents")
when { context.purpose == "credit_risk_model" && context.job.columns.contains("income") };
"""


def _apply(sandbox: Any, folder: Path, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "schema.cedarschema").write_text(
        (sandbox.home.policies / "schema.cedarschema").read_text()
    )
    for old in folder.glob("*.cedar"):
        old.unlink()
    (folder / "p.cedar").write_text(text)
    sandbox.apply_policies(folder)


def _approve(sandbox: Any, proposal: Any, names: list[str]) -> None:
    for name in names:
        key = Ed25519PrivateKey.generate()
        register_reviewer(
            sandbox,
            name,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        document = review_document(
            sandbox.reviews.get(proposal.id),
            reviewer=name,
            verdict="approve",
            reason="ok",
            issued_at=datetime.now(UTC),
        )
        signed_review(sandbox, document, sign_review(document, key))


def _propose_income_by_district(sandbox: Any) -> Any:
    return propose(
        sandbox,
        requester=ACME,
        name="income_by_district",
        template=TEMPLATE,
        parameters={"band": "string"},
        purpose=PURPOSE,
        datasets=["residents"],
        expected_epsilon="1",
    )


def _run_proposal(sandbox: Any, acme: Ed25519PrivateKey, proposal_id: str) -> Any:
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose=PURPOSE,
        params={"proposal": proposal_id, "values": {"band": "30-44"}},
    )
    return sandbox.admit(job, job_id="job_" + job.nonce[:32], signature=sign_job(job, acme))


@pytest.fixture()
def sandbox(tmp_path: Path, home_builder: Any) -> Any:
    built, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=300)
    built.acme = acme
    yield built
    built.close()


def test_a_column_that_demands_more_reviewers_is_counted_at_submission(
    sandbox: Any, tmp_path: Path
) -> None:
    _apply(sandbox, tmp_path / "policies", PERMITS + INCOME_NEEDS_THREE)
    proposal = _propose_income_by_district(sandbox)
    assert proposal.required_reviewers == 3  # income is read: three, not one


def test_a_proposal_approved_under_a_looser_policy_is_refused_under_a_stricter_one(
    sandbox: Any, tmp_path: Path
) -> None:
    _apply(sandbox, tmp_path / "policies", PERMITS)
    proposal = _propose_income_by_district(sandbox)
    _approve(sandbox, proposal, ["wang"])
    assert _run_proposal(sandbox, sandbox.acme, proposal.id).outcome == "accepted"

    _apply(sandbox, tmp_path / "policies", PERMITS + INCOME_NEEDS_THREE)
    admission = _run_proposal(sandbox, sandbox.acme, proposal.id)
    assert admission.outcome == "refused"
    assert admission.code == "review_required"
    entry = sandbox.ledger.entry(admission.ledger_index)
    assert entry.type == "job.refused"
    assert entry.fields["decision"]["obligations"]["review"] == "three-person"


FORBID_INCOME = """
@id("no-income") forbid (principal, action, resource)
when { context.job.columns.contains("income") };
"""


def test_policy_diff_replays_a_proposal_job_with_the_columns_it_read(
    sandbox: Any, tmp_path: Path
) -> None:
    _apply(sandbox, tmp_path / "policies", PERMITS)
    proposal = _propose_income_by_district(sandbox)
    _approve(sandbox, proposal, ["wang"])
    admission = _run_proposal(sandbox, sandbox.acme, proposal.id)
    assert admission.outcome == "accepted"
    recorded = sandbox.ledger.entry(admission.ledger_index).fields["decided_with"]
    assert "income" in recorded["columns"]

    stricter = PolicySet.from_files(
        {
            "schema.cedarschema": (sandbox.home.policies / "schema.cedarschema").read_text(),
            "p.cedar": PERMITS + FORBID_INCOME,
        }
    )
    _, changed = replay(sandbox, sandbox.policy_set, stricter)
    assert [c.ledger_index for c in changed] == [admission.ledger_index]
