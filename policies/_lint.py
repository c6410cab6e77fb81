"""Lint for a valid policy set: what Cedar accepts but a careful author would not mean.

* ``unreachable``: a permit that a matching, unconditional forbid always overrides;
* ``no-purpose``: a permit that never tests ``context.purpose`` (a grant binds a purpose);
* ``no-expiry``: a permit that never tests ``context.now`` (a grant binds a validity window).

A permit scoped ``principal in Grant::"G"`` is bound to the registry grant's purpose and
window (the principal is in the grant only while it is in force for the job's purpose),
so neither ``no-purpose`` nor ``no-expiry`` applies to it; instead

* ``grant-resource``: such a permit whose resource scope is not ``resource in
  Grant::"G"`` (the same grant), so the grant's datasets and groups do not bind it.

Findings are warnings: the set is still valid. ``indomain policy validate --strict``
refuses a set with any finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies._policy_set import PolicySet

LINT_RULES = ("grant-resource", "no-expiry", "no-purpose", "unreachable")


@dataclass(frozen=True)
class LintFinding:
    """One finding: the rule broken, the policy's ``@id`` and a sentence saying why."""

    rule: str
    policy: str
    message: str

    def __str__(self) -> str:
        return f'policy "{self.policy}": {self.rule}: {self.message}'


def lint(policy_set: PolicySet) -> tuple[LintFinding, ...]:
    """Every finding in ``policy_set``, in policy order."""
    bodies = policy_set._handles().bodies
    grant_scoped = policy_set._handles().grant_scopes
    forbids = [
        (pid, body)
        for pid, body in bodies.items()
        if body.get("effect") == "forbid" and not body.get("conditions")
    ]
    findings = []
    for pid, body in bodies.items():
        if body.get("effect") != "permit":
            continue
        for fid, forbid in forbids:
            if _covers(forbid, body):
                findings.append(
                    LintFinding(
                        "unreachable",
                        pid,
                        f'never allows anything: the unconditional forbid "{fid}" covers its scope',
                    )
                )
                break
        conditions = body.get("conditions", [])
        if pid in grant_scoped:
            grant = {"type": "Grant", "id": grant_scoped[pid]}
            if body.get("resource") != {"op": "in", "entity": grant}:
                findings.append(
                    LintFinding(
                        "grant-resource",
                        pid,
                        f'names grant "{grant_scoped[pid]}" for its principal but not for its '
                        "resource, so the grant's datasets do not bind it",
                    )
                )
            continue
        if not _mentions(conditions, "purpose"):
            findings.append(
                LintFinding(
                    "no-purpose",
                    pid,
                    "does not test context.purpose, so it grants for every declared purpose",
                )
            )
        if not _mentions(conditions, "now"):
            findings.append(
                LintFinding(
                    "no-expiry",
                    pid,
                    "does not test context.now, so the grant never expires",
                )
            )
    return tuple(findings)


def _covers(forbid: Mapping[str, Any], permit: Mapping[str, Any]) -> bool:
    """Whether ``forbid``'s scope includes all of ``permit``'s (conservatively)."""
    for part in ("principal", "action", "resource"):
        wide = forbid.get(part, {})
        narrow = permit.get(part, {})
        if wide.get("op") == "All":
            continue
        if wide != narrow:
            return False
    return True


def _mentions(node: Any, attr: str) -> bool:
    """Whether an expression tree reads ``context.<attr>``."""
    if isinstance(node, Mapping):
        dot = node.get(".")
        if (
            isinstance(dot, Mapping)
            and dot.get("attr") == attr
            and dot.get("left") == {"Var": "context"}
        ):
            return True
        return any(_mentions(v, attr) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, attr) for v in node)
    return False
