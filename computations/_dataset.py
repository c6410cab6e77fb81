"""The dataset spec: what the checker knows about a dataset, read from its manifest.

A spec holds schema and privacy rules only, never rows. Values are strict (``"10"`` is not a
group size, ``"yes"`` is not a boolean) and unknown keys are errors: a manifest that does not
say exactly what it means is refused rather than guessed at.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
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
        return self

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
            columns[column.name] = settings
        return {
            "name": self.name,
            "description": self.description,
            "privacy_unit": self.privacy_unit,
            "min_group_size": self.min_group_size,
            "columns": columns,
        }


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
