"""Averaging attacks through the sandbox: repeats get the stored release, rewrites run into
the budget. (Attacks on the computation itself are in tests/computations.)"""

from __future__ import annotations

from typing import Any

import pytest

from gateway import new_job, sign_job
from indomain.budgets import Budget, BudgetExhausted

pytestmark = pytest.mark.slow

ACME = "Acme Credit"
SQL = "SELECT sex, COUNT(*) AS n FROM residents WHERE district = 'Haidian' GROUP BY sex"


def _job(sandbox: Any, key: Any, sql: str, job_id: str) -> tuple[Any, Any]:
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": sql},
    )
    return job, sandbox.admit(job, job_id=job_id, signature=sign_job(job, key))


def _finish(sandbox: Any, job: Any, job_id: str, admission: Any) -> Any:
    """What the gateway does with an accepted job: execute, then store the result."""
    sandbox.store.insert_job(
        job_id=job_id,
        enterprise=job.enterprise,
        nonce=job.nonce,
        computation=job.computation,
        dataset=job.dataset,
        purpose=job.purpose,
        document=job.canonical(),
        signature="",
    )
    execution = sandbox.execute(job, job_id=job_id, admission=admission)
    sandbox.store.update_job(
        job_id,
        status="succeeded",
        outcome={**admission.to_json(), **execution.summary},
        result=execution.result_ipc,
        receipt=execution.receipt,
    )
    return execution


def test_averaging_repeats_gets_the_same_release_and_rewrites_hit_the_budget(
    tmp_path: Any, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job, first = _job(sandbox, acme, SQL, "job_first")
    assert first.outcome == "accepted"
    released = _finish(sandbox, job, "job_first", first).result_ipc

    # Repeating the query, or an equivalent spelling of it, averages nothing: same bytes.
    for i, sql in enumerate(
        [SQL, SQL.replace("WHERE", "WHERE 1 = 1 AND"), SQL.lower().replace("haidian", "Haidian")]
    ):
        repeat, admission = _job(sandbox, acme, sql, f"job_repeat_{i}")
        assert admission.details["budget"]["reuse_of"] == "job_first"
        assert admission.details["budget"]["epsilon"] == 0
        assert _finish(sandbox, repeat, f"job_repeat_{i}", admission).result_ipc == released
    (view,) = sandbox.budgets(ACME)
    assert view["epsilon_spent"] == pytest.approx(1.0)

    # Rewrites that change the plan (another alias) cost budget each; 20 epsilon a month
    # at 1 per job leaves 19 more, then every rewrite is refused.
    outcomes = [
        _job(sandbox, acme, SQL.replace("AS n", f"AS n{i}"), f"job_rewrite_{i}")[1]
        for i in range(25)
    ]
    assert [a.outcome for a in outcomes].count("accepted") == 19
    assert {a.code for a in outcomes if a.outcome != "accepted"} == {"budget_exhausted"}
    with pytest.raises(BudgetExhausted):
        sandbox.accountant.reserve(
            enterprise=ACME,
            dataset="residents",
            job_id="job_more",
            epsilon=0.01,
            delta=0,
            budgets=[Budget.parse("20/month")],
        )
    sandbox.close()
