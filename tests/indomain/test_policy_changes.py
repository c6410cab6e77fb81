"""A policy version applied while the gateway runs decides the very next job."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway import Client, PolicyDenied
from indomain.server import serve_in_thread

DEMO_POLICIES = Path(__file__).resolve().parents[2] / "indomain" / "demo" / "policies"
SQL = "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"
REVOKE = """
@id("acme-licence-suspended")
forbid (principal == Enterprise::"Acme Credit", action, resource);
"""


def test_a_revocation_applied_while_serving_denies_the_next_job(
    tmp_path: Path, home_builder: Any
) -> None:
    sandbox, acme, _ = home_builder(tmp_path / "home", tmp_path / "source", rows=500)
    revoked = tmp_path / "revoked"
    shutil.copytree(DEMO_POLICIES, revoked)
    (revoked / "suspension.cedar").write_text(REVOKE)
    submit = dict(
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL},
    )
    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise="Acme Credit", private_key=acme) as client,
    ):
        client.wait(client.submit(**submit)["job_id"])
        new_version, _ = sandbox.apply_policies(revoked)
        with pytest.raises(PolicyDenied) as denied:
            client.submit(**submit)
    assert denied.value.extra["policies"] == ["acme-licence-suspended"]
    assert denied.value.extra["policy_version"] == new_version.version
    sandbox.close()
