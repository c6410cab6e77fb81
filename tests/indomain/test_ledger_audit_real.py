"""The auditor's checks against entries the real sandbox writes: signed requests, enclave
attestations and reused releases all verify from the ledger key alone, and a forged
attestation in an otherwise well-signed ledger is caught."""

from __future__ import annotations

from typing import Any

import pytest

import ledger
from gateway import load_private_key, new_job, sign_job

pytestmark = pytest.mark.slow

ACME = "Acme Credit"
SQL = "SELECT sex, COUNT(*) AS n FROM residents WHERE district = 'Haidian' GROUP BY sex"


def _run(sandbox: Any, key: Any, job_id: str) -> Any:
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL},
    )
    admission = sandbox.admit(job, job_id=job_id, signature=sign_job(job, key))
    assert admission.outcome == "accepted"
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


def test_a_real_history_with_runs_and_a_reused_release_verifies(
    tmp_path: Any, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=1000)
    _run(sandbox, acme, "job_first")
    _run(sandbox, acme, "job_again")  # the same query: answered from the stored release
    key = sandbox.verifier_key
    types = [e.type for e in sandbox.ledger.entries(0, sandbox.ledger.size)]
    assert {"sandbox.created", "job.accepted", "run.completed", "run.reused"} <= set(types)
    report = ledger.verify_ledger(sandbox.home.ledger, key)
    assert report.size == len(types)

    # The operator (who holds the ledger key) rewrites the result digest of the run and
    # re-signs everything: the tree verifies, the enclave's attestation does not.
    forged = tmp_path / "forged"
    signer = load_private_key(sandbox.home.ledger_key)  # the operator's own key
    with ledger.Ledger.create(forged, origin=sandbox.home.origin, signing_key=signer) as log:
        for entry in sandbox.ledger.entries(0, sandbox.ledger.size):
            fields = ledger_fields(entry)
            if entry.type == "run.completed":
                fields["attestation"]["result_digest"] = "sha256:" + "0" * 64
            log.append(entry.type, fields)
        run_index = types.index("run.completed")
    with pytest.raises(ledger.LedgerVerificationError) as caught:
        ledger.verify_ledger(forged, key)
    assert caught.value.index == run_index
    assert "attestation" in caught.value.reason
    sandbox.close()


def ledger_fields(entry: ledger.LedgerEntry) -> dict[str, Any]:
    import json

    return dict(json.loads(entry.canonical())["fields"])
