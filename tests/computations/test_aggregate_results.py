"""Allowed aggregates give DuckDB's own numbers, minus the groups too small to publish."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computations import (
    ComputationError,
    ComputationResult,
    DatasetSpec,
    Plan,
    get_computation,
)

AGGREGATE = get_computation("aggregate")
Connect = Callable[[dict[str, pa.Table]], duckdb.DuckDBPyConnection]


def run(sql: str, dataset: DatasetSpec, con: duckdb.DuckDBPyConnection) -> ComputationResult:
    plan = AGGREGATE.check({"sql": sql}, dataset)
    return AGGREGATE.execute(plan, con, table=dataset.name, dataset=dataset)


def reference(
    con: duckdb.DuckDBPyConnection,
    select: str,
    group_by: list[str],
    minimum: int,
) -> tuple[list[dict[str, Any]], int]:
    """The same aggregate written by hand, with the suppression as a HAVING clause."""
    group = f"GROUP BY {', '.join(group_by)}" if group_by else ""
    order = f"ORDER BY {', '.join(f'{c} NULLS LAST' for c in group_by)}" if group_by else ""
    units = "COUNT(DISTINCT resident_id)"
    kept = con.execute(
        f"SELECT {select} FROM residents {group} HAVING {units} >= {minimum} {order}"
    ).to_arrow_table()
    small = con.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM residents {group} HAVING {units} < {minimum})"
    ).fetchall()[0][0]
    return kept.to_pylist(), small


def test_group_counts_sums_and_averages(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    result = run(
        "SELECT district, COUNT(*) AS people, SUM(income) AS total, AVG(income) AS mean "
        "FROM residents GROUP BY district",
        residents,
        con,
    )
    expected, small = reference(
        con,
        "district, COUNT(*) AS people, SUM(income) AS total, AVG(income) AS mean",
        ["district"],
        residents.min_group_size,
    )
    assert result.table.column_names == ["district", "people", "total", "mean"]
    assert result.table.to_pylist() == expected
    assert result.suppressed_groups == small
    assert small >= 1  # harbour and the null district are below ten people
    assert "harbour" not in result.table.column("district").to_pylist()


def test_small_groups_are_suppressed_by_distinct_units_not_rows(
    connect: Connect,
    residents: DatasetSpec,
) -> None:
    # Twelve rows but only three people in "tiny": the group is withheld.
    rows = [{"resident_id": i % 3, "district": "tiny", "income": 1} for i in range(12)]
    rows += [{"resident_id": 100 + i, "district": "big", "income": 2} for i in range(10)]
    spec = DatasetSpec.from_manifest(
        {
            "privacy_unit": "resident_id",
            "min_group_size": 10,
            "columns": {
                "resident_id": {"class": "identifier"},
                "district": {"class": "quasi_identifier", "dimension": True},
                "income": {"class": "sensitive"},
            },
            "privacy": {"mode": "threshold_only", "rounding_base": 1, "dominance": 1.0},
        },
        name="people",
    )
    con = connect({"people": pa.Table.from_pylist(rows)})
    result = AGGREGATE.execute(
        AGGREGATE.check({"sql": "SELECT district, COUNT(*) FROM people GROUP BY district"}, spec),
        con,
        table="people",
        dataset=spec,
    )
    assert result.table.to_pylist() == [{"district": "big", "count": 10}]
    assert result.suppressed_groups == 1
    assert result.notes == (
        "threshold-only release: exact values, NOT differentially private",
        "1 of 2 groups withheld: fewer than 10 distinct resident_id, or one dominates a sum",
    )


def test_overall_row_is_suppressed_when_the_table_is_too_small(
    connect: Connect, residents: DatasetSpec
) -> None:
    rows = [{"resident_id": i, "district": "a", "income": 5} for i in range(9)]
    spec = residents.model_copy(update={"name": "few"})
    table = pa.Table.from_pylist(rows)
    con = connect({"few": table})
    # The spec lists columns the table lacks; keep the query to those it has.
    result = AGGREGATE.execute(
        AGGREGATE.check({"sql": "SELECT COUNT(*), SUM(income) FROM few"}, spec),
        con,
        table="few",
        dataset=spec,
    )
    assert result.table.num_rows == 0
    assert result.table.column_names == ["count", "sum_income"]
    assert result.suppressed_groups == 1


def test_overall_row_is_kept_when_large_enough(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection, residents_table: pa.Table
) -> None:
    result = run(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT resident_id) AS people FROM residents",
        residents,
        con,
    )
    people = len(set(residents_table.column("resident_id").to_pylist()))
    assert result.table.to_pylist() == [{"n": residents_table.num_rows, "people": people}]
    assert result.suppressed_groups == 0
    assert result.notes == ("threshold-only release: exact values, NOT differentially private",)


def test_empty_table_gives_no_rows(connect: Connect, residents: DatasetSpec) -> None:
    spec = residents.model_copy(update={"name": "nobody"})
    empty = pa.table(
        {"resident_id": pa.array([], pa.int64()), "district": pa.array([], pa.string())}
    )
    con = connect({"nobody": empty})
    for sql in (
        "SELECT COUNT(*) FROM nobody",
        "SELECT district, COUNT(*) FROM nobody GROUP BY district",
    ):
        result = AGGREGATE.execute(
            AGGREGATE.check({"sql": sql}, spec), con, table="nobody", dataset=spec
        )
        assert result.table.num_rows == 0


def test_rows_are_ordered_by_group_columns_with_nulls_last(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    result = run(
        "SELECT sex, age_band, COUNT(*) AS n FROM residents GROUP BY age_band, sex",
        residents,
        con,
    )
    # Ordered by GROUP BY order (age_band, then sex), whatever the select order.
    keys = [(row["age_band"], row["sex"]) for row in result.table.to_pylist()]
    assert keys == sorted(keys)
    assert result.table.column_names == ["sex", "age_band", "n"]


def test_group_column_may_be_left_out_of_the_select(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    result = run("SELECT COUNT(*) AS n FROM residents GROUP BY district", residents, con)
    expected, small = reference(con, "COUNT(*) AS n", ["district"], residents.min_group_size)
    assert result.table.to_pylist() == expected
    assert result.suppressed_groups == small


def test_default_output_names(residents: DatasetSpec, con: duckdb.DuckDBPyConnection) -> None:
    result = run(
        "SELECT health_flag, COUNT(*), COUNT(income), COUNT(DISTINCT resident_id), "
        "SUM(insurance_months), AVG(income) FROM residents GROUP BY health_flag",
        residents,
        con,
    )
    assert result.table.column_names == [
        "health_flag",
        "count",
        "count_income",
        "count_distinct_resident_id",
        "sum_insurance_months",
        "avg_income",
    ]


def test_aliases_named_like_internal_columns_do_not_clash(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    result = run(
        "SELECT district AS a0, COUNT(*) AS g0, SUM(income) AS u FROM residents GROUP BY district",
        residents,
        con,
    )
    expected, _ = reference(
        con, "district AS a0, COUNT(*) AS g0, SUM(income) AS u", ["district"], 10
    )
    assert result.table.to_pylist() == expected


def test_plan_round_trips_through_json_and_still_runs(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    sql = "SELECT district, sex, SUM(income) AS total FROM residents GROUP BY district, sex"
    plan = AGGREGATE.check({"sql": sql}, residents)
    wire = json.dumps(plan.to_json(), sort_keys=True)
    again = Plan.from_json(json.loads(wire))
    assert again == plan
    direct = AGGREGATE.execute(plan, con, table="residents", dataset=residents)
    crossed = AGGREGATE.execute(again, con, table="residents", dataset=residents)
    assert crossed.table.equals(direct.table)
    assert crossed.suppressed_groups == direct.suppressed_groups


def test_plan_holds_the_structure_not_the_sql(residents: DatasetSpec) -> None:
    sql = "SELECT district, /* secret-comment */ COUNT(*) AS n FROM residents GROUP BY district"
    plan = AGGREGATE.check({"sql": sql}, residents)
    text = json.dumps(plan.to_json())
    assert "secret-comment" not in text
    assert "SELECT" not in text
    assert plan.to_json()["body"] == {
        "group_by": ["district"],
        "outputs": [
            {"kind": "group", "name": "district", "column": "district"},
            {"kind": "aggregate", "name": "n", "function": "count", "column": None},
        ],
        "where": [],
        "privacy": {"mode": "threshold_only", "epsilon": 0.0, "delta": 0.0, "min_group_size": 10},
    }


def test_names_are_canonical_whatever_the_case(residents: DatasetSpec) -> None:
    plan = AGGREGATE.check(
        {"sql": 'SELECT "DISTRICT", Sum(Income) FROM Residents GROUP BY District'}, residents
    )
    assert plan.to_json()["body"]["group_by"] == ["district"]
    assert plan.to_json()["body"]["outputs"][1]["name"] == "sum_income"


def test_execute_runs_on_a_locked_connection_and_changes_nothing(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    run("SELECT district, COUNT(*) FROM residents GROUP BY district", residents, con)
    settings_now = con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
    ).fetchall()
    assert settings_now == [(False, True)]


# --- property: any query the grammar allows gives the hand-written query's answer ----------

_DIMENSIONS = ["district", "age_band", "sex", "health_flag"]
_AGGREGATES = [
    "COUNT(*)",
    "COUNT(income)",
    "COUNT(DISTINCT resident_id)",
    "SUM(income)",
    "SUM(insurance_months)",
    "AVG(income)",
    "AVG(insurance_months)",
]


@st.composite
def allowed_queries(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    group_by = draw(st.lists(st.sampled_from(_DIMENSIONS), unique=True, max_size=3))
    shown = draw(st.lists(st.sampled_from(group_by), unique=True)) if group_by else []
    aggregates = draw(st.lists(st.sampled_from(_AGGREGATES), min_size=1, max_size=4))
    items = [*shown, *(f"{a} AS m{i}" for i, a in enumerate(aggregates))]
    items = draw(st.permutations(items))
    select = ", ".join(items)
    group = f" GROUP BY {', '.join(group_by)}" if group_by else ""
    spelled = draw(st.sampled_from([str.upper, str.lower, lambda s: s]))
    return spelled(f"SELECT {select} FROM residents{group}"), spelled(select), group_by


@settings(max_examples=60, deadline=None)
@given(query=allowed_queries(), minimum=st.integers(min_value=2, max_value=40))
def test_allowed_queries_match_duckdb(
    query: tuple[str, str, list[str]],
    minimum: int,
    residents: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
) -> None:
    sql, select, group_by = query
    spec = residents.model_copy(update={"min_group_size": minimum})
    result = run(sql, spec, con)
    expected, small = reference(con, select, group_by, minimum)
    assert result.table.to_pylist() == expected
    assert result.suppressed_groups == small


# --- attacks on execute: the enclave does not trust the plan's origin ----------------------


def _tampered(plan: Plan, **body: Any) -> Plan:
    data = plan.to_json()
    data["body"] = {**data["body"], **body}
    return Plan.from_json(data)


TAMPERED_BODIES: list[dict[str, Any]] = [
    {"group_by": ["resident_id"]},
    {"group_by": ["income"]},
    {"group_by": ["district", "district"]},
    {"group_by": ['district"; DROP TABLE residents; --']},
    {"outputs": []},
    {"outputs": [{"kind": "group", "name": "district", "column": "district"}]},
    {"outputs": [{"kind": "aggregate", "name": "x", "function": "max", "column": "income"}]},
    {"outputs": [{"kind": "aggregate", "name": "x", "function": "sum", "column": "resident_id"}]},
    {
        "outputs": [
            {"kind": "aggregate", "name": "x", "function": "count_distinct", "column": "income"}
        ]
    },
    {"outputs": [{"kind": "aggregate", "name": "x", "function": "sum", "column": None}]},
    {
        "outputs": [
            {"kind": "aggregate", "name": 'x" FROM t; --', "function": "count", "column": None}
        ]
    },
    {"outputs": [{"kind": "aggregate", "name": "x", "function": "count", "column": "nope"}]},
    {"outputs": [{"kind": "row", "name": "x", "column": "income"}]},
    {"outputs": [{"kind": "group", "name": "income", "column": "income"}]},
    {"sql": "SELECT * FROM residents"},
]


@pytest.mark.parametrize("change", TAMPERED_BODIES)
def test_execute_refuses_tampered_plans(
    change: dict[str, Any], residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check(
        {"sql": "SELECT district, COUNT(*) FROM residents GROUP BY district"}, residents
    )
    tampered = _tampered(plan, **change)
    with pytest.raises(ComputationError):
        AGGREGATE.execute(tampered, con, table="residents", dataset=residents)


def test_execute_refuses_a_plan_for_another_dataset(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) FROM residents"}, residents)
    other = residents.model_copy(update={"name": "other"})
    with pytest.raises(ComputationError, match="dataset"):
        AGGREGATE.execute(plan, con, table="residents", dataset=other)


def test_execute_refuses_a_plan_for_another_computation(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) FROM residents"}, residents)
    data = plan.to_json()
    data["computation"] = "linear_score"
    with pytest.raises(ComputationError, match="linear_score"):
        AGGREGATE.execute(Plan.from_json(data), con, table="residents", dataset=residents)


@pytest.mark.parametrize(
    "table",
    [
        "residents; DROP TABLE residents",
        'residents"',
        "read_csv('/etc/passwd')",
        "/etc/passwd",
        "a.b.c.d",
        "",
        "residents ",
    ],
)
def test_execute_refuses_odd_table_names(
    table: str, residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) FROM residents"}, residents)
    with pytest.raises(ComputationError, match="table name"):
        AGGREGATE.execute(plan, con, table=table, dataset=residents)


def test_execute_accepts_a_qualified_table_name(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) AS n FROM residents"}, residents)
    result = AGGREGATE.execute(plan, con, table="memory.main.residents", dataset=residents)
    assert result.table.num_rows == 1


def test_duckdb_errors_are_translated_without_values(
    connect: Connect, residents: DatasetSpec
) -> None:
    # The manifest says income is a number, the table holds text: DuckDB fails to bind.
    table = pa.table({"resident_id": [1, 2], "income": ["SECRET-VALUE-1", "SECRET-VALUE-2"]})
    con = connect({"residents": table})
    plan = AGGREGATE.check({"sql": "SELECT SUM(income) FROM residents"}, residents)
    with pytest.raises(ComputationError) as info:
        AGGREGATE.execute(plan, con, table="residents", dataset=residents)
    assert "SECRET-VALUE" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_table_is_a_computation_error(
    residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) FROM residents"}, residents)
    with pytest.raises(ComputationError):
        AGGREGATE.execute(plan, con, table="absent", dataset=residents)
