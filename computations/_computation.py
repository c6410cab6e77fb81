"""What every approved computation provides, and how its code is measured.

A computation is identified by its code hash: the SHA-256 of its own source files and the
shared modules it runs on. Changing any of them gives a new hash, so the changed module is a
new computation that needs approval again (see DESIGN.md, "Trust boundaries").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import duckdb

from computations._dataset import DatasetSpec
from computations._plan import ComputationResult, Plan
from indomain.errors import InternalError

#: The folder of the ``computations`` package; source paths are measured relative to it.
PACKAGE_ROOT = Path(__file__).resolve().parent

#: Shared modules every computation runs on, so they are part of every measurement.
CORE_SOURCES: tuple[str, ...] = (
    "_computation.py",
    "_dataset.py",
    "_errors.py",
    "_plan.py",
)


@runtime_checkable
class Computation(Protocol):
    """An approved computation: describe, check, then execute.

    ``check`` is pure: it turns parameters into a :class:`Plan` or raises
    :class:`QueryRefused`. ``execute`` runs a plan inside the enclave on a connection the
    enclave has already locked down (no external access, configuration locked).
    """

    @property
    def name(self) -> str:
        """The registry name, e.g. ``"aggregate"``."""
        ...

    @property
    def code_hash(self) -> str:
        """``"sha256:"`` + hex digest of the computation's source files (its measurement)."""
        ...

    @property
    def description(self) -> str:
        """One paragraph for the catalogue."""
        ...

    @property
    def params_schema(self) -> dict[str, Any]:
        """The JSON Schema that parameters must satisfy (a fresh copy on each access)."""
        ...

    def check(
        self,
        params: Mapping[str, Any],
        dataset: DatasetSpec,
        *,
        obligations: Mapping[str, str] | None = None,
    ) -> Plan:
        """Approve ``params`` for ``dataset`` as a plan, or raise ``QueryRefused``.

        ``obligations`` are the policy decision's; they may only make the plan stricter.
        """
        ...

    def execute(
        self,
        plan: Plan,
        con: duckdb.DuckDBPyConnection,
        *,
        table: str,
        dataset: DatasetSpec,
        unit_unique: bool = False,
    ) -> ComputationResult:
        """Run ``plan`` against ``table`` on ``con``; raise ``ComputationError`` on failure.

        ``unit_unique``: the enclave measured at import that no privacy unit has two rows.
        """
        ...


def source_digest(root: Path, paths: Iterable[str]) -> str:
    """``"sha256:"`` + hex SHA-256 over the files ``paths`` (relative to ``root``).

    Files are taken in sorted path order, each framed as ``path NUL length NUL bytes`` so
    that moving bytes from one file to the next cannot give the same digest.
    Raises :class:`InternalError` if a file is missing: a computation must be measurable.
    """
    digest = hashlib.sha256()
    for relative in sorted(set(paths)):
        try:
            data = (root / relative).read_bytes()
        except OSError as exc:
            raise InternalError(f"cannot measure computation source {relative}") from exc
        digest.update(relative.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return "sha256:" + digest.hexdigest()


def package_sources(folder: str) -> tuple[str, ...]:
    """The ``.py`` files under ``folder`` (relative to the package root), as posix paths."""
    base = PACKAGE_ROOT / folder
    files = tuple(path.relative_to(PACKAGE_ROOT).as_posix() for path in sorted(base.rglob("*.py")))
    if not files:
        raise InternalError(f"computation folder {folder} has no sources")
    return files
