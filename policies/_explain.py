"""Explain a decision: which policies' scopes matched, and which of their conditions held.

For a deny this answers "what failed": a permit whose scope matched but whose condition
``context.purpose == "credit_risk_model"`` was false. Each policy's ``when`` condition
is split at its top-level ``&&`` into conditions, and each one (an ``unless`` condition
negated) is evaluated by Cedar as a policy of its own with the original scope, all in
one call. The decision itself is always :func:`decide`'s: the explanation only reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cedarpy

from policies._decide import AccessRequest, Decision, decide
from policies._entities import cedar_request, entities, grant_state
from policies._policy_set import PolicySet

_SCOPE = "scope"


@dataclass(frozen=True)
class ConditionCheck:
    """One condition of a policy as Cedar text, and whether it held (``None``: error)."""

    text: str
    holds: bool | None


@dataclass(frozen=True)
class PolicyCheck:
    """A policy whose scope (principal, action, resource) matched the request."""

    policy: str
    effect: str
    conditions: tuple[ConditionCheck, ...]

    @property
    def satisfied(self) -> bool:
        return all(c.holds is True for c in self.conditions)

    def failed(self) -> tuple[ConditionCheck, ...]:
        return tuple(c for c in self.conditions if c.holds is not True)


@dataclass(frozen=True)
class Explanation:
    """The decision and, for every policy whose scope matched, its conditions' outcomes."""

    decision: Decision
    matched: tuple[PolicyCheck, ...]
    # each registry grant the enterprise holds -> "in force" or why not
    grants: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "allowed": d.allowed,
            "code": d.code,
            "reason": d.reason,
            "determining_policies": list(d.determining_policies),
            "obligations": dict(d.obligations),
            "policy_version": d.policy_version,
            "errors": list(d.errors),
            "matched": [
                {
                    "policy": p.policy,
                    "effect": p.effect,
                    "satisfied": p.satisfied,
                    "conditions": [{"text": c.text, "holds": c.holds} for c in p.conditions],
                }
                for p in self.matched
            ],
            "grants": dict(self.grants),
        }


def explain(policy_set: PolicySet, request: AccessRequest) -> Explanation:
    """Decide ``request`` and explain it. Never raises for a refusal; an evaluation error
    marks the conditions it touched as ``holds=None``."""
    decision = decide(policy_set, request)
    grants = {
        g: grant_state(a, purpose=request.purpose, time=request.time)
        for g, a in request.grants.items()
    }
    bodies = policy_set._handles().bodies
    variants: dict[str, dict[str, Any]] = {}
    parts: dict[str, list[Any]] = {}
    for pid, body in bodies.items():
        conjuncts = _conjuncts(body.get("conditions", []))
        parts[pid] = conjuncts
        variants[_vid(pid, _SCOPE)] = _variant(body, None)
        for number, conj in enumerate(conjuncts):
            variants[_vid(pid, str(number))] = _variant(body, conj)
    try:
        combined = cedarpy.PolicySet.from_json_str(
            json.dumps({"staticPolicies": variants, "templates": {}, "templateLinks": []})
        )
        result = cedarpy.is_authorized(
            cedar_request(request),
            combined,
            entities(request),
            schema=policy_set._handles().schema,
        )
        held = set(result.diagnostics.reasons)
        erred = " ".join(str(e) for e in result.diagnostics.errors)
    except Exception:  # explanation is best effort; the decision above stands
        return Explanation(decision=decision, matched=(), grants=grants)
    matched = []
    for pid, body in bodies.items():
        if _vid(pid, _SCOPE) not in held:
            continue
        checks = []
        for number, conj in enumerate(parts[pid]):
            vid = _vid(pid, str(number))
            holds: bool | None = True if vid in held else (None if vid in erred else False)
            checks.append(ConditionCheck(text=_render(conj), holds=holds))
        matched.append(
            PolicyCheck(policy=pid, effect=str(body.get("effect")), conditions=tuple(checks))
        )
    return Explanation(decision=decision, matched=tuple(matched), grants=grants)


def _vid(pid: str, part: str) -> str:
    return f"{pid}#{part}"


def _conjuncts(conditions: list[Mapping[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for condition in conditions:
        body = condition.get("body")
        if condition.get("kind") == "unless":
            out.append({"!": {"arg": body}})
        else:
            out.extend(_split_and(body))
    return out


def _split_and(node: Any) -> list[Any]:
    if isinstance(node, Mapping) and set(node) == {"&&"}:
        both = node["&&"]
        return [*_split_and(both["left"]), *_split_and(both["right"])]
    return [node]


def _variant(body: Mapping[str, Any], conj: Any) -> dict[str, Any]:
    variant = {
        "effect": "permit",
        "principal": body["principal"],
        "action": body["action"],
        "resource": body["resource"],
        "conditions": [] if conj is None else [{"kind": "when", "body": conj}],
    }
    return variant


_WHEN = re.compile(r"when\s*\{(.*)\}\s*;\s*$", re.DOTALL)


def _render(conj: Any) -> str:
    """Cedar text of one condition, as Cedar's formatter writes it."""
    policy = {
        "effect": "permit",
        "principal": {"op": "All"},
        "action": {"op": "All"},
        "resource": {"op": "All"},
        "conditions": [{"kind": "when", "body": conj}],
    }
    try:
        text = cedarpy.policies_from_json_str(
            json.dumps({"staticPolicies": {"c": policy}, "templates": {}, "templateLinks": []})
        )
        pretty = cedarpy.format_policies(text, 100)
    except Exception:
        return json.dumps(conj, sort_keys=True)
    match = _WHEN.search(pretty)
    return " ".join(match.group(1).split()) if match else " ".join(pretty.split())
