"""The aggregate checker: a restricted SQL aggregate becomes an :class:`AggregateBody`.

The checker is an allowlist over sqlglot's tree. Every node it accepts is checked for the
arguments it may carry; any argument it does not know is refused, so new sqlglot syntax
fails closed. Checks run from the outside in (statement, clauses, FROM, select list,
GROUP BY) so that a refusal names the first rule a reader would look at.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

import sqlglot
from sqlglot import exp

from computations._aggregate._body import (
    MAX_PUBLIC_GROUPS,
    OUTPUT_NAME,
    AggregateBody,
    AggregateOutput,
    Function,
    GroupOutput,
    Operator,
    Output,
    Predicate,
    Privacy,
)
from computations._aggregate._join import bare, declared_join, joined_spec, qualified
from computations._dataset import ColumnClass, ColumnSpec, DatasetSpec, JoinSpec
from computations._errors import ComputationError, QueryRefused
from indomain.errors import InternalError

#: Every rule the checker refuses with. The ids are stable: responses and ledger entries
#: carry them, and tests/computations/test_aggregate_refusals.py shows each one.
RULES = frozenset(
    {
        "params", "parse", "single-statement", "select-only", "no-set-operation", "no-cte",
        "no-subquery", "no-window", "no-distinct", "no-join", "where-form", "where-column",
        "where-constant", "unbounded-column", "no-exact-quantile", "quantile-level",
        "too-many-groups", "no-having",
        "no-qualify", "no-order-by", "no-limit", "no-sample", "unsupported-clause",
        "single-table", "table-function", "file-path", "select-star", "select-item",
        "aggregate-function", "aggregate-argument", "aggregate-distinct", "aggregate-required",
        "identifier-column", "bare-column", "group-by-column", "group-by-dimension",
        "unknown-column", "qualified-column", "alias", "duplicate-name",
        "single-join", "join-form", "join-partner", "join-key", "join-column", "join-privacy",
    }
)  # fmt: skip

#: The only functions a query may call.
ALLOWED_FUNCTIONS = "only COUNT, SUM, AVG, MEDIAN and QUANTILE_CONT are allowed"
_AGGREGATES = (exp.Count, exp.Sum, exp.Avg)
_QUANTILES = (exp.Median, exp.PercentileCont, exp.PercentileDisc, exp.Quantile)

# Select clauses that are refused, each with its own rule so the refusal says what to drop.
_CLAUSE_RULES: dict[str, tuple[str, str]] = {
    "distinct": ("no-distinct", "SELECT DISTINCT is not allowed"),
    "joins": ("no-join", "joins are not allowed; query one table"),
    "laterals": ("no-join", "LATERAL is not allowed; query one table"),
    "having": ("no-having", "HAVING is not allowed; small groups are suppressed for you"),
    "qualify": ("no-qualify", "QUALIFY is not allowed"),
    "windows": ("no-window", "window definitions are not allowed"),
    "order": ("no-order-by", "ORDER BY is not allowed; rows come ordered by the group columns"),
    "limit": ("no-limit", "LIMIT is not allowed"),
    "offset": ("no-limit", "OFFSET is not allowed"),
    "sample": ("no-sample", "SAMPLE is not allowed"),
}
_SELECT_ARGS = frozenset({"expressions", "from_", "group", "where"})
_WHERE_FORM = (
    "WHERE takes comparisons (=, <>, <, <=, >, >=) of dimension columns with literals, "
    "joined by AND"
)
_COMPARISONS: dict[type[exp.Expr], Operator] = {
    exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">=",
}  # fmt: skip
_FLIPPED: dict[Operator, Operator] = {
    "=": "=",
    "<>": "<>",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
}
# Characters that make DuckDB read a quoted table name as a file (replacement scans).
_PATH_CHARS = frozenset("/\\.:*~")


def check_sql(
    sql: str,
    dataset: DatasetSpec,
    privacy: Privacy,
    *,
    partners: Mapping[str, DatasetSpec] | None = None,
) -> AggregateBody:
    """Check ``sql`` against the aggregate rules for ``dataset``, released under ``privacy``.

    ``partners`` are the specs of datasets the manifest declares joins to; a query may
    join one of them (``privacy`` must then be that of :func:`target_spec`'s joined spec).
    Returns the validated body, its WHERE in canonical form (each comparison written
    column-first, duplicates and true constants dropped, sorted), so equivalent queries
    give equal bodies. Raises :class:`QueryRefused` naming the rule broken.
    """
    select = _single_select(sql)
    join: JoinSpec | None = None
    if _is_set(select.args.get("joins")):
        select, join, dataset = _resolve_join(select, dataset, partners or {})
    _check_clauses(select)
    _check_from(select, dataset)
    outputs = [_select_item(item, dataset) for item in select.expressions]
    group_by = _group_by(select, dataset)
    where = _where(select, dataset)
    body = _assemble(outputs, group_by, where, privacy, dataset)
    if join is not None:
        body = dataclasses.replace(body, join=join)
    groups = body.public_groups(dataset)
    if groups is not None and groups > MAX_PUBLIC_GROUPS:
        raise QueryRefused(
            "too-many-groups",
            f"the declared keys of these columns give {groups} groups; at most "
            f"{MAX_PUBLIC_GROUPS} are released",
            ", ".join(group_by),
        )
    try:
        body.validate(dataset)
    except ComputationError as exc:  # the checker above must have refused already
        raise InternalError(f"checker approved an invalid aggregate: {exc}") from exc
    return body


def target_spec(
    sql: str, dataset: DatasetSpec, partners: Mapping[str, DatasetSpec] | None = None
) -> DatasetSpec:
    """The spec ``sql`` reads: ``dataset``, or its joined spec if it joins a partner.

    Raises :class:`QueryRefused` as :func:`check_sql` would for the statement or the join.
    """
    select = _single_select(sql)
    if not _is_set(select.args.get("joins")):
        return dataset
    return _resolve_join(select, dataset, partners or {})[2]


_JOIN_FORM = "only one INNER JOIN of a declared partner ON the declared keys is allowed"


def _resolve_join(
    select: exp.Select, dataset: DatasetSpec, partners: Mapping[str, DatasetSpec]
) -> tuple[exp.Select, JoinSpec, DatasetSpec]:
    """Check the join of ``select`` and return it without one: a copy whose FROM is the
    job's table alone and whose columns carry their joined-spec names (``_join.py``)."""
    joins = select.args["joins"]
    if not dataset.joins:
        raise QueryRefused(
            "no-join",
            f"joins are not allowed: the manifest of {dataset.name} declares none; query one table",
            _sql(joins),
        )
    if len(joins) > 1:
        raise QueryRefused("single-join", "at most one join is allowed", _sql(joins[1]))
    node = joins[0]
    if not isinstance(node, exp.Join):
        raise QueryRefused("join-form", _JOIN_FORM, _sql(node))
    kind = str(node.args.get("kind") or "").upper()
    if kind not in ("", "INNER") or _any_set_but(node, "this", "on", "kind"):
        raise QueryRefused(
            "join-form", _JOIN_FORM + " (no USING, NATURAL, OUTER, CROSS)", _sql(node)
        )
    if not _is_set(node.args.get("on")):
        raise QueryRefused("join-form", _JOIN_FORM + "; the join needs ON", _sql(node))
    partner_name, partner_alias = _join_table(node.this, "join-partner")
    from_ = select.args.get("from_")
    if not isinstance(from_, exp.From) or not isinstance(from_.this, exp.Table):
        raise QueryRefused("single-table", f"the query must read FROM {dataset.name}", _sql(select))
    left_name, left_alias = _join_table(from_.this, "single-table")
    if left_name != dataset.name:
        raise QueryRefused(
            "single-table", f"the query must read FROM {dataset.name}", _sql(from_.this)
        )
    join = declared_join(dataset, partner_name)
    partner = partners.get(partner_name)
    if partner is None:
        raise QueryRefused(
            "join-partner", f"dataset {partner_name} is not available to join", partner_name
        )
    spec = joined_spec(dataset, partner)
    names = {left_alias: dataset.name, partner_alias: partner_name}
    if len(names) != 2:
        raise QueryRefused("join-form", "the two tables need distinct names", _sql(node))
    on = node.args["on"]
    wanted = f"{dataset.name}.{join.key} = {partner_name}.{join.other_key}"
    sides: set[tuple[str, str] | None] = set()
    if isinstance(on, exp.EQ) and not _any_set_but(on, "this", "expression"):
        for side in (on.this, on.expression):
            found = _resolve(side, names)
            sides.add(None if found is None else (found[0], found[1].lower()))
    if sides != {(dataset.name, join.key.lower()), (partner_name, join.other_key.lower())}:
        raise QueryRefused(
            "join-key", f"the join must be ON {wanted}, the declared 1:1 key", _sql(on)
        )
    rewritten = select.copy()
    rewritten.set("joins", None)
    rewritten.args["from_"].this.set("alias", None)
    for column in list(rewritten.find_all(exp.Column)):
        if column.is_star:
            continue
        table, name = _resolve(column, names) or ("", "")
        if not table:
            raise QueryRefused(
                "join-column",
                f"in a join every column is named with its table or alias ({', '.join(names)})",
                _sql(column),
            )
        column.replace(exp.Column(this=exp.Identifier(this=qualified(table, name), quoted=True)))
    return rewritten, join, spec


def _join_table(node: exp.Expr, rule: str) -> tuple[str, str]:
    """``(dataset name, the name columns use for it)`` of a table in a join."""
    wanted = "a join reads two dataset tables by plain name, each optionally aliased"
    if not isinstance(node, exp.Table):
        raise QueryRefused(rule, wanted, _sql(node))
    target = node.this
    if isinstance(target, exp.Func):
        raise QueryRefused("table-function", "table functions are not allowed", _sql(node))
    if not isinstance(target, exp.Identifier) or _any_set_but(node, "this", "alias"):
        raise QueryRefused(rule, wanted, _sql(node))
    _only(target, {"this", "quoted"}, rule, wanted)
    name = str(target.this)
    if _PATH_CHARS & set(name):
        raise QueryRefused("file-path", "files cannot be queried", _sql(node))
    alias = node.args.get("alias")
    if alias is None:
        return name.lower(), name.lower()
    ident = alias.this if isinstance(alias, exp.TableAlias) else None
    if not isinstance(ident, exp.Identifier) or _any_set_but(alias, "this"):
        raise QueryRefused(rule, "a table alias is a plain name", _sql(node))
    return name.lower(), str(ident.this).lower()


def _resolve(node: exp.Expr, names: Mapping[str, str]) -> tuple[str, str] | None:
    """``(dataset, column)`` of a column qualified by a table name or alias in ``names``;
    ``None`` for an unqualified one; refuses an unknown qualifier."""
    if not isinstance(node, exp.Column) or not isinstance(node.this, exp.Identifier):
        return None
    if _is_set(node.args.get("db")) or _is_set(node.args.get("catalog")):
        raise QueryRefused("qualified-column", "name a column as table.column", _sql(node))
    table = node.args.get("table")
    if not isinstance(table, exp.Identifier):
        return None
    found = names.get(str(table.this).lower())
    if found is None:
        raise QueryRefused(
            "join-column", f"unknown table or alias (known: {', '.join(names)})", _sql(node)
        )
    return found, str(node.this.this)


#: Statements kept parsed (see :func:`_single_select`): a job is checked four times in the
#: gateway (its shape for the policy decision, its plan at admission, the re-check and the
#: plan just before the run), each parsing its SQL twice, about 1 ms a parse.
PARSED_CACHE_SIZE = 256
#: Longer texts are parsed every time: a tree takes about 1.7 MB at the 10,000 characters
#: a job may send, so 256 of them would hold over 400 MB; at 1,000 at most about 45 MB.
PARSED_CACHE_MAX_LENGTH = 1_000


def _single_select(sql: str) -> exp.Select:
    """The one plain SELECT ``sql`` holds; raises :class:`QueryRefused` otherwise.

    Parsed once per distinct text: the result depends on ``sql`` alone (sqlglot's DuckDB
    dialect, no schema), so a cached parse gives the same tree. Each caller gets its own
    copy, free to change (a refusal is not cached: it raises again, from a new parse).
    """
    if len(sql) > PARSED_CACHE_MAX_LENGTH:
        return _parsed_select.__wrapped__(sql)
    return _parsed_select(sql).copy()


@functools.lru_cache(maxsize=PARSED_CACHE_SIZE)
def _parsed_select(sql: str) -> exp.Select:
    """:func:`_single_select` without the copy: never hand this tree out or change it."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        highlight = ""
        if exc.errors:
            highlight = str(exc.errors[0].get("highlight") or "")
        raise QueryRefused("parse", "not valid DuckDB SQL", highlight[:40]) from None
    except Exception:  # tokenizer errors, recursion on deep nesting, sqlglot bugs
        raise QueryRefused("parse", "not valid DuckDB SQL") from None
    if not statements:
        raise QueryRefused("parse", "the query is empty")
    if len(statements) > 1:
        raise QueryRefused(
            "single-statement", "exactly one statement is allowed", _sql(statements[1])
        )
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        raise QueryRefused(
            "no-set-operation", "UNION, INTERSECT and EXCEPT are not allowed", _sql(statement)
        )
    if not isinstance(statement, exp.Select):
        raise QueryRefused("select-only", "only a plain SELECT is allowed", _sql(statement))
    if statement.args.get("with_"):
        raise QueryRefused("no-cte", "WITH is not allowed", _sql(statement.args["with_"]))
    for node in statement.walk():
        if node is statement:
            continue
        if isinstance(node, exp.Query | exp.Subquery):
            raise QueryRefused("no-subquery", "subqueries are not allowed", _sql(node))
        if isinstance(node, exp.Window):
            raise QueryRefused("no-window", "window functions are not allowed", _sql(node))
    return statement


def _check_clauses(select: exp.Select) -> None:
    for key, value in select.args.items():
        if key in _SELECT_ARGS or not _is_set(value):
            continue
        rule, reason = _CLAUSE_RULES.get(key, ("unsupported-clause", "this clause is not allowed"))
        raise QueryRefused(rule, reason, _sql(value))


def _check_from(select: exp.Select, dataset: DatasetSpec) -> None:
    wanted = f"the query must read FROM {dataset.name} and nothing else"
    from_ = select.args.get("from_")
    if not isinstance(from_, exp.From):
        raise QueryRefused("single-table", wanted, _sql(select))
    _only(from_, {"this"}, "single-table", wanted)
    source = from_.this
    if not isinstance(source, exp.Table):
        raise QueryRefused("single-table", wanted, _sql(source))
    target = source.this
    if isinstance(target, exp.Func):
        raise QueryRefused("table-function", "table functions are not allowed", _sql(source))
    if not isinstance(target, exp.Identifier):
        raise QueryRefused("single-table", wanted, _sql(source))
    if isinstance(target.this, str) and _PATH_CHARS & set(target.this):
        raise QueryRefused("file-path", "files cannot be queried; " + wanted, _sql(source))
    for key, value in source.args.items():
        if key == "this" or not _is_set(value):
            continue
        if key in {"db", "catalog"}:
            raise QueryRefused(
                "single-table", "the table name may not be qualified; " + wanted, _sql(source)
            )
        if key in {"joins", "laterals"}:
            raise QueryRefused("no-join", "joins are not allowed; query one table", _sql(value))
        if key == "sample":
            raise QueryRefused("no-sample", "SAMPLE is not allowed", _sql(value))
        if key == "alias":
            raise QueryRefused("single-table", "table aliases are not allowed", _sql(source))
        raise QueryRefused("unsupported-clause", "this table clause is not allowed", _sql(value))
    _only(target, {"this", "quoted"}, "single-table", wanted)
    if str(target.this).lower() != dataset.name:
        raise QueryRefused("single-table", wanted, _sql(source))


def _select_item(item: exp.Expr, dataset: DatasetSpec) -> GroupOutput | AggregateOutput:
    alias: str | None = None
    node = item
    if isinstance(item, exp.Alias):
        _only(item, {"this", "alias"}, "alias", "aliases must be plain identifiers")
        alias_node = item.args.get("alias")
        name = alias_node.this if isinstance(alias_node, exp.Identifier) else None
        if not isinstance(name, str) or not OUTPUT_NAME.fullmatch(name):
            raise QueryRefused("alias", "aliases must be plain identifiers", _sql(item))
        alias = name
        node = item.this
    if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and node.is_star):
        raise QueryRefused(
            "select-star", "SELECT * would return rows; select aggregates", _sql(node)
        )
    if isinstance(node, exp.Column):
        spec = _column(node, dataset)
        if spec.cls is ColumnClass.identifier:
            raise QueryRefused(
                "identifier-column",
                f"identifier column {spec.name} may not be selected",
                _sql(node),
            )
        return GroupOutput(name=alias or bare(spec.name), column=spec.name)
    if isinstance(node, _AGGREGATES):
        function, column = _aggregate(node, dataset)
        return AggregateOutput(
            name=alias or _default_name(function, column), function=function, column=column
        )
    if isinstance(node, _QUANTILES):
        column, alpha = _quantile(node, dataset)
        default = (
            f"median_{bare(column)}" if isinstance(node, exp.Median) else f"quantile_{bare(column)}"
        )
        return AggregateOutput(
            name=alias or default, function="quantile", column=column, alpha=alpha
        )
    # Name the first function that is not allowed, wherever it sits (CAST(MAX(x) AS INT)).
    for inner in node.walk():
        if isinstance(inner, exp.Func) and not isinstance(inner, _AGGREGATES + _QUANTILES):
            raise QueryRefused("aggregate-function", ALLOWED_FUNCTIONS, _sql(inner))
    raise QueryRefused(
        "select-item",
        "select GROUP BY columns and COUNT, SUM or AVG of a column, nothing else",
        _sql(node),
    )


def _aggregate(
    node: exp.Count | exp.Sum | exp.Avg, dataset: DatasetSpec
) -> tuple[Function, str | None]:
    plain: Function = "count" if isinstance(node, exp.Count) else "sum"
    if isinstance(node, exp.Avg):
        plain = "avg"
    allowed = {"this", "big_int"} if isinstance(node, exp.Count) else {"this"}
    _only(node, allowed, "aggregate-argument", "aggregates take a single column")
    arg = node.this
    if isinstance(node, exp.Count) and isinstance(arg, exp.Star) and not _any_set(arg):
        return "count", None
    if isinstance(arg, exp.Distinct):
        distinct_only = "DISTINCT is only allowed as COUNT(DISTINCT " + dataset.privacy_unit + ")"
        _only(arg, {"expressions"}, "aggregate-distinct", distinct_only)
        inner = arg.expressions
        if isinstance(node, exp.Count) and len(inner) == 1 and isinstance(inner[0], exp.Column):
            spec = _column(inner[0], dataset)
            if spec.name == dataset.privacy_unit:
                return "count_distinct", spec.name
        raise QueryRefused("aggregate-distinct", distinct_only, _sql(node))
    if not isinstance(arg, exp.Column) or arg.is_star:
        raise QueryRefused(
            "aggregate-argument", "aggregates take a single column of the dataset", _sql(node)
        )
    spec = _column(arg, dataset)
    if spec.cls is ColumnClass.identifier:
        raise QueryRefused(
            "identifier-column", f"identifier column {spec.name} may not be aggregated", _sql(node)
        )
    return plain, spec.name


def _quantile(node: exp.Expr, dataset: DatasetSpec) -> tuple[str, float]:
    """``MEDIAN(col)`` or ``QUANTILE_CONT(col, level)``: the column and the level."""
    level_key = "quantile" if isinstance(node, exp.Quantile) else "expression"
    allowed = {"this"} if isinstance(node, exp.Median) else {"this", level_key}
    _only(node, allowed, "aggregate-argument", "a quantile takes a column and a level")
    arg = node.this
    if not isinstance(arg, exp.Column) or arg.is_star:
        raise QueryRefused(
            "aggregate-argument", "a quantile takes a single column of the dataset", _sql(node)
        )
    spec = _column(arg, dataset)
    if spec.cls is ColumnClass.identifier:
        raise QueryRefused(
            "identifier-column", f"identifier column {spec.name} may not be aggregated", _sql(node)
        )
    if isinstance(node, exp.Median):
        return spec.name, 0.5
    level_node = node.args.get(level_key)
    level = _literal(level_node) if isinstance(level_node, exp.Expr) else None
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 <= level <= 1:
        raise QueryRefused(
            "quantile-level", "the quantile level is a number from 0 to 1", _sql(node)
        )
    return spec.name, float(level)


def _group_by(select: exp.Select, dataset: DatasetSpec) -> list[str]:
    group = select.args.get("group")
    if group is None:
        return []
    plain = "GROUP BY takes a list of plain column names"
    _only(group, {"expressions"}, "group-by-column", plain)
    columns: list[str] = []
    for node in group.expressions:
        if not isinstance(node, exp.Column) or node.is_star:
            raise QueryRefused("group-by-column", plain, _sql(node))
        spec = _column(node, dataset)
        if spec.cls is ColumnClass.identifier:
            raise QueryRefused(
                "identifier-column", f"identifier column {spec.name} may not be grouped", _sql(node)
            )
        if not spec.dimension:
            dims = ", ".join(c.name for c in dataset.columns if c.dimension) or "none"
            raise QueryRefused(
                "group-by-dimension",
                f"column {spec.name} is not a dimension (dimensions: {dims})",
                _sql(node),
            )
        if spec.name in columns:
            raise QueryRefused("group-by-column", "a column is grouped twice", _sql(node))
        columns.append(spec.name)
    return columns


def _where(select: exp.Select, dataset: DatasetSpec) -> tuple[Predicate, ...]:
    where = select.args.get("where")
    if where is None:
        return ()
    _only(where, {"this"}, "where-form", _WHERE_FORM)
    predicates: set[Predicate] = set()
    for node in _conjuncts(where.this):
        predicate = _predicate(node, dataset)
        if predicate is not None:
            predicates.add(predicate)
    return tuple(sorted(predicates, key=Predicate.sort_key))


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren) and not _any_set_but(node, "this"):
        node = node.this
    if isinstance(node, exp.And):
        _only(node, {"this", "expression"}, "where-form", _WHERE_FORM)
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


def _predicate(node: exp.Expr, dataset: DatasetSpec) -> Predicate | None:
    """One comparison, column first; ``None`` for a constant that is true (``1 = 1``)."""
    op = _COMPARISONS.get(type(node))
    if op is None:
        raise QueryRefused("where-form", _WHERE_FORM, _sql(node))
    _only(node, {"this", "expression"}, "where-form", _WHERE_FORM)
    left, right = node.this, node.expression
    if isinstance(right, exp.Column) and not isinstance(left, exp.Column):
        left, right, op = right, left, _FLIPPED[op]
    if not isinstance(left, exp.Column):
        constant = (_literal(left), _literal(right))
        if None in constant:
            raise QueryRefused("where-form", _WHERE_FORM, _sql(node))
        if not _constant_holds(op, constant[0], constant[1]):
            raise QueryRefused(
                "where-constant", "a comparison of literals must be true or dropped", _sql(node)
            )
        return None
    spec = _column(left, dataset)
    if spec.cls is ColumnClass.identifier:
        raise QueryRefused(
            "identifier-column", f"identifier column {spec.name} may not be filtered", _sql(node)
        )
    if not spec.dimension:
        raise QueryRefused(
            "where-column", f"column {spec.name} is not a dimension; WHERE needs one", _sql(node)
        )
    value = _literal(right)
    if value is None:
        raise QueryRefused("where-form", _WHERE_FORM, _sql(node))
    return Predicate(column=spec.name, op=op, value=value)


def _literal(node: exp.Expr) -> str | int | float | bool | None:
    """A plain literal's value, or ``None`` for anything else (casts, functions, NULL)."""
    negate = False
    if isinstance(node, exp.Neg) and not _any_set_but(node, "this"):
        negate, node = True, node.this
    if isinstance(node, exp.Boolean) and not negate:
        return bool(node.this)
    if not isinstance(node, exp.Literal) or _any_set_but(node, "this", "is_string"):
        return None
    text = node.this
    if not isinstance(text, str):
        return None
    if node.is_string:
        return None if negate else text
    try:
        number: int | float = int(text) if text.isdigit() else float(text)
    except ValueError:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    if isinstance(number, int) and number > 2**53:
        return None
    return -number if negate else number


def _constant_holds(op: Operator, left: object, right: object) -> bool:
    if type(left) is not type(right):
        return False
    compare = {
        "=": lambda a, b: a == b,
        "<>": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return bool(compare[op](left, right))


def _any_set_but(node: exp.Expr, *allowed: str) -> bool:
    return any(_is_set(v) for k, v in node.args.items() if k not in allowed)


def _assemble(
    outputs: list[Output],
    group_by: list[str],
    where: tuple[Predicate, ...],
    privacy: Privacy,
    dataset: DatasetSpec,
) -> AggregateBody:
    for out in outputs:
        if isinstance(out, GroupOutput) and out.column not in group_by:
            raise QueryRefused(
                "bare-column",
                f"column {out.column} must be aggregated or listed in GROUP BY; "
                "row-level values are never returned",
                out.column,
            )
    if not any(isinstance(out, AggregateOutput) for out in outputs):
        raise QueryRefused(
            "aggregate-required", "select at least one of COUNT, SUM or AVG", ", ".join(group_by)
        )
    for out in outputs:
        if not isinstance(out, AggregateOutput):
            continue
        if out.function == "quantile" and privacy.mode != "dp":
            raise QueryRefused(
                "no-exact-quantile",
                "an exact quantile is one person's value; quantiles need differential privacy",
                out.name,
            )
        if privacy.mode != "dp":
            continue
        spec = dataset.column(out.column) if out.column else None
        if out.function in ("sum", "avg", "quantile") and spec is not None and spec.bounds is None:
            # Differential privacy needs to know how much one person can add to a sum.
            raise QueryRefused(
                "unbounded-column",
                f"{out.function.upper()} needs bounds for {spec.name} in the manifest; "
                "they limit what one person can change",
                f"{out.function.upper()}({spec.name})",
            )
    seen: set[str] = set()
    for out in outputs:
        if out.name.lower() in seen:
            raise QueryRefused(
                "duplicate-name", "each output needs its own name; add aliases", out.name
            )
        seen.add(out.name.lower())
    return AggregateBody(
        group_by=tuple(group_by), outputs=tuple(outputs), where=where, privacy=privacy
    )


def _column(node: exp.Column, dataset: DatasetSpec) -> ColumnSpec:
    """The dataset column ``node`` names; refuses qualified or unknown names."""
    for key, value in node.args.items():
        if key != "this" and _is_set(value):
            raise QueryRefused(
                "qualified-column", "columns are named without a table qualifier", _sql(node)
            )
    ident = node.this
    if not isinstance(ident, exp.Identifier) or not isinstance(ident.this, str):
        raise QueryRefused("select-item", "expected a column name", _sql(node))
    _only(ident, {"this", "quoted"}, "qualified-column", "expected a plain column name")
    spec = dataset.column(ident.this)
    if spec is None:
        known = ", ".join(c.name for c in dataset.columns)
        raise QueryRefused("unknown-column", f"no such column (columns: {known})", _sql(node))
    return spec


def _default_name(function: Function, column: str | None) -> str:
    if column is None:
        return "count"
    return f"{function}_{bare(column)}"


def _only(node: exp.Expr, allowed: Iterable[str], rule: str, reason: str) -> None:
    """Refuse ``node`` if it carries any argument outside ``allowed`` (fail closed)."""
    allowed = set(allowed)
    for key, value in node.args.items():
        if key not in allowed and _is_set(value):
            raise QueryRefused(rule, reason, _sql(node))


def _any_set(node: exp.Expr) -> bool:
    return any(_is_set(value) for value in node.args.values())


def _is_set(value: Any) -> bool:
    if value is None or value is False:
        return False
    return not (isinstance(value, list) and not value)


def _sql(node: Any) -> str:
    """``node`` as DuckDB SQL for a refusal message, without comments."""
    try:
        if isinstance(node, list):
            return ", ".join(_sql(item) for item in node)
        if isinstance(node, exp.Expr):
            return node.sql(dialect="duckdb", comments=False)
        return str(node)
    except Exception:  # a fragment is a courtesy: never let it mask the refusal
        return type(node).__name__
