"""The dataset spec: what the checker knows about a dataset, read from its manifest.

A spec holds schema and privacy rules only, never rows. Values are strict (``"10"`` is not a
group size, ``"yes"`` is not a boolean) and unknown keys are errors: a manifest that does not
say exactly what it means is refused rather than guessed at.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from computations._errors import ComputationError, shorten

#: Dataset names are used as SQL table names, so they are plain lower-case identifiers.
DATASET_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
#: Column names are plain identifiers too; DuckDB matches them case-insensitively.
COLUMN_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
#: A budget is written ``"<epsilon>/<window>"``, e.g. ``"10/month"``.
BUDGET_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(day|week|month|year|total)\s*$")
BudgetWindow = Literal["day", "week", "month", "year", "total"]
#: A public key value: what a dimension column may hold in a released group.
KeyValue = StrictStr | StrictInt | StrictBool


_NUMERIC_TYPE: Final = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT"
    r"|FLOAT|DOUBLE|REAL|DECIMAL(\(\d+,\s*\d+\))?)$"
)


class ColumnClass(enum.StrEnum):
    """How sensitive a column is; decides what a computation may do with it."""

    identifier = "identifier"
    """Names a person (or other privacy unit) directly: never grouped, never aggregated."""
    quasi_identifier = "quasi_identifier"
    """Identifies in combination (district, age band): may be a dimension."""
    sensitive = "sensitive"
    """The attribute being protected (income, health): aggregated only."""
    public = "public"
    """Carries no privacy risk of its own."""


class ColumnSpec(BaseModel):
    """One column of a dataset: its class and whether it may appear in GROUP BY."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(pattern=COLUMN_NAME_PATTERN)]
    # "class" in manifests; "cls" in Python, where "class" is a keyword.
    cls: ColumnClass = Field(
        validation_alias=AliasChoices("class", "cls"), serialization_alias="class"
    )
    dimension: StrictBool = False
    description: StrictStr = ""
    #: Declared value range ``[low, high]``; values are clamped into it before summing.
    #: SUM and AVG under differential privacy need it: it bounds one unit's contribution.
    bounds: tuple[StrictInt | StrictFloat, StrictInt | StrictFloat] | None = None
    #: Decimal places kept when summing (values become integers of 10**-decimals).
    decimals: Annotated[StrictInt, Field(ge=0, le=6)] = 0
    #: The public set of values a dimension may take; groups outside it are never released
    #: and groups inside it are released even when empty (so no threshold is needed).
    keys: tuple[KeyValue, ...] | None = None

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        if self.bounds is not None:
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError("bounds must be two finite numbers, low <= high")
            if max(abs(low), abs(high)) * 10**self.decimals > 2**40:
                raise ValueError("bounds are too wide for exact integer sums")
        if self.keys is not None:
            if not self.dimension:
                raise ValueError("keys are only declared for dimension columns")
            if not self.keys or len(set(self.keys)) != len(self.keys):
                raise ValueError("keys must be a non-empty list of distinct values")
        return self


class PrivacyRules(BaseModel):
    """How a dataset's aggregates are protected; the manifest's ``privacy:`` section.

    ``mode: dp`` (the default) adds OpenDP noise and charges a budget; ``threshold_only``
    publishes exact values above a minimum group size, with rounding and a dominance rule.
    Threshold-only is beaten by differencing and tracker queries (see docs/security.md);
    a manifest must ask for it by name, for low-sensitivity data only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["dp", "threshold_only"] = "dp"
    #: Epsilon one job spends (pure DP, split evenly over the job's noisy measurements).
    epsilon_per_job: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10)] = 1.0
    #: Delta one job spends when group keys are released on a noisy threshold; under
    #: ``gaussian`` also the delta at which rho is converted to epsilon.
    delta: Annotated[StrictFloat, Field(ge=0, lt=1e-3)] = 1e-6
    #: ``laplace`` (pure DP, the default) or ``gaussian`` (zCDP, accounted in rho).
    mechanism: Literal["laplace", "gaussian"] = "laplace"
    #: ``gaussian``: the rho one job spends (zCDP), split evenly over its measurements.
    rho_per_job: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10)] = 0.05
    #: Total epsilon per enterprise per window, e.g. ``"10/month"``.
    budget: StrictStr = "10/month"
    #: Contribution bounds: groups one unit may fall in, rows one unit adds per group.
    max_groups_per_unit: Annotated[StrictInt, Field(ge=1, le=100)] = 1
    max_rows_per_unit: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    #: threshold_only: counts are rounded to a multiple of this.
    rounding_base: Annotated[StrictInt, Field(ge=1, le=1000)] = 5
    #: threshold_only: a group is withheld when one unit holds more than this share of a sum.
    dominance: Annotated[StrictFloat, Field(gt=0, le=1)] = 0.6

    @model_validator(mode="after")
    def _check_budget(self) -> Self:
        parse_budget(self.budget)
        if self.mechanism == "gaussian" and self.delta <= 0:
            raise ValueError("mechanism gaussian needs delta > 0 to state rho as epsilon")
        return self

    @property
    def budget_epsilon(self) -> float:
        """The epsilon of :attr:`budget`."""
        return parse_budget(self.budget)[0]

    @property
    def budget_window(self) -> BudgetWindow:
        """The window of :attr:`budget` (``day``, ``week``, ``month``, ``year``, ``total``)."""
        return parse_budget(self.budget)[1]


def parse_budget(text: str) -> tuple[float, BudgetWindow]:
    """``"10/month"`` → ``(10.0, "month")``; raises ``ValueError`` for anything else."""
    match = BUDGET_PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("budget must look like '10/month' (day, week, month, year or total)")
    epsilon = float(match.group(1))
    if not 0 < epsilon <= 1000:
        raise ValueError("budget epsilon must be above 0 and at most 1000")
    window: BudgetWindow = match.group(2)  # type: ignore[assignment]
    return epsilon, window


class JoinSpec(BaseModel):
    """A declared 1:1 key join: ``key`` here and ``other_key`` in ``dataset`` name the same
    person. ``key`` must be this dataset's privacy unit; the checker requires ``other_key``
    to be the partner's, so joined rows still belong to one privacy unit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Annotated[StrictStr, Field(pattern=DATASET_NAME_PATTERN)]
    key: Annotated[StrictStr, Field(pattern=COLUMN_NAME_PATTERN)]
    other_key: Annotated[StrictStr, Field(pattern=COLUMN_NAME_PATTERN)]


class DatasetSpec(BaseModel):
    """A dataset's schema and privacy rules, validated on construction.

    The privacy unit is the column whose distinct values count as individuals when groups
    are too small to publish. Identifier columns may never be dimensions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[StrictStr, Field(pattern=DATASET_NAME_PATTERN)]
    description: StrictStr = ""
    privacy_unit: StrictStr
    min_group_size: Annotated[StrictInt, Field(ge=2)]
    columns: Annotated[tuple[ColumnSpec, ...], Field(min_length=1)]
    privacy: PrivacyRules = PrivacyRules()
    #: The other datasets an aggregate may join to, each on a declared 1:1 key.
    joins: tuple[JoinSpec, ...] = ()

    @model_validator(mode="after")
    def _check_columns(self) -> Self:
        seen: set[str] = set()
        for column in self.columns:
            key = column.name.lower()
            if key in seen:
                raise ValueError(f"column {column.name!r} is listed twice (names ignore case)")
            seen.add(key)
            if column.dimension and column.cls is ColumnClass.identifier:
                raise ValueError(
                    f"column {column.name!r} is an identifier and may not be a dimension"
                )
        unit = next((c for c in self.columns if c.name == self.privacy_unit), None)
        if unit is None:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} is not one of the columns")
        if unit.dimension:
            raise ValueError(f"privacy_unit {self.privacy_unit!r} may not be a dimension")
        partners: set[str] = set()
        for join in self.joins:
            if join.dataset == self.name:
                raise ValueError(f"joins: {join.dataset!r} is this dataset (no self-joins)")
            if join.dataset in partners:
                raise ValueError(f"joins: {join.dataset!r} is declared twice")
            partners.add(join.dataset)
            if join.key != self.privacy_unit:
                raise ValueError(
                    f"joins: key {join.key!r} must be the privacy unit {self.privacy_unit!r}, "
                    "so that a joined row still belongs to one person"
                )
        return self

    def join(self, partner: str) -> JoinSpec | None:
        """The declared join to ``partner``, or ``None``."""
        return next((j for j in self.joins if j.dataset == partner), None)

    def key_type_problems(self, column_types: Mapping[str, str]) -> list[str]:
        """Declared keys whose type cannot equal the column's values (DuckDB type names).

        A YAML manifest makes this easy (``[100010, 0100]`` are numbers, ``[yes, no]``
        booleans): such keys never match a row, so every group would be empty. Checked at
        import; the query's key filter never raises on a mismatch either.
        """
        problems = []
        for column in self.columns:
            wrong: list[KeyValue]
            kind = column_types.get(column.name, "").upper()
            if column.keys is None or not kind:
                continue
            if kind in ("VARCHAR", "TEXT", "STRING") or kind.startswith("VARCHAR("):
                wrong = [k for k in column.keys if not isinstance(k, str)]
                want = "text: quote them in the manifest (e.g. '0100')"
            elif kind == "BOOLEAN":
                wrong = [k for k in column.keys if not isinstance(k, bool)]
                want = "true or false"
            elif _NUMERIC_TYPE.match(kind):
                wrong = [k for k in column.keys if isinstance(k, bool | str)]
                want = "numbers"
            else:
                continue
            if wrong:
                problems.append(
                    f"column {column.name} is {kind} but its keys {wrong!r} are not; "
                    f"declare its keys as {want}"
                )
        return problems

    def column(self, name: str) -> ColumnSpec | None:
        """The column called ``name`` (ignoring case, as SQL does), or ``None``."""
        key = name.lower()
        return next((c for c in self.columns if c.name.lower() == key), None)

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any], *, name: str | None = None) -> DatasetSpec:
        """Build a spec from a manifest (the YAML shape, ``columns`` as name → settings).

        ``name`` supplies the dataset name when the manifest has none (it usually comes from
        the file name); if both are given they must agree.

        Raises :class:`ComputationError` naming each wrong field and what is allowed.
        """
        label = name if name is not None else _manifest_name(data)
        if not isinstance(data, Mapping):
            raise _manifest_error(label, ["a manifest must be a mapping of fields"])
        fields = dict(data)
        if name is not None:
            if "name" in fields and fields["name"] != name:
                raise _manifest_error(label, [f"name: the manifest says {fields['name']!r}"])
            fields["name"] = name
        columns = fields.get("columns")
        names: list[str] = []
        if columns is not None:
            if not isinstance(columns, Mapping):
                raise _manifest_error(
                    label, ["columns: must map each column name to {class, dimension, ...}"]
                )
            entries = []
            for key, settings in columns.items():
                if not isinstance(key, str):
                    raise _manifest_error(label, [f"columns: name {key!r} is not a string"])
                if not isinstance(settings, Mapping):
                    raise _manifest_error(
                        label, [f"columns.{key}: must be a mapping like {{class: sensitive}}"]
                    )
                if "name" in settings:
                    raise _manifest_error(
                        label, [f"columns.{key}: 'name' is not allowed (the key is the name)"]
                    )
                entries.append({"name": key, **settings})
                names.append(key)
            fields["columns"] = entries
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise _manifest_error(label, _describe(exc, names)) from exc

    def to_manifest(self) -> dict[str, Any]:
        """The manifest for this spec; :meth:`from_manifest` turns it back into an equal spec."""
        columns: dict[str, Any] = {}
        for column in self.columns:
            settings: dict[str, Any] = {"class": column.cls.value}
            if column.dimension:
                settings["dimension"] = True
            if column.description:
                settings["description"] = column.description
            if column.bounds is not None:
                settings["bounds"] = list(column.bounds)
            if column.decimals:
                settings["decimals"] = column.decimals
            if column.keys is not None:
                settings["keys"] = list(column.keys)
            columns[column.name] = settings
        manifest: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "privacy_unit": self.privacy_unit,
            "min_group_size": self.min_group_size,
            "columns": columns,
        }
        privacy = self.privacy.model_dump(exclude_defaults=True)
        if privacy:
            manifest["privacy"] = privacy
        if self.joins:
            manifest["joins"] = [join.model_dump() for join in self.joins]
        return manifest


def _manifest_name(data: object) -> str | None:
    if isinstance(data, Mapping):
        value = data.get("name")
        if isinstance(value, str):
            return value
    return None


def _manifest_error(name: str | None, problems: list[str]) -> ComputationError:
    where = f" for {shorten(name, 64)!r}" if name else ""
    return ComputationError(f"invalid dataset manifest{where}: " + "; ".join(problems))


def _describe(exc: ValidationError, column_names: list[str]) -> list[str]:
    """One line per pydantic error: the field as the manifest spells it, then the problem."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        if len(loc) >= 2 and loc[0] == "columns" and isinstance(loc[1], int):
            if loc[1] < len(column_names):
                loc[1] = column_names[loc[1]]
        parts = ["class" if part == "cls" else str(part) for part in loc]
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{'.'.join(parts)}: {message}" if parts else message)
    return problems
