"""Discrete Gaussian noise with zCDP accounting (`mechanism: gaussian` in the manifest).

The noise draws are OpenDP's and fresh on every run: their randomness is what the
statistical tests check, so nothing is seeded.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from computations import (
    ComputationError,
    DatasetSpec,
    Plan,
    get_computation,
    plan_charge,
    plan_cost,
    privacy_statement,
    zcdp_epsilon,
)
from computations._aggregate._noise import (
    discrete_gaussian,
    gaussian_scale,
    l2_bound,
    zcdp_rho_for_epsilon,
)
from indomain.budgets import Accountant, Budget, BudgetExhausted

from .conftest import DP_RESIDENTS_MANIFEST

AGGREGATE = get_computation("aggregate")


def _gaussian(**privacy: Any) -> DatasetSpec:
    data = yaml.safe_load(DP_RESIDENTS_MANIFEST)
    data["privacy"] = {"mechanism": "gaussian", "rho_per_job": 0.5, **privacy}
    return DatasetSpec.from_manifest(data, name="residents")


def _run(sql: str, spec: DatasetSpec, con: duckdb.DuckDBPyConnection) -> pa.Table:
    return AGGREGATE.execute(
        AGGREGATE.check({"sql": sql}, spec), con, table="residents", dataset=spec
    ).table


# the conversion and its arithmetic -------------------------------------------------------


def test_zcdp_converts_with_bun_steinke() -> None:
    # Proposition 1.3: rho + 2 sqrt(rho ln(1/delta)), worked by hand for rho 0.5, delta 1e-6.
    expected = 0.5 + 2 * math.sqrt(0.5 * 6 * math.log(10))
    assert zcdp_epsilon(0.5, 1e-6) == pytest.approx(expected, rel=1e-12)
    assert zcdp_epsilon(0.5, 1e-6) == pytest.approx(5.7565217698, rel=1e-9)
    assert zcdp_epsilon(0.0, 1e-6) == 0.0


@given(
    rho=st.floats(min_value=1e-6, max_value=10),
    delta=st.floats(min_value=1e-12, max_value=1e-3),
)
def test_the_inverse_conversion_is_the_largest_rho_within_epsilon(rho: float, delta: float) -> None:
    epsilon = zcdp_epsilon(rho, delta)
    back = zcdp_rho_for_epsilon(epsilon, delta)
    assert back == pytest.approx(rho, rel=1e-9)
    assert zcdp_epsilon(back * (1 - 1e-9), delta) <= epsilon * (1 + 1e-12)


@given(per_group=st.integers(1, 10**12), groups=st.integers(1, 100))
def test_the_integer_l2_bound_is_the_ceiling_of_the_true_one(per_group: int, groups: int) -> None:
    bound = l2_bound(per_group, groups)
    assert bound * bound >= per_group * per_group * groups  # never below the sensitivity
    assert (bound - 1) ** 2 < per_group * per_group * groups  # and the smallest such integer


def test_composition_converts_the_total_rho_not_each_job() -> None:
    """Ten jobs at rho 0.05 cost epsilon(0.5): about a third of ten times epsilon(0.05)."""
    assert zcdp_epsilon(10 * 0.05, 1e-6) < 0.35 * 10 * zcdp_epsilon(0.05, 1e-6)


# the accountant ----------------------------------------------------------------------------


def test_the_accountant_adds_rho_and_refuses_past_the_converted_budget(tmp_path: Path) -> None:
    accountant = Accountant(tmp_path / "state.sqlite")
    budget = Budget.parse("4/month")  # epsilon 4 at delta 1e-6 holds a total rho of 0.25
    charges = []
    for i in range(20):
        try:
            charges.append(
                accountant.reserve(
                    enterprise="e",
                    dataset="d",
                    job_id=f"j{i}",
                    epsilon=0,
                    delta=0,
                    rho=0.05,
                    rho_delta=1e-6,
                    budgets=[budget],
                )
            )
        except BudgetExhausted:
            break
    allowed = max(k for k in range(1, 21) if zcdp_epsilon(k * 0.05, 1e-6) <= 4)
    assert len(charges) == allowed == 5
    assert charges[-1].windows[0]["rho_after"] == pytest.approx(0.25)
    spent = accountant.spent(enterprise="e", dataset="d", budget=budget, rho_delta=1e-6)
    assert spent["rho_spent"] == pytest.approx(0.25)
    assert spent["epsilon_spent"] == pytest.approx(zcdp_epsilon(0.25, 1e-6), rel=1e-8)
    assert spent["jobs_charged"] == 5  # the refused job charged nothing
    # A pure-DP charge on the same account adds to the converted rho.
    accountant.reserve(
        enterprise="e", dataset="d", job_id="pure", epsilon=0.02, delta=0, budgets=[budget],
        rho_delta=1e-6,
    )  # fmt: skip
    mixed = accountant.spent(enterprise="e", dataset="d", budget=budget, rho_delta=1e-6)
    assert mixed["epsilon_spent"] == pytest.approx(0.02 + zcdp_epsilon(0.25, 1e-6), rel=1e-8)


def test_rho_without_a_delta_to_convert_at_fails_closed(tmp_path: Path) -> None:
    from indomain.errors import ConfigError

    accountant = Accountant(tmp_path / "state.sqlite")
    with pytest.raises(ConfigError, match="delta"):
        accountant.reserve(
            enterprise="e", dataset="d", job_id="a", epsilon=0, delta=0, rho=0.1,
            budgets=[Budget.parse("10/month")],
        )  # fmt: skip


# releases ----------------------------------------------------------------------------------


def test_a_gaussian_release_states_rho_epsilon_delta_and_sigma(
    con: duckdb.DuckDBPyConnection,
) -> None:
    spec = _gaussian()
    sql = "SELECT sex, COUNT(*) AS n, SUM(income) AS total FROM residents GROUP BY sex"
    plan = AGGREGATE.check({"sql": sql}, spec)
    charge = plan_charge(plan)
    assert (charge.epsilon, charge.delta, charge.rho, charge.rho_delta) == (0, 0, 0.5, 1e-6)
    stated = privacy_statement(_run(sql, spec, con))
    assert stated is not None
    assert stated["mechanism"] == "discrete_gaussian"
    assert stated["rho"] == 0.5
    assert stated["epsilon"] == pytest.approx(zcdp_epsilon(0.5, 1e-6))
    assert stated["delta"] == 1e-6  # public keys: only the conversion's delta
    assert (stated["epsilon"], stated["delta"]) == plan_cost(plan)
    # Three measures (units, rows, sum) share rho: sigma = D2 / sqrt(2 rho / 3), G = 1.
    share = 0.5 / 3
    assert stated["rho_per_measure"] == pytest.approx(share)
    assert stated["outputs"]["n"]["noise_scale"] == pytest.approx(1 / math.sqrt(2 * share))
    assert stated["outputs"]["total"]["noise_scale"] == pytest.approx(
        200_000 / math.sqrt(2 * share)
    )


def test_private_keys_pay_the_threshold_delta_too(con: duckdb.DuckDBPyConnection) -> None:
    spec = _gaussian()
    sql = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"
    stated = privacy_statement(_run(sql, spec, con))
    assert stated is not None
    assert stated["delta"] == pytest.approx(2e-6)  # threshold 1e-6 + conversion 1e-6
    sigma = 1 / math.sqrt(2 * 0.5 / 2)
    assert stated["release_threshold"] == max(
        10, 1 + math.ceil(sigma * math.sqrt(2 * math.log(1 / 1e-6)))
    )


def test_a_policy_epsilon_caps_rho_through_the_conversion() -> None:
    spec = _gaussian()
    plan = AGGREGATE.check(
        {"sql": "SELECT COUNT(*) AS n FROM residents"}, spec, obligations={"epsilon_per_job": "2"}
    )
    epsilon, _ = plan_cost(plan)
    assert epsilon == pytest.approx(2.0)
    assert plan_charge(plan).rho == pytest.approx(zcdp_rho_for_epsilon(2.0, 1e-6))


@pytest.mark.parametrize(
    "change",
    [
        {"rho": 0.6},  # above the manifest's rho_per_job
        {"epsilon": 0.1},  # not the conversion of rho: would understate the release
        {"rho_delta": 1e-3},  # converted at a looser delta
        {"mechanism": "laplace"},  # a laplace plan on a gaussian dataset
    ],
)
def test_a_forged_gaussian_plan_is_refused_by_the_enclave(
    change: dict[str, Any], con: duckdb.DuckDBPyConnection
) -> None:
    spec = _gaussian()
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) AS n FROM residents"}, spec)
    body = plan.to_json()["body"]
    privacy = {**body["privacy"], **change}
    if change.get("mechanism") == "laplace":
        privacy = {k: v for k, v in privacy.items() if k not in ("rho", "rho_delta")}
    forged = Plan.from_json({**plan.to_json(), "body": {**body, "privacy": privacy}})
    with pytest.raises(ComputationError):
        AGGREGATE.execute(forged, con, table="residents", dataset=spec)


def test_a_gaussian_plan_on_a_laplace_dataset_is_refused(
    dp_residents: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    plan = AGGREGATE.check({"sql": "SELECT COUNT(*) AS n FROM residents"}, _gaussian())
    with pytest.raises(ComputationError, match="laplace"):
        AGGREGATE.execute(plan, con, table="residents", dataset=dp_residents)


def test_a_gaussian_manifest_needs_a_delta() -> None:
    with pytest.raises(ComputationError, match="delta"):
        _gaussian(delta=0.0)


# the noise itself ----------------------------------------------------------------------


def test_discrete_gaussian_draws_have_the_stated_sigma() -> None:
    rho, l2 = 0.02, 1
    sigma = gaussian_scale(l2, rho)  # 5.0
    draws = discrete_gaussian([0] * 4000, l2_sensitivity=l2, rho=rho)
    assert all(isinstance(d, int) for d in draws)
    # Mean within 6 standard errors; the sample sd of 4000 draws has a relative sd of about
    # 1.1%, so 10% either side is about 9 sd away: only a wrong scale fails.
    assert abs(statistics.fmean(draws)) < 6 * sigma / math.sqrt(len(draws))
    assert 0.9 * sigma < statistics.pstdev(draws) < 1.1 * sigma


def test_released_counts_vary_with_the_stated_sigma(
    con: duckdb.DuckDBPyConnection, residents_table: pa.Table
) -> None:
    spec = _gaussian(rho_per_job=0.02)
    people = len(set(residents_table.column("resident_id").to_pylist()))
    sql = "SELECT COUNT(DISTINCT resident_id) AS n FROM residents"
    draws = [_run(sql, spec, con).column("n").to_pylist()[0] for _ in range(300)]
    sigma = 1 / math.sqrt(2 * 0.02)  # one measure, G = 1: 5.0
    assert abs(statistics.fmean(draws) - people) < 6 * sigma / math.sqrt(len(draws))
    # 300 draws: relative sd of the sample sd about 4%; 25% either side is 6 sd away.
    assert 0.75 * sigma < statistics.pstdev(draws) < 1.25 * sigma
