"""Every refusal of the aggregate checker: each query is refused with its stable rule.

These read as the specification of what ``aggregate`` will not run. The rule ids are part
of the public contract (gateway responses and ledger entries carry them).
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from computations import ComputationError, DatasetSpec, QueryRefused, get_computation
from computations._aggregate._check import RULES
from indomain.errors import IndomainError

REFUSALS: list[tuple[str, str]] = [
    # row-level selections
    ("SELECT * FROM residents", "select-star"),
    ("FROM residents", "select-star"),
    ("SELECT * EXCLUDE (resident_id) FROM residents", "select-star"),
    ("SELECT resident_id FROM residents", "identifier-column"),
    ("SELECT income FROM residents", "bare-column"),
    ("SELECT district FROM residents", "bare-column"),
    ("SELECT sex, COUNT(*) FROM residents GROUP BY district", "bare-column"),
    ("SELECT income AS district, COUNT(*) FROM residents GROUP BY district", "bare-column"),
    ("SELECT district FROM residents GROUP BY district", "aggregate-required"),
    # the source: one table, by its bare name
    ("SELECT * FROM t", "single-table"),
    ("SELECT COUNT(*) FROM other", "single-table"),
    ("SELECT COUNT(*)", "single-table"),
    ("SELECT COUNT(*) FROM other_schema.residents", "single-table"),
    ("SELECT COUNT(*) FROM main.residents", "single-table"),
    ("SELECT COUNT(*) FROM memory.main.residents", "single-table"),
    ("SELECT COUNT(*) FROM residents AS r", "single-table"),
    ("SELECT COUNT(*) FROM residents r(a)", "single-table"),
    ("SELECT COUNT(*) FROM read_csv('/etc/passwd')", "table-function"),
    ("SELECT COUNT(*) FROM read_parquet('x.parquet')", "table-function"),
    ("SELECT COUNT(*) FROM duckdb_settings()", "table-function"),
    ("SELECT COUNT(*) FROM glob('*')", "table-function"),
    ("SELECT COUNT(*) FROM range(10)", "table-function"),
    ("SELECT COUNT(*) FROM getvariable('x')", "table-function"),
    ("SELECT COUNT(*) FROM '/etc/passwd'", "file-path"),
    ('SELECT COUNT(*) FROM "residents.csv"', "file-path"),
    ("SELECT COUNT(*) FROM 'x.parquet'", "file-path"),
    ('SELECT COUNT(*) FROM "~/x"', "file-path"),
    ("SELECT COUNT(*) FROM residents JOIN other ON true", "no-join"),
    ("SELECT COUNT(*) FROM residents, other", "no-join"),
    ("SELECT COUNT(*) FROM residents CROSS JOIN residents", "no-join"),
    ("SELECT COUNT(*) FROM residents POSITIONAL JOIN residents", "no-join"),
    ("SELECT COUNT(*) FROM residents r JOIN residents s USING (resident_id)", "no-join"),
    ("SELECT COUNT(*) FROM residents PIVOT (SUM(income) FOR sex IN ('f'))", "unsupported-clause"),
    ("SELECT COUNT(*) FROM residents AT (VERSION => 1)", "unsupported-clause"),
    # statements other than one plain SELECT
    ("COPY residents TO '/tmp/x'", "select-only"),
    ("ATTACH '/tmp/x.db'", "select-only"),
    ("DETACH x", "select-only"),
    ("INSTALL httpfs", "select-only"),
    ("LOAD httpfs", "select-only"),
    ("PRAGMA database_list", "select-only"),
    ("SET threads = 1", "select-only"),
    ("SET enable_external_access = true", "select-only"),
    ("RESET threads", "select-only"),
    ("CALL pragma_version()", "select-only"),
    ("DROP TABLE residents", "select-only"),
    ("CREATE TABLE x AS SELECT 1", "select-only"),
    ("INSERT INTO residents VALUES (1)", "select-only"),
    ("UPDATE residents SET income = 1", "select-only"),
    ("DELETE FROM residents", "select-only"),
    ("DESCRIBE residents", "select-only"),
    ("SUMMARIZE residents", "select-only"),
    ("SHOW TABLES", "select-only"),
    ("EXPLAIN SELECT COUNT(*) FROM residents", "select-only"),
    ("USE x", "select-only"),
    ("BEGIN", "select-only"),
    ("CHECKPOINT", "select-only"),
    ("VALUES (1)", "select-only"),
    ("(SELECT COUNT(*) FROM residents)", "select-only"),
    ("SELECT 1; DROP TABLE residents", "single-statement"),
    ("SELECT COUNT(*) FROM residents; SELECT COUNT(*) FROM residents", "single-statement"),
    ("SELECT COUNT(*) FROM residents; COPY residents TO '/tmp/x'", "single-statement"),
    # functions and expressions
    ("SELECT error('x') FROM residents", "aggregate-function"),
    ("SELECT MAX(income) FROM residents", "aggregate-function"),
    ("SELECT MIN(income) FROM residents", "aggregate-function"),
    ("SELECT ANY_VALUE(income) FROM residents", "aggregate-function"),
    ("SELECT list(income) FROM residents", "aggregate-function"),
    ("SELECT first(income) FROM residents", "aggregate-function"),
    ("SELECT quantile_cont(income, 0.5) FROM residents", "no-exact-quantile"),
    ("SELECT MEDIAN(income) FROM residents", "no-exact-quantile"),
    ("SELECT quantile_cont(income, 1.5) FROM residents", "quantile-level"),
    ("SELECT quantile_cont(income, [0.1, 0.9]) FROM residents", "quantile-level"),
    ("SELECT quantile_cont(income, income) FROM residents", "quantile-level"),
    ("SELECT MEDIAN(resident_id) FROM residents", "identifier-column"),
    ("SELECT MEDIAN(income + 1) FROM residents", "aggregate-argument"),
    ("SELECT COUNT(*)::INT FROM residents", "aggregate-function"),
    ("SELECT CAST(SUM(income) AS VARCHAR) FROM residents", "aggregate-function"),
    ("SELECT CASE WHEN income > 1 THEN 1 END, COUNT(*) FROM residents", "aggregate-function"),
    ("SELECT COLUMNS('.*') FROM residents", "aggregate-function"),
    ("SELECT read_csv('/etc/passwd') FROM residents", "aggregate-function"),
    ("SELECT current_setting('threads'), COUNT(*) FROM residents", "aggregate-function"),
    ("SELECT 1 FROM residents", "select-item"),
    ("SELECT 'x', COUNT(*) FROM residents", "select-item"),
    ("SELECT COUNT(*) + 1 FROM residents", "select-item"),
    ("SELECT $1 FROM residents", "select-item"),
    ("SELECT ? FROM residents", "select-item"),
    ("SELECT COUNT(*) FILTER (WHERE income > 1) FROM residents", "select-item"),
    ("SELECT SUM(income * 2) FROM residents", "aggregate-argument"),
    ("SELECT SUM(CASE WHEN income > 10 THEN 1 ELSE 0 END) FROM residents", "aggregate-argument"),
    ("SELECT SUM(1) FROM residents", "aggregate-argument"),
    ("SELECT COUNT(1) FROM residents", "aggregate-argument"),
    ("SELECT COUNT() FROM residents", "aggregate-argument"),
    ("SELECT COUNT(residents.*) FROM residents", "aggregate-argument"),
    ("SELECT COUNT(income ORDER BY income) FROM residents", "aggregate-argument"),
    ("SELECT SUM(COLUMNS(*)) FROM residents", "aggregate-argument"),
    ("SELECT SUM(DISTINCT income) FROM residents", "aggregate-distinct"),
    ("SELECT AVG(DISTINCT income) FROM residents", "aggregate-distinct"),
    ("SELECT COUNT(DISTINCT district) FROM residents", "aggregate-distinct"),
    ("SELECT COUNT(DISTINCT resident_id, district) FROM residents", "aggregate-distinct"),
    ("SELECT COUNT(resident_id) FROM residents", "identifier-column"),
    ("SELECT SUM(resident_id) FROM residents", "identifier-column"),
    ("SELECT AVG(resident_id) FROM residents", "identifier-column"),
    # columns
    ("SELECT SUM(nope) FROM residents", "unknown-column"),
    ("SELECT nope, COUNT(*) FROM residents GROUP BY nope", "unknown-column"),
    ("SELECT district AS d, COUNT(*) FROM residents GROUP BY d", "unknown-column"),
    ("SELECT residents.district, COUNT(*) FROM residents GROUP BY district", "qualified-column"),
    ("SELECT SUM(residents.income) FROM residents", "qualified-column"),
    ('SELECT COUNT(*) AS "a b" FROM residents', "alias"),
    ('SELECT COUNT(*) AS "a;b" FROM residents', "alias"),
    ("SELECT COUNT(*) AS n, SUM(income) AS n FROM residents", "duplicate-name"),
    ("SELECT COUNT(*) AS n, SUM(income) AS N FROM residents", "duplicate-name"),
    ("SELECT COUNT(*), COUNT(*) FROM residents", "duplicate-name"),
    # clauses
    ("SELECT COUNT(*) FROM residents WHERE income > 10", "where-column"),
    ("SELECT COUNT(*) FROM residents WHERE resident_id = 7", "identifier-column"),
    ("SELECT COUNT(*) FROM residents WHERE resident_id <> 123 AND sex = 'f'", "identifier-column"),
    ("SELECT COUNT(*) FROM residents WHERE district = 'a' OR sex = 'f'", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE NOT district = 'a'", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district IN ('a', 'b')", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district LIKE 'a%'", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district = age_band", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district = NULL", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district IS NULL", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district = error('x')", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE district = CAST(1 AS VARCHAR)", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE sex = 'f' AND 1 / 0 = 1", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE LENGTH(district) > 3", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE CASE WHEN sex = 'f' THEN 1 END = 1", "where-form"),
    ("SELECT COUNT(*) FROM residents WHERE 1 = 0", "where-constant"),
    ("SELECT COUNT(*) FROM residents WHERE 'a' = 1", "where-constant"),
    ("SELECT district, COUNT(*) FROM residents GROUP BY district HAVING COUNT(*) > 1", "no-having"),
    ("SELECT COUNT(*) FROM residents QUALIFY COUNT(*) > 1", "no-qualify"),
    ("SELECT district, COUNT(*) FROM residents GROUP BY district ORDER BY district", "no-order-by"),
    ("SELECT COUNT(*) FROM residents LIMIT 1", "no-limit"),
    ("SELECT COUNT(*) FROM residents OFFSET 1", "no-limit"),
    ("SELECT COUNT(*) FROM residents USING SAMPLE 10%", "no-sample"),
    ("SELECT COUNT(*) FROM residents TABLESAMPLE (10 ROWS)", "no-sample"),
    ("SELECT DISTINCT district, COUNT(*) FROM residents GROUP BY district", "no-distinct"),
    ("SELECT DISTINCT ON (district) COUNT(*) FROM residents", "no-distinct"),
    ("SELECT COUNT(*) INTO x FROM residents", "unsupported-clause"),
    ("SELECT COUNT(*) FROM residents FOR UPDATE", "unsupported-clause"),
    # set operations, subqueries, CTEs, windows
    ("SELECT COUNT(*) FROM residents UNION SELECT COUNT(*) FROM residents", "no-set-operation"),
    ("SELECT COUNT(*) FROM residents UNION ALL SELECT 1", "no-set-operation"),
    ("SELECT COUNT(*) FROM residents EXCEPT SELECT COUNT(*) FROM residents", "no-set-operation"),
    ("SELECT COUNT(*) FROM residents INTERSECT SELECT COUNT(*) FROM residents", "no-set-operation"),
    ("SELECT COUNT(*) FROM (SELECT * FROM residents)", "no-subquery"),
    ("SELECT COUNT(*) FROM (FROM residents)", "no-subquery"),
    ("SELECT (SELECT COUNT(*) FROM residents)", "no-subquery"),
    ("SELECT COUNT(*) FROM residents WHERE district IN (SELECT district FROM t)", "no-subquery"),
    ("SELECT COUNT(*) FROM residents, LATERAL (SELECT 1)", "no-subquery"),
    ("SELECT SUM((SELECT 1)) FROM residents", "no-subquery"),
    ("WITH r AS (SELECT * FROM residents) SELECT COUNT(*) FROM r", "no-cte"),
    ("WITH RECURSIVE r AS (SELECT 1) SELECT COUNT(*) FROM residents", "no-cte"),
    ("SELECT COUNT(*) OVER () FROM residents", "no-window"),
    ("SELECT SUM(income) OVER (PARTITION BY district) FROM residents", "no-window"),
    ("SELECT COUNT(*) FROM residents WINDOW w AS (PARTITION BY district)", "no-window"),
    # GROUP BY
    ("SELECT income, COUNT(*) FROM residents GROUP BY income", "group-by-dimension"),
    ("SELECT COUNT(*) FROM residents GROUP BY insurance_months", "group-by-dimension"),
    ("SELECT COUNT(*) FROM residents GROUP BY resident_id", "identifier-column"),
    ("SELECT resident_id, COUNT(*) FROM residents GROUP BY resident_id", "identifier-column"),
    ("SELECT district, COUNT(*) FROM residents GROUP BY ALL", "group-by-column"),
    ("SELECT district, COUNT(*) FROM residents GROUP BY 1", "group-by-column"),
    ("SELECT COUNT(*) FROM residents GROUP BY ROLLUP (district)", "group-by-column"),
    ("SELECT COUNT(*) FROM residents GROUP BY CUBE (district)", "group-by-column"),
    ("SELECT COUNT(*) FROM residents GROUP BY GROUPING SETS ((district), ())", "group-by-column"),
    ("SELECT COUNT(*) FROM residents GROUP BY district WITH ROLLUP", "group-by-column"),
    ("SELECT COUNT(*) FROM residents GROUP BY district || ''", "group-by-column"),
    ("SELECT COUNT(*) FROM residents GROUP BY district, district", "group-by-column"),
    # the enclave's hidden copies (a clamped column, key codes) are not columns to query
    ('SELECT SUM("indomain:clamped:income") FROM residents', "unknown-column"),
    (
        'SELECT "indomain:code:district", COUNT(*) FROM residents '
        'GROUP BY "indomain:code:district"',
        "unknown-column",
    ),
    ('SELECT COUNT(*) FROM residents WHERE "indomain:code:sex" = 1', "unknown-column"),
    # text that is not SQL
    ("SELECT COUNT(*) FROM residents WHERE", "parse"),
    ("SELECT 'abc", "parse"),
    ("SELECT COUNT(*) AS select FROM residents", "parse"),
    ("EXPORT DATABASE '/tmp/x'", "parse"),
    (";", "parse"),
    ("(" * 3000 + "1" + ")" * 3000, "parse"),
]


@pytest.mark.parametrize(("sql", "rule"), REFUSALS, ids=[sql[:60] for sql, _ in REFUSALS])
def test_refused_with_rule(sql: str, rule: str, residents: DatasetSpec) -> None:
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": sql}, residents)
    refusal = info.value
    assert refusal.rule == rule, str(refusal)
    assert str(refusal).startswith(f"refused ({rule}): ")
    assert len(refusal.fragment) <= 120
    if refusal.fragment:
        assert str(refusal).endswith(f"; found {refusal.fragment}")


def test_every_rule_is_specified_here() -> None:
    assert {rule for _, rule in REFUSALS} | {
        "params",
        "unbounded-column",
        "too-many-groups",
        # the declared join's rules: tests/computations/test_aggregate_join.py
        "single-join",
        "join-form",
        "join-partner",
        "join-key",
        "join-column",
        "join-privacy",
    } == RULES


@pytest.mark.parametrize(
    "sql", ["SELECT SUM(income) FROM residents", "SELECT AVG(income) FROM residents"]
)
def test_dp_sums_need_declared_bounds(sql: str, dp_residents: DatasetSpec) -> None:
    columns = tuple(
        c.model_copy(update={"bounds": None}) if c.name == "income" else c
        for c in dp_residents.columns
    )
    unbounded = dp_residents.model_copy(update={"columns": columns})
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": sql}, unbounded)
    assert info.value.rule == "unbounded-column"
    get_computation("aggregate").check({"sql": sql}, dp_residents)


def test_refusal_message_names_the_function(residents: DatasetSpec) -> None:
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": "SELECT MAX(income) FROM residents"}, residents)
    assert str(info.value) == (
        "refused (aggregate-function): only COUNT, SUM, AVG, MEDIAN and QUANTILE_CONT are "
        "allowed; found MAX(income)"
    )
    assert info.value.fragment == "MAX(income)"


def test_unknown_column_is_named(residents: DatasetSpec) -> None:
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": "SELECT SUM(salary) FROM residents"}, residents)
    assert info.value.rule == "unknown-column"
    assert "salary" in str(info.value)


def test_group_by_dimension_lists_the_dimensions(residents: DatasetSpec) -> None:
    sql = "SELECT COUNT(*) FROM residents GROUP BY income"
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": sql}, residents)
    assert "district, age_band, sex, health_flag" in str(info.value)


def test_parse_refusal_echoes_only_a_short_fragment(residents: DatasetSpec) -> None:
    sql = "SELECT COUNT(*) FROM residents WHERE " + "x" * 500 + " ((("
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": sql}, residents)
    assert info.value.rule == "parse"
    assert len(info.value.fragment) <= 40
    assert "x" * 100 not in str(info.value)


def test_long_fragments_are_cut(residents: DatasetSpec) -> None:
    sql = "SELECT SUM(" + " + ".join(["income"] * 200) + ") FROM residents"
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check({"sql": sql}, residents)
    assert len(info.value.fragment) == 120
    assert info.value.fragment.endswith("…")


BAD_PARAMS: list[Any] = [
    {},
    {"sql": 1},
    {"sql": None},
    {"sql": b"SELECT COUNT(*) FROM residents"},
    {"sql": ""},
    {"sql": "   \n"},
    {"sql": "SELECT COUNT(*) FROM residents", "epsilon": 1.0},
    {"query": "SELECT COUNT(*) FROM residents"},
    {"sql": "SELECT COUNT(*) FROM residents " + " " * 10_000},
    ["SELECT COUNT(*) FROM residents"],
    "SELECT COUNT(*) FROM residents",
]


@pytest.mark.parametrize("params", BAD_PARAMS)
def test_bad_params_refused(params: Any, residents: DatasetSpec) -> None:
    with pytest.raises(QueryRefused) as info:
        get_computation("aggregate").check(params, residents)
    assert info.value.rule == "params"


def test_sql_of_exactly_the_limit_is_accepted(residents: DatasetSpec) -> None:
    sql = "SELECT COUNT(*) FROM residents"
    sql += " " * (10_000 - len(sql))
    get_computation("aggregate").check({"sql": sql}, residents)


def test_query_refused_is_a_computation_error() -> None:
    assert issubclass(QueryRefused, ComputationError)
    assert issubclass(ComputationError, IndomainError)


def test_query_refused_survives_pickling() -> None:
    refusal = QueryRefused("where-column", "WHERE needs a dimension", "WHERE income > 1")
    copy = pickle.loads(pickle.dumps(refusal))
    assert (copy.rule, copy.fragment, str(copy)) == (refusal.rule, refusal.fragment, str(refusal))


def test_table_name_ignores_case_like_duckdb(residents: DatasetSpec) -> None:
    aggregate = get_computation("aggregate")
    plain = aggregate.check({"sql": "SELECT COUNT(*) AS n FROM residents"}, residents)
    shouted = aggregate.check({"sql": 'SELECT COUNT(*) AS n FROM "RESIDENTS"'}, residents)
    assert plain.body == shouted.body
