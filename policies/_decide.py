"""The access decision: one request, one policy set, one Cedar evaluation, fail closed.

Cedar already denies when no permit matches and lets a matching forbid override any
permit. We add: no policy set denies; a request Cedar cannot evaluate (unknown
computation, attributes the schema does not declare, …) denies; and *any* policy
evaluation error denies, even where Cedar alone would allow, because Cedar skips an
erroring policy and that policy may have been the forbid meant to stop this request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import cedarpy

from policies._errors import PolicyError
from policies._policy_set import VERSION_PREFIX, PolicySet

PRINCIPAL_TYPE = "Enterprise"
RESOURCE_TYPE = "Dataset"
ACTION_TYPE = "Action"

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _frozen_mapping(value: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise PolicyError(f"{what} must be a mapping with str keys")
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class AccessRequest:
    """Who asks to run which computation on which dataset, why, and when.

    ``time`` must be timezone-aware; it is stored in UTC. ``enterprise_attrs`` and
    ``dataset_attrs`` become Cedar entity attributes and must fit the schema (values:
    str, int, bool, datetime, lists and str-keyed mappings of these). Raises
    :class:`PolicyError` on a malformed value.
    """

    enterprise: str
    computation: str
    dataset: str
    purpose: str
    time: datetime
    enterprise_attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    dataset_attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("enterprise", "computation", "dataset", "purpose"):
            if not isinstance(getattr(self, name), str):
                raise PolicyError(f"AccessRequest.{name} must be a str")
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise PolicyError("AccessRequest.time must be a timezone-aware datetime")
        object.__setattr__(self, "time", self.time.astimezone(UTC))
        object.__setattr__(
            self, "enterprise_attrs", _frozen_mapping(self.enterprise_attrs, "enterprise_attrs")
        )
        object.__setattr__(
            self, "dataset_attrs", _frozen_mapping(self.dataset_attrs, "dataset_attrs")
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`.

    ``determining_policies`` are the ``@id`` values of the policies that decided it (the
    permits for an allow, the forbids for an explicit deny; empty for a default deny).
    ``errors`` are Cedar's messages when the request could not be fully evaluated; any
    error means a deny. ``policy_version`` is the set's version, or ``""`` when there was
    no policy set. Raises :class:`PolicyError` if the fields contradict each other.
    """

    allowed: bool
    determining_policies: tuple[str, ...]
    reason: str
    errors: tuple[str, ...]
    policy_version: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "determining_policies", tuple(self.determining_policies))
        object.__setattr__(self, "errors", tuple(self.errors))
        if not isinstance(self.allowed, bool):
            raise PolicyError("Decision.allowed must be a bool")
        if not self.reason:
            raise PolicyError("Decision.reason must say why")
        if self.allowed and (self.errors or not self.determining_policies):
            raise PolicyError("an allow needs a determining policy and no errors")
        if self.policy_version and not self.policy_version.startswith(VERSION_PREFIX):
            raise PolicyError(f"Decision.policy_version must start with {VERSION_PREFIX!r}")


def decide(policy_set: PolicySet | None, request: AccessRequest) -> Decision:
    """Evaluate ``request`` against ``policy_set`` with Cedar; never raises for a refusal.

    Returns an allow only when Cedar allows without any evaluation error. ``None`` as
    the policy set denies. Raises :class:`PolicyError` only if ``request`` is not an
    :class:`AccessRequest`.
    """
    if not isinstance(request, AccessRequest):
        raise PolicyError("decide() needs an AccessRequest")
    if policy_set is None:
        return Decision(
            allowed=False,
            determining_policies=(),
            reason="denied: no policy set is applied",
            errors=(),
            policy_version="",
        )
    version = policy_set.version
    try:
        handles = policy_set._handles()
        result = cedarpy.is_authorized(
            _cedar_request(request), handles.policies, _entities(request), schema=handles.schema
        )
        verdict = result.decision
        reasons = result.diagnostics.reasons
        annotations = result.diagnostics.id_annotations_by_reason
        errors = tuple(str(e) for e in result.diagnostics.errors)
    except Exception as exc:  # fail closed on anything the evaluation throws
        return _refusal(request, version, (f"request could not be evaluated: {exc}",))

    determining = tuple(str(annotations.get(r, r)) for r in reasons)
    if verdict is cedarpy.Decision.Allow and determining and not errors:
        return Decision(
            allowed=True,
            determining_policies=determining,
            reason=f"allowed by {_name_policies(determining)}",
            errors=(),
            policy_version=version,
        )
    if verdict is cedarpy.Decision.Deny and determining:
        return Decision(
            allowed=False,
            determining_policies=determining,
            reason=f"denied by {_name_policies(determining)}",
            errors=errors,
            policy_version=version,
        )
    if errors:
        return _refusal(request, version, errors)
    return Decision(
        allowed=False,
        determining_policies=(),
        reason=f"denied: no policy permits {_describe(request)}",
        errors=(),
        policy_version=version,
    )


def _refusal(request: AccessRequest, version: str, errors: tuple[str, ...]) -> Decision:
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Decision(
        allowed=False,
        determining_policies=(),
        reason=(
            f"denied: cannot decide whether to permit {_describe(request)}, "
            f"failing closed: {errors[0]}{more}"
        ),
        errors=errors,
        policy_version=version,
    )


def _describe(request: AccessRequest) -> str:
    return (
        f"{PRINCIPAL_TYPE} {_quote(request.enterprise)} to run {_name(request.computation)} "
        f"on {RESOURCE_TYPE} {_quote(request.dataset)}"
    )


def _quote(text: str) -> str:
    # JSON quoting keeps names with quotes or newlines unambiguous in one line.
    return json.dumps(text, ensure_ascii=False)


def _name(text: str) -> str:
    return text if _PLAIN_NAME.fullmatch(text) else _quote(text)


def _name_policies(ids: Sequence[str]) -> str:
    noun = "policy" if len(ids) == 1 else "policies"
    return f"{noun} " + ", ".join(_quote(i) for i in ids)


def _uid(entity_type: str, entity_id: str) -> dict[str, str]:
    # Structured uids, never Cedar text: a name cannot inject syntax.
    return {"type": entity_type, "id": entity_id}


def _cedar_datetime(moment: datetime) -> dict[str, Any]:
    """Cedar ``datetime`` (millisecond precision, UTC) in Cedar's JSON extension form.

    Truncating to milliseconds never moves a time past an expiry boundary, since Cedar
    datetimes in policies have at most millisecond precision too.
    """
    utc = moment.astimezone(UTC)
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )
    return {"__extn": {"fn": "datetime", "arg": text}}


def _cedar_value(value: Any) -> Any:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise PolicyError("entity attribute datetimes must be timezone-aware")
        return _cedar_datetime(value)
    if isinstance(value, Mapping):
        return {str(k): _cedar_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_cedar_value(v) for v in value]
    raise PolicyError(f"entity attribute of type {type(value).__name__} has no Cedar form")


def _cedar_request(request: AccessRequest) -> dict[str, Any]:
    return {
        "principal": _uid(PRINCIPAL_TYPE, request.enterprise),
        "action": _uid(ACTION_TYPE, request.computation),
        "resource": _uid(RESOURCE_TYPE, request.dataset),
        "context": {"purpose": request.purpose, "now": _cedar_datetime(request.time)},
    }


def _entities(request: AccessRequest) -> list[dict[str, Any]]:
    return [
        {
            "uid": _uid(PRINCIPAL_TYPE, request.enterprise),
            "attrs": _cedar_value(request.enterprise_attrs),
            "parents": [],
        },
        {
            "uid": _uid(RESOURCE_TYPE, request.dataset),
            "attrs": _cedar_value(request.dataset_attrs),
            "parents": [],
        },
    ]
