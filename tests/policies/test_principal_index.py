"""Handing Cedar only the policies whose principal scope can match changes no decision."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import cedarpy
from hypothesis import given, settings
from hypothesis import strategies as st

import indomain
from policies import AccessRequest, PolicySet, decide
from policies._entities import cedar_request as _cedar_request
from policies._entities import entities as _entities

BUREAU = PolicySet.load(Path(indomain.__file__).parent / "demo" / "bureau")
NAMES = ["Acme Credit", "Beta Analytics", "Gamma Insights", "Delta", 'Acme Credit"']


@given(
    enterprise=st.sampled_from(NAMES),
    computation=st.sampled_from(["aggregate", "psi", "encrypted_group_sum"]),
    dataset=st.sampled_from(["residents", "tax_records"]),
    purpose=st.sampled_from(["credit_risk_model", "fiscal_research", "direct_marketing"]),
    year=st.integers(2024, 2028),
    groups=st.sampled_from([{}, {"household": {"sensitivity": 3}}]),
    columns=st.sampled_from([(), ("health_flag",), ("district",)]),
)
@settings(max_examples=300, deadline=None)
def test_same_decision_as_cedar_over_the_whole_set(
    enterprise: str,
    computation: str,
    dataset: str,
    purpose: str,
    year: int,
    groups: dict[str, dict[str, int]],
    columns: tuple[str, ...],
) -> None:
    request = AccessRequest(
        enterprise=enterprise,
        computation=computation,
        dataset=dataset,
        purpose=purpose,
        time=datetime(year, 6, 1, tzinfo=UTC),
        enterprise_attrs={"status": "active", "licence_number": "L"},
        dataset_attrs={"sensitivity": 3},
        dataset_groups=groups,
        columns=columns,
    )
    handles = BUREAU._handles()
    full = cedarpy.is_authorized(
        _cedar_request(request), handles.policies, _entities(request), schema=handles.schema
    )
    decision = decide(BUREAU, request)
    assert decision.allowed == (full.decision is cedarpy.Decision.Allow)
    assert set(decision.determining_policies) == set(full.diagnostics.reasons)
