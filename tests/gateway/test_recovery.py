"""A gateway that stops between storing a job and finishing it loses nothing on restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway import Client, new_job, parse_job, sign_job
from indomain.server import serve_in_thread

ACME = "Acme Credit"
SQL = "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"


def _store_without_running(sandbox: Any, key: Any, purpose: str) -> str:
    """What the gateway has done when a crash hits right after the job was stored."""
    job = new_job(
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
