"""Approved computation modules: reviewed Python that reaches data only through DP aggregates.

An enterprise proposes a module (``indomain/modules.py``); two reviewers approve its exact
bytes. A job naming it becomes a plan of this computation: the module's bytes and approved
hash, its epsilon (the proposal's ``expected_epsilon``, reserved by the accountant before
anything runs), the columns it declared and the policy's obligations. In the enclave the
module's ``run(data, params)`` gets a facade (``_facade.py``) whose ``count``, ``sum`` and
``mean`` are ``aggregate`` releases, checked by the same checker and noised by the same
executor, each spending a share of that epsilon.

What protects privacy is the facade: the module gets noisy releases and nothing else.
The source rules (``_source.py``), the minimal builtins and the CPU limit (``_runner.py``)
are defence in depth against a reviewed module that tries to reach around it; they are
not a Python sandbox, and the worker process's own isolation (no network, no core dumps,
not ptrace-able) is what contains a module that found a way round them.

Today modules run on ``dp`` datasets with the Laplace mechanism only (their releases'
epsilons add up to the module's; zCDP and threshold-only releases are refused).
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Final

import duckdb

from computations._aggregate import release_privacy
from computations._computation import CORE_SOURCES, PACKAGE_ROOT, package_sources, source_digest
from computations._dataset import DatasetSpec
from computations._errors import ComputationError, QueryRefused
from computations._module._facade import MAX_RELEASES, Ledger, Source
from computations._module._runner import run_module
from computations._module._source import check_source
from computations._plan import ComputationResult, Plan, params_digest

NAME: Final = "module"
#: CPU seconds a module's run may use (its releases included).
CPU_SECONDS: Final = 60.0
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_OBLIGATIONS = ("epsilon_per_job", "min_group_size")
_PARAMS = frozenset({"module", "code_hash", "epsilon", "columns", "values"})


class Module:
    """The ``module`` computation: runs an approved module (see the module docstring).

    It is not in the registry by name: no job names it. A job names an approved module
    proposal, and the sandbox builds these parameters from the reviewed, re-hashed bytes.
    """

    name: Final = NAME
    description: Final = (
        "An approved Python computation module whose run(data, params) reaches the dataset "
        "only through differentially private count, sum and mean releases."
    )

    @cached_property
    def code_hash(self) -> str:
        """``"sha256:"`` + digest of the runner (this package, aggregate and the core).
        A run's attestation names the module's approved hash instead (:func:`attested_hash`)."""
        return source_digest(
            PACKAGE_ROOT,
            (*package_sources("_module"), *package_sources("_aggregate"), *CORE_SOURCES),
        )

    @property
    def params_schema(self) -> dict[str, Any]:
        return copy.deepcopy(_SCHEMA)

    def check(
        self,
        params: Mapping[str, Any],
        dataset: DatasetSpec,
        *,
        obligations: Mapping[str, str] | None = None,
    ) -> Plan:
        """A plan to run the module on ``dataset``; raises :class:`QueryRefused`.

        Checks that the source hashes to ``code_hash`` and keeps the source rules, that the
        dataset is ``dp`` with Laplace noise, and that the module's epsilon fits one job
        (at most the manifest's ``epsilon_per_job`` and the policy's).
        """
        if not isinstance(params, Mapping) or set(params) != _PARAMS:
            raise QueryRefused("params", f"module parameters are exactly {sorted(_PARAMS)}")
        source, code_hash = params["module"], params["code_hash"]
        if not isinstance(source, str) or not isinstance(code_hash, str):
            raise QueryRefused("params", "module and code_hash are strings")
        if not _HASH.fullmatch(code_hash) or _digest(source) != code_hash:
            raise QueryRefused("module-hash", f"the module does not hash to {code_hash}")
        check_source(source)
        rules = dataset.privacy
        if rules.mode != "dp" or rules.mechanism != "laplace":
            raise QueryRefused(
                "module-dataset",
                f"modules run only on datasets released with Laplace noise (mode dp); "
                f"{dataset.name} is {rules.mode}/{rules.mechanism}",
            )
        epsilon = _epsilon(params["epsilon"])
        per_job = release_privacy(dataset, obligations or {}).epsilon
        if epsilon > per_job + 1e-12:
            raise QueryRefused(
                "module-budget",
                f"the module's epsilon {epsilon:g} exceeds the {per_job:g} one job may spend "
                f"on {dataset.name}",
            )
        columns = params["columns"]
        if not isinstance(columns, list | tuple) or not all(isinstance(c, str) for c in columns):
            raise QueryRefused("params", "columns is a list of column names")
        values = params["values"]
        if not isinstance(values, Mapping):
            raise QueryRefused("params", "values is an object")
        kept = {k: str(v) for k, v in (obligations or {}).items() if k in _OBLIGATIONS}
        return Plan(
            computation=self.name,
            dataset=dataset.name,
            params_digest=params_digest(dict(params)),
            body={
                "module": source,
                "code_hash": code_hash,
                "epsilon": epsilon,
                "delta": MAX_RELEASES * float(rules.delta),
                "columns": sorted(set(columns)),
                "values": dict(values),
                "obligations": kept,
                "cpu_seconds": CPU_SECONDS,
            },
        )

    def execute(
        self,
        plan: Plan,
        con: duckdb.DuckDBPyConnection,
        *,
        table: str,
        dataset: DatasetSpec,
        unit_unique: bool = False,
    ) -> ComputationResult:
        """Run the plan's module against ``table`` through the facade (enclave only).

        The bytes are re-hashed against the approved hash right before they are compiled.
        Raises :class:`QueryRefused` or :class:`ComputationError` (see ``run_module``).
        """
        if plan.computation != self.name or plan.dataset != dataset.name:
            raise ComputationError("the plan is not a module plan for this dataset")
        body = plan.body
        spent = Ledger(epsilon_budget=float(body["epsilon"]), delta_budget=float(body["delta"]))
        source = Source(
            con=con,
            table=table,
            dataset=dataset,
            unit_unique=unit_unique,
            columns=frozenset(body["columns"]),
            obligations={str(k): str(v) for k, v in body["obligations"].items()},
        )
        result = run_module(
            str(body["module"]),
            code_hash=str(body["code_hash"]),
            values=body["values"],
            source=source,
            spent=spent,
            cpu_seconds=float(body["cpu_seconds"]),
        )
        notes = (
            f"approved module {body['code_hash']}: {len(spent.releases)} DP release(s), "
            f"epsilon {spent.epsilon:g} of {spent.epsilon_budget:g}",
        )
        return ComputationResult(
            table=result, suppressed_groups=spent.suppressed_groups, notes=notes
        )


def attested_hash(plan: Plan) -> str:
    """The code hash a run of ``plan`` attests: the module's approved hash."""
    return str(plan.body["code_hash"])


def module_charge(plan: Plan) -> tuple[float, float]:
    """``(epsilon, delta)`` reserved for a module plan: all of its budget, up front."""
    return float(plan.body["epsilon"]), float(plan.body["delta"])


def _digest(source: str) -> str:
    try:
        data = source.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryRefused("module-hash", "the module is not UTF-8 text") from None
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _epsilon(value: Any) -> float:
    try:
        epsilon = float(str(value))
    except ValueError:
        raise QueryRefused("module-budget", "the module's epsilon is not a number") from None
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise QueryRefused("module-budget", "the module's epsilon must be positive")
    return epsilon


_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "module parameters (built by the sandbox from an approved proposal)",
    "type": "object",
    "additionalProperties": False,
    "required": sorted(_PARAMS),
}

MODULE: Final = Module()

__all__ = ["MODULE", "Module", "attested_hash", "check_source", "module_charge"]
