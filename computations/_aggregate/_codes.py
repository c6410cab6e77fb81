"""Group keys as small integer codes, stored at import.

Grouping 10M rows by two text columns spends most of the query hashing and comparing
strings, and reads the strings' blocks. A dimension column with declared public keys gets a
hidden copy at import (:func:`stored_codes`) holding each row's position in the key list:
1 for the first key, and NULL for NULL and for any value outside the keys. A run with
public keys groups by the codes and maps each code back to its key in the final result,
which has one row per group; on the 10M-row bench, grouping by two one-byte codes took
half the time of grouping by the two text columns.

Rows outside the keys share one NULL code, where they formed a group per value before. With
public keys no such group is ever released (``_execute._all_public_keys`` keeps only the
declared combinations), so the release is the same. Noisy-threshold releases (some group
column without keys) do not use codes: there a value outside a column's keys may be
released, and must keep its own group.

A run reads a copy only when the keys it recorded are exactly the manifest's current keys
(compared as JSON, so ``1`` is not ``true`` and ``"1"`` is not ``1``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlglot import exp

from computations._aggregate._nodes import column as _column
from computations._aggregate._nodes import number as _n
from computations._dataset import DatasetSpec

#: The code copy of column ``c`` stored at import is named ``CODE_PREFIX + c``. The colon
#: lies outside the manifest's column-name pattern, so no declared column has it.
CODE_PREFIX = "indomain:code:"

#: Integer column types whose keys are coded, with the range of values each holds.
_INTEGER_RANGES = {
    "TINYINT": (-(2**7), 2**7 - 1),
    "SMALLINT": (-(2**15), 2**15 - 1),
    "INTEGER": (-(2**31), 2**31 - 1),
    "BIGINT": (-(2**63), 2**63 - 1),
    "UTINYINT": (0, 2**8 - 1),
    "USMALLINT": (0, 2**16 - 1),
    "UINTEGER": (0, 2**32 - 1),
}


@dataclass(frozen=True)
class StoredCode:
    """One column's code copy: what the import writes, and what the meta table records."""

    column: str  #: the manifest's column
    name: str  #: the copy's column
    code_type: str  #: UTINYINT or USMALLINT
    column_type: str  #: the column's own DuckDB type (the keys are mapped back to it)
    keys: tuple[str | int | bool, ...]  #: the keys coded 1, 2, ...

    def sql(self) -> str:
        """The SQL that computes the copy from the column (never raises on a row)."""
        position = exp.Anonymous(
            this="list_position",
            expressions=[key_list(self.keys, self.column_type), _column(self.column)],
        )
        cast = exp.Cast(this=position, to=exp.DataType.build(self.code_type, dialect="duckdb"))
        return cast.sql(dialect="duckdb")

    def record(self) -> dict[str, object]:
        """The meta table's entry for this copy (JSON)."""
        return {"type": self.column_type, "keys": list(self.keys)}


def stored_codes(dataset: DatasetSpec, *, column_types: Mapping[str, str]) -> list[StoredCode]:
    """The code copies worth storing at import.

    A column qualifies when it has declared keys, all of the column's own kind (text for
    VARCHAR, true/false for BOOLEAN, whole numbers within range for an integer type: the
    types where a key equals a value exactly when DuckDB's ``=`` says so), and at most
    65,535 of them.
    """
    out = []
    for spec in dataset.columns:
        column_type = str(column_types.get(spec.name, "")).upper()
        if spec.keys is None or not _codable(spec.keys, column_type):
            continue
        code_type = "UTINYINT" if len(spec.keys) < 2**8 else "USMALLINT"
        out.append(
            StoredCode(spec.name, CODE_PREFIX + spec.name, code_type, column_type, spec.keys)
        )
    return out


def usable(
    stored: Mapping[str, Mapping[str, object]] | None, dataset: DatasetSpec, columns: Sequence[str]
) -> dict[str, str]:
    """Of ``columns``, those whose stored copy codes the manifest's current keys: the
    manifest's column name -> the column's DuckDB type. ``stored`` is the meta table's
    entry (column -> ``{"type", "keys"}``)."""
    out = {}
    for name in columns:
        spec = dataset.column(name)
        if spec is None or spec.keys is None or not stored or spec.name not in stored:
            continue
        entry = stored[spec.name]
        column_type = entry.get("type")
        if not isinstance(column_type, str) or not _codable(spec.keys, column_type):
            continue
        if json.dumps(entry.get("keys")) == json.dumps(list(spec.keys)):
            out[spec.name] = column_type
    return out


def code_column(column: str) -> exp.Column:
    return _column(CODE_PREFIX + column)


def decoded(code: exp.Expr, keys: Sequence[str | int | bool], column_type: str) -> exp.Expr:
    """The key a code stands for, in the column's own type (NULL for NULL)."""
    return exp.Anonymous(this="list_extract", expressions=[key_list(keys, column_type), code])


def key_list(keys: Sequence[str | int | bool], column_type: str) -> exp.Expr:
    """The keys as a DuckDB list of the column's type."""
    literals: list[exp.Expr] = []
    for key in keys:
        if isinstance(key, bool):
            literals.append(exp.Boolean(this=key))
        elif isinstance(key, str):
            literals.append(exp.Literal.string(key))
        else:
            literals.append(_n(key))
    array = exp.Array(expressions=literals)
    return exp.Cast(this=array, to=exp.DataType.build(f"{column_type}[]", dialect="duckdb"))


def _codable(keys: Sequence[object], column_type: str) -> bool:
    if not 0 < len(keys) < 2**16:
        return False
    if column_type == "VARCHAR":
        return all(isinstance(k, str) for k in keys)
    if column_type == "BOOLEAN":
        return all(isinstance(k, bool) for k in keys)
    bounds = _INTEGER_RANGES.get(column_type)
    if bounds is None:
        return False
    return all(
        isinstance(k, int) and not isinstance(k, bool) and bounds[0] <= k <= bounds[1] for k in keys
    )
