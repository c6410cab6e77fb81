"""Error side channels: a query whose failure would depend on a hidden row.

The checker refuses `error()`, casts and arithmetic before any row is read
(`test_aggregate_attacks.py`); these tests attack what is left once a query is approved:
the exact values themselves. Each performs the attack on two datasets that differ only in
the hidden fact and asserts the answers cannot be told apart by success or failure.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from computations import ComputationError, DatasetSpec, get_computation
from computations._aggregate._execute import RUN_FAILED, _query
from computations._aggregate._noise import SATURATION, discrete_laplace, saturate

AGGREGATE = get_computation("aggregate")

#: The widest bounds a manifest may declare (scaled values up to 2**40).
WIDE = 2**40
#: With this many public rows at WIDE, the sum is 2**63 - 2**40: one more row reaches 2**63.
PUBLIC_ROWS = 2**23 - 1


def _wide_spec() -> DatasetSpec:
    return DatasetSpec.from_manifest(
        {
            "privacy_unit": "person",
            "min_group_size": 10,
            "columns": {
                "person": {"class": "identifier"},
                "sex": {"class": "quasi_identifier", "dimension": True, "keys": ["f", "m"]},
                "income": {"class": "sensitive", "bounds": [0, WIDE]},
            },
        },
        name="people",
    )


def _people(target_is_f: bool) -> duckdb.DuckDBPyConnection:
    """PUBLIC_ROWS women earning the bound, and the target, whose sex is the hidden fact."""
    con = duckdb.connect(":memory:")
    con.execute(
        f"CREATE TABLE people AS SELECT range AS person, 'f' AS sex, {WIDE}::BIGINT AS income "
        f"FROM range({PUBLIC_ROWS})"
    )
    con.execute("INSERT INTO people VALUES (?, ?, ?)", [-1, "f" if target_is_f else "m", WIDE])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _answer(sql: str, target_is_f: bool) -> tuple[str, Any]:
    spec = _wide_spec()
    plan = AGGREGATE.check({"sql": sql}, spec)
    con = _people(target_is_f)
    try:
        result = AGGREGATE.execute(plan, con, table="people", dataset=spec, unit_unique=True)
    except ComputationError as exc:
        return "failed", str(exc)
    finally:
        con.close()
    # Which small groups pass the release threshold is the noise's business (the target's
    # sex is one unit of a public-key group): only the schema and the big group are fixed.
    names = result.table.schema.names
    keys = set(result.table.column("sex").to_pylist()) if "sex" in names else {"f"}
    return "succeeded", (result.table.schema, "f" in keys)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT SUM(income) AS total FROM people WHERE sex = 'f'",
        "SELECT AVG(income) AS mean FROM people WHERE sex = 'f'",
        "SELECT sex, SUM(income) AS total FROM people GROUP BY sex",
    ],
)
def test_a_sum_pushed_past_64_bits_by_a_hidden_row_answers_the_same(sql: str) -> None:
    """Attack: the target's row tips an exact sum over 2**63, where the noise mechanism's
    64-bit domain ends. Had that raised, success or failure would say where the target is.
    Saturating the exact value first (a 1-Lipschitz clamp) makes both runs succeed."""
    hidden_true = _answer(sql, target_is_f=True)
    hidden_false = _answer(sql, target_is_f=False)
    assert hidden_true[0] == hidden_false[0] == "succeeded"
    assert hidden_true[1] == hidden_false[1]


def test_saturation_never_raises_and_keeps_values_inside_its_range() -> None:
    huge = [2**70, -(2**70), 2**63, SATURATION + 1, 5]
    assert saturate(huge) == [SATURATION, -SATURATION, SATURATION, SATURATION, 5]
    noisy = discrete_laplace([2**80, -(2**80)], sensitivity=WIDE, epsilon=1.0)
    assert noisy[0] > 2**61 and noisy[1] < -(2**61)


def test_every_engine_failure_reads_the_same() -> None:
    """Whatever DuckDB raises (conversion, overflow, division), the caller reads one message
    without the error's kind, which could itself depend on a row."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE t AS SELECT 'x1' AS s, 9223372036854775807::BIGINT AS n")
    messages = set()
    for sql in (
        "SELECT CAST(s AS INTEGER) FROM t",  # ConversionException
        "SELECT n + 1 FROM t",  # OutOfRangeException
        "SELECT error('the hidden value is 42') FROM t",  # InvalidInputException
    ):
        with pytest.raises(ComputationError) as info:
            _query(con, sql)
        messages.add(str(info.value))
    assert messages == {RUN_FAILED}
    assert "42" not in RUN_FAILED


def _visits_spec(keys: list[Any]) -> DatasetSpec:
    return DatasetSpec.from_manifest(
        {
            "privacy_unit": "person",
            "min_group_size": 2,
            "columns": {
                "person": {"class": "identifier"},
                "district": {"class": "quasi_identifier", "dimension": True},
                "sex": {"class": "quasi_identifier", "dimension": True},
                "zone": {"class": "quasi_identifier", "dimension": True, "keys": keys},
            },
        },
        name="visits",
    )


def _visits(target_present: bool) -> duckdb.DuckDBPyConnection:
    """Many people with numeric-looking zones, several rows each; the hidden fact is
    whether one woman in district C has the zone 'n/a'."""
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE visits AS SELECT range % 400 AS person, "
        "['A', 'B', 'C'][range % 3 + 1] AS district, ['F', 'M'][range % 2 + 1] AS sex, "
        "CASE WHEN range % 3 = 2 AND range % 2 = 0 THEN '64' ELSE '100010' END AS zone "
        "FROM range(4000)"
    )
    if target_present:
        con.execute("INSERT INTO visits VALUES (9999, 'C', 'F', 'n/a')")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def test_keys_of_another_type_than_the_column_never_make_a_row_raise() -> None:
    """Attack (security review): a manifest declares a text column's keys as numbers (YAML
    reads ``[100010, 0100]`` as integers). The key filter compared the column with number
    literals, so DuckDB cast every row that passed the WHERE to a number and raised on
    'n/a': success or failure told whether that one row matched. The filter now compares
    like a WHERE predicate (TRY_CAST), and the import refuses such keys."""
    spec = _visits_spec([100010, 64])
    sql = "SELECT zone, COUNT(*) AS n FROM visits WHERE district = 'C' AND sex = 'F' GROUP BY zone"
    plan = AGGREGATE.check({"sql": sql}, spec)
    outcomes = []
    for present in (True, False):
        con = _visits(present)
        try:
            AGGREGATE.execute(plan, con, table="visits", dataset=spec, unit_unique=False)
            outcomes.append("succeeded")
        except ComputationError:
            outcomes.append("failed")
        finally:
            con.close()
    assert outcomes == ["succeeded", "succeeded"]
    problems = spec.key_type_problems({"person": "BIGINT", "zone": "VARCHAR"})
    assert len(problems) == 1 and "zone is VARCHAR" in problems[0] and "quote" in problems[0]
    assert _visits_spec(["100010", "64"]).key_type_problems({"zone": "VARCHAR"}) == []
    assert _visits_spec([True, False]).key_type_problems({"zone": "BIGINT"}) != []
    assert _visits_spec([1, 25]).key_type_problems({"zone": "DECIMAL(9,2)"}) == []
