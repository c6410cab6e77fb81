"""Differential privacy for `aggregate`: bounded contributions, OpenDP noise, public keys or a
noisy threshold, and a release that states what protects it.

Statistical tests draw fresh noise (no seeds): the mechanism's randomness is what they test.
Their tolerances are many standard deviations wide, so a failure means a real fault.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from computations import (
    ComputationError,
    DatasetSpec,
    Plan,
    QueryRefused,
    get_computation,
    plan_cost,
    privacy_statement,
    release_key,
)

AGGREGATE = get_computation("aggregate")
Connect = Callable[[dict[str, pa.Table]], duckdb.DuckDBPyConnection]


def run(sql: str, spec: DatasetSpec, con: duckdb.DuckDBPyConnection, **kw: Any) -> pa.Table:
    plan = AGGREGATE.check({"sql": sql}, spec, **kw)  # type: ignore[call-arg]
    return AGGREGATE.execute(plan, con, table="residents", dataset=spec).table


def test_a_release_states_epsilon_delta_and_noise_scales(
    dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    table = run(
        "SELECT sex, COUNT(*) AS n, SUM(income) AS total, AVG(income) AS mean "
        "FROM residents GROUP BY sex",
        dp_residents,
        con,
    )
    stated = privacy_statement(table)
    assert stated is not None
    assert stated["mode"] == "dp" and stated["mechanism"] == "discrete_laplace"
    assert stated["epsilon"] == 1.0
    assert stated["delta"] == 0.0  # sex has public keys: no threshold, no delta
    # units, rows, sum(income), count(income): four measures share epsilon 1.
    assert stated["measures"] == 4
    assert stated["outputs"]["n"]["noise_scale"] == pytest.approx(4.0)
    assert stated["outputs"]["total"]["noise_scale"] == pytest.approx(4 * 200_000)
    assert table.column_names == ["sex", "n", "total", "mean"]
    assert table.column("sex").to_pylist() == ["f", "m"]


def test_plan_cost_is_what_the_release_states(
    dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    private = AGGREGATE.check(
        {"sql": "SELECT district, COUNT(*) FROM residents GROUP BY district"}, dp_residents
    )
    public = AGGREGATE.check(
        {"sql": "SELECT sex, COUNT(*) FROM residents GROUP BY sex"}, dp_residents
    )
    assert plan_cost(private) == (1.0, 1e-6)
    assert plan_cost(public) == (1.0, 0.0)
    statement = privacy_statement(
        AGGREGATE.execute(private, con, table="residents", dataset=dp_residents).table
    )
    assert statement is not None
    assert (statement["epsilon"], statement["delta"]) == plan_cost(private)


def test_noise_is_fresh_unbiased_and_of_the_stated_scale(
    dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection, residents_table: pa.Table
) -> None:
    people = len(set(residents_table.column("resident_id").to_pylist()))
    draws = [
        run("SELECT COUNT(DISTINCT resident_id) AS n FROM residents", dp_residents, con)
        .column("n")
        .to_pylist()[0]
        for _ in range(400)
    ]
    # Scale 1 (one measure, epsilon 1): discrete Laplace variance 2e/(e-1)^2 ~ 1.84.
    variance = 2 * math.e / (math.e - 1) ** 2
    assert len(set(draws)) > 3, "no noise"
    assert abs(statistics.fmean(draws) - people) < 6 * math.sqrt(variance / len(draws))
    # The sample variance of 400 draws has a relative sd of about 0.11 and a heavy right
    # tail (Laplace kurtosis 6): computed exactly (the sum of 400 squared draws, by FFT),
    # it falls under 0.4x with probability < 1e-8 and over 2x < 1e-8 (over 1.7x, the old
    # bound, 3e-6). A wrong scale fails: half the scale gives 0.2x, 1.4 times it 2.04x.
    assert 0.4 * variance < statistics.pvariance(draws) < 2.0 * variance
    assert all(isinstance(d, int) for d in draws)  # integers: a public grid


def test_one_unit_with_many_rows_moves_a_count_by_at_most_the_row_cap(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    rows = [{"resident_id": i, "sex": "f", "income": 1000} for i in range(50)]
    heavy = [{"resident_id": 999, "sex": "f", "income": 10**12} for _ in range(10_000)]
    base = connect({"residents": pa.Table.from_pylist(rows)})
    attacked = connect({"residents": pa.Table.from_pylist(rows + heavy)})
    sql = "SELECT COUNT(*) AS n, SUM(income) AS s FROM residents"
    from computations._aggregate._body import AggregateBody
    from computations._aggregate._sql import bounded_sql

    plan = AGGREGATE.check({"sql": sql}, dp_residents)
    body = AggregateBody.from_json(plan.body)
    exact = bounded_sql(body, table="residents", dataset=dp_residents)
    before = base.execute(exact).fetchall()[0]
    after = attacked.execute(exact).fetchall()[0]
    # units +1, rows +1 (cap 1), sum + 200000 (the upper bound), not 10**16.
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 200_000]


def test_public_keys_release_every_key_and_nothing_else(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    rows = [{"resident_id": i, "sex": "f", "age_band": "18-39"} for i in range(200)]
    rows += [{"resident_id": 1000, "sex": "x-rare-value", "age_band": "18-39"}]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    table = run("SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex", dp_residents, con)
    # "m" is released though absent (its count is noise around zero, then suppressed or
    # not); the undeclared value never is.
    assert "x-rare-value" not in table.column("sex").to_pylist()
    assert set(table.column("sex").to_pylist()) <= {"f", "m"}
    # "f" (200 people) misses the minimum of 10 only if the noise (scale 2) is -191 or
    # less: P = e^(-191/2) / (1 + e^(-1/2)), certain by arithmetic (30 people failed
    # about once in 60,000 runs).
    stated = privacy_statement(table)
    assert stated is not None and stated["release_threshold"] == 10
    scale = stated["outputs"]["n"]["noise_scale"]
    assert math.exp(-(200 - 9) / scale) / (1 + math.exp(-1 / scale)) < 1e-40
    assert "f" in table.column("sex").to_pylist()


def test_a_private_key_held_by_one_person_is_never_released(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    """The threshold makes the release (epsilon, delta)-DP: a key of one person passes it
    with probability at most delta per run. At the default delta 1e-6, 200 attempts would
    see it about once in 10,000 runs, as the mechanism allows; at delta 1e-12 the same
    code puts the threshold at 57, and 200 attempts pass it with probability < 1e-9."""
    rows = [{"resident_id": i, "district": "big"} for i in range(200)]
    rows += [{"resident_id": 999, "district": "only-one-person"}]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    spec = dp_residents.model_copy(
        update={"privacy": dp_residents.privacy.model_copy(update={"delta": 1e-12})}
    )
    seen: set[str] = set()
    attempts = 200
    for _ in range(attempts):
        table = run("SELECT district, COUNT(*) AS n FROM residents GROUP BY district", spec, con)
        seen |= set(table.column("district").to_pylist())
    stated = privacy_statement(table)
    assert stated is not None
    scale, threshold = stated["outputs"]["n"]["noise_scale"], stated["release_threshold"]
    assert threshold == 1 + math.ceil(scale * math.log(1e12)) == 57
    # A true count of 1 reaches the threshold only if the noise is threshold - 1 or more.
    assert attempts * math.exp(-(threshold - 1) / scale) < 1e-9
    assert "only-one-person" not in seen
    assert "big" in seen


def test_threshold_is_stated_and_at_least_the_minimum(
    dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    table = run(
        "SELECT district, COUNT(*) AS n FROM residents GROUP BY district", dp_residents, con
    )
    stated = privacy_statement(table)
    assert stated is not None
    # scale 2 (two measures), G = 1, delta 1e-6: tau = 1 + ceil(2 ln 1e6) = 29.
    assert stated["release_threshold"] == 1 + math.ceil(2 * math.log(1e6))
    assert stated["group_keys"] == "noisy_threshold"


def test_obligations_only_make_a_release_stricter(dp_residents: DatasetSpec) -> None:
    sql = {"sql": "SELECT COUNT(*) FROM residents"}
    stricter = AGGREGATE.check(  # type: ignore[call-arg]
        sql, dp_residents, obligations={"epsilon_per_job": "0.25", "min_group_size": "50"}
    )
    assert stricter.body["privacy"]["epsilon"] == 0.25
    assert stricter.body["privacy"]["min_group_size"] == 50
    looser = AGGREGATE.check(  # type: ignore[call-arg]
        sql, dp_residents, obligations={"epsilon_per_job": "5", "min_group_size": "2"}
    )
    assert looser.body["privacy"]["epsilon"] == 1.0
    assert looser.body["privacy"]["min_group_size"] == 10
    for bad in ({"epsilon_per_job": "lots"}, {"epsilon_per_job": "-1"}, {"min_group_size": "x"}):
        with pytest.raises(ComputationError):
            AGGREGATE.check(sql, dp_residents, obligations=bad)  # type: ignore[call-arg]


def _tampered_privacy(plan: Plan, **privacy: Any) -> Plan:
    data = plan.to_json()
    data["body"]["privacy"] = {**data["body"]["privacy"], **privacy}
    return Plan.from_json(data)


@pytest.mark.parametrize(
    "change",
    [
        {"epsilon": 2.0},
        {"epsilon": 0.0},
        {"epsilon": -1.0},
        {"delta": 0.1},
        {"min_group_size": 2},
        {"mode": "threshold_only", "epsilon": 0.0, "delta": 0.0},
        {"mode": "none"},
        {"epsilon": "1"},
    ],
)
def test_the_enclave_refuses_a_plan_looser_than_the_manifest(
    change: dict[str, Any], dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check(
        {"sql": "SELECT district, COUNT(*) FROM residents GROUP BY district"}, dp_residents
    )
    with pytest.raises(ComputationError):
        AGGREGATE.execute(
            _tampered_privacy(plan, **change), con, table="residents", dataset=dp_residents
        )


@pytest.mark.parametrize(
    "variant",
    [
        "SELECT COUNT(*) AS n FROM residents WHERE age_band = '65+' AND sex = 'f'",
        "SELECT COUNT(*) AS n FROM residents WHERE sex = 'f' AND age_band = '65+'",
        "SELECT COUNT(*) AS n FROM residents WHERE 1 = 1 AND sex = 'f' AND age_band = '65+'",
        "SELECT COUNT(*) AS n FROM residents WHERE (sex = 'f') AND '65+' = age_band AND sex = 'f'",
        "select count(*) as n from residents where sex='f' and age_band='65+' and 'a'='a'",
    ],
)
def test_equivalent_queries_have_one_release_key(variant: str, dp_residents: DatasetSpec) -> None:
    first = AGGREGATE.check(
        {"sql": "SELECT COUNT(*) AS n FROM residents WHERE age_band = '65+' AND sex = 'f'"},
        dp_residents,
    )
    again = AGGREGATE.check({"sql": variant}, dp_residents)
    assert release_key(again) == release_key(first)


def test_different_queries_have_different_release_keys(dp_residents: DatasetSpec) -> None:
    sqls = [
        "SELECT COUNT(*) AS n FROM residents WHERE sex = 'f'",
        "SELECT COUNT(*) AS n FROM residents WHERE sex = 'm'",
        "SELECT COUNT(*) AS n FROM residents WHERE sex <> 'f'",
        "SELECT COUNT(*) AS m FROM residents WHERE sex = 'f'",
        "SELECT COUNT(*) AS n FROM residents",
    ]
    keys = {release_key(AGGREGATE.check({"sql": s}, dp_residents)) for s in sqls}
    assert len(keys) == len(sqls)


def test_where_filters_rows_without_engine_errors(
    dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    # A number compared to a text column neither raises nor matches: TRY_CAST gives NULL.
    for sql in (
        "SELECT COUNT(*) AS n FROM residents WHERE district = 5",
        "SELECT COUNT(*) AS n FROM residents WHERE age_band > 3.5",
        "SELECT COUNT(*) AS n FROM residents WHERE district = true",
    ):
        run(sql, dp_residents, con)


def test_threshold_only_rounds_counts_and_applies_the_dominance_rule(
    connect: Connect, residents: DatasetSpec
) -> None:
    rules = residents.privacy.model_copy(update={"rounding_base": 5, "dominance": 0.5})
    spec = residents.model_copy(update={"privacy": rules})
    rows = [{"resident_id": i, "district": "even", "income": 100} for i in range(12)]
    rows += [{"resident_id": 100 + i, "district": "rich", "income": 100} for i in range(11)]
    rows += [{"resident_id": 999, "district": "rich", "income": 10**9}]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    sql = "SELECT district, COUNT(*) AS n, SUM(income) AS s FROM residents GROUP BY district"
    plan = AGGREGATE.check({"sql": sql}, spec)
    result = AGGREGATE.execute(plan, con, table="residents", dataset=spec)
    assert result.table.to_pylist() == [{"district": "even", "n": 10, "s": 1200}]
    assert result.suppressed_groups == 1
    assert privacy_statement(result.table) == {
        "mode": "threshold_only",
        "epsilon": None,
        "delta": None,
        "min_group_size": 10,
        "rounding_base": 5,
        "dominance": 0.5,
    }


def test_threshold_only_is_refused_unless_the_manifest_asks(dp_residents: DatasetSpec) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) FROM residents"}, dp_residents)
    assert plan.body["privacy"]["mode"] == "dp"


def _exact_bounded(sql: str, spec: DatasetSpec, con: duckdb.DuckDBPyConnection) -> list[Any]:
    from computations._aggregate._body import AggregateBody
    from computations._aggregate._sql import bounded_sql

    body = AggregateBody.from_json(AGGREGATE.check({"sql": sql}, spec).body)
    return con.execute(bounded_sql(body, table="residents", dataset=spec)).fetchall()


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_a_unit_counts_in_at_most_max_groups_per_unit(
    groups: int, connect: Connect, dp_residents: DatasetSpec
) -> None:
    rules = dp_residents.privacy.model_copy(update={"max_groups_per_unit": groups})
    spec = dp_residents.model_copy(update={"privacy": rules})
    rows = [{"resident_id": 7, "district": f"d{i}", "income": 10} for i in range(5)]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    result = _exact_bounded(
        "SELECT district, COUNT(*), SUM(income) FROM residents GROUP BY district", spec, con
    )
    # columns: district, units, rows, sum(income)
    assert sum(r[1] for r in result) == groups
    assert sum(r[3] for r in result) == 10 * groups


def test_missing_values_are_not_clamped_into_sums(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    rows = [
        {"resident_id": 1, "sex": "f", "income": None},
        {"resident_id": 2, "sex": "f", "income": None},
        {"resident_id": 3, "sex": "f", "income": 5},
        {"resident_id": 4, "sex": "f", "income": -50},
    ]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    (row,) = _exact_bounded("SELECT SUM(income), COUNT(income) FROM residents", dp_residents, con)
    # units 4, sum(income) 5 + 0 (-50 clamped to the lower bound 0), count(income) 2
    assert row == (4, 5, 2)


def test_dp_median_and_quantile(connect: Connect, dp_residents: DatasetSpec) -> None:
    rows = [{"resident_id": i, "sex": "f", "income": 1000 * (i % 100)} for i in range(2000)]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    table = run(
        "SELECT MEDIAN(income) AS med, QUANTILE_CONT(income, 0.9) AS p90 FROM residents",
        dp_residents,
        con,
    )
    (row,) = table.to_pylist()
    # True median 49500, p90 89100; the grid step is 200 and 2000 values are plenty.
    assert abs(row["med"] - 49_500) < 5_000
    assert abs(row["p90"] - 89_100) < 5_000
    assert row["med"] % 200 == 0 and row["p90"] % 200 == 0
    stated = privacy_statement(table)
    assert stated is not None
    assert stated["outputs"]["med"]["alpha"] == 0.5
    assert stated["outputs"]["med"]["grid_step"] == 200
    assert stated["measures"] == 2  # units and the values of income


def test_a_median_is_fresh_noise_not_a_persons_value(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    # Eleven people; the exact median is one person's income.
    rows = [{"resident_id": i, "sex": "f", "income": 10_007 * (i + 1)} for i in range(11)]
    con = connect({"residents": pa.Table.from_pylist(rows)})
    spec = dp_residents.model_copy(update={"min_group_size": 2})
    released = [run("SELECT MEDIAN(income) AS m FROM residents", spec, con) for _ in range(30)]
    values = [t.column("m").to_pylist()[0] for t in released if t.num_rows]
    assert len(set(values)) > 3
    assert all(v % 200 == 0 for v in values if v is not None)  # grid values, not incomes


def test_public_key_products_are_capped(dp_residents: DatasetSpec) -> None:
    many = tuple(f"k{i}" for i in range(400))
    columns = tuple(
        c.model_copy(update={"keys": many}) if c.name == "district" else c
        for c in dp_residents.columns
    )
    spec = dp_residents.model_copy(update={"columns": columns})
    sql = "SELECT district, age_band, sex, health_flag, COUNT(*) FROM residents GROUP BY ALL"
    sql = sql.replace("ALL", "district, age_band, sex, health_flag")
    AGGREGATE.check({"sql": sql.replace(", health_flag", "")}, spec)  # 400*4*2 = 3200
    columns = tuple(
        c.model_copy(update={"keys": many}) if c.name in ("district", "age_band") else c
        for c in dp_residents.columns
    )
    wide = dp_residents.model_copy(update={"columns": columns})
    with pytest.raises(QueryRefused) as info:  # 400*400*2*2 = 640000
        AGGREGATE.check({"sql": sql}, wide)
    assert info.value.rule == "too-many-groups"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*), SUM(income), COUNT(income) FROM residents",
        "SELECT district, COUNT(*), SUM(income), AVG(insurance_months) FROM residents "
        "GROUP BY district",
        "SELECT sex, age_band, COUNT(DISTINCT resident_id), SUM(income) FROM residents "
        "WHERE health_flag = true GROUP BY sex, age_band",
        "SELECT sex, MEDIAN(income) FROM residents GROUP BY sex",
    ],
)
def test_one_row_per_unit_fast_path_bounds_exactly_like_the_general_one(
    sql: str, connect: Connect, dp_residents: DatasetSpec, residents_table: pa.Table
) -> None:
    from computations._aggregate._body import AggregateBody
    from computations._aggregate._sql import bounded_sql

    # One row per person: drop the repeated records of the fixture.
    first = pa.Table.from_pylist(
        list({r["resident_id"]: r for r in reversed(residents_table.to_pylist())}.values()),
        schema=residents_table.schema,
    )
    con = connect({"residents": first})
    body = AggregateBody.from_json(AGGREGATE.check({"sql": sql}, dp_residents).body)

    def rows(unique: bool, complete: bool = False) -> list[Any]:
        query = bounded_sql(
            body,
            table="residents",
            dataset=dp_residents,
            unit_unique=unique,
            unit_complete=complete,
        )
        return [
            tuple(sorted(v) if isinstance(v, list) else v for v in row)
            for row in con.execute(query).fetchall()
        ]

    assert rows(True) == rows(False)
    # Every row with a unit (as the import measures): the filter on it can go.
    assert first.column("resident_id").null_count == 0
    assert rows(True, complete=True) == rows(False) == rows(False, complete=True)


def test_the_fast_path_drops_groups_outside_public_keys_before_noise(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    """Without the key filter, rows outside the public keys form groups of their own; the
    release keeps only declared key combinations, so what is noised is the same."""
    from computations._aggregate._body import AggregateBody
    from computations._aggregate._execute import _all_public_keys
    from computations._aggregate._sql import Measure, bounded_sql, measures

    people = [
        {"resident_id": i, "sex": ["f", "m", "x", None][i % 4], "income": 1000 * i}
        for i in range(40)
    ]
    con = connect({"residents": pa.Table.from_pylist(people)})
    sql = "SELECT sex, COUNT(*) AS n, SUM(income) AS s FROM residents GROUP BY sex"
    body = AggregateBody.from_json(AGGREGATE.check({"sql": sql}, dp_residents).body)

    def released(unique: bool) -> tuple[list[Any], dict[Measure, list[int]]]:
        raw = con.execute(
            bounded_sql(body, table="residents", dataset=dp_residents, unit_unique=unique)
        ).to_arrow_table()
        keys = [(k,) for k in raw.column("g0").to_pylist()]
        exact = {m: [int(v or 0) for v in raw.column(m.alias).to_pylist()] for m in measures(body)}
        return _all_public_keys(body, dp_residents, keys, exact)

    fast, general = released(True), released(False)
    assert fast == general
    assert fast[0] == [("f",), ("m",)]


def test_integer_clamping_equals_the_double_path(
    connect: Connect, dp_residents: DatasetSpec
) -> None:
    from computations._aggregate._body import AggregateBody
    from computations._aggregate._sql import bounded_sql

    incomes = [None, -5, 0, 7, 199_999, 200_000, 200_001, 2**62, -(2**62)]
    people = [{"resident_id": i, "sex": "f", "income": v} for i, v in enumerate(incomes * 3)]
    con = connect({"residents": pa.Table.from_pylist(people)})
    sql = "SELECT sex, COUNT(income) AS c, SUM(income) AS s FROM residents GROUP BY sex"
    body = AggregateBody.from_json(AGGREGATE.check({"sql": sql}, dp_residents).body)
    for unique in (True, False):
        as_integers = bounded_sql(
            body,
            table="residents",
            dataset=dp_residents,
            unit_unique=unique,
            integer_columns=frozenset({"income"}),
        )
        as_doubles = bounded_sql(body, table="residents", dataset=dp_residents, unit_unique=unique)
        assert "DOUBLE" not in as_integers
        assert con.execute(as_integers).fetchall() == con.execute(as_doubles).fetchall()


@pytest.mark.parametrize("unique", [True, False])
def test_a_column_measured_within_its_bounds_is_not_clamped_and_gives_the_same_sums(
    unique: bool, connect: Connect, dp_residents: DatasetSpec
) -> None:
    """The import's measured range decides: within the bounds the clamp (the identity) is
    left out; a side the range crosses keeps its clamp, and a range not measured both."""
    from computations._aggregate._body import AggregateBody
    from computations._aggregate._sql import bounded_sql

    inside = [{"resident_id": i, "sex": "f", "income": 7 * i} for i in range(1, 40)]
    sql = "SELECT sex, COUNT(income) AS c, SUM(income) AS s FROM residents GROUP BY sex"
    body = AggregateBody.from_json(AGGREGATE.check({"sql": sql}, dp_residents).body)
    con = connect({"residents": pa.Table.from_pylist(inside)})

    def query(ranges: dict[str, tuple[int, int]] | None) -> str:
        return bounded_sql(
            body,
            table="residents",
            dataset=dp_residents,
            unit_unique=unique,
            integer_columns=frozenset({"income"}),
            value_ranges=ranges,
        )

    low, high = (int(b) for b in dp_residents.column("income").bounds)  # type: ignore[union-attr]
    within = query({"income": (7, 7 * 39)})
    assert "CASE" not in within
    assert con.execute(within).fetchall() == con.execute(query(None)).fetchall()
    assert "CASE" in query(None) and f"< {low}" in query(None) and f"> {high}" in query(None)
    below, above = query({"income": (low - 1, 10)}), query({"income": (0, high + 1)})
    assert f"< {low}" in below and f"> {high}" not in below
    assert f"> {high}" in above and f"< {low}" not in above
    people = [*inside, {"resident_id": 99, "sex": "f", "income": high + 10**9}]
    con = connect({"residents": pa.Table.from_pylist(people)})
    assert con.execute(above).fetchall() == con.execute(query(None)).fetchall()
