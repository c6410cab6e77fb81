"""Dataset specs: manifests in, validated specs out, clear errors for every mistake."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from computations import ColumnClass, ColumnSpec, ComputationError, DatasetSpec


def manifest(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "description": "Registered residents",
        "privacy_unit": "resident_id",
        "min_group_size": 10,
        "columns": {
            "resident_id": {"class": "identifier"},
            "district": {"class": "quasi_identifier", "dimension": True},
            "income": {"class": "sensitive", "description": "yearly, in yuan"},
        },
    }
    base.update(changes)
    return base


def test_manifest_yaml_shape(residents: DatasetSpec) -> None:
    assert residents.name == "residents"
    assert residents.privacy_unit == "resident_id"
    assert residents.min_group_size == 10
    assert [c.name for c in residents.columns] == [
        "resident_id",
        "district",
        "age_band",
        "sex",
        "income",
        "insurance_months",
        "health_flag",
    ]
    district = residents.column("district")
    assert district == ColumnSpec(name="district", cls=ColumnClass.quasi_identifier, dimension=True)
    assert residents.column("income") is not None
    assert residents.column("income").cls is ColumnClass.sensitive  # type: ignore[union-attr]
    assert residents.column("nope") is None


def test_column_lookup_ignores_case_like_sql(residents: DatasetSpec) -> None:
    assert residents.column("DISTRICT") == residents.column("district")


def test_to_manifest_is_the_inverse(residents: DatasetSpec) -> None:
    again = DatasetSpec.from_manifest(residents.to_manifest())
    assert again == residents
    assert DatasetSpec.from_manifest(residents.to_manifest(), name="residents") == residents


def test_to_manifest_writes_only_what_is_set() -> None:
    spec = DatasetSpec.from_manifest(manifest(), name="r")
    assert spec.to_manifest()["columns"] == {
        "resident_id": {"class": "identifier"},
        "district": {"class": "quasi_identifier", "dimension": True},
        "income": {"class": "sensitive", "description": "yearly, in yuan"},
    }


def test_spec_is_frozen_and_hashable(residents: DatasetSpec) -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic's own frozen-instance error
        residents.min_group_size = 2  # type: ignore[misc]
    assert hash(residents) == hash(DatasetSpec.from_manifest(residents.to_manifest()))


def test_column_class_values() -> None:
    assert [c.value for c in ColumnClass] == [
        "identifier",
        "quasi_identifier",
        "sensitive",
        "public",
    ]
    assert ColumnClass("sensitive") is ColumnClass.sensitive
    assert str(ColumnClass.public) == "public"


BAD_MANIFESTS: list[tuple[dict[str, Any] | Any, str | None, list[str]]] = [
    (manifest(min_group_size=1), "r", ["min_group_size", "greater than or equal to 2"]),
    (manifest(min_group_size="10"), "r", ["min_group_size", "integer"]),
    (manifest(min_group_size=True), "r", ["min_group_size"]),
    (manifest(min_group_size=10.0), "r", ["min_group_size"]),
    (manifest(privacy_unit="person"), "r", ["privacy_unit", "person", "not one of the columns"]),
    (manifest(privacy_unit=None), "r", ["privacy_unit"]),
    (manifest(colour="blue"), "r", ["colour", "Extra inputs are not permitted"]),
    (manifest(columns={}), "r", ["columns", "at least 1"]),
    (manifest(columns=["resident_id"]), "r", ["columns", "must map"]),
    (manifest(columns={"resident_id": "identifier"}), "r", ["columns.resident_id", "mapping"]),
    (manifest(columns={1: {"class": "public"}}), "r", ["columns", "not a string"]),
    (
        manifest(columns={"resident_id": {"class": "identifier", "name": "x"}}),
        "r",
        ["columns.resident_id", "'name' is not allowed"],
    ),
    (
        manifest(columns={"resident_id": {"class": "secret"}}),
        "r",
        ["columns.resident_id.class", "'identifier', 'quasi_identifier', 'sensitive' or 'public'"],
    ),
    (
        manifest(columns={"resident_id": {}}),
        "r",
        ["columns.resident_id.class", "Field required"],
    ),
    (
        manifest(columns={"resident_id": {"class": "identifier", "dimension": "yes"}}),
        "r",
        ["columns.resident_id.dimension", "boolean"],
    ),
    (
        manifest(columns={"resident_id": {"class": "identifier", "dimension": True}}),
        "r",
        ["resident_id", "identifier and may not be a dimension"],
    ),
    (
        manifest(columns={"resident_id": {"class": "public", "dimension": True}}),
        "r",
        ["privacy_unit", "may not be a dimension"],
    ),
    (
        manifest(columns={"resident_id": {"class": "identifier", "unit": "x"}}),
        "r",
        ["columns.resident_id.unit", "Extra inputs"],
    ),
    (
        manifest(
            columns={"resident_id": {"class": "identifier"}, "RESIDENT_ID": {"class": "public"}}
        ),
        "r",
        ["listed twice"],
    ),
    (
        manifest(columns={"resident_id": {"class": "identifier"}, "bad name": {"class": "public"}}),
        "r",
        ["columns.bad name.name", "pattern"],
    ),
    (manifest(), "Residents", ["name", "pattern"]),
    (manifest(), "1st", ["name", "pattern"]),
    (manifest(), "res-idents", ["name", "pattern"]),
    (manifest(), "a" * 64, ["name", "pattern"]),
    (manifest(), None, ["name", "Field required"]),
    (manifest(name="residents"), "people", ["name", "'residents'"]),
    (manifest(name=7), None, ["name", "string"]),
    (["not", "a", "mapping"], "r", ["must be a mapping"]),
    (None, "r", ["must be a mapping"]),
]


@pytest.mark.parametrize(("data", "name", "needles"), BAD_MANIFESTS)
def test_bad_manifests_raise_clear_errors(data: Any, name: str | None, needles: list[str]) -> None:
    with pytest.raises(ComputationError) as info:
        DatasetSpec.from_manifest(data, name=name)
    message = str(info.value)
    assert message.startswith("invalid dataset manifest")
    for needle in needles:
        assert needle in message


def test_all_problems_are_reported_at_once() -> None:
    data = manifest(min_group_size=0, columns={"resident_id": {"class": "nobody"}})
    with pytest.raises(ComputationError) as info:
        DatasetSpec.from_manifest(data, name="r")
    assert "min_group_size" in str(info.value)
    assert "columns.resident_id.class" in str(info.value)


def test_manifest_errors_name_the_dataset() -> None:
    with pytest.raises(ComputationError, match="for 'residents'"):
        DatasetSpec.from_manifest(manifest(min_group_size=0), name="residents")


@given(
    st.dictionaries(
        st.sampled_from(["name", "privacy_unit", "min_group_size", "columns", "description", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=10),
            st.dictionaries(
                st.text(max_size=8),
                st.dictionaries(
                    st.sampled_from(["class", "dimension", "description", "name"]),
                    st.one_of(
                        st.text(max_size=8), st.booleans(), st.sampled_from(list(ColumnClass))
                    ),
                ),
                max_size=3,
            ),
        ),
    ),
    st.one_of(st.none(), st.text(max_size=8)),
)
def test_arbitrary_manifests_give_a_spec_or_a_computation_error(
    data: dict[str, Any], name: str | None
) -> None:
    try:
        spec = DatasetSpec.from_manifest(data, name=name)
    except ComputationError:
        return
    assert DatasetSpec.from_manifest(spec.to_manifest()) == spec
