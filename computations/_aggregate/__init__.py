"""``aggregate``: a restricted SQL aggregate, differentially private by default.

Describe, check, then execute: the parameters are one SQL query; :meth:`Aggregate.check`
turns it into a plan holding the validated structure (group columns, aggregates, WHERE
conjuncts in canonical form) and the privacy it is released under (epsilon and delta from
the manifest, made stricter by policy obligations), or refuses it.
:meth:`Aggregate.execute` runs our own SQL for that plan inside the enclave, bounds each
privacy unit's contribution, and adds OpenDP noise (see ``_noise.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Final

import duckdb
import rfc8785

from computations._aggregate._body import AggregateBody, Privacy
from computations._aggregate._check import check_sql, target_spec
from computations._aggregate._execute import run
from computations._aggregate._join import join_source, joined_spec
from computations._aggregate._noise import _opendp, zcdp_epsilon, zcdp_rho_for_epsilon
from computations._computation import (
    CORE_SOURCES,
    PACKAGE_ROOT,
    package_sources,
    source_digest,
)
from computations._dataset import DatasetSpec
from computations._errors import ComputationError, QueryRefused
from computations._plan import ComputationResult, Plan, params_digest

#: Longest query accepted; enough for any aggregate, short of a parser stress test.
MAX_SQL_LENGTH: Final = 10_000

_PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "aggregate parameters",
    "type": "object",
    "additionalProperties": False,
    "required": ["sql"],
    "properties": {
        "sql": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SQL_LENGTH,
            "description": (
                "One DuckDB SELECT over the dataset's table: GROUP BY dimension columns, "
                "and COUNT(*), COUNT(col), COUNT(DISTINCT privacy_unit), SUM(col), AVG(col), "
                "optionally aliased; WHERE comparisons of dimension columns with literals, "
                "joined by AND. At most one INNER JOIN, to a dataset the manifest declares, "
                "ON its declared 1:1 key, with every column qualified. No HAVING, ORDER BY, "
                "LIMIT or subqueries."
            ),
        }
    },
}

#: The synthetic dataset :meth:`Aggregate.warm_up` releases from (three made-up rows).
_WARM_MANIFEST: Final[dict[str, Any]] = {
    "privacy_unit": "u",
    "min_group_size": 2,
    "columns": {
        "u": {"class": "identifier"},
        "g": {"class": "quasi_identifier", "dimension": True, "keys": ["a"]},
        "v": {"class": "sensitive", "bounds": [0, 10]},
    },
}


class Aggregate:
    """The ``aggregate`` computation (see the module docstring)."""

    name: Final = "aggregate"
    description: Final = (
        "Counts, sums and averages per group of dimension columns, written as one restricted "
        "SQL SELECT. Each person's contribution is bounded and OpenDP noise is added "
        "(differential privacy, charged to the enterprise's budget); groups whose noisy "
        "number of persons is below the dataset's minimum group size are withheld."
    )

    @cached_property
    def code_hash(self) -> str:
        """``"sha256:"`` + digest of this package and the shared core it runs on."""
        return source_digest(PACKAGE_ROOT, (*package_sources("_aggregate"), *CORE_SOURCES))

    def warm_up(self) -> None:
        """Import OpenDP now (about half a second), not when the first job adds noise, and
        run one release on a throwaway in-memory table: sqlglot builds its generator on
        first use, which cost a fresh worker 50-125 ms of its first job (measured)."""
        _opendp()
        spec = DatasetSpec.from_manifest(_WARM_MANIFEST, name="warm")
        plan = self.check(
            {"sql": "SELECT g, COUNT(*) AS n, SUM(v) AS s FROM warm GROUP BY g"}, spec
        )
        con = duckdb.connect()
        try:
            con.execute("CREATE TABLE warm AS SELECT range AS u, 'a' AS g, 1 AS v FROM range(3)")
            self.execute(plan, con, table="warm", dataset=spec)
        finally:
            con.close()

    @property
    def params_schema(self) -> dict[str, Any]:
        """JSON Schema of the parameters: ``{"sql": "<query>"}`` and nothing else."""
        return copy.deepcopy(_PARAMS_SCHEMA)

    def check(
        self,
        params: Mapping[str, Any],
        dataset: DatasetSpec,
        *,
        obligations: Mapping[str, str] | None = None,
        partners: Mapping[str, DatasetSpec] | None = None,
    ) -> Plan:
        """Approve ``params["sql"]`` for ``dataset`` as a plan.

        ``obligations`` (from the policy decision) may make the release stricter: a lower
        ``epsilon_per_job`` or a higher ``min_group_size``; never looser.
        ``partners`` are the specs of the datasets ``dataset``'s manifest declares joins
        to; the query may join one (:func:`join_partner` of the plan names it), released
        under the stricter of the two manifests.
        Raises :class:`QueryRefused` (rule ``params`` for wrong parameters, otherwise the
        SQL rule broken) and :class:`ComputationError` for anything else wrong, including a
        malformed obligation.
        """
        sql = _sql_param(params)
        target = target_spec(sql, dataset, partners)
        privacy = release_privacy(target, obligations or {})
        body = check_sql(sql, dataset, privacy, partners=partners)
        if privacy.delta and not body.needs_threshold(target):
            # Every group key is public: nothing is released on a threshold, so no delta.
            body = dataclasses.replace(body, privacy=dataclasses.replace(privacy, delta=0.0))
        return Plan(
            computation=self.name,
            dataset=dataset.name,
            params_digest=params_digest({"sql": sql}),
            body=body.to_json(),
        )

    def execute(
        self,
        plan: Plan,
        con: duckdb.DuckDBPyConnection,
        *,
        table: str,
        dataset: DatasetSpec,
        unit_unique: bool = False,
        unit_complete: bool = False,
        value_ranges: Mapping[str, tuple[int, int]] | None = None,
        clamped: Mapping[str, tuple[int, int]] | None = None,
        coded: Mapping[str, Mapping[str, object]] | None = None,
        partner: DatasetSpec | None = None,
        partner_table: str | None = None,
    ) -> ComputationResult:
        """Run ``plan`` on ``con`` against ``table`` (the dataset's table in DuckDB).

        ``unit_unique`` is for the enclave only: it says the table holds at most one row per
        privacy unit (measured at import), which lets bounding skip a per-unit aggregation.
        Passing it for a table where that is false would break the privacy guarantee.
        ``unit_complete`` (enclave only, measured at import): no row lacks a privacy unit, so
        the filter that drops such rows is left out (with ``unit_unique``, the unit column
        is then not read at all). Passing it where rows lack a unit would count them.
        ``value_ranges`` (enclave only, measured at import): each integer column's smallest
        and largest value; a column within its declared bounds is not clamped row by row
        (the identity there). A range narrower than the data would leave values unclamped.
        ``clamped`` (enclave only, written at import by :func:`stored_clamps`): columns whose
        clamped copy the table holds, with the bounds it was clamped to; a copy clamped to
        the manifest's bounds is read instead of clamping each row. A copy that does not
        hold what its bounds say would leave values unclamped.
        ``coded`` (enclave only, written at import by :func:`stored_codes`): columns whose
        key codes the table holds (column -> ``{"type", "keys"}``); with public keys, a
        group column coded from the manifest's current keys is grouped by its code. Codes
        that do not hold each row's key position would move rows between groups.
        A plan that joins needs ``partner`` (its spec) and ``partner_table``; the join is
        made on keys that occur once in the partner (``_join.py``), and the notes say how
        many keys were left out as duplicates.

        The plan body is validated again against ``dataset``; the connection is only read.
        Raises :class:`ComputationError` for a plan of another computation or dataset, a
        malformed body, or a query DuckDB cannot run (its message is withheld).
        """
        if plan.computation != self.name:
            raise ComputationError(f"plan is for {plan.computation!r}, not {self.name!r}")
        if plan.dataset != dataset.name:
            raise ComputationError(f"plan is for dataset {plan.dataset!r}, not {dataset.name!r}")
        body = AggregateBody.from_json(plan.body)
        if body.join is None:
            body.validate(dataset)
            return run(
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
        if partner is None or partner_table is None or partner.name != body.join.dataset:
            raise ComputationError(f"the plan joins {body.join.dataset!r}: give its table")
        if dataset.join(partner.name) != body.join:
            raise ComputationError("the plan's join is not the one the manifest declares")
        spec = joined_spec(dataset, partner)
        body.validate(spec)
        source = join_source(dataset, partner, left_table=table, right_table=partner_table)
        result = run(body, con, table=source, dataset=spec, unit_unique=unit_unique)
        # How many keys were left out is not stated: an exact count over the partner's
        # rows is not differentially private, and it moves with one person's rows.
        note = (
            f"joined to {partner.name} on {body.join.key} = {body.join.other_key}, 1:1: "
            f"keys occurring more than once in {partner.name} are left out "
            "(a join never multiplies a person's rows)"
        )
        return dataclasses.replace(result, notes=(*result.notes, note))


def join_partner(plan: Plan) -> str | None:
    """The dataset an aggregate plan joins to, or ``None`` (also for other computations).

    Admission decides policy and charges budget on this dataset too.
    """
    if plan.computation != Aggregate.name:
        return None
    join = plan.body.get("join") if isinstance(plan.body, Mapping) else None
    if join is None:
        return None
    return AggregateBody.from_json(plan.body).join.dataset  # type: ignore[union-attr]


def release_privacy(dataset: DatasetSpec, obligations: Mapping[str, str]) -> Privacy:
    """The privacy a release of ``dataset`` gets: the manifest's, made stricter by policy.

    Raises :class:`ComputationError` if an obligation is malformed (fail closed).
    """
    rules = dataset.privacy
    minimum = max(dataset.min_group_size, _obligation_int(obligations, "min_group_size"))
    if rules.mode == "threshold_only":
        return Privacy(mode="threshold_only", epsilon=0.0, delta=0.0, min_group_size=minimum)
    if rules.mechanism == "gaussian":
        # zCDP: the job spends rho; a policy's epsilon_per_job caps rho's conversion.
        rho = float(rules.rho_per_job)
        if "epsilon_per_job" in obligations:
            cap = _obligation_float(obligations, "epsilon_per_job")
            rho = min(rho, zcdp_rho_for_epsilon(cap, rules.delta))
        return Privacy(
            mode="dp",
            epsilon=zcdp_epsilon(rho, rules.delta),
            delta=float(rules.delta),
            min_group_size=minimum,
            mechanism="gaussian",
            rho=rho,
            rho_delta=float(rules.delta),
        )
    epsilon = float(rules.epsilon_per_job)
    if "epsilon_per_job" in obligations:
        epsilon = min(epsilon, _obligation_float(obligations, "epsilon_per_job"))
    return Privacy(mode="dp", epsilon=epsilon, delta=float(rules.delta), min_group_size=minimum)


def release_key(plan: Plan) -> str:
    """``"sha256:"`` + digest of what a plan releases, whatever SQL text it came from.

    Equal keys mean the same canonical query under the same privacy: the stored noisy
    release answers it again at no cost (re-noising would let repeats average noise away).
    """
    data = plan.to_json()
    del data["params_digest"]
    return "sha256:" + hashlib.sha256(rfc8785.dumps(data)).hexdigest()


def plan_cost(plan: Plan) -> tuple[float, float]:
    """``(epsilon, delta)`` a run of ``plan`` spends; ``(0, 0)`` for a threshold-only plan.

    For a Gaussian (zCDP) plan this is the conversion of its rho, as its result states;
    the accountant composes rho itself (:func:`plan_charge`).
    Raises :class:`ComputationError` for a plan that is not a well-formed aggregate plan.
    """
    body = AggregateBody.from_json(plan.body)
    return body.privacy.epsilon, body.privacy.total_delta


@dataclasses.dataclass(frozen=True)
class PlanCharge:
    """What the accountant charges for a plan: pure ``epsilon`` and threshold ``delta``
    (summed), and ``rho`` (zCDP, summed, then converted at ``rho_delta``)."""

    epsilon: float
    delta: float
    rho: float = 0.0
    rho_delta: float = 0.0


def plan_charge(plan: Plan) -> PlanCharge:
    """The :class:`PlanCharge` of ``plan``; raises :class:`ComputationError` if malformed."""
    privacy = AggregateBody.from_json(plan.body).privacy
    if privacy.mechanism == "gaussian":
        return PlanCharge(
            epsilon=0.0, delta=privacy.delta, rho=privacy.rho, rho_delta=privacy.rho_delta
        )
    return PlanCharge(epsilon=privacy.epsilon, delta=privacy.delta)


def _obligation_float(obligations: Mapping[str, str], key: str) -> float:
    try:
        value = float(str(obligations[key]).strip())
    except ValueError:
        raise ComputationError(f"policy obligation {key} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ComputationError(f"policy obligation {key} must be a positive number")
    return value


def _obligation_int(obligations: Mapping[str, str], key: str) -> int:
    if key not in obligations:
        return 0
    text = str(obligations[key]).strip()
    if not text.isdigit():
        raise ComputationError(f"policy obligation {key} must be a whole number")
    return int(text)


def _sql_param(params: Mapping[str, Any]) -> str:
    if not isinstance(params, Mapping):
        raise QueryRefused("params", "parameters must be an object with one key, sql")
    extra = sorted(str(key) for key in params if key != "sql")
    if extra:
        raise QueryRefused("params", "the only parameter is sql", ", ".join(extra))
    sql = params.get("sql")
    if not isinstance(sql, str):
        raise QueryRefused("params", "sql must be a string")
    if len(sql) > MAX_SQL_LENGTH:
        raise QueryRefused("params", f"sql is longer than {MAX_SQL_LENGTH} characters")
    if not sql.strip():
        raise QueryRefused("params", "sql is empty")
    return sql


AGGREGATE: Final = Aggregate()
