"""The decision cache never serves one request's entities to another: values that Python
considers equal but Cedar does not (``1`` and ``True``, inside sets too) get their own key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import indomain
from policies import AccessRequest, PolicySet, decide

SCHEMA = (
    (Path(indomain.__file__).parent / "demo" / "policies" / "schema.cedarschema")
    .read_text()
    .replace(
        "entity Dataset in [DatasetGroup, Grant] {\n  sensitivity: Long,",
        "entity Dataset in [DatasetGroup, Grant] {\n  sensitivity: Long,\n  levels?: Set<Long>,",
    )
)
POLICIES = """
@id("acme") permit (principal == Enterprise::"Acme Credit", action == Action::"aggregate", resource)
when { context.purpose == "x" };
@id("no-level-1") forbid (principal, action, resource)
when { resource has levels && resource.levels.contains(1) };
"""


def _decide(policy_set: PolicySet, levels: Any) -> str:
    request = AccessRequest(
        enterprise="Acme Credit",
        computation="aggregate",
        dataset="d",
        purpose="x",
        time=datetime.now(UTC),
        enterprise_attrs={"licence_number": "L", "status": "active"},
        dataset_attrs={"sensitivity": 1, "levels": levels},
    )
    return decide(policy_set, request).code


@pytest.mark.parametrize("first, then", [((1,), (True,)), ((True,), (1,))])
def test_nested_values_equal_in_python_but_not_in_cedar_are_decided_apart(
    first: Any, then: Any
) -> None:
    alone = PolicySet.from_files({"schema.cedarschema": SCHEMA, "p.cedar": POLICIES})
    expected = _decide(alone, then)
    shared = PolicySet.from_files(
        {"schema.cedarschema": SCHEMA, "p.cedar": POLICIES + "\n// another version\n"}
    )
    _decide(shared, first)  # fills the cache
    assert _decide(shared, then) == expected
