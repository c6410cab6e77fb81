"""Running an aggregate plan inside the enclave: exact SQL, then noise or thresholds.

Under ``dp`` nothing exact leaves this module: each measure gets OpenDP noise
(``_noise.py``), group keys are public or pass a noisy threshold, and the result states
epsilon, delta and each output's noise scale (schema metadata ``indomain.privacy``, which
the result digest covers, and a note). Under ``threshold_only`` exact values are
published for groups of at least ``min_group_size`` units, counts rounded to the manifest's
base, and groups where one unit dominates a sum are withheld.
"""

from __future__ import annotations

import decimal
import itertools
import json
import math
from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from computations._aggregate._body import AggregateBody, AggregateOutput, GroupOutput
from computations._aggregate._clamp import INTEGER_TYPES
from computations._aggregate._nodes import scaled_bounds
from computations._aggregate._noise import (
    discrete_gaussian,
    discrete_laplace,
    gaussian_key_threshold,
    gaussian_scale,
    key_threshold,
    l2_bound,
    laplace_scale,
    private_quantile,
    quantile_grid,
)
from computations._aggregate._sql import (
    UNITS,
    Measure,
    bounded_sql,
    exact_sql,
    measures,
    schema_sql,
)
from computations._dataset import DatasetSpec
from computations._errors import ComputationError
from computations._plan import ComputationResult

#: The one message of a run that failed on data (docs/security.md, "Error side channels").
RUN_FAILED = (
    "the aggregate failed while reading the dataset; details are withheld because they "
    "could depend on the data, and the budget reserved for the job stays spent"
)

#: Schema metadata key holding the release's privacy statement (JSON).
PRIVACY_METADATA = b"indomain.privacy"


def privacy_statement(table: pa.Table) -> dict[str, Any] | None:
    """The privacy statement a released table carries, or ``None`` if it has none."""
    metadata = table.schema.metadata or {}
    raw = metadata.get(PRIVACY_METADATA)
    if raw is None:
        return None
    try:
        statement = json.loads(raw)
    except ValueError:
        raise ComputationError("the result's privacy statement is not JSON") from None
    if not isinstance(statement, dict):
        raise ComputationError("the result's privacy statement is not an object")
    return statement


def run(
    body: AggregateBody,
    con: duckdb.DuckDBPyConnection,
    *,
    table: str | exp.Expr,
    dataset: DatasetSpec,
    unit_unique: bool = False,
    unit_complete: bool = False,
    value_ranges: Mapping[str, tuple[int, int]] | None = None,
    clamped: Mapping[str, tuple[int, int]] | None = None,
    coded: Mapping[str, Mapping[str, object]] | None = None,
) -> ComputationResult:
    """Run ``body`` on ``con`` and release it under ``body.privacy``.

    Raises :class:`ComputationError` if the query cannot run (DuckDB's message is withheld:
    it can quote values).
    """
    if body.privacy.mode == "threshold_only":
        return _threshold_only(body, con, table=table, dataset=dataset)
    return _dp(
        body,
        con,
        table=table,
        dataset=dataset,
        unit_unique=unit_unique,
        unit_complete=unit_complete,
        value_ranges=value_ranges or {},
        clamped=clamped or {},
        coded=coded or {},
    )


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    try:
        return con.execute(sql).to_arrow_table()
    except duckdb.Error:
        # One message whatever went wrong: DuckDB's can quote values, and even the kind of
        # error (conversion, overflow, out of range) can depend on a row.
        raise ComputationError(RUN_FAILED) from None


# differential privacy -------------------------------------------------------------------


def _dp(
    body: AggregateBody,
    con: duckdb.DuckDBPyConnection,
    *,
    table: str | exp.Expr,
    dataset: DatasetSpec,
    unit_unique: bool,
    unit_complete: bool,
    value_ranges: Mapping[str, tuple[int, int]],
    clamped: Mapping[str, tuple[int, int]],
    coded: Mapping[str, Mapping[str, object]],
) -> ComputationResult:
    rules, privacy = dataset.privacy, body.privacy
    sql = bounded_sql(
        body,
        table=table,
        dataset=dataset,
        unit_unique=unit_unique,
        unit_complete=unit_complete,
        value_ranges=value_ranges,
        clamped=clamped,
        coded=coded,
        integer_columns=_integer_columns(con, table),
    )
    raw = _query(con, sql)
    quantiles: dict[tuple[str, float], list[tuple[int, float]]] = {}
    keys = (
        [
            tuple(row)
            for row in zip(
                *(raw.column(f"g{i}").to_pylist() for i in range(len(body.group_by))), strict=True
            )
        ]
        if body.group_by
        else [()]
    )
    every = measures(body)
    exact: dict[Measure, list[Any]] = {}
    for m in every:
        values = raw.column(m.alias).to_pylist()
        exact[m] = (
            [v or [] for v in values] if m.kind == "values" else [int(v or 0) for v in values]
        )
    if not body.group_by:
        # One overall group, always present (its key is public: the empty key).
        exact = {m: (v or ([[]] if m.kind == "values" else [0])) for m, v in exact.items()}
    public = not body.needs_threshold(dataset)
    if public and body.group_by:
        keys, exact = _all_public_keys(body, dataset, keys, exact)

    gaussian = privacy.mechanism == "gaussian"
    # Pure DP splits epsilon over the measures; zCDP splits rho (``_noise`` points 3, 7).
    share = (privacy.rho if gaussian else privacy.epsilon) / len(every)
    noisy: dict[Measure, list[int]] = {}
    scales: dict[Measure, float] = {}
    groups_cap = rules.max_groups_per_unit
    for m in every:
        if m.kind == "values":
            continue  # quantiles are released per kept group, below
        if gaussian:
            l2 = l2_bound(_per_group_bound(m, dataset), groups_cap)
            noisy[m] = discrete_gaussian(exact[m], l2_sensitivity=l2, rho=share)
            scales[m] = gaussian_scale(l2, share)
        else:
            sensitivity = groups_cap * _per_group_bound(m, dataset)
            noisy[m] = discrete_laplace(exact[m], sensitivity=sensitivity, epsilon=share)
            scales[m] = laplace_scale(sensitivity, share)
    units = Measure("units")
    minimum = privacy.min_group_size
    threshold = minimum
    if not public:
        threshold = (gaussian_key_threshold if gaussian else key_threshold)(
            scale=scales[units],
            groups_per_unit=groups_cap,
            delta=privacy.delta,
            minimum=minimum,
        )
    kept = [i for i, count in enumerate(noisy[units]) if count >= threshold]
    # With public keys, which groups were withheld is a function of the noisy counts and
    # public data: saying how many is post-processing. Without them, len(keys) is the exact
    # number of distinct groups in the data, so the withheld count would release an exact,
    # non-private statistic (one person can move it by one): it is not disclosed.
    withheld = len(keys) - len(kept) if public else 0
    for m in every:
        if m.kind == "values":
            spec = dataset.column(m.column or "")
            if spec is None or spec.bounds is None:
                raise ComputationError(f"a quantile of {m.column!r} needs declared bounds")
            # Each unit is in at most G groups: each group's quantile gets share / G. Under
            # zCDP the measure's share of rho is met by pure eps = sqrt(2 rho) (point 7).
            per_group = (math.sqrt(2 * share) if gaussian else share) / groups_cap
            found = {
                o.alpha
                for o in body.outputs
                if isinstance(o, AggregateOutput)
                and o.column == m.column
                and o.function == "quantile"
            }
            for alpha in sorted(a for a in found if a is not None):
                quantiles[(m.column or "", alpha)] = [
                    private_quantile(
                        exact[m][i],
                        alpha=alpha,
                        bounds=scaled_bounds(spec.bounds, spec.decimals),
                        rows_per_unit=rules.max_rows_per_unit,
                        epsilon=per_group / len(found),
                    )
                    for i in kept
                ]

    columns: dict[str, list[Any]] = {}
    types: dict[str, pa.DataType] = {}
    statement: dict[str, Any] = {}
    for out in body.outputs:
        if isinstance(out, GroupOutput):
            index = body.group_by.index(out.column)
            columns[out.name] = [keys[i][index] for i in kept]
            types[out.name] = _group_type(raw.schema.field(f"g{index}").type, columns[out.name])
            continue
        if out.function == "quantile":
            spec = dataset.column(out.column or "")
            unit = 10 ** (spec.decimals if spec is not None else 0)
            released = quantiles[(out.column or "", out.alpha or 0.0)]
            columns[out.name] = [q / unit for q, _ in released]
            types[out.name] = pa.float64()
            score_scale = released[0][1] if released else None
            statement[out.name] = {
                "mechanism": "exponential (OpenDP make_private_quantile)",
                "alpha": out.alpha,
                "score_scale": score_scale,
                "grid_step": _grid_step(spec) / unit if spec is not None else None,
            }
            continue
        values, dtype, scale = _release(out, kept, noisy, scales, dataset)
        columns[out.name] = values
        types[out.name] = dtype
        statement[out.name] = {"noise_scale": scale}
    stated: dict[str, Any] = {
        "mode": "dp",
        "mechanism": "discrete_gaussian" if gaussian else "discrete_laplace",
        "epsilon": privacy.epsilon,
        "delta": (privacy.delta if not public else 0.0) + privacy.rho_delta,
        "measures": len(every),
        "max_groups_per_unit": rules.max_groups_per_unit,
        "max_rows_per_unit": rules.max_rows_per_unit,
        "group_keys": "public" if public else "noisy_threshold",
        "release_threshold": threshold,
        "outputs": statement,
    }
    if gaussian:
        stated |= {
            "rho": privacy.rho,
            "rho_per_measure": share,
            "conversion": "epsilon = rho + 2 sqrt(rho ln(1/delta)) at delta "
            f"{privacy.rho_delta:g} (Bun and Steinke 2016, Proposition 1.3)",
        }
    else:
        stated["epsilon_per_measure"] = share
    noise = (
        f"discrete Gaussian noise (rho {privacy.rho:g}, zCDP)"
        if gaussian
        else ("discrete Laplace noise")
    )
    notes = [
        f"differentially private: epsilon {privacy.epsilon:g}, delta {stated['delta']:g}, "
        f"{noise}; scales: "
        + ", ".join(
            f"{name} {s['noise_scale']:.4g}" for name, s in statement.items() if "noise_scale" in s
        )
    ]
    if withheld:
        notes.append(
            f"{withheld} groups withheld: noisy count of distinct {dataset.privacy_unit} "
            f"below {threshold}"
        )
    elif not public:
        notes.append(
            f"groups are released only when their noisy count of distinct "
            f"{dataset.privacy_unit} reaches {threshold}; how many were not is not disclosed"
        )
    return _result(body, columns, types, stated, withheld, notes)


def _integer_columns(con: duckdb.DuckDBPyConnection, table: str | exp.Expr) -> frozenset[str]:
    """The columns of ``table`` stored as integers (schema only, no row is read)."""
    try:
        described = con.execute(schema_sql(table)).description or []
    except duckdb.Error:
        raise ComputationError(RUN_FAILED) from None
    return frozenset(str(d[0]) for d in described if str(d[1]).upper() in INTEGER_TYPES)


def _group_type(stored: pa.DataType, values: list[Any]) -> pa.DataType:
    """The column's type, or the declared keys' own type if they do not fit it (a manifest
    whose keys have another type than the column: every group is then empty, and the
    release must not fail on the keys, which are public, whatever the rows hold)."""
    try:
        pa.array(values, type=stored)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array(values).type
    return stored


def _all_public_keys(
    body: AggregateBody,
    dataset: DatasetSpec,
    keys: list[tuple[Any, ...]],
    exact: dict[Measure, list[int]],
) -> tuple[list[tuple[Any, ...]], dict[Measure, list[int]]]:
    """Every combination of the declared keys, in key order; absent groups count zero."""
    declared = []
    for column in body.group_by:
        spec = dataset.column(column)
        assert spec is not None and spec.keys is not None
        declared.append(spec.keys)
    found = {key: i for i, key in enumerate(keys)}
    combos = list(itertools.product(*declared))
    filled = {
        m: [values[found[c]] if c in found else 0 for c in combos] for m, values in exact.items()
    }
    return combos, filled


def _grid_step(spec: Any) -> int:
    grid = quantile_grid(scaled_bounds(spec.bounds, spec.decimals))
    return grid[1] - grid[0] if len(grid) > 1 else 1


def _per_group_bound(measure: Measure, dataset: DatasetSpec) -> int:
    """How much one unit can change this measure in one group (point 1 of ``_noise``)."""
    rows = dataset.privacy.max_rows_per_unit
    if measure.kind == "units":
        return 1
    if measure.kind in ("rows", "count"):
        return rows
    spec = dataset.column(measure.column or "")
    if spec is None or spec.bounds is None:
        raise ComputationError(f"SUM of {measure.column!r} needs declared bounds")
    largest = max(abs(round(b * 10**spec.decimals)) for b in spec.bounds)
    return max(1, rows * int(largest))


def _release(
    out: AggregateOutput,
    kept: list[int],
    noisy: dict[Measure, list[int]],
    scales: dict[Measure, float],
    dataset: DatasetSpec,
) -> tuple[list[Any], pa.DataType, float]:
    """One output's released values on the public grid, its type, and its noise scale."""
    if out.column is None:
        m = Measure("rows")
        return [max(0, noisy[m][i]) for i in kept], pa.int64(), scales[m]
    if out.function == "count_distinct":
        m = Measure("units")
        return [max(0, noisy[m][i]) for i in kept], pa.int64(), scales[m]
    if out.function == "count":
        m = Measure("count", out.column)
        return [max(0, noisy[m][i]) for i in kept], pa.int64(), scales[m]
    spec = dataset.column(out.column)
    decimals = spec.decimals if spec is not None else 0
    sums = Measure("sum", out.column)
    if out.function == "sum":
        if decimals == 0:
            return [noisy[sums][i] for i in kept], pa.int64(), scales[sums]
        values = [decimal.Decimal(noisy[sums][i]).scaleb(-decimals) for i in kept]
        return values, pa.decimal128(38, decimals), scales[sums] / 10**decimals
    counts = Measure("count", out.column)
    means: list[float | None] = []
    for i in kept:
        count = noisy[counts][i]
        if count <= 0:
            means.append(None)
        else:
            means.append(round(noisy[sums][i] / count / 10**decimals, decimals + 2))
    return means, pa.float64(), max(scales[sums] / 10**decimals, scales[counts])


# threshold only -------------------------------------------------------------------------


def _threshold_only(
    body: AggregateBody,
    con: duckdb.DuckDBPyConnection,
    *,
    table: str | exp.Expr,
    dataset: DatasetSpec,
) -> ComputationResult:
    rules, minimum = dataset.privacy, body.privacy.min_group_size
    raw = _query(con, exact_sql(body, table=table, dataset=dataset))
    dominance = [name for name in raw.column_names if name.startswith("d_")]
    kept_rows: list[int] = []
    for i, units in enumerate(raw.column(UNITS).to_pylist()):
        if units is None or units < minimum:
            continue
        shares = [raw.column(name)[i].as_py() for name in dominance]
        if any(share is not None and share > rules.dominance for share in shares):
            continue
        kept_rows.append(i)
    kept = raw.take(pa.array(kept_rows, pa.int64()))
    withheld = raw.num_rows - kept.num_rows
    columns: dict[str, list[Any]] = {}
    types: dict[str, pa.DataType] = {}
    group_index = {column: i for i, column in enumerate(body.group_by)}
    aggregate_index = 0
    for out in body.outputs:
        if isinstance(out, GroupOutput):
            source = f"g{group_index[out.column]}"
            columns[out.name] = kept.column(source).to_pylist()
            types[out.name] = kept.schema.field(source).type
            continue
        source = f"a{aggregate_index}"
        aggregate_index += 1
        values = kept.column(source).to_pylist()
        if out.function in ("count", "count_distinct") and rules.rounding_base > 1:
            base = rules.rounding_base
            values = [None if v is None else base * ((v + base // 2) // base) for v in values]
        columns[out.name] = values
        types[out.name] = kept.schema.field(source).type
    stated = {
        "mode": "threshold_only",
        "epsilon": None,
        "delta": None,
        "min_group_size": minimum,
        "rounding_base": rules.rounding_base,
        "dominance": rules.dominance,
    }
    notes = ["threshold-only release: exact values, NOT differentially private"]
    if withheld:
        notes.append(
            f"{withheld} of {raw.num_rows} groups withheld: fewer than "
            f"{minimum} distinct {dataset.privacy_unit}, or one dominates a sum"
        )
    return _result(body, columns, types, stated, withheld, notes)


def _result(
    body: AggregateBody,
    columns: dict[str, list[Any]],
    types: dict[str, pa.DataType],
    stated: dict[str, Any],
    withheld: int,
    notes: list[str],
) -> ComputationResult:
    names = [out.name for out in body.outputs]
    schema = pa.schema([pa.field(name, types[name]) for name in names]).with_metadata(
        {PRIVACY_METADATA: json.dumps(stated, sort_keys=True).encode()}
    )
    table = pa.Table.from_pydict({name: columns[name] for name in names}, schema=schema)
    return ComputationResult(table=table, suppressed_groups=withheld, notes=tuple(notes))
