"""A gateway that stops between storing a job and finishing it loses nothing on restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from computations import get_computation, table_from_ipc
from gateway import Client, new_job, parse_job, sign_job
from indomain.cli import app
from indomain.errors import IndomainError
from indomain.gateway_lock import gateway_lock
from indomain.sandbox import Sandbox
from indomain.server import serve_in_thread

ACME = "Acme Credit"
SQL = "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"


def _store_without_running(sandbox: Any, key: Any, purpose: str) -> str:
    """What the gateway has done when a crash hits right after the job was stored."""
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose=purpose,
        params={"sql": SQL},
    )
    job_id = "job_" + job.nonce[:32]
    sandbox.store.insert_job(
        job_id=job_id,
        enterprise=ACME,
        nonce=job.nonce,
        computation=job.computation,
        dataset=job.dataset,
        purpose=job.purpose,
        document=job.canonical(),
        signature=sign_job(job, key),
    )
    return job_id


def test_undecided_and_unfinished_jobs_complete_after_a_restart(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    received = _store_without_running(sandbox, acme, "credit_risk_model")
    refused = _store_without_running(sandbox, acme, "direct_marketing")
    accepted = _store_without_running(sandbox, acme, "credit_risk_model")
    job = sandbox.store.job(accepted)

    admission = sandbox.admit(
        parse_job(json.loads(job.document)), job_id=accepted, signature=job.signature
    )
    sandbox.store.update_job(accepted, status="accepted", outcome=admission.to_json())
    assert sandbox.store.job(received).status == "received"

    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise=ACME, private_key=acme) as client,
    ):
        deadline = time.monotonic() + 60
        states = {}
        while time.monotonic() < deadline:
            states = {j: client.status(j)["status"] for j in (received, refused, accepted)}
            if (
                "received" not in states.values()
                and states[accepted] == "succeeded"
                and (states[received] == "succeeded")
            ):
                break
            time.sleep(0.1)
        assert states == {received: "succeeded", refused: "denied", accepted: "succeeded"}
        assert client.result(received, ledger_key=sandbox.verifier_key).table.num_rows == 2
    sandbox.close()


def test_a_job_charged_before_a_crash_is_charged_once_and_the_gateway_starts(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job_id = _store_without_running(sandbox, acme, "credit_risk_model")
    job = sandbox.store.job(job_id)
    # admitted (budget reserved, ledger written) but the crash hit before the store update
    first = sandbox.admit(
        parse_job(json.loads(job.document)), job_id=job_id, signature=job.signature
    )
    assert first.outcome == "accepted"
    spent_before = sandbox.budgets("Acme Credit")

    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise=ACME, private_key=acme) as client,
    ):
        state = client.wait(job_id, timeout=60)
    assert state["status"] == "succeeded"
    assert sandbox.budgets("Acme Credit") == spent_before  # charged once, not twice
    sandbox.close()


def _runs_of(sandbox: Any, job_id: str) -> list[Any]:
    entries = sandbox.ledger.entries(0, sandbox.ledger.size)
    return [e for e in entries if e.type == "run.completed" and e.fields["job_id"] == job_id]


def _admitted(sandbox: Any, acme: Any) -> tuple[str, Any, Any]:
    job_id = _store_without_running(sandbox, acme, "credit_risk_model")
    record = sandbox.store.job(job_id)
    job = parse_job(json.loads(record.document))
    admission = sandbox.admit(job, job_id=job_id, signature=record.signature)
    sandbox.store.update_job(job_id, status="running", outcome=admission.to_json())
    return job_id, job, admission


def test_a_job_interrupted_after_its_run_was_recorded_is_not_run_again(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job_id, job, admission = _admitted(sandbox, acme)
    # The gateway ran it and the run is on the ledger, then the crash hit before the
    # result was stored: the job is still "running" in the store.
    first = sandbox.execute(job, job_id=job_id, admission=admission)
    assert len(_runs_of(sandbox, job_id)) == 1

    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise=ACME, private_key=acme) as client,
    ):
        state = client.wait(job_id, timeout=60)
        result = client.result(job_id, ledger_key=sandbox.verifier_key)
    assert state["status"] == "succeeded"
    runs = _runs_of(sandbox, job_id)
    assert len(runs) == 1  # one run on the ledger, not a second freshly noised one
    assert state["run_ledger_index"] == runs[0].index == first.summary["run_ledger_index"]
    assert result.table.equals(table_from_ipc(first.result_ipc))
    assert sandbox.run_journal.job_ids() in ([], [job_id])
    sandbox.close()


def test_a_job_interrupted_before_its_run_was_recorded_records_that_run_once(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job_id, job, admission = _admitted(sandbox, acme)
    # The enclave ran and its output was journalled, then the crash hit before the
    # ledger append: the restart must record that very output, not run again.
    output = _run_in_enclave(sandbox, job_id, job, admission)
    sandbox.run_journal.put(job_id, output)

    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise=ACME, private_key=acme) as client,
    ):
        state = client.wait(job_id, timeout=60)
        result = client.result(job_id, ledger_key=sandbox.verifier_key)
    assert state["status"] == "succeeded"
    (run,) = _runs_of(sandbox, job_id)
    assert run.fields["attestation"]["result_digest"] == output.attestation.result_digest
    assert result.table.equals(table_from_ipc(output.result_ipc))
    sandbox.close()


def test_a_journalled_output_that_does_not_match_its_attestation_is_never_released(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job_id, job, admission = _admitted(sandbox, acme)
    real = _run_in_enclave(sandbox, job_id, job, admission)
    forged = real.model_copy(update={"result_ipc": real.result_ipc + b"\0"})
    sandbox.run_journal.put(job_id, forged)

    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise=ACME, private_key=acme) as client,
    ):
        state = client.wait(job_id, timeout=60)
    assert state["status"] == "failed"
    assert _runs_of(sandbox, job_id) == []
    sandbox.close()


def _run_in_enclave(sandbox: Any, job_id: str, job: Any, admission: Any) -> Any:
    spec = sandbox.enclave.dataset(job.dataset).spec
    obligations = admission.details.get("obligations", {})
    plan = get_computation(job.computation).check(job.params, spec, obligations=obligations)
    return sandbox.enclave.run(
        plan, job_id=job_id, policy_version=admission.policy_version or "none"
    )


def test_a_second_gateway_on_the_same_home_does_not_start_and_the_job_runs_once(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job_id, _, _ = _admitted(sandbox, acme)
    with serve_in_thread(sandbox.app()) as url:
        second = Sandbox.open(tmp_path / "home")
        with pytest.raises(IndomainError), serve_in_thread(second.app()):
            pass
        second.close()
        with Client(url, enterprise=ACME, private_key=acme) as client:
            assert client.wait(job_id, timeout=60)["status"] == "succeeded"
    assert len(_runs_of(sandbox, job_id)) == 1
    sandbox.close()


def test_serve_refuses_a_home_another_gateway_is_serving(tmp_path: Path, home_builder: Any) -> None:
    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=300)
    sandbox.close()
    with gateway_lock(tmp_path / "home"):
        outcome = CliRunner().invoke(app, ["serve", "--home", str(tmp_path / "home")])
    assert outcome.exit_code == 2
    assert "another gateway" in outcome.output


def test_a_job_resumed_after_its_licence_was_suspended_does_not_run(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    job_id, _, _ = _admitted(sandbox, acme)
    spent = sandbox.budgets(ACME)
    sandbox.update_licence(ACME, status="suspended")  # while the gateway was down

    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise=ACME, private_key=acme) as client,
    ):
        state = client.wait(job_id, timeout=60)
    assert state["status"] == "failed"
    assert "no longer allowed" in state["error"]
    assert _runs_of(sandbox, job_id) == []
    assert sandbox.budgets(ACME) == spent  # reserved at admission, never refunded
    sandbox.close()
