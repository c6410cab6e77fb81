"""Clamping a column to its manifest bounds in SQL: row by row, or from a stored copy.

Clamping is the contribution bounding's first step (Wilson et al., ``_sql.py``). A stored
copy (:func:`stored_clamps`) holds exactly what the row-by-row clamp computes, and a run
reads it only when its recorded bounds are the manifest's current ones.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlglot import exp

from computations._aggregate._nodes import column as _column
from computations._aggregate._nodes import greatest as _greatest
from computations._aggregate._nodes import least_of as _least_of
from computations._aggregate._nodes import number as _n
from computations._dataset import DatasetSpec

#: A clamped copy of column ``c`` stored at import is named ``CLAMPED_PREFIX + c``. The
#: colon lies outside the manifest's column-name pattern, so no declared column has it.
CLAMPED_PREFIX = "indomain:clamped:"

#: Column types clamped as integers; wider ones (HUGEINT, UBIGINT) take the DOUBLE path.
INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER"}
)


def stored_clamps(
    dataset: DatasetSpec,
    *,
    column_types: Mapping[str, str],
    value_ranges: Mapping[str, tuple[int, int]],
) -> dict[str, tuple[str, str, tuple[int, int]]]:
    """The clamped copies worth storing at import: column -> (the copy's column name, the
    SQL of its clamp, the bounds it clamps to).

    A column qualifies when ``bounded_sql`` would clamp it as an integer (an integer type,
    integer bounds, no decimals) and its measured range (``value_ranges``) crosses a
    bound: a run then reads the stored copy instead of clamping every row (about 7% of the
    10M-row bench query's CPU time). Within its bounds a column needs no clamp and no copy.
    The SQL is the run's own clamp (both sides, NULL stays NULL), so the copy holds exactly
    what the run would compute.
    """
    out: dict[str, tuple[str, str, tuple[int, int]]] = {}
    for column, (low, high) in sorted(value_ranges.items()):
        integer = str(column_types.get(column, "")).upper() in INTEGER_TYPES
        bounds = integer_bounds(column, dataset, integer=integer)
        if bounds is None or bounds[0] <= low <= high <= bounds[1]:
            continue
        clamp = scaled(column, dataset, integer=True).sql(dialect="duckdb")
        out[column] = (CLAMPED_PREFIX + column, clamp, bounds)
    return out


def integer_bounds(column: str, dataset: DatasetSpec, *, integer: bool) -> tuple[int, int] | None:
    """The bounds a column is clamped to as an integer, or ``None`` if it takes the DOUBLE
    path (not stored as an integer, decimals, or bounds that are not whole numbers)."""
    spec = dataset.column(column)
    if (
        integer
        and spec is not None
        and spec.bounds is not None
        and spec.decimals == 0
        and all(float(b).is_integer() for b in spec.bounds)
    ):
        low, high = (int(b) for b in spec.bounds)
        return low, high
    return None


def scaled(
    column: str,
    dataset: DatasetSpec,
    *,
    integer: bool = False,
    measured: tuple[int, int] | None = None,
    stored: tuple[int, int] | None = None,
) -> exp.Expr:
    """The column as an integer of ``10**-decimals``, clamped to its bounds (never raises).

    ``integer``: the column is stored as an integer type, so with integer bounds and no
    decimals a CASE clamps it exactly as the DOUBLE path would (rounding is the identity),
    NULL stays NULL, and nothing converts. Each side of the clamp that ``measured`` (the
    column's smallest and largest value) shows no value crosses would change nothing and
    is left out. ``stored``: the bounds of the clamped copy the import stored
    (:func:`stored_clamps`); when they are these bounds, the copy is read as it is.
    """
    spec = dataset.column(column)
    bounds = integer_bounds(column, dataset, integer=integer)
    if bounds is not None:
        low_i, high_i = bounds
        if stored is not None and tuple(stored) == bounds:
            return _column(CLAMPED_PREFIX + column)
        raw = _column(column)
        as_is = exp.Cast(this=raw.copy(), to=exp.DataType.build("BIGINT"))
        ifs = []
        if measured is None or measured[1] > high_i:
            ifs.append(exp.If(this=exp.GT(this=raw.copy(), expression=_n(high_i)), true=_n(high_i)))
        if measured is None or measured[0] < low_i:
            ifs.append(exp.If(this=exp.LT(this=raw.copy(), expression=_n(low_i)), true=_n(low_i)))
        return exp.Case(ifs=ifs, default=as_is) if ifs else as_is
    value = exp.TryCast(this=_column(column), to=exp.DataType.build("DOUBLE"))
    if spec is None or spec.bounds is None:
        return exp.TryCast(this=value, to=exp.DataType.build("BIGINT"))
    low, high = spec.bounds
    clamped = exp.Case(
        ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.Null()), true=exp.Null())],
        default=_greatest(_least_of(value, _n(float(high))), _n(float(low))),
    )
    scaled = exp.Round(this=exp.Mul(this=clamped, expression=_n(10**spec.decimals)))
    return exp.Cast(this=scaled, to=exp.DataType.build("BIGINT"))
