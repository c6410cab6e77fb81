"""A declared join through the sandbox: both datasets decrypted in the enclave, policy
decided on both, budget charged on both (or neither), and the ledger naming both."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from computations import table_from_ipc
from gateway import new_job, sign_job
from indomain.budgets import Budget, BudgetExhausted
from tests.conftest import ACME, DEMO_POLICIES, write_public_key

pytestmark = pytest.mark.slow

PEOPLE = {
    "privacy_unit": "person",
    "min_group_size": 5,
    "columns": {
        "person": {"class": "identifier"},
        "district": {"class": "quasi_identifier", "dimension": True, "keys": ["north", "south"]},
        "income": {"class": "sensitive", "bounds": [0, 1000]},
    },
    "privacy": {"budget": "3/month"},
    "joins": [{"dataset": "clinic", "key": "person", "other_key": "patient"}],
}
CLINIC = {
    "privacy_unit": "patient",
    "min_group_size": 5,
    "columns": {
        "patient": {"class": "identifier"},
        "flag": {"class": "sensitive", "dimension": True, "keys": [True, False]},
        "cost": {"class": "sensitive", "bounds": [0, 10]},
    },
    "privacy": {"budget": "2/month"},
}
CLINIC_POLICY = """
@id("acme-credit-clinic")
permit (
  principal == Enterprise::"Acme Credit",
  action == Action::"aggregate",
  resource == Dataset::"clinic"
)
when { context.purpose == "credit_risk_model" };
"""
SQL = (
    "SELECT c.flag, COUNT(*) AS n, SUM(p.income) AS income FROM people p "
    "JOIN clinic c ON p.person = c.patient GROUP BY c.flag"
)


def _write(
    directory: Path, name: str, manifest: dict[str, Any], table: pa.Table
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data, spec = directory / f"{name}.parquet", directory / f"{name}.yaml"
    pq.write_table(table, data)
    spec.write_text(yaml.safe_dump(manifest))
    return data, spec


def _home(
    tmp_path: Path, *, clinic_allowed: bool, clinic_policy: str = CLINIC_POLICY
) -> tuple[Any, Ed25519PrivateKey]:
    from indomain.sandbox import Sandbox

    source = tmp_path / "source"
    people = pa.Table.from_pylist(
        [
            {"person": i, "district": "north" if i % 2 else "south", "income": 500}
            for i in range(300)
        ]
    )
    clinic = pa.Table.from_pylist(
        [{"patient": i, "flag": i % 3 == 0, "cost": 5} for i in range(300)]
        + [{"patient": 7, "flag": True, "cost": 10}] * 40  # a key repeated: left out
    )
    sandbox = Sandbox.init(tmp_path / "home", origin="test.indomain.example/ledger")
    for name, manifest, table in (("people", PEOPLE, people), ("clinic", CLINIC, clinic)):
        data, spec = _write(source, name, manifest, table)
        sandbox.import_dataset(data, name=name, manifest=spec)
    acme = Ed25519PrivateKey.generate()
    sandbox.register_enterprise(ACME, write_public_key(source / "acme.pub", acme))
    policies = tmp_path / "policies"
    shutil.copytree(DEMO_POLICIES, policies)
    text = (policies / "acme_credit.cedar").read_text().replace('"residents"', '"people"')
    if clinic_allowed:
        text += clinic_policy
    (policies / "acme_credit.cedar").write_text(text)
    sandbox.apply_policies(policies)
    return sandbox, acme


def _submit(sandbox: Any, key: Ed25519PrivateKey, job_id: str, sql: str = SQL) -> Any:
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="people",
        purpose="credit_risk_model",
        params={"sql": sql},
    )
    return job, sandbox.admit(job, job_id=job_id, signature=sign_job(job, key))


def _spent(sandbox: Any, dataset: str, budget: str) -> float:
    view = sandbox.accountant.spent(enterprise=ACME, dataset=dataset, budget=Budget.parse(budget))
    return float(view["epsilon_spent"])


def test_a_join_runs_on_both_datasets_and_is_charged_on_both(tmp_path: Path) -> None:
    sandbox, acme = _home(tmp_path, clinic_allowed=True)
    job, admission = _submit(sandbox, acme, "job_join")
    assert admission.outcome == "accepted", admission.reason
    assert admission.details["budget"]["datasets"] == ["people", "clinic"]
    assert _spent(sandbox, "people", "3/month") == pytest.approx(1.0)
    assert _spent(sandbox, "clinic", "2/month") == pytest.approx(1.0)
    execution = sandbox.execute(job, job_id="job_join", admission=admission)
    rows = table_from_ipc(execution.result_ipc).to_pylist()
    assert {row["flag"] for row in rows} <= {True, False} and rows
    assert any("occurring more than once in clinic" in n for n in execution.summary["notes"])
    accepted = sandbox.ledger.entry(admission.ledger_index)
    assert accepted.fields["dataset"] == "people"
    assert accepted.fields["partner_dataset"] == "clinic"
    run = sandbox.ledger.entry(execution.summary["run_ledger_index"])
    assert run.fields["partner_dataset"] == "clinic"
    attestation = run.fields["attestation"]
    assert attestation["dataset"] == "people" and attestation["partner_dataset"] == "clinic"
    clinic = sandbox.enclave.dataset("clinic")
    assert attestation["partner_content_hash"] == clinic.content_hash
    sandbox.enclave.verify_attestation(attestation, run.fields["attestation_signature"])
    sandbox.close()


def test_a_join_whose_partner_is_denied_is_refused_and_charges_nothing(tmp_path: Path) -> None:
    sandbox, acme = _home(tmp_path, clinic_allowed=False)
    _, admission = _submit(sandbox, acme, "job_denied")
    assert admission.outcome == "denied"
    assert admission.details["denied_dataset"] == "clinic"
    assert admission.reason.startswith("dataset clinic: ")
    entry = sandbox.ledger.entry(admission.ledger_index)
    assert entry.type == "job.denied" and entry.fields["denied_dataset"] == "clinic"
    assert sandbox.accountant.accounts() == []
    # The same enterprise may still query people alone.
    _, alone = _submit(sandbox, acme, "job_alone", "SELECT COUNT(*) AS n FROM people")
    assert alone.outcome == "accepted", alone.reason
    sandbox.close()


def test_both_reservations_are_atomic(tmp_path: Path) -> None:
    """clinic's budget (2/month) runs out first: the third join is refused and people is
    not charged for it either."""
    sandbox, acme = _home(tmp_path, clinic_allowed=True)
    outcomes = [
        _submit(sandbox, acme, f"job_{i}", SQL.replace("AS n", f"AS n{i}"))[1] for i in range(3)
    ]
    assert [a.outcome for a in outcomes] == ["accepted", "accepted", "refused"]
    assert outcomes[2].code == "budget_exhausted" and "clinic" in outcomes[2].reason
    assert _spent(sandbox, "people", "3/month") == pytest.approx(2.0)
    assert _spent(sandbox, "clinic", "2/month") == pytest.approx(2.0)
    with pytest.raises(BudgetExhausted):
        sandbox.accountant.reserve(
            enterprise=ACME,
            dataset="people",
            job_id="job_direct",
            epsilon=0.5,
            delta=0,
            budgets=[Budget.parse("3/month")],
            also=[("clinic", [Budget.parse("2/month")])],
        )
    assert _spent(sandbox, "people", "3/month") == pytest.approx(2.0)
    sandbox.close()


def test_the_partners_obligations_bind_the_join(tmp_path: Path) -> None:
    """clinic's permit caps a job at epsilon 0.25: the join is charged and run at 0.25."""
    strict = CLINIC_POLICY.replace(
        '@id("acme-credit-clinic")', '@id("acme-credit-clinic")\n@epsilon_per_job("0.25")'
    )
    sandbox, acme = _home(tmp_path, clinic_allowed=True, clinic_policy=strict)
    job, admission = _submit(sandbox, acme, "job_strict")
    assert admission.outcome == "accepted", admission.reason
    assert admission.details["obligations"]["epsilon_per_job"] == "0.25"
    assert _spent(sandbox, "people", "3/month") == pytest.approx(0.25)
    assert _spent(sandbox, "clinic", "2/month") == pytest.approx(0.25)
    execution = sandbox.execute(job, job_id="job_strict", admission=admission)
    assert execution.summary["privacy"]["epsilon"] == pytest.approx(0.25)
    sandbox.close()


def test_the_policy_sees_each_datasets_columns_and_the_joined_result_size(tmp_path: Path) -> None:
    sandbox, _ = _home(tmp_path, clinic_allowed=True)
    from computations import get_computation, join_partner
    from indomain.admission import _joined_result_size, _split_columns, joinable

    people = sandbox.enclave.dataset("people").spec
    partners = joinable(sandbox, people)
    plan = get_computation("aggregate").check({"sql": SQL}, people, partners=partners)
    assert join_partner(plan) == "clinic"
    columns = ("clinic.flag", "people.income")
    assert _split_columns(columns, "people") == ("income",)
    assert _split_columns(columns, "clinic") == ("flag",)
    assert _joined_result_size(plan, {"people": people, **partners}) == 2  # flag: true, false
    by_district = SQL.replace("GROUP BY c.flag", "GROUP BY c.flag, p.district").replace(
        "SELECT c.flag", "SELECT c.flag, p.district"
    )
    plan = get_computation("aggregate").check({"sql": by_district}, people, partners=partners)
    assert _joined_result_size(plan, {"people": people, **partners}) == 4
    sandbox.close()


def test_policy_diff_replays_a_join_on_its_partner_too(tmp_path: Path) -> None:
    """Only the partner's policy changes: the join was allowed because both datasets
    allowed it, so a set that now denies the partner changes that decision."""
    import policies as cedar
    from indomain.policy_diff import replay

    sandbox, acme = _home(tmp_path, clinic_allowed=True)
    _, admission = _submit(sandbox, acme, "job_join")
    assert admission.outcome == "accepted", admission.reason
    decided_with = sandbox.ledger.entry(admission.ledger_index).fields["decided_with"]
    assert list(decided_with["partner_columns"]) == ["flag"]
    applied = sandbox.policy_set
    assert applied is not None
    same = cedar.PolicySet.from_files(dict(applied.files))
    assert replay(sandbox, applied, same) == (1, [])

    # The people dataset's policy is untouched; the clinic loses its permit.
    files = dict(applied.files)
    files["acme_credit.cedar"] = files["acme_credit.cedar"].replace(CLINIC_POLICY, "")
    without_clinic = cedar.PolicySet.from_files(files)
    replayed, changed = replay(sandbox, applied, without_clinic)
    assert replayed == 1 and len(changed) == 1
    assert changed[0].old == "allow"
    assert changed[0].new.startswith("deny (") and changed[0].new.endswith(" on clinic")

    # A forbid that names only the clinic's columns (the partner's own) changes it too.
    forbid_flag = (
        '@id("no-flag") forbid (principal, action == Action::"aggregate", '
        'resource == Dataset::"clinic") when { context.job.columns.contains("flag") };'
    )
    files = {**dict(applied.files), "no_flag.cedar": forbid_flag}
    replayed, changed = replay(sandbox, applied, cedar.PolicySet.from_files(files))
    assert replayed == 1 and [c.new for c in changed] == ["deny (forbidden) on clinic"]
    sandbox.close()
