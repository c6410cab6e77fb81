"""Plans: frozen, canonical, and strict about what they accept from the wire."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import rfc8785

from computations import ComputationError, DatasetSpec, Plan, get_computation, params_digest

DIGEST = "0" * 64


def plan(**changes: Any) -> Plan:
    fields: dict[str, Any] = {
        "computation": "aggregate",
        "dataset": "residents",
        "params_digest": DIGEST,
        "body": {"group_by": ["district"], "outputs": [{"n": 1}]},
    }
    fields.update(changes)
    return Plan(**fields)


def test_params_digest_is_sha256_of_rfc8785() -> None:
    params = {"sql": "SELECT COUNT(*) FROM residents", "b": [1, 2.5, None], "a": "é"}
    assert params_digest(params) == hashlib.sha256(rfc8785.dumps(params)).hexdigest()
    # Key order does not matter: the JSON is canonical.
    assert params_digest(dict(reversed(list(params.items())))) == params_digest(params)


def test_params_digest_refuses_non_json() -> None:
    with pytest.raises(ComputationError):
        params_digest({"x": float("nan")})
    with pytest.raises(ComputationError):
        params_digest({"x": object()})


def test_check_digests_the_params(residents: DatasetSpec) -> None:
    params = {"sql": "SELECT COUNT(*) FROM residents"}
    checked = get_computation("aggregate").check(params, residents)
    assert checked.params_digest == params_digest(params)
    assert checked.computation == "aggregate"
    assert checked.dataset == "residents"


def test_json_round_trip() -> None:
    original = plan()
    data = original.to_json()
    assert data == {
        "version": 1,
        "computation": "aggregate",
        "dataset": "residents",
        "params_digest": DIGEST,
        "body": {"group_by": ["district"], "outputs": [{"n": 1}]},
    }
    assert Plan.from_json(json.loads(json.dumps(data))) == original
    assert hash(Plan.from_json(data)) == hash(original)


def test_body_is_deeply_frozen() -> None:
    source = {"group_by": ["district"], "outputs": [{"n": 1}]}
    frozen = plan(body=source)
    source["group_by"].append("sex")  # the caller's copy does not reach the plan
    assert frozen.to_json()["body"]["group_by"] == ["district"]
    with pytest.raises(TypeError):
        frozen.body["group_by"] = []  # type: ignore[index]
    with pytest.raises(TypeError):
        frozen.body["outputs"][0]["n"] = 2
    with pytest.raises(AttributeError):
        frozen.dataset = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"computation": "Aggregate"},
        {"computation": ""},
        {"computation": 1},
        {"dataset": "../residents"},
        {"params_digest": "A" * 64},
        {"params_digest": "0" * 63},
        {"params_digest": "sha256:" + "0" * 64},
        {"body": []},
        {"body": {"x": {1, 2}}},
        {"body": {"x": float("inf")}},
        {"body": {"x": 2**60}},
        {"body": {1: "x"}},
        {"body": {"x": b"bytes"}},
    ],
)
def test_construction_validates(changes: dict[str, Any]) -> None:
    with pytest.raises(ComputationError):
        plan(**changes)


def test_deep_body_is_refused_not_crashed() -> None:
    body: dict[str, Any] = {}
    for _ in range(5000):
        body = {"x": body}
    with pytest.raises(ComputationError):
        plan(body=body)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("version"),
        lambda d: d.update(version=2),
        lambda d: d.update(version="1"),
        lambda d: d.update(version=True),
        lambda d: d.update(extra=1),
        lambda d: d.pop("body"),
        lambda d: d.update(params_digest=None),
        lambda d: d.update(body="{}"),
    ],
)
def test_from_json_refuses_anything_else(mutate: Any) -> None:
    data = plan().to_json()
    mutate(data)
    with pytest.raises(ComputationError):
        Plan.from_json(data)


def test_from_json_refuses_non_objects() -> None:
    with pytest.raises(ComputationError):
        Plan.from_json([])  # type: ignore[arg-type]
