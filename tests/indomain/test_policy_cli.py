"""Policy author CLI and the sandbox's licence registry, attacked end to end."""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import indomain
from gateway import JobDocument
from indomain.cli import app
from indomain.policy_requests import spec_with_obligations
from indomain.sandbox import Sandbox

BUREAU = Path(indomain.__file__).parent / "demo" / "bureau"
DEMO = Path(indomain.__file__).parent / "demo" / "policies"
runner = CliRunner()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import build_home

    base = tmp_path_factory.mktemp("policy-cli")
    sandbox, _, _ = build_home(base / "home", base / "source", rows=500)
    sandbox.close()  # type: ignore[attr-defined]
    return base / "home"


def job(purpose: str = "credit_risk_model", enterprise: str = "Acme Credit") -> JobDocument:
    return JobDocument(
        enterprise=enterprise,
        computation="aggregate",
        dataset="residents",
        purpose=purpose,
        params={"sql": "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"},
        nonce=secrets.token_urlsafe(24),
        issued_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def invoke(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_suspension_and_expiry_apply_to_a_running_sandbox_without_restart(home: Path) -> None:
    gateway_side = Sandbox.open(home)  # stands for the running gateway
    try:
        first = gateway_side.admit(job(), job_id="j1", signature="s")
        assert first.code != "policy_denied", first.reason

        result = invoke("enterprise", "suspend", "Acme Credit", "--home", home)
        assert result.exit_code == 0, result.output
        denied = gateway_side.admit(job(), job_id="j2", signature="s")
        assert denied.outcome == "denied" and "suspended" in denied.reason

        assert invoke("enterprise", "reinstate", "Acme Credit", "--home", home).exit_code == 0
        assert gateway_side.admit(job(), job_id="j3", signature="s").code != "policy_denied"

        assert invoke("enterprise", "expire", "Acme Credit", "--home", home).exit_code == 0
        expired = gateway_side.admit(job(), job_id="j4", signature="s")
        assert expired.outcome == "denied" and "expired" in expired.reason
        types = [e.type for e in gateway_side.ledger.entries(0, gateway_side.ledger.size)]
        assert types.count("enterprise.licence") == 3
    finally:
        invoke("enterprise", "licence", "Acme Credit", "--expires", "2099-01-01", "--home", home)
        gateway_side.close()


def test_an_unregistered_enterprise_cannot_be_suspended_into_existence(home: Path) -> None:
    result = invoke("enterprise", "suspend", "Nobody Ltd", "--home", home)
    assert result.exit_code == 2


def test_validate_lints_and_strict_refuses(tmp_path: Path) -> None:
    assert invoke("policy", "validate", BUREAU).exit_code == 0
    loose = tmp_path / "loose"
    shutil.copytree(DEMO, loose)
    (loose / "open.cedar").write_text('@id("open") permit (principal, action, resource);')
    result = invoke("policy", "validate", loose)
    assert result.exit_code == 0 and "no-purpose" in result.output
    assert invoke("policy", "validate", loose, "--strict").exit_code == 2
    (loose / "typo.cedar").write_text(
        '@id("t") @min_grop_size("10") permit (principal, action, resource);'
    )
    result = invoke("policy", "validate", loose)
    assert result.exit_code == 2 and "unknown annotation @min_grop_size" in result.output


def test_policy_test_runs_the_authors_cases(tmp_path: Path) -> None:
    result = invoke("policy", "test", BUREAU)
    assert result.exit_code == 0, result.output
    assert "14 passed, 0 failed" in result.output
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "cases:\n  - request: {enterprise: Acme Credit, computation: aggregate, dataset: residents,"
        " purpose: direct_marketing, time: '2026-01-01T00:00:00Z'}\n    expect: {decision: allow}\n"
    )
    result = invoke("policy", "test", BUREAU, "--cases", wrong)
    assert result.exit_code == 1 and "FAIL" in result.output
    empty = tmp_path / "empty.yaml"
    empty.write_text("cases: []\n")
    assert invoke("policy", "test", BUREAU, "--cases", empty).exit_code == 2


def test_check_explains_a_denial_in_english_and_chinese(home: Path) -> None:
    args = ["policy", "check", "--home", home, "--enterprise", "Acme Credit"]
    args += ["--dataset", "residents", "--purpose", "direct_marketing", "--explain"]
    result = invoke(*args)
    assert result.exit_code == 3
    assert "failed condition" in result.output and "credit_risk_model" in result.output
    zh = invoke(*args, "--lang", "zh")
    assert zh.exit_code == 3 and "已拒绝" in zh.output and "未满足的条件" in zh.output
    ok = invoke(*args[:-3], "--purpose", "credit_risk_model", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["determining_policies"] == ["acme-credit-aggregate"]


def test_apply_records_author_and_diff_and_diff_replays_the_ledger(home: Path) -> None:
    result = invoke("policy", "diff", DEMO, BUREAU, "--home", home, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert "no-direct-marketing" in body["added"] and body["replayed"] >= 1
    result = invoke("policy", "apply", BUREAU, "--author", "li.wei", "--home", home)
    assert result.exit_code == 0, result.output
    with Sandbox.open(home) as sandbox:
        last = sandbox.ledger.entry(sandbox.ledger.size - 1)
        assert last.type == "policy.applied"
        assert last.fields["author"] == "li.wei"
        assert "acme-credit-aggregate" in last.fields["diff"]["changed"]
        sandbox.apply_policies(DEMO, author="li.wei")


@pytest.mark.parametrize(
    "text",
    [
        '@id("x") @budget("lots") permit (principal, action, resource);',
        # a grant-scoped permit reading an attribute the Grant entity does not have
        '@id("x") permit (principal in Grant::"G-1", action, resource in Grant::"G-1")\n'
        'when { Grant::"G-1".valid_to > context.now };',
    ],
    ids=["bad-obligation", "bad-grant-attribute"],
)
def test_an_invalid_folder_is_never_applied(home: Path, tmp_path: Path, text: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(DEMO, bad)
    (bad / "x.cedar").write_text(text)
    with Sandbox.open(home) as sandbox:
        before = sandbox.policy_set
        size = sandbox.ledger.size
    assert invoke("policy", "apply", bad, "--home", home).exit_code == 2
    with Sandbox.open(home) as sandbox:
        assert sandbox.policy_set == before and sandbox.ledger.size == size


def test_the_stricter_min_group_size_applies_to_the_plan(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        spec = sandbox.enclave.dataset("residents").spec
    assert spec_with_obligations(spec, {"min_group_size": "500"}).min_group_size == 500
    # A grant asking for less than the manifest never loosens suppression.
    assert (
        spec_with_obligations(spec, {"min_group_size": "2"}).min_group_size == spec.min_group_size
    )
    assert spec_with_obligations(spec, {}) is spec


def test_result_size_comes_from_the_public_keys_of_the_group_columns(home: Path) -> None:
    from computations import get_computation
    from indomain.policy_requests import result_size_of

    with Sandbox.open(home) as sandbox:
        spec = sandbox.enclave.dataset("residents").spec
    keys = {c.name: c.keys for c in spec.columns}
    aggregate = get_computation("aggregate")
    plan = aggregate.check(
        {"sql": "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"}, spec
    )
    expected = len(keys["district"]) if keys["district"] else None
    assert result_size_of(plan, spec) == expected
    total = aggregate.check({"sql": "SELECT COUNT(*) AS n FROM residents"}, spec)
    assert result_size_of(total, spec) == 1


def test_enterprise_list_shows_licence_status(home: Path) -> None:
    result = runner.invoke(app, ["enterprise", "list", "--home", str(home)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "active" in result.output


def test_a_denial_carries_its_message_id_and_both_languages(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        denied = sandbox.admit(job(purpose="direct_marketing"), job_id="m1", signature="s")
    assert denied.outcome == "denied"
    assert denied.details["decision_code"] == "no_permit"
    assert "direct_marketing" in denied.details["messages"]["en"]
    assert "已拒绝" in denied.details["messages"]["zh"]


def test_diff_names_the_past_allows_a_narrower_grant_would_deny(home: Path, tmp_path: Path) -> None:
    with Sandbox.open(home) as sandbox:
        sandbox.admit(job(), job_id="d1", signature="s")  # an allowed decision to replay
    narrower = tmp_path / "narrower"
    shutil.copytree(DEMO, narrower)
    grant = narrower / "acme_credit.cedar"
    grant.write_text(grant.read_text().replace('"credit_risk_model"', '"credit_scoring_v2"'))
    result = invoke("policy", "diff", DEMO, narrower, "--home", home, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["changed"], body
    flips = {(c["old"], c["new"]) for c in body["changed"]}
    assert flips == {("allow", "deny (no_permit)")}
    assert all(c["purpose"] == "credit_risk_model" for c in body["changed"])
    assert body["changed"] == [c for c in body["changed"] if c["enterprise"] == "Acme Credit"]
