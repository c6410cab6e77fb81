"""Access decisions: the demo policy, forbids overriding permits, and failing closed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import indomain
from policies import AccessRequest, Decision, PolicyError, PolicySet, decide

DEMO = Path(indomain.__file__).parent / "demo" / "policies"
DEMO_SET = PolicySet.load(DEMO)
SCHEMA = (DEMO / "schema.cedarschema").read_text(encoding="utf-8")

BEFORE_EXPIRY = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
EXPIRY = datetime(2036, 6, 30, tzinfo=UTC)


# What the sandbox's registry supplies for a licensed enterprise and a classified dataset.
LICENSED = {"status": "active", "licence_number": "L-2026-001", "licence_expires": None}
CLASSIFIED = {"sensitivity": 2}


def request(**changes: object) -> AccessRequest:
    fields: dict[str, object] = {
        "enterprise": "Acme Credit",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "credit_risk_model",
        "time": BEFORE_EXPIRY,
    }
    extra_enterprise = changes.pop("enterprise_attrs", {})
    extra_dataset = changes.pop("dataset_attrs", {})
    fields["enterprise_attrs"] = {**LICENSED, **extra_enterprise}  # type: ignore[dict-item]
    fields["dataset_attrs"] = {**CLASSIFIED, **extra_dataset}  # type: ignore[dict-item]
    fields.update(changes)
    return AccessRequest(**fields)  # type: ignore[arg-type]


def with_extra(**files: str) -> PolicySet:
    base = dict(DEMO_SET.files)
    base.update(files)
    return PolicySet.from_files(base)


def assert_default_deny(decision: Decision, req: AccessRequest) -> None:
    assert decision.allowed is False
    assert decision.determining_policies == ()
    assert decision.errors == ()
    assert decision.policy_version == DEMO_SET.version
    assert decision.reason.startswith("denied: no policy permits")
    # Names are JSON-quoted so quotes and newlines in them stay unambiguous.
    assert f"Enterprise {json.dumps(req.enterprise, ensure_ascii=False)}" in decision.reason
    assert f"run {req.computation} on" in decision.reason
    assert decision.reason.endswith(f"Dataset {json.dumps(req.dataset, ensure_ascii=False)}")


# --- the demo policy -------------------------------------------------------------------


def test_acme_credit_may_aggregate_residents_for_credit_risk_before_expiry() -> None:
    decision = decide(DEMO_SET, request())
    assert decision == Decision(
        allowed=True,
        determining_policies=("acme-credit-aggregate",),
        reason='allowed by policy "acme-credit-aggregate"',
        errors=(),
        policy_version=DEMO_SET.version,
    )


def test_last_millisecond_before_expiry_is_allowed() -> None:
    assert decide(DEMO_SET, request(time=EXPIRY - timedelta(milliseconds=1))).allowed
    # Sub-millisecond precision is truncated, which never crosses the boundary.
    assert decide(DEMO_SET, request(time=EXPIRY - timedelta(microseconds=1))).allowed


def test_another_enterprise_is_denied() -> None:
    req = request(enterprise="Beta Data")
    decision = decide(DEMO_SET, req)
    assert_default_deny(decision, req)
    assert decision.reason == (
        'denied: no policy permits Enterprise "Beta Data" to run aggregate on Dataset "residents"'
    )


def test_another_purpose_is_denied() -> None:
    req = request(purpose="marketing")
    assert_default_deny(decide(DEMO_SET, req), req)


@pytest.mark.parametrize(
    "moment",
    [EXPIRY, EXPIRY + timedelta(microseconds=1), datetime(2040, 1, 1, tzinfo=UTC)],
)
def test_at_or_after_expiry_is_denied(moment: datetime) -> None:
    req = request(time=moment)
    assert_default_deny(decide(DEMO_SET, req), req)


def test_expiry_is_compared_in_utc() -> None:
    # 01:00 on 30 June in UTC+2 is 23:00 on 29 June UTC: still before expiry.
    plus_two = timezone(timedelta(hours=2))
    assert decide(DEMO_SET, request(time=datetime(2036, 6, 30, 1, 0, tzinfo=plus_two))).allowed
    # 23:00 on 29 June in UTC-2 is 01:00 on 30 June UTC: expired.
    minus_two = timezone(timedelta(hours=-2))
    late = request(time=datetime(2036, 6, 29, 23, 0, tzinfo=minus_two))
    assert not decide(DEMO_SET, late).allowed


def test_another_dataset_is_denied() -> None:
    req = request(dataset="tax_records")
    assert_default_deny(decide(DEMO_SET, req), req)


@pytest.mark.parametrize("computation", ["psi", "encrypted_group_sum"])
def test_another_declared_computation_is_denied(computation: str) -> None:
    req = request(computation=computation)
    assert_default_deny(decide(DEMO_SET, req), req)


def test_an_undeclared_computation_is_denied_with_the_error() -> None:
    req = request(computation="export_rows")
    decision = decide(DEMO_SET, req)
    assert decision.allowed is False
    assert decision.determining_policies == ()
    assert decision.errors and "export_rows" in decision.errors[0]
    assert 'Enterprise "Acme Credit" to run export_rows on Dataset "residents"' in decision.reason


# --- forbids and errors ----------------------------------------------------------------


def test_a_forbid_overrides_the_permit_and_is_named() -> None:
    policy_set = with_extra(
        **{
            "suspensions.cedar": (
                "// Acme Credit's licence is suspended pending review.\n"
                '@id("acme-credit-suspended")\n'
                'forbid (principal == Enterprise::"Acme Credit", action, resource);\n'
            )
        }
    )
    decision = decide(policy_set, request())
    assert decision.allowed is False
    assert decision.determining_policies == ("acme-credit-suspended",)
    assert decision.reason == 'denied by policy "acme-credit-suspended"'
    assert decision.policy_version == policy_set.version != DEMO_SET.version


def test_several_permits_are_all_named() -> None:
    policy_set = with_extra(
        **{"more.cedar": '@id("any-aggregate") permit (principal, action, resource);'}
    )
    decision = decide(policy_set, request())
    assert decision.allowed is True
    assert set(decision.determining_policies) == {"acme-credit-aggregate", "any-aggregate"}
    assert decision.reason.startswith("allowed by policies ")


def test_an_erroring_forbid_fails_closed_even_though_cedar_would_allow() -> None:
    # Valid against the schema, but overflows at evaluation: Cedar skips the policy and
    # would allow on the permit alone.
    policy_set = with_extra(
        **{
            "overflow.cedar": (
                '@id("overflowing-forbid")\n'
                "forbid (principal, action, resource)\n"
                'when { context.now.offset(duration("9223372036854775807ms")) > context.now };\n'
            )
        }
    )
    decision = decide(policy_set, request())
    assert decision.allowed is False
    assert decision.determining_policies == ()
    assert len(decision.errors) == 1
    assert "overflowing-forbid" in decision.errors[0]
    assert decision.reason.startswith("denied: cannot decide whether to permit")


def test_attributes_the_schema_does_not_declare_deny_with_an_error() -> None:
    decision = decide(DEMO_SET, request(enterprise_attrs={"tier": "gold"}))
    assert decision.allowed is False
    assert decision.errors and "tier" in decision.errors[0]


def test_attributes_without_a_cedar_form_deny_with_an_error() -> None:
    decision = decide(DEMO_SET, request(dataset_attrs={"weight": 1.5}))
    assert decision.allowed is False
    assert decision.errors and "float" in decision.errors[0]


def test_declared_attributes_are_passed_to_cedar() -> None:
    schema = SCHEMA.replace(
        "entity Dataset in [DatasetGroup, Grant] {\n",
        "entity Dataset in [DatasetGroup, Grant] {\n"
        "  classification?: String,\n  opened?: datetime,\n",
    )
    assert schema != SCHEMA
    policy_set = PolicySet.from_files(
        {
            "schema.cedarschema": schema,
            "open.cedar": (
                '@id("open-data")\n'
                "permit (principal, action, resource)\n"
                'when { resource has classification && resource.classification == "open" &&\n'
                "       resource has opened && resource.opened <= context.now };\n"
            ),
        }
    )
    opened = datetime(2025, 1, 1, tzinfo=UTC)
    allowed = decide(
        policy_set,
        request(enterprise="X", dataset_attrs={"classification": "open", "opened": opened}),
    )
    assert allowed.allowed and allowed.determining_policies == ("open-data",)
    closed = decide(policy_set, request(dataset_attrs={"classification": "restricted"}))
    assert not closed.allowed
    # Optional attributes left out make `has` false.
    assert not decide(policy_set, request()).allowed


# --- fail closed -----------------------------------------------------------------------


def test_no_policy_set_denies() -> None:
    decision = decide(None, request())
    assert decision.allowed is False
    assert decision.determining_policies == ()
    assert decision.policy_version == ""
    assert "no policy set" in decision.reason


def test_a_set_of_only_forbids_denies_everything() -> None:
    policy_set = PolicySet.from_files(
        {
            "schema.cedarschema": SCHEMA,
            "freeze.cedar": '@id("freeze") forbid (principal, action, resource);',
        }
    )
    decision = decide(policy_set, request())
    assert decision.allowed is False
    assert decision.determining_policies == ("freeze",)


@pytest.mark.parametrize(
    "name",
    [
        'Acme Credit" || true || "',
        'Acme Credit"',
        "Acme Credit\n",
        "Acme\nCredit",
        "acme credit",
        " Acme Credit",
        'Enterprise::"Acme Credit"',
        "",
        "\0",
    ],
)
def test_hostile_enterprise_names_are_denied_not_injected(name: str) -> None:
    req = request(enterprise=name)
    decision = decide(DEMO_SET, req)
    assert_default_deny(decision, req)
    assert "\n" not in decision.reason


@pytest.mark.parametrize(
    "changes",
    [
        {"dataset": 'residents" || true || "'},
        {"dataset": "residents\n"},
        {"purpose": 'credit_risk_model" || "'},
        {"computation": 'aggregate"'},
        {"computation": "aggregate\n"},
    ],
)
def test_hostile_values_elsewhere_are_denied(changes: dict[str, str]) -> None:
    assert decide(DEMO_SET, request(**changes)).allowed is False


def test_unencodable_names_deny_instead_of_raising() -> None:
    decision = decide(DEMO_SET, request(enterprise="Acme Credit\ud800"))
    assert decision.allowed is False
    assert decision.errors


@given(st.text().filter(lambda name: name != "Acme Credit"))
@settings(max_examples=200)
def test_no_other_enterprise_is_ever_allowed(name: str) -> None:
    decision = decide(DEMO_SET, request(enterprise=name))
    assert decision.allowed is False
    assert decision.determining_policies == ()


@given(
    enterprise=st.sampled_from(["Acme Credit", "Beta Data"]),
    computation=st.sampled_from(["aggregate", "psi", "encrypted_group_sum", "drop"]),
    dataset=st.sampled_from(["residents", "tax_records"]),
    purpose=st.sampled_from(["credit_risk_model", "marketing", ""]),
    time=st.datetimes(timezones=st.just(UTC)),
)
def test_demo_allows_exactly_its_grant(
    enterprise: str, computation: str, dataset: str, purpose: str, time: datetime
) -> None:
    req = AccessRequest(enterprise, computation, dataset, purpose, time, LICENSED, CLASSIFIED)
    expected = (
        enterprise == "Acme Credit"
        and computation == "aggregate"
        and dataset == "residents"
        and purpose == "credit_risk_model"
        and time < EXPIRY
    )
    assert decide(DEMO_SET, req).allowed is expected


# --- values check themselves -----------------------------------------------------------


def test_naive_time_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        request(time=datetime(2026, 1, 1))
    assert type(info.value) is PolicyError


def test_time_is_stored_in_utc() -> None:
    plus_eight = timezone(timedelta(hours=8))
    req = request(time=datetime(2026, 1, 1, 8, tzinfo=plus_eight))
    assert req.time == datetime(2026, 1, 1, tzinfo=UTC)
    assert req.time.tzinfo is UTC


def test_non_string_fields_are_refused() -> None:
    with pytest.raises(PolicyError):
        request(enterprise=42)
    with pytest.raises(PolicyError):
        request(enterprise_attrs={1: "x"})


def test_request_attrs_are_read_only() -> None:
    attrs = {"tier": "gold"}
    req = request(enterprise_attrs=attrs)
    attrs["tier"] = "lead"
    assert req.enterprise_attrs["tier"] == "gold"
    with pytest.raises(TypeError):
        req.enterprise_attrs["tier"] = "x"  # type: ignore[index]


def test_decide_refuses_something_that_is_not_a_request() -> None:
    with pytest.raises(PolicyError):
        decide(DEMO_SET, "Acme Credit")  # type: ignore[arg-type]


def test_a_contradictory_decision_is_refused() -> None:
    with pytest.raises(PolicyError):
        Decision(True, (), "allowed by nothing", (), "")
    with pytest.raises(PolicyError):
        Decision(True, ("p",), "allowed", ("boom",), "")
    with pytest.raises(PolicyError):
        Decision(False, (), "", (), "")
    with pytest.raises(PolicyError):
        Decision(False, (), "denied", (), "md5:abc")
