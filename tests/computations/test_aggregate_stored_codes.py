"""Key codes stored at import stand in for the group values, exactly, and only when they
were made from the manifest's current keys (``_codes.stored_codes``, ``bounded_sql(coded=)``).

Grouping by codes merges every value outside the keys into one NULL group; with public keys
no such group is released, so the groups that can be released must hold exactly what the
grouping by value gives them, whatever the rows hold: near misses of a key (case, spaces,
other scripts), NULLs, the empty string, one or many rows per person.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from computations import DatasetSpec, get_computation, stored_codes
from computations._aggregate._body import AggregateBody
from computations._aggregate._sql import bounded_sql

AGGREGATE = get_computation("aggregate")
TOWNS = ["Haidian", "Chaoyang", "海淀", ""]
NEAR_MISSES = ["haidian", "Haidian ", " Haidian", "HAIDIAN", "Chaoyang\x00", "海", "Atlantis"]
SQL = (
    "SELECT town, band, COUNT(*) AS n, COUNT(income) AS c, SUM(income) AS s "
    "FROM people GROUP BY town, band"
)


def _spec(*, towns: list[str] = TOWNS, groups: int = 1, rows: int = 3) -> DatasetSpec:
    return DatasetSpec.from_manifest(
        {
            "privacy_unit": "person_id",
            "min_group_size": 2,
            "columns": {
                "person_id": {"class": "identifier"},
                "town": {"class": "quasi_identifier", "dimension": True, "keys": towns},
                "band": {"class": "quasi_identifier", "dimension": True, "keys": [3, -1, 7]},
                "flag": {"class": "sensitive", "dimension": True, "keys": [True, False]},
                "job": {"class": "quasi_identifier", "dimension": True},
                "income": {"class": "sensitive", "bounds": [0, 1000]},
            },
            "privacy": {"max_groups_per_unit": groups, "max_rows_per_unit": rows},
        },
        name="people",
    )


SCHEMA = pa.schema(
    [
        ("person_id", pa.int64()),
        ("town", pa.string()),
        ("band", pa.int32()),
        ("flag", pa.bool_()),
        ("job", pa.string()),
        ("income", pa.int64()),
    ]
)


def _coded(con: duckdb.DuckDBPyConnection, spec: DatasetSpec) -> dict[str, dict[str, object]]:
    """Store the codes the way the enclave's import does; return the meta entry."""
    types = {row[0]: row[1] for row in con.execute("DESCRIBE people").fetchall()}
    codes = stored_codes(spec, column_types=types)
    for code in codes:
        con.execute(f'ALTER TABLE people ADD COLUMN "{code.name}" {code.code_type}')
    con.execute("UPDATE people SET " + ", ".join(f'"{c.name}" = {c.sql()}' for c in codes))
    return {code.column: code.record() for code in codes}


def _connect(rows: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.register("_source", pa.Table.from_pylist(rows, schema=SCHEMA))
    con.execute("CREATE TABLE people AS SELECT * FROM _source")
    con.unregister("_source")
    return con


def _released(con: duckdb.DuckDBPyConnection, sql: str, spec: DatasetSpec) -> pa.Table:
    """The rows a public-key release can use: every group value a declared key."""
    table = con.execute(sql).to_arrow_table()
    town, band = spec.column("town"), spec.column("band")
    assert town is not None and band is not None and town.keys and band.keys
    rows = [r for r in table.to_pylist() if r["g0"] in town.keys and r["g1"] in band.keys]
    return pa.Table.from_pylist(rows, schema=table.schema)


def _query(spec: DatasetSpec, *, unique: bool, coded: dict[str, Any] | None, sql: str = SQL) -> str:
    body = AggregateBody.from_json(AGGREGATE.check({"sql": sql}, spec).body)
    return bounded_sql(body, table="people", dataset=spec, unit_unique=unique, coded=coded)


valid_group = st.tuples(st.sampled_from(TOWNS), st.sampled_from([3, -1, 7]))
outside_group = st.one_of(
    st.tuples(st.sampled_from([None, *NEAR_MISSES]), st.sampled_from([3, -1, 7, None, 0])),
    st.tuples(st.sampled_from(TOWNS), st.sampled_from([None, 0, 8, -3])),
)
income = st.one_of(st.none(), st.integers(-5, 2_000))


@st.composite
def people(draw: st.DrawFn, *, groups: int) -> list[dict[str, Any]]:
    """Rows of up to six persons. Each person is in at most ``groups`` groups of declared
    keys, so that every one of them is kept and both groupings must agree exactly (which
    of a person's groups are kept beyond that hashes the group's code, or its value: both
    choices depend on that person's rows alone, but they differ). Rows outside the keys
    are added without limit: they must never take a person's place in a group."""
    rows = []
    for unit in range(draw(st.integers(1, 6))):
        mine = draw(st.lists(valid_group, min_size=1, max_size=groups, unique=True))
        choices = st.one_of(st.sampled_from(mine), outside_group)
        for town, band in draw(st.lists(choices, min_size=1, max_size=8)):
            rows.append({"person_id": unit, "town": town, "band": band, "income": draw(income)})
    return rows


def _check_equal(rows: list[dict[str, Any]], *, groups: int, unique: bool) -> None:
    spec = _spec(groups=groups)
    con = _connect([{"flag": True, "job": "x", **row} for row in rows])
    coded = _coded(con, spec)
    by_code = _query(spec, unique=unique, coded=coded)
    by_value = _query(spec, unique=unique, coded=None)
    assert '"indomain:code:town"' in by_code and "indomain:code" not in by_value
    released = _released(con, by_code, spec)
    assert released.equals(_released(con, by_value, spec))
    assert released.schema.field("g0").type == pa.string()
    assert released.schema.field("g1").type == pa.int32()  # the column's own type


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), groups=st.sampled_from([1, 3]))
def test_grouping_by_codes_releases_exactly_what_grouping_by_values_does(
    data: st.DataObject, groups: int
) -> None:
    _check_equal(data.draw(people(groups=groups)), groups=groups, unique=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(st.one_of(valid_group, outside_group), max_size=40), data=st.data())
def test_with_one_row_per_person_every_row_is_grouped_as_by_value(
    groups: list[tuple[Any, Any]], data: st.DataObject
) -> None:
    rows = [
        {"person_id": i, "town": town, "band": band, "income": data.draw(income)}
        for i, (town, band) in enumerate(groups)
    ]
    _check_equal(rows, groups=1, unique=True)


def test_booleans_and_integers_are_mapped_back_to_their_own_type() -> None:
    spec = _spec()
    data = [
        {
            "person_id": i,
            "town": "Haidian",
            "band": [3, -1, 7][i % 3],
            "flag": i % 2 == 0,
            "job": "x",
            "income": i,
        }
        for i in range(30)
    ]
    con = _connect(data)
    coded = _coded(con, spec)
    assert coded["flag"] == {"type": "BOOLEAN", "keys": [True, False]}
    sql = "SELECT flag, band, COUNT(*) AS n FROM people GROUP BY flag, band"
    by_code = con.execute(_query(spec, unique=True, coded=coded, sql=sql)).to_arrow_table()
    by_value = con.execute(_query(spec, unique=True, coded=None, sql=sql)).to_arrow_table()
    assert by_code.equals(by_value)
    assert by_code.schema.field("g0").type == pa.bool_()


def test_codes_made_from_other_keys_are_not_read() -> None:
    """The attack on a stale copy: the manifest now lists the keys in another order (or
    others). Read as they are, Haidian's rows would be released as Chaoyang's."""
    old, new = _spec(towns=["Haidian", "Chaoyang"]), _spec(towns=["Chaoyang", "Haidian"])
    data = [
        {
            "person_id": i,
            "town": "Haidian" if i < 20 else "Chaoyang",
            "band": 3,
            "flag": True,
            "job": "x",
            "income": 1,
        }
        for i in range(25)
    ]
    con = _connect(data)
    stale = _coded(con, old)
    sql = _query(new, unique=True, coded=stale)
    assert "indomain:code:town" not in sql and "indomain:code:band" in sql
    counts = {r["g0"]: r["m_rows"] for r in con.execute(sql).to_arrow_table().to_pylist()}
    assert counts == {"Chaoyang": 5, "Haidian": 20}


@pytest.mark.parametrize(
    "recorded",
    [
        {"type": "VARCHAR", "keys": [3, -1, 7]},  # the keys' values, as text: not the same keys
        {"type": "BIGINT", "keys": [3, -1]},  # fewer keys
        {"type": "BIGINT", "keys": [3, -1, 7, 9]},  # more keys
        {"type": "DOUBLE", "keys": [3, -1, 7]},  # a type whose keys are not coded
        {"keys": [3, -1, 7]},  # no type
    ],
)
def test_a_meta_entry_that_does_not_match_the_manifest_is_ignored(recorded: dict) -> None:
    sql = _query(_spec(), unique=True, coded={"band": recorded})
    assert "indomain:code:band" not in sql


def test_noisy_threshold_releases_group_by_value() -> None:
    """With a group column without keys, a value outside a keyed column's keys may be
    released above the threshold: it must keep its own group, so no code is read."""
    spec = _spec()
    con = _connect(
        [{"person_id": 1, "town": "Atlantis", "band": 3, "flag": True, "job": "x", "income": 1}]
    )
    coded = _coded(con, spec)
    sql = "SELECT town, job, COUNT(*) AS n FROM people GROUP BY town, job"
    text = _query(spec, unique=True, coded=coded, sql=sql)
    assert "indomain:code" not in text
    rows = con.execute(text).fetchall()
    assert [row[:2] for row in rows] == [("Atlantis", "x")]


def test_which_columns_get_codes() -> None:
    spec = DatasetSpec.from_manifest(
        {
            "privacy_unit": "id",
            "min_group_size": 2,
            "columns": {
                "id": {"class": "identifier"},
                "text": {"class": "public", "dimension": True, "keys": ["a", "b"]},
                "flag": {"class": "public", "dimension": True, "keys": [True]},
                "small": {"class": "public", "dimension": True, "keys": [1, 127]},
                "too_big": {"class": "public", "dimension": True, "keys": [1, 128]},
                "real": {"class": "public", "dimension": True, "keys": [1]},
                "many": {"class": "public", "dimension": True, "keys": list(range(300))},
                "free": {"class": "public", "dimension": True},
            },
        },
        name="t",
    )
    types = {
        "id": "BIGINT",
        "text": "VARCHAR",
        "flag": "BOOLEAN",
        "small": "TINYINT",
        "too_big": "TINYINT",
        "real": "DOUBLE",
        "many": "INTEGER",
        "free": "VARCHAR",
    }
    codes = {c.column: c for c in stored_codes(spec, column_types=types)}
    assert sorted(codes) == ["flag", "many", "small", "text"]
    assert codes["text"].name == "indomain:code:text"
    assert codes["text"].code_type == "UTINYINT"
    assert codes["many"].code_type == "USMALLINT"
    con = duckdb.connect()
    con.execute("CREATE TABLE t (many INTEGER)")
    con.execute("INSERT INTO t VALUES (0), (299), (300), (NULL), (-1)")
    got = con.execute(f"SELECT {codes['many'].sql()} FROM t").fetchall()
    assert got == [(1,), (300,), (None,), (None,), (None,)]
