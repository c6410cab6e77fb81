"""Whatever text arrives as ``sql``, the checker answers with a plan or one of our errors.

No sqlglot, ValueError, RecursionError or other foreign exception may escape, and every
plan it does approve must execute.
"""

from __future__ import annotations

import duckdb
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from computations import ComputationError, DatasetSpec, Plan, QueryRefused, get_computation

AGGREGATE = get_computation("aggregate")

_TOKENS = [
    "SELECT", "FROM", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT", "UNION", "ALL",
    "DISTINCT", "AS", "JOIN", "ON", "WITH", "OVER", "PARTITION", "COPY", "TO", "ATTACH",
    "INSTALL", "LOAD", "PRAGMA", "SET", "CAST", "CASE", "WHEN", "THEN", "END", "NULL",
    "COUNT", "SUM", "AVG", "MAX", "read_csv", "error", "(", ")", "*", ",", ";", ".", "=",
    "+", "-", "'/etc/passwd'", '"residents"', "'x'", "1", "0.5", "$1", "?", "::INT",
    "residents", "other", "resident_id", "district", "age_band", "sex", "income",
    "insurance_months", "health_flag", "main", "--", "/*", "*/", "USING", "SAMPLE", "%",
    "FILTER", "QUALIFY", "LATERAL", "VALUES", "EXCLUDE", "COLUMNS", "ROLLUP", "[", "]",
    "{", "}", ":", "->", "->>", "@", "#", "\\", "\n",
]  # fmt: skip


def _outcome(sql: str, dataset: DatasetSpec) -> Plan | None:
    try:
        return AGGREGATE.check({"sql": sql}, dataset)
    except QueryRefused as refusal:
        assert refusal.rule
        assert len(refusal.fragment) <= 120
        return None
    except ComputationError:
        return None


@settings(max_examples=300, deadline=None)
@given(sql=st.text(max_size=200))
def test_arbitrary_text(sql: str, residents: DatasetSpec) -> None:
    _outcome(sql, residents)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=25))
def test_token_soup(
    tokens: list[str], residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = _outcome(" ".join(tokens), residents)
    if plan is not None:
        _assert_suppressed(plan, residents, con)


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.lists(st.sampled_from(_TOKENS), max_size=4),
    suffix=st.lists(st.sampled_from(_TOKENS), max_size=4),
    where=st.integers(min_value=0, max_value=80),
)
@example(prefix=["WHERE", "sex", "=", "'f'"], suffix=[], where=58)  # a valid filter formed
@example(prefix=["WHERE", "district", "=", "'x'"], suffix=[], where=58)
def test_mutated_allowed_query(
    prefix: list[str],
    suffix: list[str],
    where: int,
    residents: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
) -> None:
    base = "SELECT district, COUNT(*) AS n, SUM(income) FROM residents GROUP BY district"
    cut = min(where, len(base))
    sql = base[:cut] + " " + " ".join(prefix) + " " + base[cut:] + " " + " ".join(suffix)
    plan = _outcome(sql, residents)
    if plan is not None:
        _assert_suppressed(plan, residents, con)


def _assert_suppressed(plan: Plan, dataset: DatasetSpec, con: duckdb.DuckDBPyConnection) -> None:
    """Exactly the groups with at least ``min_group_size`` distinct people are published.

    Counted over the rows the plan's WHERE keeps (compared as the checker documents:
    text as VARCHAR, numbers and booleans by TRY_CAST), so that a mutation which happens
    to form a valid filter (``WHERE sex = 'x'`` spliced in before GROUP BY) is not taken
    for a fault."""
    result = AGGREGATE.execute(plan, con, table="residents", dataset=dataset)
    body = plan.to_json()["body"]
    group_by = body["group_by"]
    group = f"GROUP BY {', '.join(group_by)}" if group_by else ""
    conditions, values = [], []
    for predicate in body["where"]:
        value, column = predicate["value"], predicate["column"]
        if isinstance(value, bool):
            compared = f"TRY_CAST({column} AS BOOLEAN)"
        elif isinstance(value, str):
            compared = f"CAST({column} AS VARCHAR)"
        else:
            compared = f"TRY_CAST({column} AS DOUBLE)"
        conditions.append(f"{compared} {predicate['op']} ?")
        values.append(value)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    units = "COUNT(DISTINCT resident_id)"
    big, small = con.execute(
        f"SELECT COUNT(*) FILTER (WHERE n >= {dataset.min_group_size}), "
        f"COUNT(*) FILTER (WHERE n < {dataset.min_group_size}) "
        f"FROM (SELECT {units} AS n FROM residents {where} {group})",
        values,
    ).fetchall()[0]
    assert (result.table.num_rows, result.suppressed_groups) == (big, small)
