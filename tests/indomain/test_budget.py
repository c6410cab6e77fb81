"""The privacy budget: reserved atomically before a run, never refunded, on the ledger, and
shown to the enterprise (GET /v1/budgets) and the operator (indomain budget show)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway import Client, Refused, new_job, sign_job
from indomain.budgets import Accountant, Budget, BudgetExhausted, budgets_for
from indomain.errors import ConfigError
from indomain.server import serve_in_thread

pytestmark = pytest.mark.slow

ACME = "Acme Credit"
PURPOSE = "credit_risk_model"


# the accountant alone ---------------------------------------------------------------------


def test_reservations_stop_at_the_budget_and_charge_nothing_when_refused(tmp_path: Path) -> None:
    accountant = Accountant(tmp_path / "state.sqlite")
    budget = Budget.parse("1/month")
    for i in range(10):
        accountant.reserve(
            enterprise="e", dataset="d", job_id=f"j{i}", epsilon=0.1, delta=0, budgets=[budget]
        )
    with pytest.raises(BudgetExhausted, match="exhausted"):
        accountant.reserve(
            enterprise="e", dataset="d", job_id="j10", epsilon=0.1, delta=0, budgets=[budget]
        )
    spent = accountant.spent(enterprise="e", dataset="d", budget=budget)
    assert spent["epsilon_spent"] == pytest.approx(1.0)
    assert spent["epsilon_remaining"] == 0
    assert spent["jobs_charged"] == 10
    # Another dataset and another enterprise are other accounts.
    accountant.reserve(
        enterprise="e", dataset="x", job_id="k", epsilon=1, delta=0, budgets=[budget]
    )
    accountant.reserve(
        enterprise="f", dataset="d", job_id="l", epsilon=1, delta=0, budgets=[budget]
    )


def test_windows_reset_and_total_never_does(tmp_path: Path) -> None:
    accountant = Accountant(tmp_path / "state.sqlite")
    november = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    december = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    monthly, total = Budget.parse("1/month"), Budget.parse("1.5/total")
    accountant.reserve(
        enterprise="e", dataset="d", job_id="a", epsilon=1, delta=0, budgets=[monthly], now=november
    )
    with pytest.raises(BudgetExhausted):
        accountant.reserve(
            enterprise="e", dataset="d", job_id="b", epsilon=1, delta=0, budgets=[monthly],
            now=november,
        )  # fmt: skip
    accountant.reserve(
        enterprise="e", dataset="d", job_id="c", epsilon=0.5, delta=0, budgets=[monthly, total],
        now=december,
    )  # fmt: skip
    with pytest.raises(BudgetExhausted, match="total"):
        accountant.reserve(
            enterprise="e", dataset="d", job_id="d", epsilon=0.1, delta=0,
            budgets=[monthly, total], now=december,
        )  # fmt: skip


def _fifty_reservations(accountant_for: Callable[[], Accountant], budget: Budget) -> list[bool]:
    """Fifty threads reserve epsilon 1 each at once; which of them got a reservation."""
    barrier = threading.Barrier(50)

    def reserve(i: int) -> bool:
        accountant = accountant_for()
        barrier.wait()
        try:
            accountant.reserve(
                enterprise="e", dataset="d", job_id=f"j{i}", epsilon=1, delta=0, budgets=[budget]
            )
        except BudgetExhausted:
            return False
        return True

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(reserve, range(50)))


def test_fifty_concurrent_reservations_cannot_overspend(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    Accountant(path)
    budget = Budget.parse("10/month")
    # Each thread its own connection, like separate gateway workers.
    outcomes = _fifty_reservations(lambda: Accountant(path), budget)
    assert sum(outcomes) == 10
    assert Accountant(path).spent(enterprise="e", dataset="d", budget=budget)[
        "epsilon_spent"
    ] == pytest.approx(10)


def test_fifty_threads_sharing_one_accountant_cannot_overspend(tmp_path: Path) -> None:
    """The gateway's threads share one accountant (one connection, used under a lock)."""
    accountant = Accountant(tmp_path / "state.sqlite")
    budget = Budget.parse("10/month")
    outcomes = _fifty_reservations(lambda: accountant, budget)
    assert sum(outcomes) == 10
    assert Accountant(tmp_path / "state.sqlite").spent(enterprise="e", dataset="d", budget=budget)[
        "epsilon_spent"
    ] == pytest.approx(10)


def test_reservations_stay_fsynced_after_a_release_is_recorded(tmp_path: Path) -> None:
    """record_release commits without its own fsync (the result's stored next, fsynced, in
    the same WAL); the reservations after it must still be synchronous=FULL, in WAL mode."""
    accountant = Accountant(tmp_path / "state.sqlite")
    accountant.record_release(enterprise="e", dataset="d", release_key="k", job_id="j0")
    with accountant._connect() as con:
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other = Accountant(tmp_path / "state.sqlite")
    assert other.find_release(enterprise="e", dataset="d", release_key="k") == "j0"


def test_no_budget_or_a_malformed_one_fails_closed(tmp_path: Path) -> None:
    accountant = Accountant(tmp_path / "state.sqlite")
    with pytest.raises(ConfigError):
        accountant.reserve(enterprise="e", dataset="d", job_id="a", epsilon=1, delta=0, budgets=[])
    with pytest.raises(ConfigError):
        budgets_for("10/month", {"budget": "lots"})
    assert [str(b) for b in budgets_for("10/month", {"budget": "5.0/week"})] == [
        "10/month",
        "5/week",
    ]


# through the sandbox ---------------------------------------------------------------------


@pytest.fixture()
def served(tmp_path: Path, home_builder: Any) -> Iterator[tuple[Any, Any, str]]:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=2000)
    with serve_in_thread(sandbox.app()) as url:
        yield sandbox, acme, url
    sandbox.close()


def _entries(sandbox: Any) -> list[Any]:
    size = sandbox.ledger.size
    return list(sandbox.ledger.entries(0, size() if callable(size) else size))


def _submit(client: Client, sql: str) -> dict[str, Any]:
    job_id = client.submit(
        computation="aggregate", dataset="residents", purpose=PURPOSE, params={"sql": sql}
    )["job_id"]
    return client.wait(job_id)


def test_fifty_concurrent_jobs_cannot_overspend(tmp_path: Path, home_builder: Any) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=500)
    # The demo manifest gives each enterprise 20 epsilon a month at 1 per job.
    jobs = []
    for i in range(50):
        job = new_job(
            audience=sandbox.home.origin,
            enterprise=ACME,
            computation="aggregate",
            dataset="residents",
            purpose=PURPOSE,
            params={"sql": f"SELECT COUNT(*) AS n{i} FROM residents"},
        )
        jobs.append((f"job_race_{i:02d}", job, sign_job(job, acme)))
    barrier = threading.Barrier(50)

    def admit(item: tuple[str, Any, str]) -> str:
        job_id, job, signature = item
        barrier.wait()
        return str(sandbox.admit(job, job_id=job_id, signature=signature).outcome)

    with ThreadPoolExecutor(max_workers=50) as pool:
        outcomes = list(pool.map(admit, jobs))
    assert outcomes.count("accepted") == 20
    assert outcomes.count("refused") == 30
    charged = [e.fields["budget"]["epsilon"] for e in _entries(sandbox) if e.type == "job.accepted"]
    assert len(charged) == 20 and sum(charged) == pytest.approx(20)
    refusals = [e for e in _entries(sandbox) if e.type == "job.refused"]
    assert {e.fields["refusal"]["code"] for e in refusals} == {"budget_exhausted"}
    sandbox.close()


def test_a_job_that_fails_after_admission_stays_charged(
    tmp_path: Path, home_builder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from enclave import EnclaveError

    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=500)
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose=PURPOSE,
        params={"sql": "SELECT COUNT(*) FROM residents"},
    )
    admission = sandbox.admit(job, job_id="job_fails", signature=sign_job(job, acme))
    assert admission.outcome == "accepted"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise EnclaveError("the engine failed (DivisionByZero)")

    monkeypatch.setattr(sandbox.enclave, "run", broken)
    with pytest.raises(EnclaveError):
        sandbox.execute(job, job_id="job_fails", admission=admission)
    (view,) = sandbox.budgets(ACME)
    assert view["epsilon_spent"] == pytest.approx(1.0)
    sandbox.close()


def test_repeats_and_rewrites_are_answered_from_the_release_at_no_cost(
    served: tuple[Any, Any, str],
) -> None:
    sandbox, acme, url = served
    with Client(url, enterprise=ACME, private_key=acme) as client:
        first = _submit(
            client, "SELECT sex, COUNT(*) AS n FROM residents WHERE age_band = '30-44' GROUP BY sex"
        )
        assert first["status"] == "succeeded"
        assert first["privacy"]["epsilon"] == 1.0
        results = [client.result_json(first["job_id"])["rows"]]
        for sql in (
            "SELECT sex, COUNT(*) AS n FROM residents WHERE age_band = '30-44' GROUP BY sex",
            "SELECT sex, COUNT(*) AS n FROM residents WHERE 1 = 1 AND '30-44' = age_band "
            "AND age_band = '30-44' GROUP BY sex",
        ):
            again = _submit(client, sql)
            assert again["status"] == "succeeded"
            assert again["reuse_of"] == first["job_id"]
            results.append(client.result_json(again["job_id"])["rows"])
            client.result(again["job_id"], ledger_key=sandbox.verifier_key)  # receipt verifies
        assert results[0] == results[1] == results[2]
        budgets = client._get("/v1/budgets")
    assert budgets["enterprise"] == ACME
    (view,) = budgets["budgets"]
    assert view["dataset"] == "residents"
    assert view["epsilon_spent"] == pytest.approx(1.0)
    assert view["epsilon_remaining"] == pytest.approx(19.0)
    reused = [e for e in _entries(sandbox) if e.type == "run.reused"]
    assert len(reused) == 2


def test_an_exhausted_budget_refuses_with_its_code(served: tuple[Any, Any, str]) -> None:
    sandbox, acme, url = served
    with Client(url, enterprise=ACME, private_key=acme) as client:
        sandbox.accountant.reserve(
            enterprise=ACME,
            dataset="residents",
            job_id="job_spent_elsewhere",
            epsilon=19.5,
            delta=0,
            budgets=[Budget.parse("20/month")],
        )
        with pytest.raises(Refused) as refused:
            client.submit(
                computation="aggregate",
                dataset="residents",
                purpose=PURPOSE,
                params={"sql": "SELECT COUNT(*) FROM residents"},
            )
    assert refused.value.code == "budget_exhausted"


def test_the_operator_sees_budgets_on_the_command_line(served: tuple[Any, Any, str]) -> None:
    sandbox, acme, url = served
    with Client(url, enterprise=ACME, private_key=acme) as client:
        _submit(client, "SELECT COUNT(*) AS n FROM residents")
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "indomain.cli",
            "budget",
            "show",
            "--home",
            str(sandbox.home.root),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert ACME in shown.stdout
    assert '"epsilon_spent": 1.0' in shown.stdout


def test_a_run_that_fails_inside_the_enclave_stays_charged_and_reads_the_same(
    served: tuple[Any, Any, str],
) -> None:
    """A real failure after the reservation (the worker is killed when the enclave's time
    is up, mid-run): each job stays charged, and two jobs whose WHERE would separate a
    hidden condition fail with the same words, on the API and on the ledger."""
    sandbox, acme, url = served
    # A millisecond: a worker waiting ready answers such a job in 30-60 ms (measured
    # under load), so the 50 ms this test had could let the run finish and the test fail.
    sandbox.enclave.timeout_s = 0.001
    try:
        with Client(url, enterprise=ACME, private_key=acme) as client:
            failed = [
                _submit(client, f"SELECT COUNT(*) AS n FROM residents WHERE sex = '{sex}'")
                for sex in ("f", "m")
            ]
            (view,) = client._get("/v1/budgets")["budgets"]
    finally:
        sandbox.enclave.timeout_s = 900.0
    assert [job["status"] for job in failed] == ["failed", "failed"]
    assert failed[0]["error"] == failed[1]["error"]
    assert "did not finish" in failed[0]["error"]
    assert view["epsilon_spent"] == pytest.approx(2.0)
    reasons = [e.fields["reason"] for e in _entries(sandbox) if e.type == "run.failed"]
    assert len(reasons) == 2 and reasons[0] == reasons[1]
