"""Running an aggregate plan: our own SQL from the plan, then small-group suppression.

The SQL is built as a sqlglot tree from names the plan and dataset spec hold, every
identifier quoted; no text from the request reaches DuckDB. Each group also counts its
distinct privacy units; groups below ``min_group_size`` are dropped before anything leaves
this function, and only their number is reported.
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from computations._aggregate._body import AggregateBody, AggregateOutput, GroupOutput
from computations._dataset import DatasetSpec
from computations._errors import ComputationError
from computations._plan import ComputationResult

# The enclave names the table; it may be qualified (catalog.schema.table) when the dataset
# lives in an attached database file.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62}){0,2}$")
_UNITS = "u"


def build_sql(body: AggregateBody, *, table: str, dataset: DatasetSpec) -> str:
    """The DuckDB query for ``body``: one row per group, columns ``g<i>``, ``a<i>``, ``u``.

    ``u`` is the number of distinct privacy units in the group. Rows are ordered by the
    group columns (nulls last) so results are deterministic.
    Raises :class:`ComputationError` if ``table`` is not a plain (dotted) name.
    """
    if not _TABLE_NAME.fullmatch(table):
        raise ComputationError("the dataset table name must be a plain, optionally dotted name")
    parts = table.split(".")
    source = exp.Table(
        this=_ident(parts[-1]),
        db=_ident(parts[-2]) if len(parts) >= 2 else None,
        catalog=_ident(parts[-3]) if len(parts) == 3 else None,
    )
    projections: list[exp.Expr] = []
    for i, column in enumerate(body.group_by):
        projections.append(exp.alias_(_column(column), f"g{i}", quoted=True))
    for i, out in enumerate(_aggregates(body)):
        projections.append(exp.alias_(_aggregate(out), f"a{i}", quoted=True))
    units = exp.Count(this=exp.Distinct(expressions=[_column(dataset.privacy_unit)]))
    projections.append(exp.alias_(units, _UNITS, quoted=True))
    query = exp.Select(expressions=projections).from_(source)
    if body.group_by:
        query = query.group_by(*(_column(c) for c in body.group_by))
        # Ordinal positions: unambiguous whatever the columns or aliases are called.
        query = query.order_by(
            *(
                exp.Ordered(this=exp.Literal.number(i + 1), nulls_first=False)
                for i in range(len(body.group_by))
            )
        )
    return query.sql(dialect="duckdb")


def run(
    body: AggregateBody, con: duckdb.DuckDBPyConnection, *, table: str, dataset: DatasetSpec
) -> ComputationResult:
    """Run ``body`` on ``con`` and suppress groups smaller than the dataset's minimum."""
    sql = build_sql(body, table=table, dataset=dataset)
    try:
        raw = con.execute(sql).to_arrow_table()
    except duckdb.Error as exc:
        # DuckDB messages can quote values (conversion errors do), so only the kind is kept.
        raise ComputationError(
            f"the aggregate could not run on the dataset table ({type(exc).__name__}); "
            "details are withheld because they may quote values"
        ) from None
    keep = pc.greater_equal(raw.column(_UNITS), dataset.min_group_size)
    kept = raw.filter(pc.fill_null(keep, False))
    suppressed = raw.num_rows - kept.num_rows
    group_index = {column: i for i, column in enumerate(body.group_by)}
    sources: list[str] = []
    aggregate_index = 0
    for out in body.outputs:
        if isinstance(out, GroupOutput):
            sources.append(f"g{group_index[out.column]}")
        else:
            sources.append(f"a{aggregate_index}")
            aggregate_index += 1
    result = kept.select(sources).rename_columns([out.name for out in body.outputs])
    notes: tuple[str, ...] = ()
    if suppressed:
        notes = (
            f"{suppressed} of {raw.num_rows} groups withheld: fewer than "
            f"{dataset.min_group_size} distinct {dataset.privacy_unit}",
        )
    return ComputationResult(table=_plain_schema(result), suppressed_groups=suppressed, notes=notes)


def _aggregates(body: AggregateBody) -> list[AggregateOutput]:
    return [out for out in body.outputs if isinstance(out, AggregateOutput)]


def _aggregate(out: AggregateOutput) -> exp.Expr:
    if out.column is None:
        return exp.Count(this=exp.Star())
    column = _column(out.column)
    if out.function == "count":
        return exp.Count(this=column)
    if out.function == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[column]))
    if out.function == "sum":
        return exp.Sum(this=column)
    return exp.Avg(this=column)


def _column(name: str) -> exp.Column:
    return exp.Column(this=_ident(name))


def _ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def _plain_schema(table: pa.Table) -> pa.Table:
    # DuckDB attaches no metadata today; dropping it keeps result digests about values only.
    return table.replace_schema_metadata(None)
