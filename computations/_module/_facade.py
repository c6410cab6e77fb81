"""The facade a module's ``run(data, params)`` receives: DP aggregates, never rows.

Each method builds one restricted aggregate query, has the ``aggregate`` checker approve
it (every manifest rule holds: dimensions only in GROUP BY and WHERE, bounds, minimum
group size, the columns the proposal declared and the grant allowed), charges a share of
the module's epsilon, and runs it with the aggregate executor (contribution bounding and
OpenDP noise). What comes back is the noisy release as a list of plain dicts, so anything
the module computes from it is post-processing of DP outputs.

Nothing the module can reach holds the connection: the facade's methods call a closure,
and the module's source may name neither ``__closure__`` nor any attribute starting with
``_`` (``_source.py``). Any failure of a release stops the module with an exception it
cannot catch (it derives from :class:`BaseException`, which modules cannot name), and the
run fails even if the module swallowed it in a ``finally``.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb

from computations._aggregate import AGGREGATE
from computations._aggregate import plan_cost as aggregate_cost
from computations._aggregate._execute import privacy_statement
from computations._dataset import DatasetSpec
from computations._errors import ComputationError, QueryRefused

#: Most releases one run may make; the delta reserved is this many thresholded releases.
MAX_RELEASES: Final = 16
#: What a run reports when a release failed on data (docs/security.md, "Error side
#: channels"): never the engine's message.
RELEASE_FAILED: Final = (
    "a release of the module failed while reading the dataset; details are withheld "
    "because they could depend on the data, and the job's budget stays spent"
)
#: Slack for float sums of epsilon shares (budgets are stored in 1e-9 units).
_SLACK: Final = 1e-9


class Stop(BaseException):
    """Ends the module: a release failed. Modules cannot catch it (they can name neither
    ``BaseException`` nor a bare ``except:``); ``error`` is what the run reports."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Ledger:
    """What one run has spent; the budget is the proposal's ``expected_epsilon``."""

    epsilon_budget: float
    delta_budget: float
    epsilon: float = 0.0
    delta: float = 0.0
    releases: list[dict[str, Any]] = field(default_factory=list)
    suppressed_groups: int = 0
    failure: Exception | None = None


@dataclass(frozen=True)
class Source:
    """Where releases come from: the locked connection and the dataset, in the enclave."""

    con: duckdb.DuckDBPyConnection
    table: str
    dataset: DatasetSpec
    unit_unique: bool
    columns: frozenset[str]
    obligations: Mapping[str, str]


def make_facade(source: Source, spent: Ledger) -> Any:
    """The ``data`` object handed to the module's ``run``."""

    def release(kind: str, column: str | None, by: Any, where: Any, epsilon: Any) -> Any:
        if spent.failure is not None:  # no release after a failed one (see run_module)
            raise Stop(spent.failure)
        try:
            return _release(source, spent, kind, column, by, where, epsilon)
        except ComputationError as exc:
            spent.failure = spent.failure or exc
            raise Stop(exc) from None
        except Exception:  # an engine or library error: its kind can depend on a row
            failed = ComputationError(RELEASE_FAILED)
            spent.failure = spent.failure or failed
            raise Stop(failed) from None

    class Data:
        """DP aggregates of the dataset (see ``computations/_module/_facade.py``)."""

        __slots__ = ()

        def count(self, by: Any = (), where: Any = None, epsilon: Any = None) -> Any:
            """Noisy number of rows per group of ``by``, filtered by ``where``."""
            return release("count", None, by, where, epsilon)

        def sum(self, column: Any, by: Any = (), where: Any = None, epsilon: Any = None) -> Any:
            """Noisy sum of ``column`` (clamped to its bounds) per group."""
            return release("sum", column, by, where, epsilon)

        def mean(self, column: Any, by: Any = (), where: Any = None, epsilon: Any = None) -> Any:
            """Noisy mean of ``column`` (clamped to its bounds) per group."""
            return release("mean", column, by, where, epsilon)

        def __repr__(self) -> str:
            return "<data: count, sum, mean>"

    return Data()


_FUNCTIONS: Final = {"count": "COUNT(*)", "sum": 'SUM("{}")', "mean": 'AVG("{}")'}


def _release(
    source: Source,
    spent: Ledger,
    kind: str,
    column: str | None,
    by: Any,
    where: Any,
    epsilon: Any,
) -> list[dict[str, Any]]:
    groups = _names(by, "by")
    filters = _filters(where)
    used = {*groups, *filters, *([column] if column is not None else [])}
    if column is not None and not isinstance(column, str):
        raise QueryRefused("module-call", f"data.{kind}: the column is a string")
    undeclared = sorted(used - source.columns)
    if undeclared:
        raise QueryRefused(
            "module-columns",
            f"data.{kind} reads {', '.join(undeclared)}, which the approved proposal does "
            f"not declare (declared: {', '.join(sorted(source.columns))})",
        )
    if len(spent.releases) >= MAX_RELEASES:
        raise QueryRefused("module-budget", f"a module makes at most {MAX_RELEASES} releases")
    share = _share(spent, epsilon, kind)
    sql = _sql(kind, column, groups, filters, source.table)
    obligations = dict(source.obligations)
    cap = float(obligations.get("epsilon_per_job", share))
    obligations["epsilon_per_job"] = repr(min(share, cap))
    plan = AGGREGATE.check({"sql": sql}, source.dataset, obligations=obligations)
    cost_epsilon, cost_delta = aggregate_cost(plan)
    if spent.epsilon + cost_epsilon > spent.epsilon_budget + _SLACK:
        raise _exhausted(spent, kind, cost_epsilon)
    if spent.delta + cost_delta > spent.delta_budget + _SLACK:
        raise QueryRefused("module-budget", f"data.{kind}: the module's delta is spent")
    spent.epsilon += cost_epsilon
    spent.delta += cost_delta  # charged before it runs: a failure may depend on the data
    result = AGGREGATE.execute(
        plan,
        source.con,
        table=source.table,
        dataset=source.dataset,
        unit_unique=source.unit_unique,
    )
    spent.suppressed_groups += result.suppressed_groups
    spent.releases.append({"query": sql, **(privacy_statement(result.table) or {})})
    return [{key: _plain(value) for key, value in row.items()} for row in result.table.to_pylist()]


def _plain(value: Any) -> Any:
    """A release's value as a plain number or string (a module sees no other objects)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _share(spent: Ledger, epsilon: Any, kind: str) -> float:
    left = spent.epsilon_budget - spent.epsilon
    if epsilon is None:
        if left <= _SLACK:
            raise _exhausted(spent, kind, 0.0)
        return left
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise QueryRefused("module-call", f"data.{kind}: epsilon is a number")
    share = float(epsilon)
    if not math.isfinite(share) or share <= 0:
        raise QueryRefused("module-call", f"data.{kind}: epsilon must be positive")
    if share > left + _SLACK:
        raise _exhausted(spent, kind, share)
    return share


def _exhausted(spent: Ledger, kind: str, wanted: float) -> QueryRefused:
    need = f"needs epsilon {wanted:g}, but" if wanted > 0 else "has no epsilon left:"
    return QueryRefused(
        "module-budget",
        f"data.{kind} {need} {spent.epsilon:g} of the module's {spent.epsilon_budget:g} is "
        "spent (pass a smaller epsilon= to each call, or propose a larger expected_epsilon); "
        "the job's reserved budget stays spent",
    )


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise QueryRefused("module-call", f"{what} is a list of column names")
    return list(value)


def _filters(where: Any) -> dict[str, Any]:
    if where is None:
        return {}
    if not isinstance(where, Mapping) or not all(isinstance(k, str) for k in where):
        raise QueryRefused("module-call", "where maps column names to the value they equal")
    for value in where.values():
        if isinstance(value, float) and not math.isfinite(value):
            raise QueryRefused("module-call", "where values are finite")
        if not isinstance(value, str | int | float | bool):
            raise QueryRefused("module-call", "where values are strings, numbers or booleans")
    return dict(where)


def _sql(
    kind: str, column: str | None, groups: list[str], filters: dict[str, Any], table: str
) -> str:
    """The restricted aggregate query of one facade call (the checker decides on it)."""
    keys = [_ident(g) for g in groups]
    measure = _FUNCTIONS[kind].format(column.replace('"', '""') if column else "")
    select = ", ".join([*keys, f'{measure} AS "{kind}"'])
    sql = f"SELECT {select} FROM {_ident(table)}"
    if filters:
        sql += " WHERE " + " AND ".join(f"{_ident(k)} = {_literal(v)}" for k, v in filters.items())
    if keys:
        sql += " GROUP BY " + ", ".join(keys)
    return sql


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
