"""``context.job.epsilon`` is what the job's checked plan spends, so a policy condition on
a job's privacy cost holds at run time (and in ``policy diff``), not only in dry runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import policies
from gateway import new_job, sign_job
from indomain.policy_diff import replay

DEMO = Path(__file__).resolve().parents[2] / "indomain" / "demo" / "policies"
SQL = "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"


def _cap(limit: str) -> str:
    """The demo policy, permitting only jobs that spend at most ``limit``."""
    text = (DEMO / "acme_credit.cedar").read_text()
    condition = 'context.purpose == "credit_risk_model" &&'
    assert condition in text
    return text.replace(
        condition,
        f'{condition}\n  context.job.epsilon.lessThanOrEqual(decimal("{limit}")) &&',
    )


def _capped(tmp_path: Path, limit: str) -> Path:
    folder = tmp_path / f"capped-{limit}"
    folder.mkdir()
    for source in DEMO.iterdir():
        (folder / source.name).write_text(source.read_text())
    (folder / "acme_credit.cedar").write_text(_cap(limit))
    return folder


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


def test_a_cap_on_the_jobs_epsilon_denies_a_job_that_spends_more(
    tmp_path: Path, home_builder: Any
) -> None:
    # Attack (security review): the job named no epsilon, Cedar saw 0, and a policy
    # allowing only cheap jobs let a job spending the manifest's 1.0 run.
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    spends = sandbox.enclave.dataset("residents").spec.privacy.epsilon_per_job
    assert spends == 1.0
    sandbox.apply_policies(_capped(tmp_path, "0.5"))
    denied = _admit(sandbox, acme, "job_cheap_only")
    assert denied.outcome == "denied"
    sandbox.apply_policies(_capped(tmp_path, "1.0"))
    allowed = _admit(sandbox, acme, "job_within_cap")
    assert allowed.outcome == "accepted"
    recorded = sandbox.ledger.entries(allowed.ledger_index, allowed.ledger_index + 1)[0]
    assert recorded.fields["decided_with"]["epsilon"] == "1.0"
    sandbox.close()


def test_policy_diff_replays_with_the_epsilon_the_job_was_decided_with(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "src", rows=300)
    folder = _capped(tmp_path, "2.0")
    generous = policies.PolicySet.load(folder)
    sandbox.apply_policies(folder)
    assert _admit(sandbox, acme, "job_0001").outcome == "accepted"
    strict = policies.PolicySet.load(_capped(tmp_path, "0.5"))
    replayed, changed = replay(sandbox, generous, strict)
    assert replayed == 1 and len(changed) == 1
    assert changed[0].old == "allow" and changed[0].new.startswith("deny")
    sandbox.close()
