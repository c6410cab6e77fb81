"""Explanations name the failed condition; lint finds loose grants; messages in en and zh."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import indomain
from policies import AccessRequest, PolicyError, PolicySet, decide, explain, lint, message
from policies._decide import DECISION_CODES
from policies._messages import LANGUAGES, MESSAGE_IDS, placeholders

DEMO = Path(indomain.__file__).parent / "demo" / "policies"
DEMO_SET = PolicySet.load(DEMO)
SCHEMA = (DEMO / "schema.cedarschema").read_text(encoding="utf-8")
LICENSED = {"status": "active", "licence_number": "L-1"}


def req(**changes: object) -> AccessRequest:
    fields: dict[str, object] = {
        "enterprise": "Acme Credit",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "credit_risk_model",
        "time": datetime(2026, 11, 22, tzinfo=UTC),
        "enterprise_attrs": LICENSED,
        "dataset_attrs": {"sensitivity": 2},
    }
    fields.update(changes)
    return AccessRequest(**fields)  # type: ignore[arg-type]


def test_a_denial_names_the_condition_that_failed() -> None:
    explanation = explain(DEMO_SET, req(purpose="direct_marketing"))
    assert not explanation.decision.allowed
    (check,) = explanation.matched
    assert check.policy == "acme-credit-aggregate" and not check.satisfied
    (failed,) = check.failed()
    assert "context.purpose" in failed.text and "credit_risk_model" in failed.text
    assert failed.holds is False


def test_an_expired_grant_names_the_time_condition() -> None:
    explanation = explain(DEMO_SET, req(time=datetime(2037, 1, 1, tzinfo=UTC)))
    (failed,) = explanation.matched[0].failed()
    assert "context.now" in failed.text


def test_an_allow_explains_with_every_condition_holding() -> None:
    explanation = explain(DEMO_SET, req())
    assert explanation.decision.allowed
    assert explanation.matched[0].satisfied
    assert explanation.to_json()["determining_policies"] == ["acme-credit-aggregate"]


def test_policies_out_of_scope_are_not_listed() -> None:
    assert explain(DEMO_SET, req(enterprise="Beta Data")).matched == ()


def test_explain_never_changes_the_decision() -> None:
    for changes in ({}, {"purpose": "x"}, {"enterprise_attrs": {**LICENSED, "status": "x"}}):
        assert explain(DEMO_SET, req(**changes)).decision == decide(DEMO_SET, req(**changes))


def test_lint_finds_grants_without_purpose_or_expiry_and_unreachable_permits() -> None:
    ps = PolicySet.from_files(
        {
            "schema.cedarschema": SCHEMA,
            "a.cedar": '@id("open") permit (principal, action == Action::"psi", resource);',
            "b.cedar": '@id("stop-psi") forbid (principal, action == Action::"psi", resource);',
        }
    )
    found = {(f.rule, f.policy) for f in lint(ps)}
    assert found == {("no-purpose", "open"), ("no-expiry", "open"), ("unreachable", "open")}


def test_the_demo_grant_is_lint_clean() -> None:
    assert lint(DEMO_SET) == ()


def test_every_decision_code_has_a_message_in_every_language_with_the_same_details() -> None:
    assert set(MESSAGE_IDS) == set(DECISION_CODES)
    for code in MESSAGE_IDS:
        assert placeholders(code, "en") == placeholders(code, "zh"), code


@pytest.mark.parametrize("lang", LANGUAGES)
def test_decisions_render_in_each_language(lang: str) -> None:
    decision = decide(DEMO_SET, req(purpose="direct_marketing"))
    text = message(decision.code, decision.details, lang=lang)
    assert "Acme Credit" in text and "direct_marketing" in text and "?" not in text
    if lang == "zh":
        assert "已拒绝" in text


def test_unknown_language_or_id_is_an_error() -> None:
    with pytest.raises(PolicyError):
        message("allowed", {}, lang="fr")
    with pytest.raises(PolicyError):
        message("nope", {})
