"""Attacks found in review, performed through the sandbox's job path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gateway import new_job

DEMO_POLICIES = Path(__file__).resolve().parents[2] / "indomain" / "demo" / "policies"
ACME = "Acme Credit"


def _submit(sandbox: Any, sql: str, job_id: str) -> Any:
    job = new_job(
        audience=sandbox.home.origin,
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": sql},
    )
    sandbox.store.insert_job(
        job_id=job_id,
        enterprise=ACME,
        nonce=job.nonce,
        computation=job.computation,
        dataset=job.dataset,
        purpose=job.purpose,
        document=job.canonical(),
        signature="-",
    )
    return sandbox.admit(job, job_id=job_id, signature="-")


def test_a_column_used_only_in_where_is_still_subject_to_allowed_columns(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=400)
    restricted = tmp_path / "restricted"
    shutil.copytree(DEMO_POLICIES, restricted)
    grant = restricted / "acme_credit.cedar"
    grant.write_text(
        grant.read_text().replace(
            '@id("acme-credit-aggregate")',
            '@id("acme-credit-aggregate")\n@allowed_columns("district,age_band,sex,income")',
        )
    )
    sandbox.apply_policies(restricted)
    grouped = _submit(
        sandbox, "SELECT health_flag, COUNT(*) AS n FROM residents GROUP BY health_flag", "j1"
    )
    filtered = _submit(
        sandbox,
        "SELECT sex, COUNT(*) AS n FROM residents WHERE health_flag = true GROUP BY sex",
        "j2",
    )
    allowed = _submit(sandbox, "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex", "j3")
    assert grouped.outcome == "denied"
    assert filtered.outcome == "denied"  # before the fix: accepted, health_flag unseen
    assert allowed.outcome == "accepted"
    entry = sandbox.ledger.entry(filtered.ledger_index)
    assert entry.type == "job.denied"
    sandbox.close()


def test_a_ledger_key_readable_by_others_stops_the_sandbox_opening(
    tmp_path: Path, home_builder: Any
) -> None:
    import os

    import pytest

    from indomain.errors import ConfigError
    from indomain.sandbox import Sandbox

    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=200)
    sandbox.close()
    os.chmod(tmp_path / "home" / "keys" / "ledger.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Sandbox.open(tmp_path / "home")
    os.chmod(tmp_path / "home" / "keys" / "ledger.key", 0o600)
    Sandbox.open(tmp_path / "home").close()


def test_a_grant_that_requires_review_refuses_ad_hoc_sql(tmp_path: Path, home_builder: Any) -> None:
    sandbox, _, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=300)
    reviewed = tmp_path / "reviewed"
    shutil.copytree(DEMO_POLICIES, reviewed)
    grant = reviewed / "acme_credit.cedar"
    grant.write_text(
        grant.read_text().replace(
            '@id("acme-credit-aggregate")', '@id("acme-credit-aggregate")\n@review("two-person")'
        )
    )
    sandbox.apply_policies(reviewed)
    admission = _submit(sandbox, "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex", "j1")
    assert admission.outcome == "refused"  # before the fix: accepted
    assert admission.code == "review_required"
    assert sandbox.ledger.entry(admission.ledger_index).type == "job.refused"
    sandbox.close()
