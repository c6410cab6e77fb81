"""A clamped copy stored at import stands in for the row-by-row clamp, exactly, and only when
it was clamped to the manifest's bounds (``_sql.stored_clamps``, ``bounded_sql(clamped=)``).

The values are adversarial: NULLs, each bound and its neighbours, negatives, and integers
near the ends of BIGINT, in groups of one and of many rows per person.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from computations import DatasetSpec, get_computation, stored_clamps
from computations._aggregate._body import AggregateBody
from computations._aggregate._sql import bounded_sql

AGGREGATE = get_computation("aggregate")
Connect = Callable[[dict[str, pa.Table]], duckdb.DuckDBPyConnection]
SQL = (
    "SELECT sex, COUNT(*) AS n, COUNT(income) AS c, SUM(income) AS s, AVG(income) AS a "
    "FROM residents GROUP BY sex"
)


def _spec(low: int, high: int) -> DatasetSpec:
    return DatasetSpec.from_manifest(
        {
            "privacy_unit": "resident_id",
            "min_group_size": 2,
            "columns": {
                "resident_id": {"class": "identifier"},
                "sex": {"class": "quasi_identifier", "dimension": True, "keys": ["f", "m"]},
                "income": {"class": "sensitive", "bounds": [low, high]},
            },
            "privacy": {"max_rows_per_unit": 3},
        },
        name="residents",
    )


def _adversarial(low: int, high: int) -> list[int | None]:
    return [
        None,
        -(2**63),
        -(2**63) + 1,
        -(2**62),
        -5,
        low - 1,
        low,
        low + 1,
        0,
        7,
        high - 1,
        high,
        high + 1,
        2**62,
        2**63 - 1,
    ]


def _table(values: list[int | None], *, repeat_units: bool) -> pa.Table:
    rows = []
    for i, value in enumerate(values * 3):
        unit = i % 7 if repeat_units else i  # several rows per person, or one each
        rows.append({"resident_id": unit, "sex": "fm"[i % 2], "income": value})
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("resident_id", pa.int64()), ("sex", pa.string()), ("income", pa.int64())]
        ),
    )


def _with_copies(
    con: duckdb.DuckDBPyConnection, spec: DatasetSpec, ranges: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Store the copies the way the enclave's import does; return the meta entry's bounds."""
    types = {row[0]: row[1] for row in con.execute("DESCRIBE residents").fetchall()}
    clamps = stored_clamps(spec, column_types=types, value_ranges=ranges)
    for name, clamp, _ in clamps.values():
        con.execute(f'ALTER TABLE residents ADD COLUMN "{name}" BIGINT')
        con.execute(f'UPDATE residents SET "{name}" = {clamp}')
    return {column: bounds for column, (_, _, bounds) in clamps.items()}


def _unlocked(table: pa.Table) -> duckdb.DuckDBPyConnection:
    # The import writes the copy before the run locks the connection.
    con = duckdb.connect(":memory:")
    con.register("_source", table)
    con.execute("CREATE TABLE residents AS SELECT * FROM _source")
    con.unregister("_source")
    return con


def _sums(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    return con.execute(sql).fetchall()


@pytest.mark.parametrize(("low", "high"), [(0, 200_000), (-1_000, 500_000), (3, 3)])
# unit_unique is only ever measured true with one row per person.
@pytest.mark.parametrize(("repeat_units", "unique"), [(False, True), (False, False), (True, False)])
def test_the_stored_copy_gives_exactly_the_row_by_row_clamp(
    low: int, high: int, repeat_units: bool, unique: bool
) -> None:
    spec = _spec(low, high)
    body = AggregateBody.from_json(AGGREGATE.check({"sql": SQL}, spec).body)
    table = _table(_adversarial(low, high), repeat_units=repeat_units)
    con = _unlocked(table)
    measured = (-(2**63), 2**63 - 1)
    clamped = _with_copies(con, spec, {"income": measured})
    assert clamped == {"income": (low, high)}

    def query(stored: dict[str, tuple[int, int]] | None) -> str:
        return bounded_sql(
            body,
            table="residents",
            dataset=spec,
            unit_unique=unique,
            integer_columns=frozenset({"income"}),
            value_ranges={"income": measured},
            clamped=stored,
        )

    from_copy, row_by_row = query(clamped), query(None)
    assert "CASE" not in from_copy and "indomain:clamped:income" in from_copy
    assert "CASE" in row_by_row and "indomain:clamped" not in row_by_row
    assert _sums(con, from_copy) == _sums(con, row_by_row)
    # And both equal the DOUBLE path, the clamp's reference (no integer shortcut at all).
    reference = bounded_sql(body, table="residents", dataset=spec, unit_unique=unique)
    assert _sums(con, from_copy) == _sums(con, reference)


def test_a_copy_clamped_to_other_bounds_is_not_read() -> None:
    """The attack: the copy was clamped to wider bounds than the manifest now says (or its
    meta entry names other bounds). Read as it is, one person's 10**11 would add 10**10;
    the run must clamp to the manifest's 200,000 instead."""
    spec, wider = _spec(0, 200_000), _spec(0, 10**10)
    body = AggregateBody.from_json(AGGREGATE.check({"sql": SQL}, spec).body)
    rows = [1_000] * 20 + [10**11]
    con = _unlocked(_table(rows, repeat_units=False))
    stored = _with_copies(con, wider, {"income": (1_000, 10**11)})
    assert stored == {"income": (0, 10**10)}
    sql = bounded_sql(
        body,
        table="residents",
        dataset=spec,
        unit_unique=True,
        integer_columns=frozenset({"income"}),
        value_ranges={"income": (1_000, 10**11)},
        clamped=stored,
    )
    assert "indomain:clamped" not in sql
    sums = con.execute(sql).to_arrow_table().column("m_sum_income").to_pylist()
    assert sum(sums) == 3 * (20 * 1_000 + 200_000)


def test_only_integer_columns_whose_values_cross_a_bound_get_a_copy() -> None:
    spec = DatasetSpec.from_manifest(
        {
            "privacy_unit": "id",
            "min_group_size": 2,
            "columns": {
                "id": {"class": "identifier"},
                "inside": {"class": "sensitive", "bounds": [0, 10]},
                "above": {"class": "sensitive", "bounds": [0, 10]},
                "below": {"class": "sensitive", "bounds": [0, 10]},
                "real": {"class": "sensitive", "bounds": [0, 10]},
                "cents": {"class": "sensitive", "bounds": [0, 10], "decimals": 2},
            },
        },
        name="t",
    )
    types = {
        "id": "BIGINT",
        "inside": "INTEGER",
        "above": "BIGINT",
        "below": "SMALLINT",
        "real": "DOUBLE",
        "cents": "BIGINT",
    }
    ranges = {"inside": (0, 10), "above": (0, 11), "below": (-1, 10), "real": (0, 11)}
    ranges["cents"] = (0, 11)
    clamps = stored_clamps(spec, column_types=types, value_ranges=ranges)
    assert sorted(clamps) == ["above", "below"]
    assert clamps["above"][0] == "indomain:clamped:above"
    assert clamps["above"][2] == (0, 10)
