"""Policy authors' own test cases: a YAML document of requests and expected decisions.

::

    entities:                      # what the bureau's registry would supply
      enterprises:
        Acme Credit: {licence_number: L-1, licence_expires: 2027-12-31, status: active}
      datasets:
        residents: {sensitivity: 2, groups: [household]}
      grants:                      # grants the bureau issued (Grant entities)
        G-2026-014: {holder: Acme Credit, purpose: credit_risk_model,
                     valid_from: 2026-01-01, valid_until: 2027-01-01,
                     datasets: [residents], obligations: {epsilon_per_job: "0.5"}}
    cases:
      - name: Acme may aggregate residents for its credit model
        request: {enterprise: Acme Credit, computation: aggregate, dataset: residents,
                  purpose: credit_risk_model, time: 2026-11-22T09:00:00Z,
                  epsilon: 0.5, columns: [district]}
        expect: {decision: allow, policies: [acme-credit-aggregate],
                 obligations: {min_group_size: "10"}}

An enterprise or dataset not listed gets what the registry gives the unknown: status
``unlicensed`` and sensitivity 4; a grant's ``status`` is ``active`` unless given, and
``datasets``, ``groups`` and ``obligations`` are empty unless given. Unknown keys
anywhere are an error, not ignored.
``policies`` and ``obligations`` in ``expect`` are compared exactly when present.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from policies._decide import AccessRequest, Decision, decide
from policies._errors import PolicyError
from policies._policy_set import PolicySet


@dataclass(frozen=True)
class CaseResult:
    """One case: its name, whether it passed, what was decided and what differed."""

    name: str
    passed: bool
    decision: Decision | None
    problems: tuple[str, ...]


def _keys(
    value: Any, allowed: set[str], where: str, required: frozenset[str] | set[str] = frozenset()
) -> None:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}: must be a mapping")
    unknown = set(value) - allowed
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(map(str, unknown))}")
    missing = set(required) - set(value)
    if missing:
        raise PolicyError(f"{where}: missing keys {sorted(missing)}")


def _time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PolicyError(f"{where}: {value!r} is not a date or RFC 3339 time") from None
    else:
        raise PolicyError(f"{where}: must be a date or time")
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def requests_from(document: Any) -> list[tuple[str, AccessRequest, Mapping[str, Any]]]:
    """Parse a cases document into ``(name, request, expect)``; raises :class:`PolicyError`."""
    _keys(document, {"entities", "cases"}, "document", {"cases"})
    entities = document.get("entities") or {}
    _keys(entities, {"enterprises", "datasets", "grants"}, "entities")
    enterprises = entities.get("enterprises") or {}
    datasets = entities.get("datasets") or {}
    grants = _grants(entities.get("grants") or {})
    cases = document["cases"]
    if not isinstance(cases, list) or not cases:
        raise PolicyError("cases: must be a non-empty list (no cases is not a pass)")
    out = []
    for number, case in enumerate(cases, start=1):
        where = f"case {number}"
        _keys(case, {"name", "request", "expect"}, where, {"request", "expect"})
        name = str(case.get("name") or where)
        r = case["request"]
        _keys(
            r,
            {
                "enterprise",
                "computation",
                "dataset",
                "purpose",
                "time",
                "epsilon",
                "columns",
                "result_size",
            },
            f"{name}: request",
            {"enterprise", "computation", "dataset", "purpose", "time"},
        )
        e = enterprises.get(r["enterprise"], {"status": "unlicensed", "licence_number": ""})
        _keys(e, {"licence_number", "licence_expires", "status"}, f"enterprise {r['enterprise']}")
        d = datasets.get(r["dataset"], {"sensitivity": 4})
        _keys(d, {"sensitivity", "groups"}, f"dataset {r['dataset']}")
        expires = e.get("licence_expires")
        request = AccessRequest(
            enterprise=str(r["enterprise"]),
            computation=str(r["computation"]),
            dataset=str(r["dataset"]),
            purpose=str(r["purpose"]),
            time=_time(r["time"], f"{name}: time"),
            enterprise_attrs={
                "status": e.get("status", "active"),
                "licence_number": str(e.get("licence_number", "")),
                "licence_expires": None if expires is None else _time(expires, "licence_expires"),
            },
            dataset_attrs={"sensitivity": int(d.get("sensitivity", 4))},
            dataset_groups={
                str(g): {"sensitivity": int(d.get("sensitivity", 4))} for g in d.get("groups", [])
            },
            epsilon=None if r.get("epsilon") is None else Decimal(str(r["epsilon"])),
            columns=tuple(str(c) for c in r.get("columns", [])),
            result_size=r.get("result_size"),
            grants={
                gid: attrs for gid, (holder, attrs) in grants.items() if holder == r["enterprise"]
            },
        )
        expect = case["expect"]
        _keys(
            expect, {"decision", "policies", "obligations", "code"}, f"{name}: expect", {"decision"}
        )
        if expect["decision"] not in ("allow", "deny"):
            raise PolicyError(f"{name}: expect.decision must be allow or deny")
        out.append((name, request, expect))
    return out


def _grants(document: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """``id -> (holder, attributes)`` of the grants in a cases document."""
    if not isinstance(document, Mapping):
        raise PolicyError("entities.grants: must be a mapping of grant id to grant")
    out = {}
    for gid, g in document.items():
        where = f"grant {gid}"
        _keys(
            g,
            {"holder", "purpose", "valid_from", "valid_until", "status", "datasets", "groups"}
            | {"obligations"},
            where,
            {"holder", "purpose", "valid_from", "valid_until"},
        )
        obligations = g.get("obligations") or {}
        if not isinstance(obligations, Mapping):
            raise PolicyError(f"{where}: obligations must be a mapping")
        out[str(gid)] = (
            str(g["holder"]),
            {
                "purpose": str(g["purpose"]),
                "valid_from": _time(g["valid_from"], f"{where}: valid_from"),
                "valid_until": _time(g["valid_until"], f"{where}: valid_until"),
                "status": str(g.get("status", "active")),
                "datasets": [str(d) for d in g.get("datasets") or []],
                "groups": [str(d) for d in g.get("groups") or []],
                "obligations": {str(k): str(v) for k, v in obligations.items()},
            },
        )
    return out


def run_cases(policy_set: PolicySet, document: Any) -> list[CaseResult]:
    """Decide every case and compare; raises :class:`PolicyError` for a malformed document."""
    results = []
    for name, request, expect in requests_from(document):
        decision = decide(policy_set, request)
        problems = []
        got = "allow" if decision.allowed else "deny"
        if got != expect["decision"]:
            problems.append(f"expected {expect['decision']}, got {got}: {decision.reason}")
        if "code" in expect and expect["code"] != decision.code:
            problems.append(f"expected code {expect['code']}, got {decision.code}")
        if "policies" in expect and sorted(expect["policies"] or []) != sorted(
            decision.determining_policies
        ):
            problems.append(
                f"expected policies {sorted(expect['policies'] or [])}, "
                f"got {sorted(decision.determining_policies)}"
            )
        if "obligations" in expect:
            wanted = {str(k): str(v) for k, v in (expect["obligations"] or {}).items()}
            if wanted != dict(decision.obligations):
                problems.append(f"expected obligations {wanted}, got {dict(decision.obligations)}")
        results.append(CaseResult(name, not problems, decision, tuple(problems)))
    return results
