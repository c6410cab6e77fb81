"""Approved computation modules run, end to end: a real home, the real enclave worker.

The module reaches the data only through DP aggregates; its epsilon is reserved before it
runs and stays spent whatever happens; the attestation names its approved hash."""

from __future__ import annotations

import secrets
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import indomain
from computations import Plan, QueryRefused, table_from_ipc
from gateway import JobDocument
from indomain.approvals import module_store, propose_module, review
from indomain.demo_data import residents
from indomain.proposals import ProposalError
from indomain.sandbox import Sandbox

BUREAU = Path(indomain.__file__).parent / "demo" / "bureau"
# Large districts: the noise on a mean's sum has scale 3,000,000 (bound 500,000, three
# measures at epsilon 0.5), so a district's income total must be in the hundreds of
# millions for its noisy mean to be close to the truth with certainty (see the test).
ROWS = 40_000
MODULE = '''"""Mean income per district, for Acme's credit model."""


def run(data, params):
    return data.mean("income", by=["district"])
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import build_home

    base = tmp_path_factory.mktemp("module-runs")
    sandbox: Any
    sandbox, _, _ = build_home(base / "home", base / "source", rows=ROWS)
    sandbox.apply_policies(BUREAU)
    sandbox.close()
    return base / "home"


def _approved(sandbox: Sandbox, source: str, name: str, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "requester": "Acme Credit",
        "name": name,
        "source": source,
        "purpose": "credit_risk_model",
        "datasets": ["residents"],
        "columns": ["district", "income"],
        "expected_epsilon": "0.5",
    }
    fields.update(changes)
    proposal = propose_module(sandbox, **fields)
    review(sandbox, proposal.id, reviewer="wang", verdict="approve")
    return review(sandbox, proposal.id, reviewer="zhao", verdict="approve")


def _job(proposal: str, values: dict[str, Any] | None = None) -> JobDocument:
    return JobDocument.model_validate(
        {
            "enterprise": "Acme Credit",
            "computation": "aggregate",
            "dataset": "residents",
            "purpose": "credit_risk_model",
            "params": {"proposal": proposal, "values": values or {}},
            "nonce": secrets.token_urlsafe(24),
            "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )


def _spent(sandbox: Sandbox) -> float:
    (view,) = [v for v in sandbox.budgets("Acme Credit") if v["dataset"] == "residents"]
    return float(view["epsilon_spent"])


def _true_means() -> dict[str, tuple[float, int]]:
    totals: dict[str, list[int]] = defaultdict(list)
    for row in residents(ROWS).to_pylist():
        totals[row["district"]].append(row["income"])
    return {d: (sum(v) / len(v), len(v)) for d, v in totals.items()}


def test_an_approved_module_runs_in_the_enclave_and_returns_noisy_means(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        proposal = _approved(sandbox, MODULE, "district_income")
        before = _spent(sandbox)
        job = _job(proposal.id)
        admission = sandbox.admit(job, job_id="run-1", signature="s")
        assert admission.outcome == "accepted", admission.reason
        assert admission.details["budget"]["epsilon"] == pytest.approx(0.5)
        assert _spent(sandbox) == pytest.approx(before + 0.5)  # reserved before it runs
        accepted = sandbox.ledger.entry(admission.ledger_index)
        assert accepted.fields["code_hash"] == proposal.code_hash

        execution = sandbox.execute(job, job_id="run-1", admission=admission)

        rows = {r["district"]: r["mean"] for r in table_from_ipc(execution.result_ipc).to_pylist()}
        truth = _true_means()
        privacy = execution.summary["privacy"]
        (release,) = privacy["releases"]
        (output,) = release["outputs"].values()
        scale = output["noise_scale"]  # the sum's; the count's is 1/500,000 of it
        # Where 15% of a district's total is 20 noise scales, the noisy sum is off by less
        # than that but for e^-20 (2e-9) of runs, and the count (thousands, noise scale 6)
        # by less than 4%: the mean is then within 0.85/1.04 and 1.15/0.96 of the truth.
        # (Districts of 1,000 people out of 10,000 missed 20% about once in 200 runs.)
        big = [d for d, (mean, n) in truth.items() if 0.15 * mean * n >= 20 * scale]
        assert len(big) >= 3, "the demo data has large districts"
        for district in big:
            assert rows[district] == pytest.approx(truth[district][0], rel=0.2)
        assert any(rows[d] != truth[d][0] for d in big)  # noisy, not exact
        assert privacy["computation"] == "module" and privacy["code_hash"] == proposal.code_hash
        assert 0 < privacy["epsilon"] <= 0.5 and privacy["epsilon_budget"] == 0.5
        (release,) = privacy["releases"]
        assert release["query"].startswith('SELECT "district", AVG("income")')
        assert release["epsilon"] == privacy["epsilon"]
        # The run is attested under the module's approved hash, signed by the enclave.
        run = sandbox.ledger.entry(execution.summary["run_ledger_index"])
        assert run.type == "run.completed"
        attestation = sandbox.enclave.verify_attestation(
            run.fields["attestation"], run.fields["attestation_signature"]
        )
        assert attestation.code_hash == proposal.code_hash
        assert attestation.computation == "module"
        assert attestation.result_digest == execution.summary["result_digest"]
        assert _spent(sandbox) == pytest.approx(before + 0.5)  # nothing more at run time


def test_the_same_module_and_values_again_is_the_stored_release_at_no_cost(home: Path) -> None:
    source = MODULE + "# repeated\n"
    with Sandbox.open(home) as sandbox:
        proposal = _approved(sandbox, source, "repeated")
        first = _job(proposal.id, {"year": 2026})
        admitted = sandbox.admit(first, job_id="rep-1", signature="s")
        execution = sandbox.execute(first, job_id="rep-1", admission=admitted)
        sandbox.store.insert_job(
            job_id="rep-1",
            enterprise=first.enterprise,
            nonce=first.nonce,
            computation=first.computation,
            dataset=first.dataset,
            purpose=first.purpose,
            document=first.canonical(),
            signature="",
        )
        sandbox.store.update_job(
            "rep-1",
            status="succeeded",
            outcome={**admitted.to_json(), **execution.summary},
            result=execution.result_ipc,
            receipt=execution.receipt,
        )
        spent = _spent(sandbox)
        again = sandbox.admit(_job(proposal.id, {"year": 2026}), job_id="rep-2", signature="s")
        assert again.details["budget"]["reuse_of"] == "rep-1"
        other = sandbox.admit(_job(proposal.id, {"year": 2025}), job_id="rep-3", signature="s")
        assert "reuse_of" not in other.details["budget"]  # other values: a new run, charged
        assert _spent(sandbox) == pytest.approx(spent + 0.5)


def test_a_module_exceeding_its_budget_fails_and_stays_charged(home: Path) -> None:
    greedy = (
        "def run(data, params):\n"
        "    means = data.mean('income', by=['district'])\n"
        "    return data.count(by=['district'])\n"
    )
    with Sandbox.open(home) as sandbox:
        proposal = _approved(sandbox, greedy, "greedy")
        before = _spent(sandbox)
        job = _job(proposal.id)
        admission = sandbox.admit(job, job_id="run-greedy", signature="s")
        assert admission.outcome == "accepted", admission.reason
        with pytest.raises(QueryRefused, match="module-budget"):
            sandbox.execute(job, job_id="run-greedy", admission=admission)
        assert _spent(sandbox) == pytest.approx(before + 0.5)


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        ("data.count(by=['resident_id'])", "identifier-column"),
        ("data.count(where={'income': 50000})", "where-column"),
    ],
    ids=["group-by-identifier", "where-non-dimension"],
)
def test_a_query_the_checker_refuses_fails_the_run(home: Path, call: str, rule: str) -> None:
    source = f"def run(data, params):\n    return {call}\n"
    with Sandbox.open(home) as sandbox:
        proposal = _approved(
            sandbox,
            source,
            "refused_" + rule.replace("-", "_"),
            columns=["district", "income", "resident_id"],
        )
        job = _job(proposal.id)
        admission = sandbox.admit(job, job_id=f"run-{rule}", signature="s")
        assert admission.outcome == "accepted", admission.reason
        with pytest.raises(QueryRefused) as refused:
            sandbox.execute(job, job_id=f"run-{rule}", admission=admission)
        assert refused.value.rule == rule


def test_a_module_changed_after_admission_is_refused_at_run_time(home: Path) -> None:
    source = MODULE + "# changed later\n"
    with Sandbox.open(home) as sandbox:
        proposal = _approved(sandbox, source, "changed_later")
        job = _job(proposal.id)
        admission = sandbox.admit(job, job_id="run-changed", signature="s")
        assert admission.outcome == "accepted", admission.reason
        stored = module_store(sandbox).path(proposal.code_hash)
        stored.write_bytes(source.replace("income", "health_flag").encode())
        with pytest.raises(ProposalError, match="no longer hashes to its approved hash"):
            sandbox.execute(job, job_id="run-changed", admission=admission)


def test_the_worker_rehashes_the_bytes_it_is_asked_to_run(home: Path) -> None:
    # Even a plan that reaches the enclave with other bytes than its approved hash is
    # refused there, right before compiling.
    with Sandbox.open(home) as sandbox:
        proposal = _approved(sandbox, MODULE + "# worker\n", "worker_rehash")
        job = _job(proposal.id)
        admission = sandbox.admit(job, job_id="run-forged", signature="s")
        accepted = sandbox.ledger.entry(admission.ledger_index)
        assert accepted.fields["code_hash"] == proposal.code_hash
        from computations import MODULE_RUNNER

        record = sandbox.enclave.dataset("residents")
        plan = MODULE_RUNNER.check(
            {
                "module": MODULE + "# worker\n",
                "code_hash": proposal.code_hash,
                "epsilon": "0.5",
                "columns": ["district", "income"],
                "values": {},
            },
            record.spec,
        )
        body = {**plan.to_json()["body"], "module": MODULE.replace("mean", "sum")}
        forged = Plan.from_json({**plan.to_json(), "body": body})
        with pytest.raises(QueryRefused, match="module-hash"):
            sandbox.enclave.run(forged, job_id="run-forged", policy_version="none")


def test_one_approval_is_not_enough_two_person_rule(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        proposal = propose_module(
            sandbox,
            requester="Acme Credit",
            name="one_reviewer",
            source=MODULE + "# one\n",
            purpose="credit_risk_model",
            datasets=["residents"],
            columns=["district", "income"],
            expected_epsilon="0.5",
        )
        assert proposal.required_reviewers == 2
        review(sandbox, proposal.id, reviewer="wang", verdict="approve")
        with pytest.raises(ProposalError):
            review(sandbox, proposal.id, reviewer="wang", verdict="approve")
        refused = sandbox.admit(_job(proposal.id), job_id="run-one", signature="s")
        assert refused.code == "proposal_not_approved"


def test_a_module_asking_more_epsilon_than_a_job_may_spend_is_refused(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        proposal = _approved(sandbox, MODULE + "# big\n", "too_big", expected_epsilon="5")
        refused = sandbox.admit(_job(proposal.id), job_id="run-big", signature="s")
        assert refused.code == "query_refused" and "module-budget" in refused.reason
        assert "exceeds the 1 one job may spend" in refused.reason


def test_a_module_job_over_http_succeeds_with_a_verified_receipt(tmp_path: Path) -> None:
    from gateway import Client
    from indomain.server import serve_in_thread
    from tests.conftest import build_home

    sandbox: Any
    sandbox, acme, _ = build_home(tmp_path / "home", tmp_path / "src", rows=2000)
    sandbox.apply_policies(BUREAU)
    greedy = "def run(data, params):\n    data.count()\n    return data.count()\n"
    try:
        good = _approved(sandbox, MODULE, "http_income")
        bad = _approved(sandbox, greedy, "http_greedy")
        with (
            serve_in_thread(sandbox.app()) as url,
            Client(url, enterprise="Acme Credit", private_key=acme) as client,
        ):
            params = {"proposal": good.id, "values": {}}
            job_id = client.submit(
                computation="aggregate",
                dataset="residents",
                purpose="credit_risk_model",
                params=params,
            )["job_id"]
            done = client.wait(job_id)
            assert done["status"] == "succeeded", done
            result = client.result(job_id, ledger_key=sandbox.verifier_key)
            assert {"district", "mean"} <= set(result.table.column_names)
            params = {"proposal": bad.id, "values": {}}
            failed_id = client.submit(
                computation="aggregate",
                dataset="residents",
                purpose="credit_risk_model",
                params=params,
            )["job_id"]
            failed = client.wait(failed_id)
            assert failed["status"] == "failed"
            assert failed["error"].startswith("refused (module-budget): data.count has no")
    finally:
        sandbox.close()
