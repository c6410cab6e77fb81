"""The body of an aggregate plan: the validated query structure, never the user's SQL.

The checker builds it; the enclave rebuilds it from JSON and validates it again against the
dataset before generating any SQL, so a plan altered in transit cannot widen what runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from computations._aggregate._noise import zcdp_epsilon
from computations._dataset import ColumnClass, DatasetSpec, JoinSpec
from computations._errors import ComputationError

Function = Literal["count", "count_distinct", "sum", "avg", "quantile"]
FUNCTIONS: tuple[Function, ...] = ("count", "count_distinct", "sum", "avg", "quantile")
#: Most groups a query over public keys may release (every combination is released).
MAX_PUBLIC_GROUPS = 100_000
#: Output names are plain identifiers so results read the same in SQL, Arrow and JSON.
OUTPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class GroupOutput:
    """A GROUP BY column, published under ``name``."""

    name: str
    column: str


@dataclass(frozen=True)
class AggregateOutput:
    """``function(column)`` per group; ``column`` is ``None`` only for ``COUNT(*)``.

    ``alpha`` is the quantile's level (0.5 for MEDIAN), set only for ``quantile``.
    """

    name: str
    function: Function
    column: str | None
    alpha: float | None = None


Output = GroupOutput | AggregateOutput

Operator = Literal["=", "<>", "<", "<=", ">", ">="]
OPERATORS: tuple[Operator, ...] = ("=", "<>", "<", "<=", ">", ">=")
Literal_ = str | int | float | bool
Mode = Literal["dp", "threshold_only"]
Mechanism = Literal["laplace", "gaussian"]


@dataclass(frozen=True)
class Predicate:
    """``column op value``: one conjunct of the WHERE clause, on a dimension column."""

    column: str
    op: Operator
    value: Literal_

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.column, self.op, type(self.value).__name__, repr(self.value))


@dataclass(frozen=True)
class Privacy:
    """What protects this plan's release; the accountant charges ``epsilon`` and ``delta``.

    ``mode`` is ``dp`` (OpenDP noise) or ``threshold_only`` (exact values, only where the
    manifest allows it). ``min_group_size`` is the manifest's, or stricter from a policy.
    """

    mode: Mode
    epsilon: float
    delta: float
    min_group_size: int
    #: ``gaussian`` plans are ``rho``-zCDP; ``epsilon`` is then the conversion of ``rho`` at
    #: ``rho_delta`` (``_noise.zcdp_epsilon``), and ``delta`` the key threshold's alone.
    mechanism: Mechanism = "laplace"
    rho: float = 0.0
    rho_delta: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "min_group_size": self.min_group_size,
        }
        if self.mechanism == "gaussian":  # laplace plans keep their earlier form (and keys)
            data |= {"mechanism": self.mechanism, "rho": self.rho, "rho_delta": self.rho_delta}
        return data

    @property
    def total_delta(self) -> float:
        """The delta of the whole release: the threshold's, plus the conversion's."""
        return self.delta + self.rho_delta


@dataclass(frozen=True)
class AggregateBody:
    """Group columns and the outputs in the order the query selected them."""

    group_by: tuple[str, ...]
    outputs: tuple[Output, ...]
    where: tuple[Predicate, ...]
    privacy: Privacy
    #: The declared join, if the query makes one; its columns are then named
    #: ``<dataset>.<column>`` (``_join.py``).
    join: JoinSpec | None = None

    def to_json(self) -> dict[str, Any]:
        """The body as plain JSON values, for :class:`Plan`."""
        outputs: list[dict[str, Any]] = []
        for out in self.outputs:
            if isinstance(out, GroupOutput):
                outputs.append({"kind": "group", "name": out.name, "column": out.column})
            else:
                outputs.append(
                    {
                        "kind": "aggregate",
                        "name": out.name,
                        "function": out.function,
                        "column": out.column,
                        **({"alpha": out.alpha} if out.function == "quantile" else {}),
                    }
                )
        data: dict[str, Any] = {
            "group_by": list(self.group_by),
            "outputs": outputs,
            "where": [{"column": p.column, "op": p.op, "value": p.value} for p in self.where],
            "privacy": self.privacy.to_json(),
        }
        if self.join is not None:  # plans without a join keep their form (and release keys)
            data["join"] = self.join.model_dump()
        return data

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AggregateBody:
        """Parse a plan body; raises :class:`ComputationError` if its shape is wrong."""
        _keys(
            body,
            {"group_by", "outputs", "where", "privacy"} | ({"join"} if "join" in body else set()),
            "body",
        )
        join: JoinSpec | None = None
        if "join" in body:
            try:
                join = JoinSpec.model_validate(body["join"])
            except ValidationError:
                raise _malformed("join must be {dataset, key, other_key}") from None
        group_by = body["group_by"]
        if not isinstance(group_by, list | tuple) or not all(isinstance(c, str) for c in group_by):
            raise _malformed("group_by must be a list of column names")
        raw_outputs = body["outputs"]
        if not isinstance(raw_outputs, list | tuple):
            raise _malformed("outputs must be a list")
        outputs: list[Output] = []
        for raw in raw_outputs:
            if not isinstance(raw, Mapping):
                raise _malformed("each output must be an object")
            kind = raw.get("kind")
            if kind == "group":
                _keys(raw, {"kind", "name", "column"}, "group output")
                name, column = raw["name"], raw["column"]
                if not isinstance(name, str) or not isinstance(column, str):
                    raise _malformed("group output name and column must be strings")
                outputs.append(GroupOutput(name=name, column=column))
            elif kind == "aggregate":
                quantile = raw.get("function") == "quantile"
                expected = {"kind", "name", "function", "column"} | (
                    {"alpha"} if quantile else set()
                )
                _keys(raw, expected, "aggregate output")
                name, function, column = raw["name"], raw["function"], raw["column"]
                if not isinstance(name, str) or not (column is None or isinstance(column, str)):
                    raise _malformed("aggregate output name must be a string, column a string")
                if function not in FUNCTIONS:
                    raise _malformed(f"aggregate function must be one of {', '.join(FUNCTIONS)}")
                alpha = raw.get("alpha")
                if quantile and (
                    isinstance(alpha, bool)
                    or not isinstance(alpha, int | float)
                    or not 0 <= alpha <= 1
                ):
                    raise _malformed("a quantile's alpha must be a number from 0 to 1")
                outputs.append(
                    AggregateOutput(
                        name=name,
                        function=function,
                        column=column,
                        alpha=float(alpha) if quantile else None,  # type: ignore[arg-type]
                    )
                )
            else:
                raise _malformed("output kind must be 'group' or 'aggregate'")
        raw_where = body["where"]
        if not isinstance(raw_where, list | tuple):
            raise _malformed("where must be a list")
        where: list[Predicate] = []
        for raw in raw_where:
            if not isinstance(raw, Mapping):
                raise _malformed("each predicate must be an object")
            _keys(raw, {"column", "op", "value"}, "predicate")
            column, op, value = raw["column"], raw["op"], raw["value"]
            if not isinstance(column, str) or op not in OPERATORS:
                raise _malformed(f"a predicate is a column, one of {' '.join(OPERATORS)}, a value")
            if not isinstance(value, str | int | float | bool) or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                raise _malformed("a predicate value must be a string, number or boolean")
            where.append(Predicate(column=column, op=op, value=value))
        raw_privacy = body["privacy"]
        if not isinstance(raw_privacy, Mapping):
            raise _malformed("privacy must be an object")
        gaussian = raw_privacy.get("mechanism") == "gaussian"
        _keys(
            raw_privacy,
            {"mode", "epsilon", "delta", "min_group_size"}
            | ({"mechanism", "rho", "rho_delta"} if gaussian else set()),
            "privacy",
        )
        rho, rho_delta = raw_privacy.get("rho", 0.0), raw_privacy.get("rho_delta", 0.0)
        mode, epsilon = raw_privacy["mode"], raw_privacy["epsilon"]
        delta, minimum = raw_privacy["delta"], raw_privacy["min_group_size"]
        if mode not in ("dp", "threshold_only"):
            raise _malformed("privacy mode must be dp or threshold_only")
        if (
            not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
                for x in (epsilon, delta, rho, rho_delta)
            )
            or type(minimum) is not int
        ):
            raise _malformed(
                "privacy epsilon, delta and rho must be numbers, min_group_size an int"
            )
        privacy = Privacy(
            mode=mode,
            epsilon=float(epsilon),
            delta=float(delta),
            min_group_size=minimum,
            mechanism="gaussian" if gaussian else "laplace",
            rho=float(rho),
            rho_delta=float(rho_delta),
        )
        return cls(
            group_by=tuple(group_by),
            outputs=tuple(outputs),
            where=tuple(where),
            privacy=privacy,
            join=join,
        )

    def validate(self, dataset: DatasetSpec) -> None:
        """Check the body against the dataset's rules; raises :class:`ComputationError`.

        These are the invariants the checker enforces with friendlier refusals; holding them
        here too means the enclave never trusts the plan's origin.
        """
        names = {c.name: c for c in dataset.columns}
        if len(set(self.group_by)) != len(self.group_by):
            raise _invalid("a group column is listed twice")
        for column in self.group_by:
            spec = names.get(column)
            if spec is None:
                raise _invalid(f"unknown group column {column!r}")
            if spec.cls is ColumnClass.identifier or not spec.dimension:
                raise _invalid(f"column {column!r} is not a dimension")
        if not self.outputs:
            raise _invalid("no outputs")
        seen: set[str] = set()
        for out in self.outputs:
            if not OUTPUT_NAME.fullmatch(out.name):
                raise _invalid("output names must be plain identifiers")
            if out.name.lower() in seen:
                raise _invalid(f"output name {out.name!r} is used twice")
            seen.add(out.name.lower())
            if isinstance(out, GroupOutput):
                if out.column not in self.group_by:
                    raise _invalid(f"column {out.column!r} is selected but not grouped")
                continue
            if out.column is None:
                if out.function != "count":
                    raise _invalid(f"{out.function} needs a column")
                continue
            spec = names.get(out.column)
            if spec is None:
                raise _invalid(f"unknown column {out.column!r}")
            if out.function == "count_distinct":
                if out.column != dataset.privacy_unit:
                    raise _invalid("COUNT(DISTINCT ...) is only allowed on the privacy unit")
            elif spec.cls is ColumnClass.identifier:
                raise _invalid(f"identifier column {out.column!r} may not be aggregated")
        if not any(isinstance(out, AggregateOutput) for out in self.outputs):
            raise _invalid("no aggregate output")
        for pred in self.where:
            spec = names.get(pred.column)
            if spec is None or spec.cls is ColumnClass.identifier or not spec.dimension:
                raise _invalid(f"WHERE column {pred.column!r} is not a dimension")
        groups = self.public_groups(dataset)
        if groups is not None and groups > MAX_PUBLIC_GROUPS:
            raise _invalid(f"the public keys give more than {MAX_PUBLIC_GROUPS} groups")
        self._validate_privacy(dataset)

    def _validate_privacy(self, dataset: DatasetSpec) -> None:
        """A plan may be stricter than the manifest, never looser (fail closed)."""
        rules, privacy = dataset.privacy, self.privacy
        if privacy.min_group_size < dataset.min_group_size:
            raise _invalid("min_group_size is below the dataset's")
        if privacy.mode == "threshold_only":
            if any(
                isinstance(o, AggregateOutput) and o.function == "quantile" for o in self.outputs
            ):
                raise _invalid("an exact quantile would publish one person's value")
            if rules.mode != "threshold_only":
                raise _invalid("threshold-only release is not allowed for this dataset")
            if privacy.epsilon != 0 or privacy.delta != 0:
                raise _invalid("a threshold-only plan carries no epsilon or delta")
            return
        if privacy.mechanism != rules.mechanism:
            raise _invalid(f"this dataset's noise is {rules.mechanism}, not {privacy.mechanism}")
        if privacy.mechanism == "gaussian":
            if not 0 < privacy.rho <= rules.rho_per_job:
                raise _invalid("rho must be above 0 and at most the dataset's rho_per_job")
            if privacy.rho_delta != rules.delta or privacy.epsilon != zcdp_epsilon(
                privacy.rho, privacy.rho_delta
            ):
                raise _invalid("epsilon must be the conversion of rho at the dataset's delta")
        elif not 0 < privacy.epsilon <= rules.epsilon_per_job:
            raise _invalid("epsilon must be above 0 and at most the dataset's epsilon_per_job")
        elif privacy.rho or privacy.rho_delta:
            raise _invalid("a laplace plan carries no rho")
        if not 0 <= privacy.delta <= rules.delta:
            raise _invalid("delta must be at most the dataset's delta")
        names = {c.name: c for c in dataset.columns}
        for out in self.outputs:
            if isinstance(out, AggregateOutput) and out.function in ("sum", "avg", "quantile"):
                column = names.get(out.column or "")
                if column is None or column.bounds is None:
                    raise _invalid(f"{out.function} of {out.column!r} needs declared bounds")
        if self.needs_threshold(dataset) and privacy.delta <= 0:
            raise _invalid("releasing group keys on a noisy threshold needs delta > 0")

    def public_groups(self, dataset: DatasetSpec) -> int | None:
        """How many groups the declared keys give, or ``None`` if a key set is private."""
        count = 1
        for column in self.group_by:
            spec = dataset.column(column)
            if spec is None or spec.keys is None:
                return None
            count *= len(spec.keys)
        return count

    def needs_threshold(self, dataset: DatasetSpec) -> bool:
        """Whether group keys are private (released above a noisy threshold)."""
        for column in self.group_by:
            spec = dataset.column(column)
            if spec is None or spec.keys is None:
                return True
        return False


def _keys(data: Mapping[str, Any], expected: set[str], what: str) -> None:
    if set(data) != expected:
        raise _malformed(f"{what} must have exactly the keys {', '.join(sorted(expected))}")


def _malformed(reason: str) -> ComputationError:
    return ComputationError(f"malformed aggregate plan: {reason}")


def _invalid(reason: str) -> ComputationError:
    return ComputationError(f"aggregate plan not valid for this dataset: {reason}")
