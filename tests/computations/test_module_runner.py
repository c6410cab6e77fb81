"""The module runner on a real DuckDB in memory: the facade is the only way to the data,
every release goes through the aggregate checker and spends the module's budget, and the
source rules, builtins and CPU limit each stop what they are there to stop."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import duckdb
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from computations import ComputationError, DatasetSpec, QueryRefused, check_module_source
from computations._module import _runner
from computations._module._facade import Ledger, Source
from computations._module._runner import run_module
from indomain.demo_data import MANIFEST, residents

COLUMNS = frozenset({"district", "income", "sex", "resident_id"})


@pytest.fixture(scope="module")
def dataset() -> DatasetSpec:
    return DatasetSpec.from_manifest(yaml.safe_load(MANIFEST), name="residents")


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    table = residents(2000)
    connection.register("source_rows", table)
    connection.execute("CREATE TABLE residents AS SELECT * FROM source_rows")
    connection.unregister("source_rows")
    yield connection
    connection.close()


def _run(
    source_text: str,
    con: duckdb.DuckDBPyConnection,
    dataset: DatasetSpec,
    *,
    epsilon: float = 1.0,
    cpu_seconds: float = 30.0,
    values: dict[str, Any] | None = None,
) -> tuple[Any, Ledger]:
    spent = Ledger(epsilon_budget=epsilon, delta_budget=1e-5)
    table = run_module(
        source_text,
        code_hash="sha256:" + hashlib.sha256(source_text.encode()).hexdigest(),
        values=values or {},
        source=Source(
            con=con,
            table="residents",
            dataset=dataset,
            unit_unique=True,
            columns=COLUMNS,
            obligations={"min_group_size": "10"},
        ),
        spent=spent,
        cpu_seconds=cpu_seconds,
    )
    return table, spent


def test_releases_are_noisy_aggregates_that_spend_the_module_budget(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec
) -> None:
    module = (
        "def run(data, params):\n"
        "    counts = data.count(by=['sex'], epsilon=0.25)\n"
        "    means = data.mean('income', by=['sex'], epsilon=0.5)\n"
        "    total = sum([row['count'] for row in counts])\n"
        "    return {'people': total, 'releases': len(counts) + len(means)}\n"
    )
    table, spent = _run(module, con, dataset)
    (row,) = table.to_pylist()
    assert row["releases"] == 4
    assert abs(row["people"] - 2000) < 200  # noisy, but near the truth
    assert spent.epsilon == pytest.approx(0.75) and len(spent.releases) == 2
    assert all(r["epsilon"] > 0 for r in spent.releases)
    from computations import privacy_statement

    statement = privacy_statement(table)
    assert statement is not None and statement["epsilon"] == pytest.approx(0.75)
    assert statement["releases"][1]["query"].startswith('SELECT "sex", AVG("income")')


def test_a_second_release_beyond_the_budget_is_refused(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec
) -> None:
    module = (
        "def run(data, params):\n"
        "    first = data.mean('income', by=['district'])\n"
        "    return data.count(by=['district'])\n"
    )
    with pytest.raises(QueryRefused, match="module-budget") as refused:
        _run(module, con, dataset, epsilon=0.5)
    assert "0.5 of the module's 0.5 is spent" in str(refused.value)


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        ("data.count(by=['resident_id'])", "identifier-column"),
        ("data.count(where={'income': 50000})", "where-column"),
        ("data.count(by=['income'])", "group-by-dimension"),
        ("data.mean('age_band')", "module-columns"),
    ],
    ids=["group-by-identifier", "where-non-dimension", "group-by-sensitive", "undeclared"],
)
def test_queries_the_checker_refuses_are_refused_inside_a_module(
    call: str, rule: str, con: duckdb.DuckDBPyConnection, dataset: DatasetSpec
) -> None:
    with pytest.raises(QueryRefused) as refused:
        _run(f"def run(data, params):\n    return {call}\n", con, dataset)
    assert refused.value.rule == rule


def test_a_module_cannot_swallow_a_refused_release(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # except Exception does not catch the facade's stop, and a return in finally that
    # swallows it does not save the run.
    caught = (
        "def run(data, params):\n"
        "    try:\n"
        "        return data.count(by=['resident_id'])\n"
        "    except Exception:\n"
        "        return 'caught'\n"
    )
    swallowed = (
        "def run(data, params):\n"
        "    try:\n"
        "        data.count(by=['resident_id'])\n"
        "    finally:\n"
        "        return 'swallowed'\n"
    )
    with pytest.raises(QueryRefused, match="identifier-column"):
        _run(caught, con, dataset)
    with pytest.raises(QueryRefused, match="return, break or continue in finally"):
        check_module_source(swallowed)
    # And without that source rule, the run still fails.
    monkeypatch.setattr(_runner, "check_source", lambda source, filename="": _parse(source))
    with pytest.raises(QueryRefused, match="identifier-column"):
        _run(swallowed, con, dataset)


def test_a_failed_release_is_reported_whatever_the_module_raises_after_it(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A release can fail on data (its failure can depend on one row). A ``finally`` block
    # runs while the stop unwinds: if its own exception were reported, its text would say
    # which releases failed, a bit per release. The failure is reported instead, and no
    # release is made after it.
    probe = (
        "def run(data, params):\n"
        "    ok = 'no'\n"
        "    try:\n"
        "        data.count(by=['resident_id'])\n"
        "        ok = 'yes'\n"
        "    finally:\n"
        "        try:\n"
        "            data.count(by=['sex'], epsilon=0.1)\n"
        "        finally:\n"
        "            raise ValueError('bits ' + ok)\n"
    )
    spent = Ledger(epsilon_budget=1.0, delta_budget=1e-5)
    with pytest.raises(QueryRefused) as refused:
        run_module(
            probe,
            code_hash="sha256:" + hashlib.sha256(probe.encode()).hexdigest(),
            values={},
            source=Source(con, "residents", dataset, True, COLUMNS, {"min_group_size": "10"}),
            spent=spent,
            cpu_seconds=30,
        )
    assert refused.value.rule == "identifier-column"
    assert "bits" not in str(refused.value)
    assert spent.releases == [] and spent.epsilon == 0


def test_nested_job_values_reach_the_module_as_plain_data(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec
) -> None:
    # The plan freezes nested values (read-only mappings, tuples); the module gets dicts
    # and lists, so a job with nested values runs instead of failing after its charge.
    frozen = MappingProxyType({"filters": (MappingProxyType({"district": "A"}),)})
    module = "def run(data, params):\n    return {'d': params['filters'][0]['district']}\n"
    spent = Ledger(epsilon_budget=1.0, delta_budget=1e-5)
    table = run_module(
        module,
        code_hash="sha256:" + hashlib.sha256(module.encode()).hexdigest(),
        values=frozen,
        source=Source(con, "residents", dataset, True, COLUMNS, {}),
        spent=spent,
        cpu_seconds=30,
    )
    assert table.to_pylist() == [{"d": "A"}]


def test_a_module_bound_to_other_bytes_is_refused(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec
) -> None:
    approved = "def run(data, params):\n    return data.count()\n"
    changed = approved.replace("count()", "count(by=['district'])")
    with pytest.raises(QueryRefused, match="no longer hash"):
        run_module(
            changed,
            code_hash="sha256:" + hashlib.sha256(approved.encode()).hexdigest(),
            values={},
            source=Source(con, "residents", dataset, True, COLUMNS, {}),
            spent=Ledger(epsilon_budget=1.0, delta_budget=0.0),
            cpu_seconds=5,
        )


def test_a_module_that_spins_is_stopped_by_the_cpu_limit(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    spinning = (
        "def run(data, params):\n"
        "    n = 0\n"
        "    while True:\n"
        "        try:\n"
        "            n = n + 1\n"
        "        except Exception:\n"
        "            pass\n"
    )
    with pytest.raises(ComputationError, match="CPU time"):
        _run(spinning, con, dataset, cpu_seconds=0.3)
    # A module that swallows the signal (here without the source rule against a return
    # in finally) still fails: the limit remembers it expired.
    swallowing = (
        "def run(data, params):\n"
        "    try:\n"
        "        while True:\n"
        "            pass\n"
        "    finally:\n"
        "        return 'done'\n"
    )
    monkeypatch.setattr(_runner, "check_source", lambda source, filename="": _parse(source))
    with pytest.raises(ComputationError, match="CPU time"):
        _run(swallowing, con, dataset, cpu_seconds=0.3)
    # A module that swallows the first signal and spins again in its finally block is
    # interrupted again (the limit repeats), and its own exception, which could carry a
    # CPU clock out, is not what is reported.
    spinning_again = (
        "def run(data, params):\n"
        "    n = 0\n"
        "    try:\n"
        "        while True:\n"
        "            pass\n"
        "    finally:\n"
        "        while n < 100000000:\n"
        "            n = n + 1\n"
        "        raise ValueError('clock=' + str(n))\n"
    )
    with pytest.raises(ComputationError, match="CPU time") as stopped:
        _run(spinning_again, con, dataset, cpu_seconds=0.3)
    assert "clock" not in str(stopped.value)


def test_params_are_the_jobs_values_and_a_module_error_says_what_it_was(
    con: duckdb.DuckDBPyConnection, dataset: DatasetSpec
) -> None:
    module = "def run(data, params):\n    return {'sex': params['sex'], 'n': 1 // params['z']}\n"
    table, _ = _run(module, con, dataset, values={"sex": "F", "z": 1})
    assert table.to_pylist() == [{"sex": "F", "n": 1}]
    with pytest.raises(QueryRefused, match="ZeroDivisionError"):
        _run(module, con, dataset, values={"sex": "F", "z": 0})


@pytest.mark.parametrize(
    "attack",
    [
        "import os\ndef run(data, params):\n    return os.getcwd()\n",
        "def run(data, params):\n    return str(().__class__.__bases__)\n",
        "def run(data, params):\n    return open('/etc/passwd').read()\n",
        "def run(data, params):\n    return str(data._release)\n",
        "def run(data, params):\n    return getattr(data, 'count')\n",
        "def run(data, params):\n    return eval('1')\n",
        "def run(data, params):\n    return __import__('os').getcwd()\n",
        "def run(data, params):\n    return str(globals())\n",
        "def run(data, params):\n    return '{0.count}'.format(data)\n",
        "def run(data, params):\n    g = (x for x in [1])\n    return str(g.gi_frame.f_back)\n",
        "def run(data, params):\n    return str(data.count.__closure__)\n",
        "X = 1\ndef run(data, params):\n    global X\n    return X\n",
        "def run(data, params):\n    try:\n        return 1\n    except:\n        return 2\n",
        "class A:\n    pass\ndef run(data, params):\n    return 1\n",
        "def run(data, params):\n    try:\n        return 1\n    finally:\n        return 2\n",
    ],
    ids=[
        "import", "dunder-bases", "open", "facade-private", "getattr", "eval", "dunder-import",
        "globals", "str-format", "frame-walk", "closure", "global", "bare-except", "class",
        "return-in-finally",
    ],
)  # fmt: skip
def test_source_rules_refuse_the_ways_out(attack: str) -> None:
    with pytest.raises(QueryRefused, match="module-source"):
        check_module_source(attack)


def test_allowed_modules_pass_the_source_rules() -> None:
    check_module_source(
        "LIMIT = 10\n"
        "def share(rows, key):\n"
        "    total = sum([r[key] for r in rows])\n"
        "    return {r['district']: r[key] / total for r in rows if total}\n"
        "def run(data, params):\n"
        "    rows = data.mean('income', by=['district'], where={'sex': 'F'}, epsilon=0.2)\n"
        "    rows.sort(key=lambda r: r['mean'])\n"
        "    try:\n"
        "        top = rows[-1]\n"
        "    except IndexError:\n"
        "        top = None\n"
        "    return [dict(r, top=(r is top)) for r in rows[:LIMIT]]\n"
    )


@pytest.mark.parametrize(
    ("attack", "error"),
    [
        ("def run(data, params):\n    return open('/etc/passwd').read()\n", "NameError"),
        ("def run(data, params):\n    import os\n    return os.getcwd()\n", "ImportError"),
        ("def run(data, params):\n    return getattr(data, 'count')\n", "NameError"),
        ("def run(data, params):\n    return eval('1')\n", "NameError"),
    ],
    ids=["open", "import", "getattr", "eval"],
)
def test_without_the_source_rules_the_minimal_builtins_still_refuse(
    attack: str,
    error: str,
    con: duckdb.DuckDBPyConnection,
    dataset: DatasetSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Defence in depth: with the syntax check switched off, the module still has no
    # open, __import__, getattr or eval to call.
    monkeypatch.setattr(_runner, "check_source", lambda source, filename="": _parse(source))
    with pytest.raises(QueryRefused, match=error):
        _run(attack, con, dataset)


def _parse(source: str) -> Any:
    import ast

    return ast.parse(source)


@given(value=st.text(max_size=40))
@example(value="x' OR 1=1 --")
@example(value='Haidian" GROUP BY "resident_id')
@settings(max_examples=60, deadline=None)
def test_a_where_value_is_always_one_literal_never_sql(value: str) -> None:
    # Whatever text a module passes (quotes, comments, "OR 1=1"), the checked plan has
    # exactly one equality on the column it named, with exactly that value.
    from computations._aggregate import AGGREGATE
    from computations._module._facade import _sql

    dataset = DatasetSpec.from_manifest(yaml.safe_load(MANIFEST), name="residents")
    sql = _sql("count", None, ["sex"], {"district": value}, "residents")
    try:
        plan = AGGREGATE.check({"sql": sql}, dataset)
    except QueryRefused as refused:  # e.g. a value that is not one of the declared keys
        assert refused.rule not in ("parse", "where-form", "single-table")
        return
    assert plan.body["group_by"] == ("sex",)
    assert [(p["column"], p["op"], p["value"]) for p in plan.body["where"]] == [
        ("district", "=", value)
    ]


@given(name=st.from_regex(r"_[A-Za-z0-9_]{0,12}", fullmatch=True))
@settings(max_examples=60, deadline=None)
def test_no_underscore_name_or_attribute_passes_the_source_rules(name: str) -> None:
    for source in (
        f"def run(data, params):\n    return {name}\n",
        f"def run(data, params):\n    return data.{name}\n",
        f"def run(data, params):\n    return params.get(1).{name}.count\n",
    ):
        with pytest.raises(QueryRefused, match="module-source"):
            check_module_source(source)
