"""Our own SQL for an aggregate plan, built as a sqlglot tree; no request text reaches DuckDB.

Two shapes:

- :func:`bounded_sql` (differential privacy) follows Wilson et al., "Differentially Private
  SQL with Bounded User Contribution" (PoPETs 2020): rows are pre-aggregated per privacy
  unit and group; each unit's row count is capped at ``R`` (``max_rows_per_unit``), each
  value clamped to the manifest's bounds and each per-unit sum to ``[n*low, n*high]``
  (``n`` the unit's capped count); then each unit keeps at most ``G``
  (``max_groups_per_unit``) groups, chosen by a hash of unit and key, not by value.
  All sums are exact integers (values scaled by ``10**decimals``).
- :func:`exact_sql` (threshold-only) gives DuckDB's exact aggregates, the number of
  distinct units per group, and for each summed column the largest share one unit holds
  (for the dominance rule).

WHERE comparisons never raise on data: strings compare against ``CAST(col AS VARCHAR)``,
numbers and booleans against ``TRY_CAST`` (NULL, so the row is dropped, when a value does
not convert). An error that depended on a row would be a side channel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp

from computations._aggregate._body import AggregateBody, AggregateOutput, Predicate
from computations._aggregate._clamp import scaled as _scaled
from computations._aggregate._codes import code_column as _code_column
from computations._aggregate._codes import decoded as _decoded
from computations._aggregate._codes import usable as _usable_codes
from computations._aggregate._nodes import column as _column
from computations._aggregate._nodes import greatest as _greatest
from computations._aggregate._nodes import ident as _ident
from computations._aggregate._nodes import least_of as _least_of
from computations._aggregate._nodes import number as _n
from computations._aggregate._nodes import qualified as _qualified
from computations._aggregate._nodes import scaled_bounds as _scaled_bounds
from computations._dataset import DatasetSpec
from computations._errors import ComputationError

# The enclave names the table; it may be qualified (catalog.schema.table) when the dataset
# lives in an attached database file.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62}){0,2}$")
UNITS = "u"


@dataclass(frozen=True)
class Measure:
    """One exact quantity per group: ``rows`` (COUNT(*)), ``count``/``sum`` of a column, or
    ``units`` (distinct privacy units: COUNT(DISTINCT unit), and the basis of thresholds)."""

    kind: str
    column: str | None = None

    @property
    def alias(self) -> str:
        return f"m_{self.kind}" + (f"_{self.column}" if self.column else "")


def measures(body: AggregateBody) -> list[Measure]:
    """The distinct measures the outputs need, ``units`` first (AVG needs sum and count)."""
    found: list[Measure] = [Measure("units")]
    for out in body.outputs:
        if not isinstance(out, AggregateOutput):
            continue
        if out.column is None:
            needed = [Measure("rows")]
        elif out.function == "count_distinct":
            needed = [Measure("units")]
        elif out.function == "count":
            needed = [Measure("count", out.column)]
        elif out.function == "sum":
            needed = [Measure("sum", out.column)]
        elif out.function == "quantile":
            needed = [Measure("values", out.column)]
        else:
            needed = [Measure("sum", out.column), Measure("count", out.column)]
        for measure in needed:
            if measure not in found:
                found.append(measure)
    return found


def bounded_sql(
    body: AggregateBody,
    *,
    table: str | exp.Expr,
    dataset: DatasetSpec,
    unit_unique: bool = False,
    unit_complete: bool = False,
    integer_columns: frozenset[str] = frozenset(),
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    clamped: Mapping[str, tuple[int, int]] | None = None,
    coded: Mapping[str, Mapping[str, object]] | None = None,
) -> str:
    """Per-unit bounded exact sums: columns ``g<i>``, then each measure's alias.

    ``unit_unique`` (the enclave measured at import that no privacy unit has two rows) skips
    the per-unit pre-aggregation: with one row per unit, every row is already within the
    bounds it would enforce (one row, one group, each value clamped). It also skips the
    filter on public keys: a row outside them forms a group of its own, which the release
    drops before noise (``_execute._all_public_keys``), and with one row and one group per
    unit no other group's contribution depends on it.
    ``unit_complete`` (measured at import: no row lacks a privacy unit) leaves out the
    filter on a missing unit, which would drop nothing; with ``unit_unique`` the unit
    column is then not read at all (about 45% of the blocks a 10M-row GROUP BY of the
    demo data reads).
    ``integer_columns`` are stored as integers (the table's own types): those with integer
    bounds and no decimals are clamped as integers, without a round trip through DOUBLE;
    and only on the sides ``value_ranges`` (each column's smallest and largest value,
    measured at import) shows some value crossing: elsewhere the clamp is the identity
    (the whole clamp was about 15% of the query's CPU time on the 10M-row bench).
    ``clamped`` (written at import, :func:`stored_clamps`): columns whose clamped copy the
    table holds, each with the bounds it was clamped to. A copy clamped to exactly the
    bounds the integer clamp would use is read instead of clamping row by row; any other
    (a manifest whose bounds differ from the import's) is ignored.
    ``coded`` (written at import, ``_codes.stored_codes``): columns whose key codes the
    table holds, each with its type and the keys it coded. With public keys, a group
    column whose codes were made from the manifest's current keys is grouped by its code
    and mapped back to its key at the end (``_codes.py``).
    """
    rules = dataset.privacy
    rows_cap, groups_cap = rules.max_rows_per_unit, rules.max_groups_per_unit
    wanted = measures(body)
    codes = {} if body.needs_threshold(dataset) else _usable_codes(coded, dataset, body.group_by)
    groups = [
        exp.alias_(_group_value(c, dataset, codes), f"g{i}", quoted=True)
        for i, c in enumerate(body.group_by)
    ]
    keys = [_column(f"g{i}") for i in range(len(body.group_by))]
    unit = exp.alias_(_column(dataset.privacy_unit), "__u", quoted=True)
    values: list[exp.Expr] = []
    numeric = {m.column for m in wanted if m.kind in ("sum", "count", "values") and m.column}
    for column in sorted(numeric):
        scaled = _scaled(
            column,
            dataset,
            integer=column in integer_columns,
            measured=(value_ranges or {}).get(column),
            stored=(clamped or {}).get(column),
        )
        values.append(exp.alias_(scaled, f"v_{column}", quoted=True))
    where = [*_predicates(body.where)]
    if not unit_unique:
        where += _public_keys(body, dataset, codes)
    if not unit_complete:
        unit_known = exp.Is(this=_column(dataset.privacy_unit), expression=exp.Null())
        where.append(exp.Not(this=unit_known))
    filtered = exp.Select(expressions=[unit, *groups, *values]).from_(_source(table))
    if where:
        filtered = filtered.where(exp.and_(*where))
    if unit_unique:
        return _decode(_one_row_per_unit(body, wanted, filtered, keys), body, dataset, codes)

    per_unit: list[exp.Expr] = [_column("__u"), *keys]
    for m in wanted:
        if m.kind == "rows":
            per_unit.append(exp.alias_(_least(exp.Count(this=exp.Star()), rows_cap), m.alias))
        elif m.kind == "count":
            capped = _least(exp.Count(this=_column(f"v_{m.column}")), rows_cap)
            per_unit.append(exp.alias_(capped, m.alias, quoted=True))
        elif m.kind == "values":
            # At most R clamped values per unit and group, for a DP quantile.
            value = _column(f"v_{m.column}")
            listed = exp.Filter(
                this=exp.Anonymous(this="list", expressions=[value]),
                expression=exp.Where(
                    this=exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))
                ),
            )
            capped_list = exp.Anonymous(
                this="list_slice", expressions=[listed, _n(1), _n(rows_cap)]
            )
            per_unit.append(exp.alias_(capped_list, m.alias, quoted=True))
        elif m.kind == "sum":
            count = _least(exp.Count(this=_column(f"v_{m.column}")), rows_cap)
            spec = dataset.column(m.column or "")
            if spec is None or spec.bounds is None:
                raise ComputationError(f"SUM of {m.column!r} needs declared bounds")
            low, high = _scaled_bounds(spec.bounds, spec.decimals)
            total = exp.Coalesce(this=exp.Sum(this=_column(f"v_{m.column}")), expressions=[_n(0)])
            unit_sum = _greatest(
                _least_of(total, exp.Mul(this=count, expression=_n(high))),
                exp.Mul(this=count.copy(), expression=_n(low)),
            )
            per_unit.append(exp.alias_(unit_sum, m.alias, quoted=True))
    pre = exp.Select(expressions=per_unit).from_("f").group_by(_column("__u"), *keys)
    order = exp.Anonymous(this="hash", expressions=[_column("__u"), *keys])
    columns = [f"g{i}" for i in range(len(keys))] + [m.alias for m in wanted if m.kind != "units"]
    if not keys:
        # No GROUP BY: ``p`` already holds one row per unit.
        bounded = exp.Select(expressions=[exp.Star()]).from_("p")
    elif groups_cap == 1:
        # One group per unit: ARG_MIN keeps exactly one row per unit (ties included), and
        # is several times faster than a window over every unit.
        packed = exp.Anonymous(
            this="struct_pack",
            expressions=[exp.PropertyEQ(this=_ident(c), expression=_column(c)) for c in columns],
        )
        chosen = exp.Anonymous(this="arg_min", expressions=[packed, order])
        kept = exp.Select(expressions=[exp.alias_(chosen, "__s", quoted=True)]).from_("p")
        kept = kept.group_by(_column("__u"))
        bounded = exp.Select(
            expressions=[exp.Anonymous(this="unnest", expressions=[_column("__s")])]
        ).from_("k")
        bounded = bounded.with_("k", as_=kept)
    else:
        rank = exp.Window(
            this=exp.RowNumber(),
            partition_by=[_column("__u")],
            order=exp.Order(expressions=[exp.Ordered(this=order)]),
        )
        ranked = exp.Select(expressions=[exp.Star(), exp.alias_(rank, "__r", quoted=True)])
        bounded = exp.Select(expressions=[_column(c) for c in columns]).from_("r")
        bounded = bounded.where(exp.LTE(this=_column("__r"), expression=_n(groups_cap)))
        bounded = bounded.with_("r", as_=ranked.from_("p"))

    final: list[exp.Expr] = list(keys)
    for m in wanted:
        if m.kind == "units":
            final.append(exp.alias_(exp.Count(this=exp.Star()), m.alias, quoted=True))
        elif m.kind == "values":
            gathered = exp.Anonymous(
                this="flatten",
                expressions=[exp.Anonymous(this="list", expressions=[_column(m.alias)])],
            )
            final.append(exp.alias_(gathered, m.alias, quoted=True))
        else:
            final.append(exp.alias_(exp.Sum(this=_column(m.alias)), m.alias, quoted=True))
    query = (
        exp.Select(expressions=final)
        .from_("t")
        .with_("f", as_=filtered)
        .with_("p", as_=pre)
        .with_("t", as_=bounded)
    )
    if keys:
        query = query.group_by(*keys)
    return _decode(query, body, dataset, codes)


def _group_value(column: str, dataset: DatasetSpec, codes: Mapping[str, str]) -> exp.Expr:
    spec = dataset.column(column)
    if spec is not None and spec.name in codes:
        return _code_column(spec.name)
    return _column(column)


def _decode(
    query: exp.Select, body: AggregateBody, dataset: DatasetSpec, codes: Mapping[str, str]
) -> str:
    """``query`` ordered by its group columns, each coded one mapped back to its key."""
    n = len(body.group_by)
    if not codes or not n:
        if n:
            query = query.order_by(*_ordinals(n))
        return query.sql(dialect="duckdb")
    outputs: list[exp.Expr] = []
    for i, name in enumerate(body.group_by):
        spec = dataset.column(name)
        value: exp.Expr = _column(f"g{i}")
        if spec is not None and spec.keys is not None and spec.name in codes:
            value = exp.alias_(_decoded(value, spec.keys, codes[spec.name]), f"g{i}", quoted=True)
        outputs.append(value)
    outputs += [_column(str(e.alias_or_name)) for e in query.expressions[n:]]
    outer = exp.Select(expressions=outputs).from_(query.subquery("c"))
    return outer.order_by(*_ordinals(n)).sql(dialect="duckdb")


def _one_row_per_unit(
    body: AggregateBody, wanted: list[Measure], filtered: exp.Select, keys: list[exp.Column]
) -> exp.Select:
    final: list[exp.Expr] = list(keys)
    for m in wanted:
        value = _column(f"v_{m.column}") if m.column else None
        node: exp.Expr
        if m.kind in ("units", "rows"):
            node = exp.Count(this=exp.Star())
        elif m.kind == "count":
            node = exp.Count(this=value)
        elif m.kind == "sum":
            node = exp.Coalesce(this=exp.Sum(this=value), expressions=[_n(0)])
        else:
            assert value is not None
            node = exp.Filter(
                this=exp.Anonymous(this="list", expressions=[value]),
                expression=exp.Where(
                    this=exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null()))
                ),
            )
        final.append(exp.alias_(node, m.alias, quoted=True))
    query = exp.Select(expressions=final).from_("f").with_("f", as_=filtered)
    if keys:
        query = query.group_by(*keys)
    return query


def exact_sql(body: AggregateBody, *, table: str | exp.Expr, dataset: DatasetSpec) -> str:
    """Exact aggregates: ``g<i>``, ``a<i>`` per aggregate output, ``u``, and for each summed
    column ``d_<col>``, the largest share of its absolute sum held by one unit."""
    groups = [exp.alias_(_column(c), f"g{i}", quoted=True) for i, c in enumerate(body.group_by)]
    keys = [_column(f"g{i}") for i in range(len(body.group_by))]
    where = _predicates(body.where)
    projections: list[exp.Expr] = list(groups)
    aggregates = [out for out in body.outputs if isinstance(out, AggregateOutput)]
    for i, out in enumerate(aggregates):
        projections.append(exp.alias_(_aggregate(out), f"a{i}", quoted=True))
    units = exp.Count(this=exp.Distinct(expressions=[_column(dataset.privacy_unit)]))
    projections.append(exp.alias_(units, UNITS, quoted=True))
    main = exp.Select(expressions=projections).from_(_source(table))
    if where:
        main = main.where(exp.and_(*where))
    if keys:
        main = main.group_by(*(_column(c) for c in body.group_by))
    summed = sorted(
        {o.column for o in aggregates if o.function in ("sum", "avg") and o.column is not None}
    )
    if not summed:
        query = exp.Select(expressions=[exp.Star()]).from_("a").with_("a", as_=main)
    else:
        per_unit = exp.Select(
            expressions=[
                *groups,
                *(
                    exp.alias_(exp.Abs(this=exp.Sum(this=_column(c))), f"s_{c}", quoted=True)
                    for c in summed
                ),
            ]
        ).from_(_source(table))
        if where:
            per_unit = per_unit.where(exp.and_(*(w.copy() for w in where)))
        per_unit = per_unit.group_by(
            *(_column(c) for c in body.group_by), _column(dataset.privacy_unit)
        )
        shares = [
            exp.alias_(
                exp.Div(
                    this=exp.Max(this=_column(f"s_{c}")),
                    expression=exp.Nullif(this=exp.Sum(this=_column(f"s_{c}")), expression=_n(0)),
                ),
                f"d_{c}",
                quoted=True,
            )
            for c in summed
        ]
        dominance = exp.Select(expressions=[*keys, *shares]).from_("p")
        if keys:
            dominance = dominance.group_by(*keys)
        joined = exp.Select(
            expressions=[
                exp.Column(this=exp.Star(), table=_ident("a")),
                *(_qualified("b", f"d_{c}") for c in summed),
            ]
        ).from_("a")
        on = [
            exp.NullSafeEQ(this=_qualified("a", f"g{i}"), expression=_qualified("b", f"g{i}"))
            for i in range(len(keys))
        ]
        joined = joined.join("b", on=exp.and_(*on)) if on else joined.join("b", join_type="cross")
        query = joined.with_("a", as_=main).with_("p", as_=per_unit).with_("b", as_=dominance)
    if keys:
        query = query.order_by(*_ordinals(len(keys)))
    return query.sql(dialect="duckdb")


def schema_sql(table: str | exp.Expr) -> str:
    """A query that reads no row of ``table`` but describes its columns."""
    return exp.Select(expressions=[exp.Star()]).from_(_source(table)).limit(0).sql("duckdb")


def _source(table: str | exp.Expr) -> exp.Expr:
    if isinstance(table, exp.Expr):  # the joined rows (_join.join_source), built by us
        return table.copy()
    if not _TABLE_NAME.fullmatch(table):
        raise ComputationError("the dataset table name must be a plain, optionally dotted name")
    parts = table.split(".")
    return exp.Table(
        this=_ident(parts[-1]),
        db=_ident(parts[-2]) if len(parts) >= 2 else None,
        catalog=_ident(parts[-3]) if len(parts) == 3 else None,
    )


def _predicates(where: tuple[Predicate, ...]) -> list[exp.Expr]:
    out: list[exp.Expr] = []
    for pred in where:
        value = pred.value
        column: exp.Expr
        literal: exp.Expr
        if isinstance(value, bool):
            column = exp.TryCast(this=_column(pred.column), to=exp.DataType.build("BOOLEAN"))
            literal = exp.Boolean(this=value)
        elif isinstance(value, str):
            column = exp.Cast(this=_column(pred.column), to=exp.DataType.build("VARCHAR"))
            literal = exp.Literal.string(value)
        else:
            column = exp.TryCast(this=_column(pred.column), to=exp.DataType.build("DOUBLE"))
            literal = _n(value)
        node = {
            "=": exp.EQ,
            "<>": exp.NEQ,
            "<": exp.LT,
            "<=": exp.LTE,
            ">": exp.GT,
            ">=": exp.GTE,
        }[pred.op]
        out.append(node(this=column, expression=literal))
    return out


def _public_keys(
    body: AggregateBody, dataset: DatasetSpec, codes: Mapping[str, str]
) -> list[exp.Expr]:
    """Rows whose group value is outside a declared public key set never count."""
    out: list[exp.Expr] = []
    for column in body.group_by:
        spec = dataset.column(column)
        if spec is None or spec.keys is None:
            continue
        if spec.name in codes:  # the code is NULL exactly outside the keys
            out.append(exp.Not(this=exp.Is(this=_code_column(spec.name), expression=exp.Null())))
            continue
        # Compared like a WHERE predicate (TRY_CAST / CAST AS VARCHAR), so keys of another
        # type than the column never make the query raise on some row: a failure that
        # depended on one row's value would tell whether it passed the job's WHERE.
        by_type: dict[str, list[exp.Expr]] = {}
        for key in spec.keys:
            if isinstance(key, bool):
                by_type.setdefault("BOOLEAN", []).append(exp.Boolean(this=key))
            elif isinstance(key, str):
                by_type.setdefault("VARCHAR", []).append(exp.Literal.string(key))
            else:
                by_type.setdefault("DOUBLE", []).append(_n(key))
        tests: list[exp.Expr] = []
        for type_name, literals in by_type.items():
            cast = exp.Cast if type_name == "VARCHAR" else exp.TryCast
            value = cast(this=_column(column), to=exp.DataType.build(type_name))
            tests.append(exp.In(this=value, expressions=literals))
        out.append(exp.or_(*tests) if len(tests) > 1 else tests[0])
    return out


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
    if out.function == "quantile":
        raise ComputationError("an exact quantile is never released")
    return exp.Avg(this=column)


def _least(node: exp.Expr, cap: int) -> exp.Expr:
    return _least_of(node, _n(cap))


def _ordinals(n: int) -> list[exp.Ordered]:
    # Ordinal positions: unambiguous whatever the columns or aliases are called.
    return [exp.Ordered(this=exp.Literal.number(i + 1), nulls_first=False) for i in range(n)]
