"""``aggregate``: a restricted SQL aggregate with minimum-group-size suppression.

Describe, check, then execute: the parameters are one SQL query; :meth:`Aggregate.check`
turns it into a plan holding the validated structure (group columns, aggregates) or
refuses it; :meth:`Aggregate.execute` runs our own SQL for that plan inside the enclave.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Final

import duckdb

from computations._aggregate._body import AggregateBody
from computations._aggregate._check import check_sql
from computations._aggregate._execute import run
from computations._computation import (
    CORE_SOURCES,
    PACKAGE_ROOT,
    package_sources,
    source_digest,
)
from computations._dataset import DatasetSpec
from computations._errors import ComputationError, QueryRefused
from computations._plan import ComputationResult, Plan, params_digest

#: Longest query accepted; enough for any aggregate, short of a parser stress test.
MAX_SQL_LENGTH: Final = 10_000

_PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "aggregate parameters",
    "type": "object",
    "additionalProperties": False,
    "required": ["sql"],
    "properties": {
        "sql": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SQL_LENGTH,
            "description": (
                "One DuckDB SELECT over the dataset's table: GROUP BY dimension columns, "
                "and COUNT(*), COUNT(col), COUNT(DISTINCT privacy_unit), SUM(col), AVG(col), "
                "optionally aliased. No WHERE, HAVING, ORDER BY, LIMIT, joins or subqueries."
            ),
        }
    },
}


class Aggregate:
    """The ``aggregate`` computation (see the module docstring)."""

    name: Final = "aggregate"
    description: Final = (
        "Counts, sums and averages per group of dimension columns, written as one restricted "
        "SQL SELECT. Groups with fewer distinct privacy units than the dataset's minimum "
        "group size are withheld, and their number is reported."
    )

    @cached_property
    def code_hash(self) -> str:
        """``"sha256:"`` + digest of this package and the shared core it runs on."""
        return source_digest(PACKAGE_ROOT, (*package_sources("_aggregate"), *CORE_SOURCES))

    @property
    def params_schema(self) -> dict[str, Any]:
        """JSON Schema of the parameters: ``{"sql": "<query>"}`` and nothing else."""
        return copy.deepcopy(_PARAMS_SCHEMA)

    def check(self, params: Mapping[str, Any], dataset: DatasetSpec) -> Plan:
        """Approve ``params["sql"]`` for ``dataset`` as a plan.

        Raises :class:`QueryRefused` (rule ``params`` for wrong parameters, otherwise the
        SQL rule broken) and :class:`ComputationError` for anything else wrong.
        """
        sql = _sql_param(params)
        body = check_sql(sql, dataset)
        return Plan(
            computation=self.name,
            dataset=dataset.name,
            params_digest=params_digest({"sql": sql}),
            body=body.to_json(),
        )

    def execute(
        self,
        plan: Plan,
        con: duckdb.DuckDBPyConnection,
        *,
        table: str,
        dataset: DatasetSpec,
    ) -> ComputationResult:
        """Run ``plan`` on ``con`` against ``table`` (the dataset's table in DuckDB).

        The plan body is validated again against ``dataset``; the connection is only read.
        Raises :class:`ComputationError` for a plan of another computation or dataset, a
        malformed body, or a query DuckDB cannot run (its message is withheld).
        """
        if plan.computation != self.name:
            raise ComputationError(f"plan is for {plan.computation!r}, not {self.name!r}")
        if plan.dataset != dataset.name:
            raise ComputationError(f"plan is for dataset {plan.dataset!r}, not {dataset.name!r}")
        body = AggregateBody.from_json(plan.body)
        body.validate(dataset)
        return run(body, con, table=table, dataset=dataset)


def _sql_param(params: Mapping[str, Any]) -> str:
    if not isinstance(params, Mapping):
        raise QueryRefused("params", "parameters must be an object with one key, sql")
    extra = sorted(str(key) for key in params if key != "sql")
    if extra:
        raise QueryRefused("params", "the only parameter is sql", ", ".join(extra))
    sql = params.get("sql")
    if not isinstance(sql, str):
        raise QueryRefused("params", "sql must be a string")
    if len(sql) > MAX_SQL_LENGTH:
        raise QueryRefused("params", f"sql is longer than {MAX_SQL_LENGTH} characters")
    if not sql.strip():
        raise QueryRefused("params", "sql is empty")
    return sql


AGGREGATE: Final = Aggregate()
