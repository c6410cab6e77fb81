"""Execution of an admitted job: run it in the enclave once, record it, build the receipt.

The enclave's output is journalled (:mod:`indomain.run_journal`) before the run goes on
the ledger, so a job resumed after a crash reuses that output and finds its
``run.completed`` entry instead of running, and releasing, a second time.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import ledger
from computations import get_computation, privacy_statement, table_from_ipc
from enclave import RunOutput
from gateway import FINAL_STATUSES, Admission, Execution, JobDocument
from indomain.admission import digest, partners_arg, recheck
from indomain.approvals import computation_for, resolve_params
from indomain.errors import IndomainError, InternalError
from indomain.policy_requests import spec_with_obligations

if TYPE_CHECKING:
    from indomain.sandbox import Sandbox

_SCAN_CHUNK = 500  # ledger entries read at a time when looking for a resumed job's run


def execute(sandbox: Sandbox, job: JobDocument, *, job_id: str, admission: Admission) -> Execution:
    """Run an admitted job (or resume it) and return its result, receipt and summary."""
    _forget_finished(sandbox)
    obligations = admission.details.get("obligations", {})
    budget = admission.details.get("budget", {})
    if budget.get("reuse_of"):
        return reuse(sandbox, job, job_id=job_id, admission=admission, original=budget["reuse_of"])
    output = _journalled(sandbox, job_id)
    entry = None
    if output is None:
        recheck(sandbox, job)  # a resumed job may run long after its admission
        computation = computation_for(sandbox, job, get_computation(job.computation))
        record = sandbox.enclave.dataset(job.dataset)
        plan = computation.check(
            resolve_params(sandbox, job),  # re-checked at run time
            spec_with_obligations(record.spec, obligations),
            obligations=obligations,
            **partners_arg(sandbox, computation, record.spec, obligations),
        )
        fresh = sandbox.enclave.run(
            plan, job_id=job_id, policy_version=admission.policy_version or "none"
        )
        output = sandbox.run_journal.put(job_id, fresh)
        if output.signature != fresh.signature:  # another run of this job came first
            entry = _recorded_run(sandbox.ledger, job_id, after=admission.ledger_index)
    else:  # resumed after a crash: the run may already be on the ledger
        entry = _recorded_run(sandbox.ledger, job_id, after=admission.ledger_index)
    if entry is None:
        entry = sandbox.ledger.append(
            "run.completed",
            {
                "job_id": job_id,
                "enterprise": job.enterprise,
                "dataset": job.dataset,
                **(
                    {"partner_dataset": output.attestation.partner_dataset}
                    if output.attestation.partner_dataset
                    else {}
                ),
                "accepted_at_index": admission.ledger_index,
                "attestation": output.attestation.model_dump(),
                "attestation_signature": output.signature,
                "suppressed_groups": output.suppressed_groups,
            },
        )
    receipt = {
        "entry": entry.canonical().decode(),
        "receipt": sandbox.ledger.receipt(entry.index).to_json(),
        "ledger_verifier_key": sandbox.verifier_key,
        "enclave_public_key": base64.b64encode(
            sandbox.enclave.public_key.public_bytes_raw()
        ).decode(),
    }
    summary = {
        "run_ledger_index": entry.index,
        "suppressed_groups": output.suppressed_groups,
        "result_digest": output.attestation.result_digest,
        "notes": list(output.notes),
        "privacy": privacy_statement(table_from_ipc(output.result_ipc)),
    }
    if budget.get("release_key"):
        sandbox.accountant.record_release(
            enterprise=job.enterprise,
            dataset=job.dataset,
            release_key=budget["release_key"],
            job_id=job_id,
        )
    return Execution(result_ipc=output.result_ipc, receipt=receipt, summary=summary)


def reuse(
    sandbox: Sandbox, job: JobDocument, *, job_id: str, admission: Admission, original: str
) -> Execution:
    """Answer an equivalent query with the stored release: same bytes, same receipt."""
    ipc, receipt = sandbox.store.job_result(original)
    entry = sandbox.ledger.append(
        "run.reused",
        {
            "job_id": job_id,
            "enterprise": job.enterprise,
            "dataset": job.dataset,
            "accepted_at_index": admission.ledger_index,
            "reuse_of": original,
            "result_digest": digest(ipc),
        },
    )
    summary = {
        "run_ledger_index": entry.index,
        "reuse_of": original,
        "result_digest": digest(ipc),
        "notes": ["answered from an earlier release of the same query, at no cost"],
        "privacy": privacy_statement(table_from_ipc(ipc)),
    }
    return Execution(result_ipc=ipc, receipt=receipt, summary=summary)


def _journalled(sandbox: Sandbox, job_id: str) -> RunOutput | None:
    """The journalled output of ``job_id``, checked against the enclave's signature."""
    output = sandbox.run_journal.get(job_id)
    if output is None:
        return None
    attestation = sandbox.enclave.verify_attestation(
        output.attestation.model_dump(), output.signature
    )
    if attestation.job_id != job_id or attestation.result_digest != digest(output.result_ipc):
        raise InternalError(f"the journalled output of {job_id} does not match its attestation")
    return output


def _recorded_run(log: ledger.Ledger, job_id: str, *, after: int) -> ledger.LedgerEntry | None:
    """The ``run.completed`` entry of ``job_id`` appended after its acceptance, if any."""
    size = log.size
    for start in range(after + 1, size, _SCAN_CHUNK):
        for entry in log.entries(start, min(size, start + _SCAN_CHUNK)):
            if entry.type == "run.completed" and entry.fields.get("job_id") == job_id:
                return entry
    return None


def _forget_finished(sandbox: Sandbox) -> None:
    """Drop journalled outputs of jobs that have ended (their results are stored)."""
    done = []
    for job_id in sandbox.run_journal.job_ids():
        try:
            status: Any = sandbox.store.job(job_id).status
        except IndomainError:  # a job unknown to the store: keep nothing for it
            status = "failed"
        if status in FINAL_STATUSES:
            done.append(job_id)
    sandbox.run_journal.discard(done)
