"""Obligations from annotations, merged strictest-first; the licence guard; job context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import indomain
from policies import AccessRequest, Decision, PolicyError, PolicyInvalid, PolicySet, decide

DEMO = Path(indomain.__file__).parent / "demo" / "policies"
SCHEMA = (DEMO / "schema.cedarschema").read_text(encoding="utf-8")
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
LICENSED = {"status": "active", "licence_number": "L-1", "licence_expires": None}

SCOPE = 'permit (principal == Enterprise::"A", action == Action::"aggregate", resource)'


def policy_set(*policies: str) -> PolicySet:
    files = {"schema.cedarschema": SCHEMA}
    for number, text in enumerate(policies):
        files[f"p{number}.cedar"] = text
    return PolicySet.from_files(files)


def req(**changes: object) -> AccessRequest:
    fields: dict[str, object] = {
        "enterprise": "A",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "research",
        "time": NOW,
        "enterprise_attrs": LICENSED,
        "dataset_attrs": {"sensitivity": 2},
    }
    fields.update(changes)
    return AccessRequest(**fields)  # type: ignore[arg-type]


# --- obligations --------------------------------------------------------------------------


def test_an_allow_carries_its_permits_obligations() -> None:
    ps = policy_set(
        f'@id("g") @min_group_size("10") @epsilon_per_job("0.5") @budget("5.0/month")\n'
        f'@review("two-person") @allowed_columns("district, age")\n{SCOPE};'
    )
    decision = decide(ps, req())
    assert decision.allowed
    assert dict(decision.obligations) == {
        "allowed_columns": "age,district",
        "budget": "5.0/month",
        "epsilon_per_job": "0.5",
        "min_group_size": "10",
        "review": "two-person",
    }


def test_obligations_merge_strictest_first_whatever_the_order() -> None:
    loose = (
        f'@id("loose") @min_group_size("5") @epsilon_per_job("1.0") @budget("10/month")\n'
        f'@review("one-person") @allowed_columns("a,b,c")\n{SCOPE};'
    )
    strict = (
        f'@id("strict") @min_group_size("20") @epsilon_per_job("0.25") @budget("2.5/year")\n'
        f'@review("two-person") @allowed_columns("b,c,d")\n{SCOPE};'
    )
    for ps in (policy_set(loose, strict), policy_set(strict, loose)):
        decision = decide(ps, req())
        assert set(decision.determining_policies) == {"loose", "strict"}
        assert dict(decision.obligations) == {
            "allowed_columns": "b,c",
            "budget": "2.5/year",
            "epsilon_per_job": "0.25",
            "min_group_size": "20",
            "review": "two-person",
        }


def test_adding_a_looser_grant_never_loosens_obligations() -> None:
    strict = f'@id("strict") @min_group_size("25")\n{SCOPE};'
    attack = f'@id("attack") @min_group_size("2")\n{SCOPE};'
    assert decide(policy_set(strict, attack), req()).obligations["min_group_size"] == "25"


def test_the_psi_set_size_cap_merges_to_the_smallest() -> None:
    psi = SCOPE.replace('Action::"aggregate"', 'Action::"psi"')
    grants = [
        f'@id("wide") @psi_max_set_size("1000000")\n{psi};',
        f'@id("narrow") @psi_max_set_size("5000")\n{psi};',
        f'@id("none")\n{psi};',
    ]
    for ps in (policy_set(*grants), policy_set(*reversed(grants))):
        decision = decide(ps, req(computation="psi"))
        assert decision.allowed
        assert decision.obligations["psi_max_set_size"] == "5000"


def test_same_budget_amount_longer_period_is_stricter() -> None:
    a = f'@id("a") @budget("5/month")\n{SCOPE};'
    b = f'@id("b") @budget("5/year")\n{SCOPE};'
    assert decide(policy_set(a, b), req()).obligations["budget"] == "5/year"
    c = f'@id("c") @budget("5/total")\n{SCOPE};'
    assert decide(policy_set(a, b, c), req()).obligations["budget"] == "5/total"


@pytest.mark.parametrize(
    "annotation",
    [
        '@min_grop_size("10")',  # a typo must not silently drop a protection
        '@description("x")',
        '@min_group_size("1")',
        '@min_group_size("ten")',
        '@min_group_size("010")',
        '@epsilon_per_job("0")',
        '@epsilon_per_job("-1")',
        '@epsilon_per_job("1e3")',
        '@budget("5")',
        '@budget("5/fortnight")',
        '@budget("0/month")',
        '@review("two")',
        '@allowed_columns("")',
        '@allowed_columns("a; DROP")',
        "@review",
        '@psi_max_set_size("0")',
        '@psi_max_set_size("-5")',
        '@psi_max_set_size("1e5")',
        '@psi_max_set_size("100000.0")',
        '@psi_max_set_size("0100")',
        '@psi_max_set_size("lots")',
        "@psi_max_set_size",
    ],
)
def test_unknown_or_malformed_annotations_are_refused(annotation: str) -> None:
    with pytest.raises(PolicyInvalid) as caught:
        policy_set(f'@id("g") {annotation}\n{SCOPE};')
    assert '"g"' in str(caught.value)


def test_obligations_on_a_forbid_are_refused() -> None:
    with pytest.raises(PolicyInvalid, match="only a permit"):
        policy_set(
            f'@id("g")\n{SCOPE};',
            '@id("f") @min_group_size("10") forbid (principal, action, resource);',
        )


def test_a_deny_carries_no_obligations() -> None:
    ps = policy_set(
        f'@id("g") @min_group_size("10")\n{SCOPE};',
        '@id("f") forbid (principal, action, resource) when { context.purpose == "x" };',
    )
    decision = decide(ps, req(purpose="x"))
    assert not decision.allowed and decision.code == "forbidden"
    assert dict(decision.obligations) == {}
    with pytest.raises(PolicyError):
        Decision(
            allowed=False,
            determining_policies=(),
            reason="denied",
            errors=(),
            policy_version="",
            obligations={"min_group_size": "10"},
        )


# --- the licence guard ----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["suspended", "unlicensed", "Active", "active ", None])
def test_a_licence_that_is_not_active_is_denied_whatever_the_policies(status: object) -> None:
    # This permit does not test the status: the guard must hold anyway.
    ps = policy_set(f'@id("g")\n{SCOPE};')
    attrs = {**LICENSED, "status": status}
    decision = decide(ps, req(enterprise_attrs=attrs))
    assert not decision.allowed
    assert decision.code == "licence_inactive"
    assert decision.determining_policies == ()


def test_an_expired_licence_is_denied_from_the_expiry_instant() -> None:
    ps = policy_set(f'@id("g")\n{SCOPE};')
    expiry = NOW + timedelta(hours=1)
    attrs = {**LICENSED, "licence_expires": expiry}
    assert decide(ps, req(enterprise_attrs=attrs, time=expiry - timedelta(seconds=1))).allowed
    for moment in (expiry, expiry + timedelta(days=1)):
        decision = decide(ps, req(enterprise_attrs=attrs, time=moment))
        assert not decision.allowed and decision.code == "licence_expired"


def test_licence_attributes_are_visible_to_policies() -> None:
    ps = policy_set(
        '@id("g") permit (principal, action, resource)\n'
        "when { principal has licence_expires && context.now < principal.licence_expires &&\n"
        '       principal.licence_number like "L-*" };'
    )
    attrs = {**LICENSED, "licence_expires": NOW + timedelta(days=1)}
    assert decide(ps, req(enterprise_attrs=attrs)).allowed
    assert not decide(ps, req()).allowed  # no expiry on record: `has` is false


# --- dataset groups and job parameters ----------------------------------------------------


def test_dataset_groups_and_sensitivity_can_be_tested() -> None:
    ps = policy_set(
        '@id("g") permit (principal, action, resource in DatasetGroup::"household")\n'
        "when { resource.sensitivity <= 2 };"
    )
    grouped = {"household": {"sensitivity": 2}}
    assert decide(ps, req(dataset_groups=grouped)).allowed
    assert not decide(ps, req()).allowed
    assert not decide(ps, req(dataset_groups=grouped, dataset_attrs={"sensitivity": 4})).allowed


def test_epsilon_asked_is_rounded_up_before_cedar_compares_it() -> None:
    ps = policy_set(
        f'@id("g")\n{SCOPE}\nwhen {{ context.job.epsilon.lessThanOrEqual(decimal("0.5")) }};'
    )
    assert decide(ps, req(epsilon=Decimal("0.5"))).allowed
    assert decide(ps, req()).allowed  # no epsilon asked: 0
    # 0.50001 would round to 0.5000 at Cedar's four places; it must round up instead.
    assert not decide(ps, req(epsilon=Decimal("0.50001"))).allowed


def test_columns_used_can_be_forbidden() -> None:
    ps = policy_set(
        f'@id("g")\n{SCOPE};',
        '@id("no-income") forbid (principal, action, resource)\n'
        'when { context.job.columns.contains("income") };',
    )
    assert decide(ps, req(columns=("age", "district"))).allowed
    decision = decide(ps, req(columns=("income", "age")))
    assert not decision.allowed and decision.determining_policies == ("no-income",)


@pytest.mark.parametrize("epsilon", ["nan", "-0.1", "Infinity", "abc"])
def test_malformed_epsilon_is_an_error_not_zero(epsilon: str) -> None:
    with pytest.raises(PolicyError):
        req(epsilon=epsilon)


def test_columns_outside_allowed_columns_are_denied() -> None:
    ps = policy_set(f'@id("g") @allowed_columns("district,age_band")\n{SCOPE};')
    assert decide(ps, req(columns=("district",))).allowed
    decision = decide(ps, req(columns=("district", "income")))
    assert not decision.allowed and decision.code == "columns_not_allowed"
    assert "income" in decision.reason and dict(decision.obligations) == {}


def test_disjoint_allowed_columns_allow_no_column_at_all() -> None:
    a = f'@id("a") @allowed_columns("district")\n{SCOPE};'
    b = f'@id("b") @allowed_columns("age_band")\n{SCOPE};'
    assert not decide(policy_set(a, b), req(columns=("district",))).allowed
    assert not decide(policy_set(a, b), req(columns=("age_band",))).allowed


def test_result_size_can_be_limited_and_unknown_fails_closed() -> None:
    ps = policy_set(f'@id("g")\n{SCOPE}\nwhen {{ context.job.result_size <= 1000 }};')
    assert decide(ps, req(result_size=28)).allowed
    assert not decide(ps, req(result_size=1001)).allowed
    assert not decide(ps, req()).allowed  # unknown size: the largest Long
    for bad in (-1, True, 2**63, "10"):
        with pytest.raises(PolicyError):
            req(result_size=bad)


@pytest.mark.parametrize("folder", ["policies", "bureau"])
def test_every_approved_computation_is_an_action_in_the_schema(folder: str) -> None:
    from computations import available_computations

    schema = (Path(indomain.__file__).parent / "demo" / folder / "schema.cedarschema").read_text()
    for name in available_computations():
        PolicySet.from_files(
            {
                "schema.cedarschema": schema,
                "a.cedar": f'@id("a") permit (principal, action == Action::"{name}", resource);',
            }
        )
    with pytest.raises(PolicyInvalid):  # and an undeclared one is refused
        PolicySet.from_files(
            {
                "schema.cedarschema": schema,
                "a.cedar": '@id("a") permit (principal, action == Action::"drop", resource);',
            }
        )
