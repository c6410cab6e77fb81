"""The access decision: one request, one policy set, one Cedar evaluation, fail closed.

Cedar already denies when no permit matches and lets a matching forbid override any
permit. We add: no policy set denies; a request Cedar cannot evaluate (unknown
computation, attributes the schema does not declare, …) denies; and *any* policy
evaluation error denies, even where Cedar alone would allow, because Cedar skips an
erroring policy and that policy may have been the forbid meant to stop this request.

Before Cedar runs, the licence guard denies an enterprise whose registry ``status`` is
not ``"active"`` or whose ``licence_expires`` has passed, whatever the policies say: a
suspension must not depend on every author remembering to test for it.

An allow carries the obligations of the permits that determined it, merged
strictest-first (:mod:`policies._obligations`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

import cedarpy

from policies._cache import merged, prepared
from policies._entities import (
    ACTIVE,
    LONG_MAX,
    PRINCIPAL_TYPE,
    RESOURCE_TYPE,
    cedar_request,
    check_grant,
    entities,
    principal_ancestors,
)
from policies._errors import PolicyError
from policies._obligations import check_annotations
from policies._policy_set import VERSION_PREFIX, PolicySet

# Decision codes: stable message ids for every language (see policies._messages).
ALLOWED = "allowed"
FORBIDDEN = "forbidden"
NO_PERMIT = "no_permit"
NO_POLICY_SET = "no_policy_set"
NOT_EVALUATED = "not_evaluated"
LICENCE_INACTIVE = "licence_inactive"
LICENCE_EXPIRED = "licence_expired"
COLUMNS_NOT_ALLOWED = "columns_not_allowed"
DECISION_CODES = (
    ALLOWED,
    FORBIDDEN,
    NO_PERMIT,
    NO_POLICY_SET,
    NOT_EVALUATED,
    LICENCE_INACTIVE,
    LICENCE_EXPIRED,
    COLUMNS_NOT_ALLOWED,
)

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
    str, int, bool, datetime, lists and str-keyed mappings of these); a ``None`` value
    leaves an optional attribute out. ``dataset_groups`` maps each ``DatasetGroup`` the
    dataset belongs to onto that group's attributes. ``epsilon`` (the privacy cost the
    job asks for, ``None`` for none), ``columns`` (the columns it uses) and
    ``result_size`` (the most rows its result can have, ``None`` when unknown, which
    Cedar sees as the largest Long so that a size limit fails closed) become
    ``context.job``. ``grants`` maps the id of each grant the bureau issued to the
    enterprise onto its ``purpose``, ``valid_from``, ``valid_until``, ``status``,
    ``datasets``, ``groups`` and ``obligations`` (see :mod:`policies._entities` for how
    they become ``Grant`` entities). Raises :class:`PolicyError` on a malformed value.
    """

    enterprise: str
    computation: str
    dataset: str
    purpose: str
    time: datetime
    enterprise_attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    dataset_attrs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    dataset_groups: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    epsilon: Decimal | None = None
    columns: tuple[str, ...] = ()
    result_size: int | None = None
    grants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

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
        groups = _frozen_mapping(self.dataset_groups, "dataset_groups")
        object.__setattr__(
            self,
            "dataset_groups",
            MappingProxyType(
                {g: _frozen_mapping(a, f"dataset_groups[{g!r}]") for g, a in groups.items()}
            ),
        )
        if self.epsilon is not None:
            try:
                epsilon = Decimal(self.epsilon)
            except (InvalidOperation, TypeError, ValueError) as exc:
                raise PolicyError("AccessRequest.epsilon must be a decimal number") from exc
            if not epsilon.is_finite() or epsilon < 0:
                raise PolicyError("AccessRequest.epsilon must be finite and not negative")
            object.__setattr__(self, "epsilon", epsilon)
        columns = tuple(self.columns)
        if not all(isinstance(c, str) for c in columns):
            raise PolicyError("AccessRequest.columns must be column names (str)")
        object.__setattr__(self, "columns", tuple(sorted(set(columns))))
        if self.result_size is not None and (
            isinstance(self.result_size, bool)
            or not isinstance(self.result_size, int)
            or not 0 <= self.result_size <= LONG_MAX
        ):
            raise PolicyError("AccessRequest.result_size must be a whole number >= 0, or None")
        grants = _frozen_mapping(self.grants, "grants")
        checked = {}
        for grant_id, attrs in grants.items():
            grant = check_grant(grant_id, attrs)
            problems = check_annotations(grant["obligations"], effect="permit")
            if problems:
                raise PolicyError(f"grant {grant_id!r}: {'; '.join(problems)}")
            checked[grant_id] = MappingProxyType(grant)
        object.__setattr__(self, "grants", MappingProxyType(checked))


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`.

    ``determining_policies`` are the ``@id`` values of the policies that decided it (the
    permits for an allow, the forbids for an explicit deny; empty for a default deny).
    ``errors`` are Cedar's messages when the request could not be fully evaluated; any
    error means a deny. ``policy_version`` is the set's version, or ``""`` when there was
    no policy set. ``obligations`` are the merged obligations of an allow (always empty
    for a deny). ``code`` is the stable message id of the outcome (one of
    ``DECISION_CODES``); ``details`` fill its message in any language. Raises
    :class:`PolicyError` if the fields contradict each other.
    """

    allowed: bool
    determining_policies: tuple[str, ...]
    reason: str
    errors: tuple[str, ...]
    policy_version: str
    obligations: Mapping[str, str] = field(default_factory=dict, hash=False)
    code: str = ""
    details: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "determining_policies", tuple(self.determining_policies))
        object.__setattr__(self, "errors", tuple(self.errors))
        object.__setattr__(
            self,
            "obligations",
            MappingProxyType(dict(_frozen_mapping(self.obligations, "obligations"))),
        )
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
        if not self.code:
            object.__setattr__(self, "code", ALLOWED if self.allowed else NO_PERMIT)
        if self.code not in DECISION_CODES:
            raise PolicyError(f"Decision.code must be one of {DECISION_CODES}")
        if (self.code == ALLOWED) != (self.allowed is True):
            raise PolicyError("Decision.code must be 'allowed' exactly when allowed")
        if not self.allowed and self.obligations:
            raise PolicyError("a deny carries no obligations")
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
            code=NO_POLICY_SET,
        )
    version = policy_set.version
    guard = _licence_guard(request, version)
    if guard is not None:
        return guard
    try:
        handles = policy_set._handles()
        action = request.computation
        checked = action in handles.valid_actions
        try:
            subset, parsed = prepared(handles, request)
        except ValueError:  # let Cedar say what does not conform, and deny below
            items = entities(request)
            subset = handles.for_principal(
                PRINCIPAL_TYPE, request.enterprise, principal_ancestors(items)
            )
            parsed, checked = items, False
        result = cedarpy.is_authorized(
            cedar_request(request),
            subset,
            parsed,
            # Cedar checks the request against the schema once per action: every request
            # we build has the same Cedar types, so only the action can make it fail.
            schema=None if checked else handles.schema,
        )
        verdict = result.decision
        if not checked and verdict is not cedarpy.Decision.NoDecision:
            handles.valid_actions.add(action)
        reasons = result.diagnostics.reasons
        annotations = result.diagnostics.id_annotations_by_reason
        errors = tuple(str(e) for e in result.diagnostics.errors)
    except Exception as exc:  # fail closed on anything the evaluation throws
        return _refusal(request, version, (f"request could not be evaluated: {exc}",))

    determining = tuple(str(annotations.get(r, r)) for r in reasons)
    if verdict is cedarpy.Decision.Allow and determining and not errors:
        try:
            obligations = merged(handles, request, determining)
        except KeyError:  # a reason we cannot map to a policy: never allow on a guess
            return _refusal(request, version, ("determining policy not in the set",))
        if "allowed_columns" in obligations:
            allowed = set(filter(None, obligations["allowed_columns"].split(",")))
            outside = sorted(set(request.columns) - allowed)
            if outside:
                return Decision(
                    allowed=False,
                    determining_policies=determining,
                    reason=(
                        f"denied: {_name_policies(determining)} allow only the columns "
                        f"{', '.join(sorted(allowed)) or '(none)'}; the job uses "
                        f"{', '.join(outside)}"
                    ),
                    errors=(),
                    policy_version=version,
                    code=COLUMNS_NOT_ALLOWED,
                    details={
                        "policies": ", ".join(determining),
                        "allowed": ", ".join(sorted(allowed)) or "-",
                        "columns": ", ".join(outside),
                    },
                )
        return _allow(handles, version, determining, obligations)
    if verdict is cedarpy.Decision.Deny and determining:
        return Decision(
            allowed=False,
            determining_policies=determining,
            reason=f"denied by {_name_policies(determining)}",
            errors=errors,
            policy_version=version,
            code=FORBIDDEN,
            details={"policies": ", ".join(determining)},
        )
    if errors:
        return _refusal(request, version, errors)
    return Decision(
        allowed=False,
        determining_policies=(),
        reason=f"denied: no policy permits {_describe(request)}",
        errors=(),
        policy_version=version,
        code=NO_PERMIT,
        details=_describe_details(request),
    )


def _allow(
    handles: Any, version: str, determining: tuple[str, ...], obligations: Mapping[str, str]
) -> Decision:
    """The allow :class:`Decision`; it depends on nothing but its arguments, so equal
    allows share one immutable value (cached per policy version)."""
    key = ("allow", determining, tuple(obligations.items()))
    cached: Decision | None = handles.merged.get(key)
    if cached is None:
        cached = Decision(
            allowed=True,
            determining_policies=determining,
            reason=f"allowed by {_name_policies(determining)}",
            errors=(),
            policy_version=version,
            obligations=obligations,
            code=ALLOWED,
            details={"policies": ", ".join(determining)},
        )
        handles.remember(handles.merged, key, cached)
    return cached


def _licence_guard(request: AccessRequest, version: str) -> Decision | None:
    """Deny a suspended, unknown or expired licence before any policy is consulted."""
    status = request.enterprise_attrs.get("status")
    expires = request.enterprise_attrs.get("licence_expires")
    if status == ACTIVE and (
        expires is None
        or (
            isinstance(expires, datetime)
            and expires.utcoffset() is not None
            and request.time < expires
        )
    ):
        return None  # the common case, decided without building any message
    details = {**_describe_details(request), "status": str(status)}
    if status != ACTIVE:
        return Decision(
            allowed=False,
            determining_policies=(),
            reason=(
                f"denied: the licence of {PRINCIPAL_TYPE} {_quote(request.enterprise)} is "
                f"{_quote(str(status)) if status is not None else 'not registered'}, not active"
            ),
            errors=(),
            policy_version=version,
            code=LICENCE_INACTIVE,
            details=details,
        )
    if expires is not None:
        if not isinstance(expires, datetime) or expires.utcoffset() is None:
            return _refusal(request, version, ("licence_expires must be an aware datetime",))
        if request.time >= expires:
            return Decision(
                allowed=False,
                determining_policies=(),
                reason=(
                    f"denied: the licence of {PRINCIPAL_TYPE} {_quote(request.enterprise)} "
                    f"expired at {expires.astimezone(UTC).isoformat()}"
                ),
                errors=(),
                policy_version=version,
                code=LICENCE_EXPIRED,
                details={**details, "expires": expires.astimezone(UTC).isoformat()},
            )
    return None


def _describe_details(request: AccessRequest) -> dict[str, str]:
    return {
        "enterprise": request.enterprise,
        "computation": request.computation,
        "dataset": request.dataset,
        "purpose": request.purpose,
    }


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
        code=NOT_EVALUATED,
        details={**_describe_details(request), "error": errors[0]},
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
