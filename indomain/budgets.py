"""The privacy budget accountant: one per sandbox, persisted in ``state.sqlite``.

What it accounts. Each job releases an (epsilon, delta)-DP result
(``computations/_aggregate/_noise.py``). Jobs of one enterprise (all its keys: the account
is the enterprise name) on one dataset compose, and a budget ``"10/month"`` caps the
epsilon they spend together in each calendar window (UTC): ``day``, ``week`` (ISO),
``month``, ``year`` or ``total`` (for ever).

- **Pure DP** (discrete Laplace, the default): epsilons add up (basic composition).
- **zCDP** (discrete Gaussian, ``mechanism: gaussian``): rhos add up (Bun and Steinke
  2016, Lemma 2.3), and the window's total rho is converted once, at the dataset's delta,
  with ``epsilon = rho + 2 * sqrt(rho * ln(1/delta))`` (Proposition 1.3). Converting the
  total rather than each job is the point of zCDP: k jobs cost about ``sqrt(k)`` times one,
  not ``k`` times.
- Both kinds on one account add: spent epsilon = sum of pure epsilons + the conversion of
  the sum of rhos (basic composition of an (e1, 0) and an (e2, d) guarantee).
- Deltas (noisy key thresholds) are summed and reported, plus the conversion's delta once
  when any rho was spent; each job's threshold delta is capped by the manifest.

How it stays honest:

- **Reserved before execution, atomically.** :meth:`Accountant.reserve` runs in one
  ``BEGIN IMMEDIATE`` SQLite transaction: it sums the window's charges, refuses with
  :class:`BudgetExhausted` if the job would overspend any applicable budget, and inserts
  the charge. SQLite's write lock serialises reservations across threads and processes, so
  concurrent jobs cannot overspend. Amounts are integers of 1e-9 epsilon (no float drift).
- **A join is charged on both datasets**, in the same transaction: the job's row, and a row
  for the partner dataset under the id ``<job_id>@<partner>`` (the table's key is the job
  id). If either account has no room, nothing is charged.
- **Never refunded.** A charge stays even when the job later fails: it may have touched
  data (a failure that depends on data is itself a release).
- **On the ledger.** The sandbox writes each charge into the job's ``job.accepted`` entry.
- **Repeats are free, not re-noised.** A query whose canonical plan was already released to
  the same enterprise is answered with that stored release (:meth:`find_release`); fresh
  noise on a repeat would let the enterprise average it away.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from computations import DatasetSpec, Plan, parse_budget, plan_charge, release_key, zcdp_epsilon
from indomain.errors import ConfigError, IndomainError
from indomain.state_db import shared_connection, unsynced

#: Charges are stored as integers of this many units per 1.0 epsilon (or delta).
UNITS = 1_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_charges (
    job_id TEXT PRIMARY KEY,
    enterprise TEXT NOT NULL,
    dataset TEXT NOT NULL,
    epsilon INTEGER NOT NULL CHECK (epsilon >= 0),
    delta INTEGER NOT NULL CHECK (delta >= 0),
    charged_at TEXT NOT NULL,
    release_key TEXT NOT NULL DEFAULT '',
    rho INTEGER NOT NULL DEFAULT 0 CHECK (rho >= 0)
);
CREATE INDEX IF NOT EXISTS budget_charges_account
    ON budget_charges (enterprise, dataset, charged_at);
CREATE TABLE IF NOT EXISTS budget_releases (
    enterprise TEXT NOT NULL,
    dataset TEXT NOT NULL,
    release_key TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (enterprise, dataset, release_key)
);
"""


class BudgetExhausted(IndomainError):
    """A job would spend more privacy budget than is left; nothing was charged."""

    exit_code = 1


@dataclass(frozen=True)
class Budget:
    """A cap on epsilon per window, e.g. ``Budget.parse("10/month")``."""

    epsilon: float
    window: str

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Raises :class:`ConfigError` for anything but ``"<epsilon>/<window>"``."""
        try:
            epsilon, window = parse_budget(text)
        except ValueError as exc:
            raise ConfigError(f"invalid budget {text!r}: {exc}") from None
        return cls(epsilon=epsilon, window=window)

    def __str__(self) -> str:
        return f"{self.epsilon:g}/{self.window}"

    def bounds(self, now: datetime) -> tuple[str, str, str]:
        """``(label, start, end)`` of the window holding ``now``, as ISO UTC strings."""
        now = now.astimezone(UTC)
        day = datetime(now.year, now.month, now.day, tzinfo=UTC)
        if self.window == "day":
            start, end, label = day, day + timedelta(days=1), day.strftime("%Y-%m-%d")
        elif self.window == "week":
            start = day - timedelta(days=day.weekday())
            iso = start.isocalendar()
            end, label = start + timedelta(days=7), f"{iso.year}-W{iso.week:02d}"
        elif self.window == "month":
            start = datetime(now.year, now.month, 1, tzinfo=UTC)
            nxt = datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
            end, label = nxt, start.strftime("%Y-%m")
        elif self.window == "year":
            start = datetime(now.year, 1, 1, tzinfo=UTC)
            end, label = datetime(now.year + 1, 1, 1, tzinfo=UTC), str(now.year)
        else:
            return "total", "", "~"
        return label, _iso(start), _iso(end)


@dataclass(frozen=True)
class Charge:
    """A reservation made by :meth:`Accountant.reserve`, as recorded on the ledger."""

    job_id: str
    epsilon: float
    delta: float
    charged_at: str
    windows: tuple[dict[str, Any], ...]
    rho: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "charged_at": self.charged_at,
            "windows": [dict(w) for w in self.windows],
        }
        if self.rho:
            data["rho"] = self.rho
        return data


class Accountant:
    """Charges privacy budget per enterprise and dataset; see the module docstring."""

    def __init__(self, path: Path, *, timeout_s: float = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._con = shared_connection(path, timeout_s=timeout_s, owner=self)
        with self._connect() as con:
            con.executescript(_SCHEMA)
            columns = {row[1] for row in con.execute("PRAGMA table_info(budget_charges)")}
            if "rho" not in columns:  # a state file from before zCDP accounting
                con.execute(
                    "ALTER TABLE budget_charges"
                    " ADD COLUMN rho INTEGER NOT NULL DEFAULT 0 CHECK (rho >= 0)"
                )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection for the accountant's life, one operation at a time (the lock):
        # a connection per operation made SQLite fsync the state folder on each one's first
        # commit, on the path of every job. Reservations still serialise across threads and
        # processes through BEGIN IMMEDIATE, as before.
        with self._lock:
            yield self._con

    def reserve(
        self,
        *,
        enterprise: str,
        dataset: str,
        job_id: str,
        epsilon: float,
        delta: float,
        budgets: Iterable[Budget],
        release_key: str = "",
        now: datetime | None = None,
        rho: float = 0.0,
        rho_delta: float = 0.0,
        also: Iterable[tuple[str, Iterable[Budget]]] = (),
    ) -> Charge:
        """Charge ``(epsilon, delta)`` and ``rho`` if every budget in ``budgets`` has room.

        ``rho`` (zCDP) is added to the window's rho and the total converted at
        ``rho_delta`` (see the module docstring) before it is compared with a budget.
        ``also`` charges the same amounts to more datasets (a join's partner, with its
        budgets) in the same transaction: all are charged, or none.
        Raises :class:`BudgetExhausted` (nothing charged) if one has not, and
        :class:`ConfigError` if no budget applies (fail closed), the amounts are negative,
        or rho comes without a delta to convert it at.
        """
        accounts = [(dataset, tuple(budgets))] + [(d, tuple(b)) for d, b in also]
        joint = len(accounts) > 1
        if any(not applying for _, applying in accounts):
            raise ConfigError("no privacy budget applies to this dataset; refusing to run")
        if epsilon < 0 or delta < 0 or rho < 0:
            raise ConfigError("a privacy charge cannot be negative")
        if rho and not 0 < rho_delta < 1:
            raise ConfigError("a zCDP charge needs 0 < delta < 1 to convert rho to epsilon")
        when = _iso((now or datetime.now(UTC)).astimezone(UTC))
        cost, cost_delta, cost_rho = _units(epsilon), _units(delta), _units(rho)
        windows: list[dict[str, Any]] = []
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                charged = con.execute(
                    "SELECT epsilon, delta, charged_at, rho FROM budget_charges WHERE job_id = ?",
                    (job_id,),
                ).fetchone()
                if charged is not None:
                    # The job was charged before a crash and is being admitted again: the
                    # charge stands, once (never twice, never refunded).
                    con.execute("COMMIT")
                    return Charge(
                        job_id=job_id,
                        epsilon=charged[0] / UNITS,
                        delta=charged[1] / UNITS,
                        charged_at=str(charged[2]),
                        windows=(),
                        rho=charged[3] / UNITS,
                    )
                for account, budget in (
                    (account, budget) for account, applying in accounts for budget in applying
                ):
                    label, start, end = budget.bounds(now or datetime.now(UTC))
                    pure, _, _, rhos = _spent(con, enterprise, account, start, end)
                    if rhos and not 0 < rho_delta < 1:
                        raise ConfigError(
                            "this account holds zCDP charges: give the delta to convert them at"
                        )
                    spent = pure + _converted(rhos, rho_delta)
                    after = pure + cost + _converted(rhos + cost_rho, rho_delta)
                    limit = _units(budget.epsilon)
                    if after > limit:
                        left = max(0, limit - spent) / UNITS
                        needs = (after - spent) / UNITS
                        raise BudgetExhausted(
                            f"privacy budget exhausted for {account} ({budget}, window "
                            f"{label}): this job needs epsilon {needs:g}, {left:g} is left"
                        )
                    window = {
                        "budget": str(budget),
                        "window": label,
                        "spent_before": spent / UNITS,
                        "spent_after": after / UNITS,
                    }
                    if cost_rho:
                        window["rho_after"] = (rhos + cost_rho) / UNITS
                    if joint:
                        window["dataset"] = account
                    windows.append(window)
                for account, _ in accounts:
                    con.execute(
                        "INSERT INTO budget_charges (job_id, enterprise, dataset, epsilon, delta,"
                        " charged_at, release_key, rho) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            job_id if account == dataset else f"{job_id}@{account}",
                            enterprise,
                            account,
                            cost,
                            cost_delta,
                            when,
                            release_key if account == dataset else "",
                            cost_rho,
                        ),
                    )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return Charge(
            job_id=job_id,
            epsilon=epsilon,
            delta=delta,
            charged_at=when,
            windows=tuple(windows),
            rho=rho,
        )

    def record_release(
        self, *, enterprise: str, dataset: str, release_key: str, job_id: str
    ) -> None:
        """Remember that ``job_id`` released ``release_key`` (the first release is kept).

        Committed without its own fsync: the gateway stores the job's result next, in the
        same ``state.sqlite`` with a FULL (fsynced) commit, and a fsync of the WAL file
        covers every frame written before it, so this row is durable by the time the result
        can be read. A crash before that leaves the job unfinished; it resumes and records
        the release again (``INSERT OR IGNORE``).
        """
        with self._connect() as con:
            with unsynced(con):
                con.execute(
                    "INSERT OR IGNORE INTO budget_releases"
                    " (enterprise, dataset, release_key, job_id) VALUES (?, ?, ?, ?)",
                    (enterprise, dataset, release_key, job_id),
                )

    def find_release(self, *, enterprise: str, dataset: str, release_key: str) -> str | None:
        """The job whose stored release answers ``release_key`` for this enterprise."""
        with self._connect() as con:
            row = con.execute(
                "SELECT job_id FROM budget_releases"
                " WHERE enterprise = ? AND dataset = ? AND release_key = ?",
                (enterprise, dataset, release_key),
            ).fetchone()
        return None if row is None else str(row[0])

    def spent(
        self,
        *,
        enterprise: str,
        dataset: str,
        budget: Budget,
        now: datetime | None = None,
        rho_delta: float = 0.0,
    ) -> dict[str, Any]:
        """Spent and remaining budget of one account in the window holding ``now``; any rho
        spent is converted at ``rho_delta`` (the dataset's delta) and also shown as is."""
        label, start, end = budget.bounds(now or datetime.now(UTC))
        with self._connect() as con:
            pure, delta, jobs, rhos = _spent(con, enterprise, dataset, start, end)
        if rhos and not 0 < rho_delta < 1:
            raise ConfigError("rho was spent on this account: give the delta to convert it at")
        epsilon = pure + _converted(rhos, rho_delta)
        view: dict[str, Any] = {
            "enterprise": enterprise,
            "dataset": dataset,
            "budget": str(budget),
            "window": label,
            "epsilon_spent": epsilon / UNITS,
            "epsilon_remaining": max(0, _units(budget.epsilon) - epsilon) / UNITS,
            "delta_spent": (delta + (_units(rho_delta) if rhos else 0)) / UNITS,
            "jobs_charged": jobs,
        }
        if rhos:
            view["rho_spent"] = rhos / UNITS
        return view

    def accounts(self) -> list[tuple[str, str]]:
        """Every (enterprise, dataset) that has been charged, sorted."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT DISTINCT enterprise, dataset FROM budget_charges ORDER BY 1, 2"
            ).fetchall()
        return [(str(e), str(d)) for e, d in rows]


def _spent(
    con: sqlite3.Connection, enterprise: str, dataset: str, start: str, end: str
) -> tuple[int, int, int, int]:
    """``(epsilon, delta, jobs, rho)`` charged to one account in ``[start, end)``, in units."""
    row = con.execute(
        "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0), COUNT(*),"
        " COALESCE(SUM(rho), 0)"
        " FROM budget_charges WHERE enterprise = ? AND dataset = ?"
        " AND charged_at >= ? AND charged_at < ?",
        (enterprise, dataset, start, end),
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def _converted(rho_units: int, rho_delta: float) -> int:
    """The epsilon (in units, rounded up so we never undercharge) of a total rho."""
    if rho_units == 0:
        return 0
    return math.ceil(zcdp_epsilon(rho_units / UNITS, rho_delta) * UNITS)


def _units(value: float) -> int:
    # Nearest unit: 0.1 is 100000000, so ten charges of 0.1 fit a budget of 1 exactly.
    return round(value * UNITS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def budgets_for(spec_budget: str, obligations: Mapping[str, str]) -> tuple[Budget, ...]:
    """The budgets a job must fit: the manifest's and, when a policy sets one, the policy's.

    Both apply (each in its own window), so a policy can only tighten the manifest.
    Raises :class:`ConfigError` for a malformed policy budget (fail closed).
    """
    found = [Budget.parse(spec_budget)]
    if "budget" in obligations:
        found.append(Budget.parse(str(obligations["budget"])))
    return tuple(found)


def reserve_for_plan(
    accountant: Accountant,
    plan: Plan,
    *,
    spec: DatasetSpec,
    enterprise: str,
    job_id: str,
    obligations: Mapping[str, str],
    is_released: Callable[[str], bool],
    partner: DatasetSpec | None = None,
) -> dict[str, Any]:
    """Reserve what ``plan`` costs, or find the stored release that answers it for free.

    ``partner`` is the spec of the dataset a join plan reads too: it is charged the same,
    under its own budgets, in the same transaction (both or neither).
    Returns the ``budget`` record for the ledger and the admission: the charge, the
    ``release_key``, and ``reuse_of`` (a job id) when a stored release answers it.
    Raises :class:`BudgetExhausted` or :class:`ConfigError` as :meth:`Accountant.reserve`.
    """
    cost = plan_charge(plan)
    key = release_key(plan)
    earlier = accountant.find_release(enterprise=enterprise, dataset=plan.dataset, release_key=key)
    if earlier is not None and is_released(earlier):
        return {"epsilon": 0.0, "delta": 0.0, "release_key": key, "reuse_of": earlier}
    if cost.epsilon == 0 and cost.delta == 0 and cost.rho == 0:
        # threshold-only: not DP, nothing to account
        return {"epsilon": 0.0, "delta": 0.0, "release_key": key, "mode": "threshold_only"}
    charge = accountant.reserve(
        enterprise=enterprise,
        dataset=plan.dataset,
        job_id=job_id,
        epsilon=cost.epsilon,
        delta=cost.delta,
        rho=cost.rho,
        rho_delta=cost.rho_delta or spec.privacy.delta,
        budgets=budgets_for(spec.privacy.budget, obligations),
        release_key=key,
        also=[(partner.name, budgets_for(partner.privacy.budget, obligations))]
        if partner is not None
        else (),
    )
    record = {**charge.to_json(), "release_key": key}
    if partner is not None:
        record["datasets"] = [plan.dataset, partner.name]
    return record


def budget_views(
    accountant: Accountant, specs: Iterable[DatasetSpec], enterprises: Iterable[str]
) -> list[dict[str, Any]]:
    """Spent and remaining budget for each enterprise and dataset (manifest budgets)."""
    specs = tuple(specs)
    views = []
    for enterprise in enterprises:
        for spec in specs:
            if spec.privacy.mode != "dp":
                continue
            budget = Budget.parse(spec.privacy.budget)
            views.append(
                accountant.spent(
                    enterprise=enterprise,
                    dataset=spec.name,
                    budget=budget,
                    rho_delta=spec.privacy.delta,
                )
            )
    return views
