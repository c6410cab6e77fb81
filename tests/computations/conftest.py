"""Fixtures for the computations tests: the residents dataset, as spec and as locked DuckDB."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import duckdb
import pyarrow as pa
import pytest
import yaml

from computations import DatasetSpec

RESIDENTS_MANIFEST = """\
description: Registered residents, one row per person
privacy_unit: resident_id
min_group_size: 10
columns:
  resident_id: {class: identifier}
  district: {class: quasi_identifier, dimension: true}
  age_band: {class: quasi_identifier, dimension: true}
  sex: {class: quasi_identifier, dimension: true}
  income: {class: sensitive}
  insurance_months: {class: sensitive}
  health_flag: {class: sensitive, dimension: true}
privacy:
  # Exact values: these tests compare against DuckDB. Rounding and dominance are off so
  # only the minimum group size applies; DP is tested with DP_RESIDENTS_MANIFEST.
  mode: threshold_only
  rounding_base: 1
  dominance: 1.0
"""

#: The same dataset under differential privacy (the default mode), with bounds and keys.
DP_RESIDENTS_MANIFEST = """\
description: Registered residents, one row per person
privacy_unit: resident_id
min_group_size: 10
columns:
  resident_id: {class: identifier}
  district: {class: quasi_identifier, dimension: true}
  age_band: {class: quasi_identifier, dimension: true, keys: ["0-17", "18-39", "40-64", "65+"]}
  sex: {class: quasi_identifier, dimension: true, keys: [f, m]}
  income: {class: sensitive, bounds: [0, 200000]}
  insurance_months: {class: sensitive, bounds: [0, 12]}
  health_flag: {class: sensitive, dimension: true, keys: [true, false]}
"""

# Skewed district sizes so that some groups fall below the minimum and some do not.
_DISTRICTS = ["north"] * 40 + ["south"] * 30 + ["east"] * 15 + ["west"] * 8 + ["harbour"] * 3
_AGE_BANDS = ["0-17", "18-39", "40-64", "65+"]


def make_residents(seed: int = 7, people: int = 240) -> pa.Table:
    """A small deterministic residents table; a few people appear twice, some values null."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for person in range(people):
        row = {
            "resident_id": person,
            "district": rng.choice(_DISTRICTS),
            "age_band": rng.choice(_AGE_BANDS),
            "sex": rng.choice(["f", "m"]),
            "income": None if rng.random() < 0.05 else rng.randrange(0, 200_000),
            "insurance_months": rng.randrange(0, 13),
            "health_flag": rng.random() < 0.2,
        }
        rows.append(row)
        if rng.random() < 0.1:  # a second record for the same person
            rows.append({**row, "income": rng.randrange(0, 200_000)})
    if rows:
        rows[0]["district"] = None  # a null group value
    schema = pa.schema(
        [
            ("resident_id", pa.int64()),
            ("district", pa.string()),
            ("age_band", pa.string()),
            ("sex", pa.string()),
            ("income", pa.int64()),
            ("insurance_months", pa.int32()),
            ("health_flag", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def locked_connection(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding ``tables``, then locked the way the enclave locks it."""
    con = duckdb.connect(":memory:")
    for name, table in tables.items():
        con.register("_source", table)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _source')
        con.unregister("_source")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@pytest.fixture(scope="session")
def residents_manifest() -> dict[str, object]:
    data = yaml.safe_load(RESIDENTS_MANIFEST)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="session")
def residents(residents_manifest: dict[str, object]) -> DatasetSpec:
    return DatasetSpec.from_manifest(residents_manifest, name="residents")


@pytest.fixture(scope="session")
def dp_residents() -> DatasetSpec:
    data = yaml.safe_load(DP_RESIDENTS_MANIFEST)
    assert isinstance(data, dict)
    return DatasetSpec.from_manifest(data, name="residents")


@pytest.fixture(scope="session")
def residents_table() -> pa.Table:
    return make_residents()


@pytest.fixture(scope="session")
def connect() -> Callable[[dict[str, pa.Table]], duckdb.DuckDBPyConnection]:
    """:func:`locked_connection`, for tests that need a table of their own."""
    return locked_connection


@pytest.fixture(scope="module")
def con(residents_table: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = locked_connection({"residents": residents_table})
    yield connection
    connection.close()
