"""Attacks by a malicious licensed enterprise on `aggregate`; each asserts the defence held.

Threshold-only mode is attacked too, to show plainly what it does not stop (docs/security.md
says the same). Statistical tests draw fresh OpenDP noise on every run: its randomness is
what is under test, so nothing here is seeded except the synthetic data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from computations import ComputationError, DatasetSpec, QueryRefused, get_computation

AGGREGATE = get_computation("aggregate")
Connect = Callable[[dict[str, pa.Table]], duckdb.DuckDBPyConnection]


def _spec(mode: str, *, minimum: int = 10, **columns: dict[str, Any]) -> DatasetSpec:
    base: dict[str, Any] = {
        "person": {"class": "identifier"},
        "district": {"class": "quasi_identifier", "dimension": True},
        "age_band": {"class": "quasi_identifier", "dimension": True, "keys": ["young", "old"]},
        "sex": {"class": "quasi_identifier", "dimension": True, "keys": ["f", "m"]},
        "income": {"class": "sensitive", "bounds": [0, 100_000]},
    }
    privacy: dict[str, Any] = {"mode": mode}
    if mode == "threshold_only":
        privacy |= {"rounding_base": 5, "dominance": 0.6}
    return DatasetSpec.from_manifest(
        {
            "privacy_unit": "person",
            "min_group_size": minimum,
            "columns": {**base, **columns},
            "privacy": privacy,
        },
        name="people",
    )


def _people(target_income: int) -> pa.Table:
    """Harbour, old: 11 men and one woman, the target. Everyone else is in town."""
    rng = random.Random(5)
    rows = [
        {
            "person": i,
            "district": "town",
            "age_band": rng.choice(["young", "old"]),
            "sex": rng.choice(["f", "m"]),
            "income": rng.randrange(20_000, 60_000),
        }
        for i in range(200)
    ]
    rows += [
        {"person": 1000 + i, "district": "harbour", "age_band": "old", "sex": "m", "income": 40_000}
        for i in range(11)
    ]
    rows.append(
        {
            "person": 999,
            "district": "harbour",
            "age_band": "old",
            "sex": "f",
            "income": target_income,
        }
    )
    return pa.Table.from_pylist(rows)


def _run(sql: str, spec: DatasetSpec, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    plan = AGGREGATE.check({"sql": sql}, spec)
    return AGGREGATE.execute(plan, con, table="people", dataset=spec).table.to_pylist()


# differencing and trackers -----------------------------------------------------------------


def test_differencing_on_the_identifier_is_refused(connect: Connect) -> None:
    for sql in (
        "SELECT SUM(income) FROM people WHERE person <> 999",
        "SELECT SUM(income) FROM people WHERE district = 'harbour' AND person <> 999",
        "SELECT SUM(income) FROM people WHERE person < 999 AND person > 999",
    ):
        for mode in ("dp", "threshold_only"):
            with pytest.raises(QueryRefused) as info:
                AGGREGATE.check({"sql": sql}, _spec(mode))
            assert info.value.rule == "identifier-column"


TRACKER = (
    # All of harbour/old (12 people) and its men (11): the difference is the one woman.
    "SELECT SUM(income) AS s FROM people WHERE district = 'harbour' AND age_band = 'old'",
    "SELECT SUM(income) AS s FROM people WHERE district = 'harbour' AND age_band = 'old' "
    "AND sex = 'm'",
)


def _tracker(spec: DatasetSpec, con: duckdb.DuckDBPyConnection) -> int | None:
    whole, men = (_run(sql, spec, con) for sql in TRACKER)
    if not whole or not men:
        return None  # a group was withheld
    return int(whole[0]["s"]) - int(men[0]["s"])


def test_denning_tracker_succeeds_in_threshold_only_mode(connect: Connect) -> None:
    """The honest limit of thresholds: both groups pass, and their difference is one person."""
    spec = _spec("threshold_only")
    con = connect({"people": _people(target_income=87_654)})
    direct = "SELECT SUM(income) AS s FROM people WHERE district = 'harbour' AND sex = 'f'"
    assert _run(direct, spec, con) == []  # the direct question is suppressed...
    assert _tracker(spec, con) == 87_654  # ...and the tracker answers it exactly


def test_denning_tracker_fails_under_dp(connect: Connect) -> None:
    spec = _spec("dp")
    con = connect({"people": _people(target_income=87_654)})
    close = 0
    for _ in range(40):
        estimate = _tracker(spec, con)
        if estimate is not None and abs(estimate - 87_654) < 5_000:
            close += 1
    # Two measures (units, sum) at epsilon 1: the sum's noise has scale 200000 per query,
    # both groups pass the minimum in 2 runs of 3, and the difference of two such
    # noises lands within 5000 with p ~ 0.0125 (density 1/(4 * 200000) at 0): about 0.008
    # a trial, so 7 or more of 40 happen about 4e-8 of runs (exact binomial tail).
    assert close <= 6


def test_attribute_inference_by_differencing_is_bounded_by_epsilon(connect: Connect) -> None:
    """Neighbouring datasets differ only in the target's income (0 or 100000). The best
    test an attacker can run on two differencing queries (epsilon 1 each) succeeds with
    probability at most e^2 / (1 + e^2) ~ 0.88; thresholds alone let it succeed always."""
    spec = _spec("dp", minimum=2)
    worlds = {
        0: connect({"people": _people(target_income=0)}),
        1: connect({"people": _people(target_income=100_000)}),
    }
    trials, correct = 120, 0
    rng = random.Random()
    for _ in range(trials):
        secret = rng.randrange(2)
        estimate = _tracker(spec, worlds[secret])
        guess = int(estimate is not None and estimate > 50_000)
        correct += guess == secret
    bound = math.exp(2) / (1 + math.exp(2))
    sigma = math.sqrt(bound * (1 - bound) / trials)
    assert correct / trials <= bound + 4 * sigma
    threshold_spec = _spec("threshold_only", minimum=2)
    assert _tracker(threshold_spec, worlds[1]) == 100_000


def test_a_unique_combination_where_releases_noise_not_the_person(connect: Connect) -> None:
    spec = _spec("dp", minimum=2)
    con = connect({"people": _people(target_income=87_654)})
    sql = (
        "SELECT sex, SUM(income) AS s FROM people "
        "WHERE district = 'harbour' AND age_band = 'old' GROUP BY sex"
    )
    exact = 0
    for _ in range(30):
        rows = {r["sex"]: r["s"] for r in _run(sql, spec, con)}
        exact += rows.get("f") == 87_654
    assert exact <= 1


# reconstruction ----------------------------------------------------------------------------


def _reconstruction_world(people: int, dims: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)  # synthetic data only; not privacy randomness
    bits = rng.integers(0, 2, size=(people, dims))
    secret = rng.integers(0, 2, size=people)
    table = pa.table(
        {
            "person": pa.array(range(people), pa.int64()),
            **{f"d{j}": pa.array(bits[:, j].astype(np.int64)) for j in range(dims)},
            "secret": pa.array(secret.astype(np.int64)),
        }
    )
    return table, secret


def _reconstruct(
    spec: DatasetSpec, con: duckdb.DuckDBPyConnection, table: pa.Table, queries: int, seed: int
) -> float:
    """Dinur-Nissim style: random conjunctions of dimension values, each answered as
    SUM(secret), solved by least squares; returns the fraction of secrets recovered."""
    rng = random.Random(seed)
    dims = [c for c in table.column_names if c.startswith("d")]
    bits = np.array([table.column(d).to_pylist() for d in dims]).T
    rows, answers = [], []
    for _ in range(queries):
        chosen = rng.sample(range(len(dims)), 3)
        values = [rng.randrange(2) for _ in chosen]
        where = " AND ".join(f"d{j} = {v}" for j, v in zip(chosen, values, strict=True))
        result = _run_on(f"SELECT SUM(secret) AS s FROM people WHERE {where}", spec, con)
        if not result:
            continue
        mask = np.all(bits[:, chosen] == values, axis=1).astype(float)
        rows.append(mask)
        answers.append(float(result[0]["s"]))
    if not rows:
        return 0.0
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(answers), rcond=None)
    truth = np.array(table.column("secret").to_pylist())
    return float(np.mean((solution > 0.5) == truth))


def _run_on(sql: str, spec: DatasetSpec, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    plan = AGGREGATE.check({"sql": sql}, spec)
    return AGGREGATE.execute(plan, con, table="people", dataset=spec).table.to_pylist()


def _reconstruction_spec(mode: str, dims: int, epsilon: float = 1.0) -> DatasetSpec:
    columns: dict[str, Any] = {"person": {"class": "identifier"}}
    for j in range(dims):
        columns[f"d{j}"] = {"class": "quasi_identifier", "dimension": True}
    columns["secret"] = {"class": "sensitive", "bounds": [0, 1]}
    privacy: dict[str, Any] = {"mode": mode}
    if mode == "dp":
        privacy |= {"epsilon_per_job": epsilon}
    if mode == "threshold_only":
        privacy |= {"rounding_base": 1, "dominance": 1.0}
    return DatasetSpec.from_manifest(
        {"privacy_unit": "person", "min_group_size": 2, "columns": columns, "privacy": privacy},
        name="people",
    )


#: A world where 300 exact answers pin down every secret (no two people share all their
#: dimension values) and 85% right by chance is 55 of 64: about 2e-9 for coin flips.
PEOPLE, DIMS = 64, 14


def test_reconstruction_succeeds_on_exact_answers_and_fails_under_the_budget(
    connect: Connect, tmp_path: Path
) -> None:
    from indomain.budgets import Accountant, Budget, BudgetExhausted

    table, _ = _reconstruction_world(people=PEOPLE, dims=DIMS, seed=3)
    con = connect({"people": table})
    exact_spec = _reconstruction_spec("threshold_only", DIMS)
    exact = _reconstruct(exact_spec, con, table, 300, seed=1)
    assert exact == 1.0  # thresholds of 2 do not stop it: every secret recovered

    # Under DP, every query is charged before it runs; the budget (10 epsilon) admits 10.
    accountant, budget = Accountant(tmp_path / "state.sqlite"), Budget.parse("10/total")
    admitted = 0
    for i in range(300):
        try:
            accountant.reserve(
                enterprise="e", dataset="people", job_id=f"q{i}", epsilon=1.0, delta=1e-6,
                budgets=[budget],
            )  # fmt: skip
        except BudgetExhausted:
            break
        admitted += 1
    assert admitted == 10
    # Ten queries are too few even answered exactly: here the budget is the defence.
    assert _reconstruct(exact_spec, con, table, admitted, seed=1) < 0.85
    # The same budget spent thin, as the 300 queries that recover everything when exact
    # (epsilon 1/30 each): the noise is the defence. With no signal each secret is a coin
    # flip, and 55 of 64 right has probability 2e-9; without the noise this fails (1.0).
    thin = _reconstruction_spec("dp", DIMS, epsilon=10 / 300)
    assert _reconstruct(thin, con, table, 300, seed=1) < 0.85


# outliers, MAX/MIN, CASE and HAVING ------------------------------------------------------


def test_an_outlier_sum_is_clamped_under_dp_and_withheld_by_dominance(connect: Connect) -> None:
    rich = _people(target_income=10**12)
    dp_sum = []
    con = connect({"people": rich})
    sql = "SELECT SUM(income) AS s FROM people WHERE district = 'harbour'"
    for _ in range(10):
        dp_sum.extend(r["s"] for r in _run(sql, _spec("dp", minimum=2), con))
    assert dp_sum and max(dp_sum) < 11 * 40_000 + 100_000 + 40 * 300_000  # clamped, then noised
    assert _run(sql, _spec("threshold_only"), con) == []  # one person dominates: withheld


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT MAX(income) FROM people", "aggregate-function"),
        ("SELECT MIN(income) FROM people WHERE district = 'harbour'", "aggregate-function"),
        ("SELECT SUM(CASE WHEN person = 999 THEN income ELSE 0 END) FROM people", None),
        ("SELECT SUM(income) FROM people WHERE CASE WHEN sex = 'f' THEN 1 END = 1", "where-form"),
        ("SELECT sex, SUM(income) FROM people GROUP BY sex HAVING COUNT(*) = 1", "no-having"),
        ("SELECT sex, SUM(income) FROM people GROUP BY sex HAVING SUM(income) > 5", "no-having"),
        ("SELECT COUNT(*) FROM people, people AS p2", "no-join"),
        ("SELECT COUNT(*) FROM people JOIN people AS b USING (person)", "no-join"),
    ],
)
def test_max_min_case_having_and_joins_are_refused(sql: str, rule: str | None) -> None:
    for mode in ("dp", "threshold_only"):
        with pytest.raises(QueryRefused) as info:
            AGGREGATE.check({"sql": sql}, _spec(mode))
        if rule is not None:
            assert info.value.rule == rule


# error side channels -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT COUNT(*) FROM people WHERE district = 'harbour' AND error('boom') = 1",
        "SELECT COUNT(*) FROM people WHERE CAST(sex AS INTEGER) = 1",
        "SELECT COUNT(*) FROM people WHERE 1 / (income - 87654) = 1",
        "SELECT SUM(income / 0) FROM people",
        "SELECT SUM(CAST(district AS INTEGER)) FROM people",
    ],
)
def test_error_channels_answer_the_same_whatever_the_hidden_value(
    sql: str, connect: Connect
) -> None:
    """Refused before any row is read, so the answer cannot depend on a row."""
    answers = []
    for income in (87_654, 12_345):
        con = connect({"people": _people(target_income=income)})
        spec = _spec("dp")
        with pytest.raises(QueryRefused) as info:
            plan = AGGREGATE.check({"sql": sql}, spec)
            AGGREGATE.execute(plan, con, table="people", dataset=spec)
        answers.append(str(info.value))
    assert answers[0] == answers[1]


def test_comparisons_that_do_not_convert_never_raise(connect: Connect) -> None:
    spec = _spec("threshold_only", minimum=2)
    for income in (87_654, 12_345):
        con = connect({"people": _people(target_income=income)})
        for sql in (
            "SELECT COUNT(*) AS n FROM people WHERE district = 7",
            "SELECT COUNT(*) AS n FROM people WHERE sex = true",
            "SELECT COUNT(*) AS n FROM people WHERE age_band >= 1.5",
        ):
            assert _run(sql, spec, con) == []  # nothing matches; nothing raised


# engine escapes, with the checker bypassed ---------------------------------------------------

ESCAPES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    'SELECT * FROM "/etc/passwd"',
    "SELECT * FROM glob('/*')",
    "COPY people TO '/tmp/indomain-escape.csv'",
    "COPY (SELECT 1) TO '/tmp/indomain-escape.csv'",
    "ATTACH '/tmp/indomain-escape.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET lock_configuration",
    "PRAGMA enable_external_access",
    "SELECT * FROM read_parquet('https://example.invalid/x.parquet')",
]


@pytest.mark.parametrize("sql", ESCAPES)
def test_engine_escapes_are_refused_by_the_checker(sql: str) -> None:
    with pytest.raises(QueryRefused):
        AGGREGATE.check({"sql": sql}, _spec("dp"))


@pytest.mark.parametrize("sql", ESCAPES)
def test_engine_escapes_fail_on_the_locked_engine_without_the_checker(
    sql: str, connect: Connect
) -> None:
    con = connect({"people": _people(target_income=1)})
    with pytest.raises(duckdb.Error):
        con.execute(sql).fetchall()
    assert con.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration')"
    ).fetchall() == [(False, True)]
    assert not Path("/tmp/indomain-escape.csv").exists()


def test_hostile_literals_in_a_forged_plan_stay_literals(connect: Connect) -> None:
    from computations import Plan

    spec = _spec("threshold_only", minimum=2)
    con = connect({"people": _people(target_income=1)})
    plan = AGGREGATE.check(
        {"sql": "SELECT COUNT(*) AS n FROM people WHERE district = 'x'"}, spec
    ).to_json()
    for value in ("x' OR 1=1 --", "'; COPY people TO '/tmp/indomain-escape.csv'; --", "\\'"):
        plan["body"]["where"] = [{"column": "district", "op": "=", "value": value}]
        forged = Plan.from_json(plan)
        assert AGGREGATE.execute(forged, con, table="people", dataset=spec).table.num_rows == 0
    for column in ('district" = district OR "x', "person"):
        plan["body"]["where"] = [{"column": column, "op": "=", "value": "x"}]
        with pytest.raises(ComputationError):
            AGGREGATE.execute(Plan.from_json(plan), con, table="people", dataset=spec)
    assert not Path("/tmp/indomain-escape.csv").exists()
