"""The catalogue an enterprise browses: metadata, privacy rules, what its grants allow it
to run, and a synthetic sample, never a real row.

The synthetic sample is generated only from the manifest (declared column classes,
``keys`` as the public domain of a dimension, ``bounds`` and ``decimals`` for numbers)
and the column types, with a generator seeded by the dataset name: the dataset's rows are
never opened, so the sample cannot leak one. Columns without a public domain get
obviously synthetic values (``district_003``, ``SYN-000001``, numbers a small step above
the declared lower bound).

"What your grants allow" is answered by asking the policies, for every approved
computation and every purpose the policies name (``context.purpose == "…"``), whether
this enterprise may run it now, with the obligations it would carry. The catalogue has no
job to ask about, so a policy condition on the job itself (``context.job.epsilon``,
``.columns``, ``.result_size``) cannot be judged here: each answer lists, under
``checked_at_submit``, the job attributes some policy conditions on, which the gateway
decides when the job arrives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import policies
from computations import ColumnClass, available_computations
from indomain.policy_requests import registry_request

SAMPLE_ROWS = 5


def _nodes(tree: Any) -> Iterator[Mapping[str, Any]]:
    """Every object in a policy's Cedar JSON, depth first."""
    if isinstance(tree, Mapping):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def purposes_named(policy_set: policies.PolicySet | None) -> tuple[str, ...]:
    """Every string compared with ``context.purpose`` in a permit."""
    if policy_set is None:
        return ()
    target = {".": {"left": {"Var": "context"}, "attr": "purpose"}}
    found: set[str] = set()
    for body in policy_set.bodies().values():
        if body.get("effect") != "permit":
            continue
        for node in _nodes(body.get("conditions", [])):
            eq = node.get("==")
            if isinstance(eq, Mapping) and target in (eq.get("left"), eq.get("right")):
                for side in (eq.get("left"), eq.get("right")):
                    if isinstance(side, Mapping) and isinstance(side.get("Value"), str):
                        found.add(side["Value"])
    return tuple(sorted(found))


def job_attributes_named(policy_set: policies.PolicySet | None) -> tuple[str, ...]:
    """Every ``context.job.<attr>`` some policy (permit or forbid) reads or tests."""
    if policy_set is None:
        return ()
    job = {".": {"left": {"Var": "context"}, "attr": "job"}}
    found: set[str] = set()
    for body in policy_set.bodies().values():
        for node in _nodes(body.get("conditions", [])):
            for operator in (".", "has"):
                access = node.get(operator)
                if isinstance(access, Mapping) and access.get("left") == job:
                    found.add(str(access.get("attr")))
    return tuple(f"job.{name}" for name in sorted(found))


def allowed_for(
    sandbox: Any, enterprise: str, dataset: str, *, now: datetime
) -> list[dict[str, Any]]:
    """The (computation, purpose) pairs ``enterprise`` may run on ``dataset`` at ``now``."""
    policy_set = sandbox.policy_set
    # Registry grants bind their purpose outside the policy text: ask for theirs too.
    grant_purposes = {g.purpose for g in sandbox.registry.grants(enterprise)}
    undecided = list(job_attributes_named(policy_set))
    out = []
    for computation in available_computations():
        for purpose in sorted(set(purposes_named(policy_set)) | grant_purposes):
            request = registry_request(
                sandbox.registry,
                enterprise=enterprise,
                computation=computation,
                dataset=dataset,
                purpose=purpose,
                when=now,
            )
            decision = policies.decide(policy_set, request)
            if decision.allowed:
                out.append(
                    {
                        "computation": computation,
                        "purpose": purpose,
                        "policies": list(decision.determining_policies),
                        "obligations": dict(decision.obligations),
                        "checked_at_submit": undecided,
                    }
                )
    return out


def synthetic_sample(
    spec: Any, column_types: Mapping[str, str], rows: int = SAMPLE_ROWS
) -> list[dict[str, Any]]:
    """``rows`` made-up rows from the manifest and column types alone (never real data)."""
    sample = []
    for n in range(1, rows + 1):
        row: dict[str, Any] = {}
        for column in spec.columns:
            pick = _Pick(f"{spec.name}\0{column.name}\0{n}")
            row[column.name] = _value(column, column_types.get(column.name, ""), n, pick)
        sample.append(row)
    return sample


class _Pick:
    """Made-up choices as a hash of (dataset, column, row): the same sample every time, and
    no random number generator anywhere near the privacy path (none is needed: nothing here
    is secret or comes from a real row)."""

    def __init__(self, seed: str) -> None:
        self._seed, self._calls = seed.encode(), 0

    def randint(self, low: int, high: int) -> int:
        self._calls += 1
        digest = hashlib.blake2b(self._seed + bytes([self._calls]), digest_size=8).digest()
        return low + int.from_bytes(digest, "big") % (high - low + 1)

    def choice(self, options: list[Any]) -> Any:
        return options[self.randint(0, len(options) - 1)]


def _value(column: Any, duck_type: str, n: int, rng: _Pick) -> Any:
    kind = duck_type.upper()
    if column.cls == ColumnClass.identifier:
        return f"SYN-{n:06d}" if "INT" not in kind else -n  # never a plausible real id
    if column.keys:
        return rng.choice(list(column.keys))
    if "BOOL" in kind:
        return rng.randint(0, 1) == 1
    if column.bounds is not None or "INT" in kind or _is_float(kind):
        # Small steps above the declared lower bound: in range for client code, and
        # visibly made up (a plausible-looking income could be mistaken for a real one).
        low, high = column.bounds if column.bounds is not None else (0, 99)
        step = rng.randint(0, int(min(99, max(0, float(high) - float(low)))))
        if "INT" in kind or (column.decimals == 0 and not _is_float(kind)):
            return int(low) + step
        return round(float(low) + step / 100, 2)
    if "TIMESTAMP" in kind:
        moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 1500))
        return moment.isoformat()
    if "DATE" in kind:
        return (date(2020, 1, 1) + timedelta(days=rng.randint(0, 1500))).isoformat()
    return f"{column.name}_{rng.randint(1, 20):03d}"


def _is_float(kind: str) -> bool:
    return any(t in kind for t in ("DOUBLE", "FLOAT", "DECIMAL", "REAL"))


def catalogue_for(
    sandbox: Any, enterprise: str | None, *, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The catalogue with privacy rules, class, synthetic sample and (for an enterprise)
    what its grants allow on each dataset."""
    moment = now or datetime.now(UTC)
    entries: list[dict[str, Any]] = sandbox.catalogue()
    records = {r.name: r for r in sandbox.enclave.datasets()}
    for entry in entries:
        record = records.get(entry["name"])
        if record is None:
            continue
        spec = record.spec
        privacy = getattr(spec, "privacy", None)
        entry["privacy_rules"] = privacy.model_dump(mode="json") if privacy is not None else {}
        dclass = sandbox.registry.dataset_class(record.name)
        entry["sensitivity"] = dclass.sensitivity
        entry["groups"] = list(dclass.groups)
        entry["synthetic_sample"] = synthetic_sample(spec, record.column_types)
        if enterprise is not None:
            entry["allowed"] = allowed_for(sandbox, enterprise, record.name, now=moment)
    return entries
