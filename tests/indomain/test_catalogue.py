"""The catalogue: privacy rules, what grants allow, and a sample that is never real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import indomain
from indomain.cli import app
from indomain.sandbox import Sandbox

BUREAU = Path(indomain.__file__).parent / "demo" / "bureau"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import build_home

    base = tmp_path_factory.mktemp("catalogue")
    sandbox: Any
    sandbox, _, _ = build_home(base / "home", base / "source", rows=400)
    sandbox.apply_policies(BUREAU)
    sandbox.classify_dataset("residents", sensitivity=3, groups=("household",))
    sandbox.close()
    return base / "home"


def entry(home: Path, enterprise: str | None) -> dict[str, Any]:
    with Sandbox.open(home) as sandbox:
        (residents,) = [d for d in sandbox.catalogue_for(enterprise) if d["name"] == "residents"]
    return residents


def test_an_enterprise_sees_what_its_grants_allow_with_obligations(home: Path) -> None:
    residents = entry(home, "Acme Credit")
    assert residents["allowed"] == [
        {
            "computation": "aggregate",
            "purpose": "credit_risk_model",
            "policies": ["acme-credit-aggregate"],
            "obligations": {
                "budget": "10.0/month",
                "epsilon_per_job": "1.0",
                "min_group_size": "10",
            },
            # The bureau forbids reading health_flag on sensitive datasets: that depends on
            # the job's columns, which only a submitted job has.
            "checked_at_submit": ["job.columns"],
        }
    ]
    assert residents["sensitivity"] == 3 and residents["groups"] == ["household"]
    assert "privacy_rules" in residents


def test_an_expired_grant_drops_out_and_a_suspension_shows_nothing_allowed(home: Path) -> None:
    # The fiscal aggregate grant ended with 2025; only the live PSI grant (psi is now a
    # registered computation) remains, and it names no aggregate.
    allowed = entry(home, "Beta Analytics")["allowed"]
    assert [a["computation"] for a in allowed] == ["psi"]
    assert allowed[0]["policies"] == ["beta-analytics-psi"]
    with Sandbox.open(home) as sandbox:
        sandbox.update_licence("Acme Credit", status="suspended")
    try:
        assert entry(home, "Acme Credit")["allowed"] == []
    finally:
        with Sandbox.open(home) as sandbox:
            sandbox.update_licence("Acme Credit", status="active")


def test_the_sample_never_touches_the_data(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enclave import Enclave

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the catalogue must not run anything in the enclave")

    monkeypatch.setattr(Enclave, "run", refuse)
    residents = entry(home, None)
    assert len(residents["synthetic_sample"]) == 5


def test_the_sample_holds_no_real_value_outside_public_domains(home: Path) -> None:
    residents = entry(home, None)
    real = pq.read_table(home.parent / "source" / "residents.parquet").to_pylist()
    with Sandbox.open(home) as sandbox:
        spec = sandbox.enclave.dataset("residents").spec
    for column in spec.columns:
        values = [row[column.name] for row in residents["synthetic_sample"]]
        if column.keys:
            assert set(values) <= set(column.keys), column.name
        elif column.cls.value == "identifier":
            assert not set(values) & {r[column.name] for r in real}, column.name
    real_rows = {json.dumps(r, sort_keys=True, default=str) for r in real}
    for row in residents["synthetic_sample"]:
        assert json.dumps(row, sort_keys=True, default=str) not in real_rows


def test_the_sample_is_the_same_every_time_and_varies_within_columns(home: Path) -> None:
    """A pure function of the manifest: asking twice gives the same rows, so a sample
    cannot be averaged into anything; and it is not one made-up row repeated."""
    first, second = entry(home, None), entry(home, None)
    assert first["synthetic_sample"] == second["synthetic_sample"]
    rows = first["synthetic_sample"]
    assert any(len({json.dumps(r[c]) for r in rows}) > 1 for c in rows[0] if "id" not in c)


def test_indomain_catalogue_command(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["catalogue", "--enterprise", "Acme Credit", "--home", str(home), "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body[0]["allowed"][0]["purpose"] == "credit_risk_model"
    text = runner.invoke(app, ["catalogue", "--home", str(home)])
    assert text.exit_code == 0 and "synthetic sample" in text.output


def test_no_real_identifier_or_sensitive_value_appears_anywhere(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        text = json.dumps(sandbox.catalogue_for("Acme Credit"))
    real = pq.read_table(home.parent / "source" / "residents.parquet")
    for column in ("resident_id", "income"):
        for value in real.column(column).to_pylist():
            assert str(value) not in text, column


def test_a_condition_on_the_jobs_cost_is_named_as_checked_at_submit(tmp_path: Path) -> None:
    # The catalogue has no job: a permit capping context.job.epsilon cannot be judged
    # there. It must say so rather than present the permit as unconditional.
    from tests.conftest import build_home

    demo = Path(indomain.__file__).parent / "demo" / "policies"
    folder = tmp_path / "capped"
    folder.mkdir()
    for source in demo.iterdir():
        text = source.read_text()
        if source.name == "acme_credit.cedar":
            condition = 'context.purpose == "credit_risk_model" &&'
            assert condition in text
            text = text.replace(
                condition,
                f'{condition}\n  context.job.epsilon.lessThanOrEqual(decimal("0.5")) &&',
            )
        (folder / source.name).write_text(text)
    sandbox: Any
    sandbox, _, _ = build_home(tmp_path / "home", tmp_path / "src", rows=300)
    try:
        sandbox.apply_policies(folder)
        (residents,) = [d for d in sandbox.catalogue_for("Acme Credit") if d["name"] == "residents"]
        (aggregate,) = [a for a in residents["allowed"] if a["computation"] == "aggregate"]
        assert "job.epsilon" in aggregate["checked_at_submit"]
        sandbox.apply_policies(demo)
        (residents,) = [d for d in sandbox.catalogue_for("Acme Credit") if d["name"] == "residents"]
        assert all("job.epsilon" not in a["checked_at_submit"] for a in residents["allowed"])
    finally:
        sandbox.close()
