"""Licence and Grant entities: a grant allows only while in force, for its purpose, on its
datasets; a suspended licence and a forbid still win; a bad grant policy is never valid."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import indomain
from policies import AccessRequest, PolicyError, PolicyInvalid, PolicySet, decide, lint
from policies._entities import cedar_request, entities

SCHEMA = (Path(indomain.__file__).parent / "demo" / "policies" / "schema.cedarschema").read_text()

GRANT_POLICY = """
@id("g14")
@min_group_size("12")
@epsilon_per_job("1.0")
permit (principal in Grant::"G-14", action == Action::"aggregate", resource in Grant::"G-14");
"""
FORBID = """
@id("no-marketing")
forbid (principal, action, resource) when { context.purpose == "direct_marketing" };
@id("no-health")
forbid (principal, action, resource) when { context.job.columns.contains("health_flag") };
"""
LICENCE_POLICY = """
@id("by-licence")
permit (principal in Licence::"L-7", action == Action::"psi", resource)
when { context.purpose == "address_verification" && context.now < datetime("2030-01-01") };
"""
SET = PolicySet.from_files(
    {"schema.cedarschema": SCHEMA, "g.cedar": GRANT_POLICY, "f.cedar": FORBID}
    | {"l.cedar": LICENCE_POLICY}
)

INSIDE = datetime(2026, 6, 1, tzinfo=UTC)


def grant(**changes: Any) -> dict[str, Any]:
    return {
        "purpose": "credit_risk_model",
        "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
        "valid_until": datetime(2027, 1, 1, tzinfo=UTC),
        "status": "active",
        "datasets": ["residents"],
        "groups": [],
        "obligations": {"min_group_size": "20", "epsilon_per_job": "2.0"},
    } | changes


def request(**changes: Any) -> AccessRequest:
    fields: dict[str, Any] = {
        "enterprise": "Acme Credit",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "credit_risk_model",
        "time": INSIDE,
        "enterprise_attrs": {"status": "active", "licence_number": "L-7"},
        "dataset_attrs": {"sensitivity": 3},
        "grants": {"G-14": grant()},
    }
    fields.update(changes)
    return AccessRequest(**fields)


def test_a_grant_in_force_allows_with_its_obligations_merged_strictest_first() -> None:
    decision = decide(SET, request())
    assert decision.allowed and decision.determining_policies == ("g14",)
    # the grant's min_group_size 20 beats the policy's 12; the policy's epsilon 1.0 beats 2.0
    assert dict(decision.obligations) == {"min_group_size": "20", "epsilon_per_job": "1.0"}


@pytest.mark.parametrize(
    "when",
    [datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC)],
    ids=["at-valid-until", "long-after"],
)
def test_an_expired_grant_denies(when: datetime) -> None:
    decision = decide(SET, request(time=when))
    assert not decision.allowed and decision.code == "no_permit"


def test_a_grant_not_yet_valid_denies() -> None:
    assert not decide(SET, request(time=datetime(2025, 12, 31, 23, 59, tzinfo=UTC))).allowed


def test_a_revoked_grant_denies() -> None:
    decision = decide(SET, request(grants={"G-14": grant(status="revoked")}))
    assert not decision.allowed and decision.code == "no_permit"


def test_a_grant_binds_its_purpose_and_datasets() -> None:
    assert not decide(SET, request(purpose="fiscal_research")).allowed
    assert not decide(SET, request(dataset="tax_records")).allowed


def test_a_grant_covers_a_group_member() -> None:
    by_group = {"G-14": grant(datasets=[], groups=["household"])}
    groups = {"household": {"sensitivity": 3}}
    assert decide(SET, request(grants=by_group, dataset_groups=groups)).allowed
    assert not decide(SET, request(grants=by_group)).allowed  # not in the group


def test_another_enterprises_grant_allows_nothing() -> None:
    # Grants reach a request only for their holder; naming the id is not holding it.
    assert not decide(SET, request(enterprise="Beta", grants={})).allowed


def test_a_suspended_licence_denies_whatever_the_grant_says() -> None:
    suspended = {"status": "suspended", "licence_number": "L-7"}
    decision = decide(SET, request(enterprise_attrs=suspended))
    assert not decision.allowed and decision.code == "licence_inactive"


def test_a_forbid_beats_a_grant_in_force() -> None:
    decision = decide(SET, request(columns=("district", "health_flag")))
    assert not decision.allowed and decision.code == "forbidden"
    assert decision.determining_policies == ("no-health",)


def test_principal_in_licence_names_the_holder_of_that_licence_number() -> None:
    psi = {"computation": "psi", "purpose": "address_verification", "grants": {}}
    assert decide(SET, request(**psi)).allowed
    other = {"status": "active", "licence_number": "L-8"}
    assert not decide(SET, request(**psi, enterprise_attrs=other)).allowed


def test_grant_scoped_permits_need_no_purpose_or_expiry_condition() -> None:
    assert not [f for f in lint(SET) if f.policy == "g14"]


def test_a_typo_in_a_grant_attribute_makes_the_set_invalid() -> None:
    bad = (
        '@id("typo") permit (principal in Grant::"G-1", action, resource)\n'
        'when { Grant::"G-1".purpos == context.purpose };'
    )
    with pytest.raises(PolicyInvalid, match="purpos"):
        PolicySet.from_files({"schema.cedarschema": SCHEMA, "t.cedar": bad})


@pytest.mark.parametrize(
    "bad",
    [
        grant(valid_until=datetime(2025, 1, 1, tzinfo=UTC)),  # ends before it starts
        grant(valid_from=datetime(2026, 1, 1)),  # naive
        grant(obligations={"min_grop_size": "10"}),  # unknown obligation
        grant(obligations={"epsilon_per_job": "-1"}),  # bad value
        grant(datasets="residents"),  # a str is not a list
        {**grant(), "holder": "x"},  # unknown key
    ],
)
def test_a_malformed_grant_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        request(grants={"G-14": bad})


@given(
    status=st.sampled_from(["active", "revoked"]),
    month=st.integers(1, 36),
    purpose=st.sampled_from(["credit_risk_model", "direct_marketing", "fiscal_research"]),
    dataset=st.sampled_from(["residents", "tax_records"]),
    columns=st.sampled_from([(), ("health_flag",)]),
    computation=st.sampled_from(["aggregate", "psi"]),
    licence=st.sampled_from(["L-7", "L-8"]),
)
@settings(max_examples=200, deadline=None)
def test_decide_with_its_caches_agrees_with_cedar_over_the_whole_set(
    status: str,
    month: int,
    purpose: str,
    dataset: str,
    columns: tuple[str, ...],
    computation: str,
    licence: str,
) -> None:
    when = datetime(2025 + (month - 1) // 12, (month - 1) % 12 + 1, 15, tzinfo=UTC)
    req = request(
        time=when,
        purpose=purpose,
        dataset=dataset,
        columns=columns,
        computation=computation,
        enterprise_attrs={"status": "active", "licence_number": licence},
        grants={"G-14": grant(status=status)},
    )
    handles = SET._handles()
    full = cedarpy.is_authorized(
        cedar_request(req), handles.policies, entities(req), schema=handles.schema
    )
    decision = decide(SET, req)
    assert decision.allowed == (full.decision is cedarpy.Decision.Allow)
    assert set(decision.determining_policies) == set(full.diagnostics.reasons)


# --- the caches decide keeps never serve stale or different facts ----------------------


def test_the_same_policy_set_sees_a_revocation_at_the_next_decision() -> None:
    assert decide(SET, request()).allowed  # fills the caches
    assert not decide(SET, request(grants={"G-14": grant(status="revoked")})).allowed
    assert decide(SET, request()).allowed


def test_equal_python_values_of_different_cedar_types_do_not_share_a_cache_entry() -> None:
    # 1 == True in Python; Cedar's Long 1 fits the schema, the bool does not.
    open_set = PolicySet.from_files(
        {
            "schema.cedarschema": SCHEMA,
            "p.cedar": '@id("p") permit (principal, action, resource) '
            "when { resource.sensitivity == 1 };",
        }
    )
    assert decide(open_set, request(dataset_attrs={"sensitivity": 1})).allowed
    as_bool = decide(open_set, request(dataset_attrs={"sensitivity": True}))
    assert not as_bool.allowed and as_bool.code == "not_evaluated"


def test_an_unknown_action_is_checked_against_the_schema_every_time() -> None:
    assert decide(SET, request()).allowed  # "aggregate" is now known to be valid
    for _ in range(2):
        unknown = decide(SET, request(computation="drop_table"))
        assert not unknown.allowed and unknown.code == "not_evaluated"


def test_explain_says_why_each_grant_is_or_is_not_in_force() -> None:
    from policies import explain

    grants = {
        "G-14": grant(),
        "G-15": grant(status="revoked"),
        "G-16": grant(valid_until=datetime(2026, 2, 1, tzinfo=UTC)),
        "G-17": grant(purpose="fiscal_research"),
        "G-18": grant(valid_from=datetime(2026, 12, 1, tzinfo=UTC)),
    }
    states = explain(SET, request(grants=grants)).grants
    assert states["G-14"] == "in force"
    assert states["G-15"] == "not in force: revoked"
    assert states["G-16"].startswith("not in force: expired at 2026-02-01")
    assert states["G-17"] == "not in force for this purpose: granted for fiscal_research"
    assert states["G-18"].startswith("not in force: valid from 2026-12-01")


def test_a_schema_without_the_supplied_entities_is_invalid() -> None:
    old_style = SCHEMA.replace("entity Enterprise in [Licence, Grant] {", "entity Enterprise {")
    assert old_style != SCHEMA
    with pytest.raises(PolicyInvalid, match="does not declare the entities"):
        PolicySet.from_files({"schema.cedarschema": old_style, "g.cedar": GRANT_POLICY})


def test_a_grant_permit_not_bound_to_the_grants_datasets_is_linted() -> None:
    loose = PolicySet.from_files(
        {
            "schema.cedarschema": SCHEMA,
            "g.cedar": '@id("loose") permit (principal in Grant::"G-14", action, resource);',
        }
    )
    assert [(f.rule, f.policy) for f in lint(loose)] == [("grant-resource", "loose")]
    assert not [f for f in lint(SET) if f.rule == "grant-resource"]


def test_a_grant_scope_written_with_is_still_carries_the_grants_obligations() -> None:
    written_with_is = GRANT_POLICY.replace(
        'principal in Grant::"G-14"', 'principal is Enterprise in Grant::"G-14"'
    )
    policy_set = PolicySet.from_files({"schema.cedarschema": SCHEMA, "g.cedar": written_with_is})
    decision = decide(policy_set, request())
    assert decision.allowed
    assert dict(decision.obligations) == {"min_group_size": "20", "epsilon_per_job": "1.0"}


@pytest.mark.parametrize(
    "permit",
    [
        'permit (principal, action == Action::"aggregate", resource)\n'
        'when { principal in Grant::"G-14" };',
        'permit (principal in Grant::"G-14", action == Action::"aggregate", resource)\n'
        'when { principal in Grant::"G-15" };',
    ],
    ids=["grant-only-in-condition", "second-grant-in-condition"],
)
def test_a_permit_naming_a_grant_outside_its_principal_scope_is_invalid(permit: str) -> None:
    # The grant's obligations (review, epsilon, budget) ride on the principal scope; a
    # grant named only in a condition would allow without them.
    with pytest.raises(PolicyInvalid, match="in a condition"):
        PolicySet.from_files({"schema.cedarschema": SCHEMA, "g.cedar": '@id("x")\n' + permit})
