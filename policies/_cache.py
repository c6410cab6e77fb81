"""What :func:`policies.decide` keeps between decisions, and the keys that keep it right.

Everything here is cached on the policy set's parsed handles (so per policy version),
in bounded caches cleared when full, and keyed by every fact the cached value depends
on: a registry change is a different key, never a stale hit (see docs/policies.md,
"Performance").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import cedarpy

from policies._entities import PRINCIPAL_TYPE, entities, grant_in_force, principal_ancestors
from policies._obligations import merge_obligations, obligations_of

if TYPE_CHECKING:
    from policies._decide import AccessRequest


def prepared(
    handles: Any, request: AccessRequest
) -> tuple[cedarpy.PolicySet, cedarpy.Entities | list[dict[str, Any]]]:
    """The policies that can match and the parsed entities for ``request``, cached per
    registry facts (see :func:`facts_key`). Raises ``ValueError`` if the entities do not
    conform to the schema."""
    key = facts_key(request)
    cached = handles.prepared.get(key) if key is not None else None
    if cached is None:
        items = entities(request)
        cached = (
            handles.for_principal(PRINCIPAL_TYPE, request.enterprise, principal_ancestors(items)),
            handles.entities_handle(items),
        )
        if key is not None:
            handles.remember(handles.prepared, key, cached)
    return cached


def facts_key(request: AccessRequest) -> tuple[Any, ...] | None:
    """Everything :func:`entities` reads from ``request``, as a hashable key (``None``
    when a value is not hashable). Each value is paired with its type, since Python's
    ``1 == True == 1.0`` would otherwise share one key between different Cedar values."""

    def tagged(value: Any) -> Any:
        # Recursively: (1,) and (True,) are different Cedar values, and so are
        # Decimal(1) and 1, but equal (and equally hashed) Python tuples.
        if isinstance(value, Mapping):
            return (Mapping, tuple((k, tagged(v)) for k, v in value.items()))
        if isinstance(value, list | tuple):
            return (type(value), tuple(tagged(v) for v in value))
        if isinstance(value, set | frozenset):
            return (type(value), frozenset(tagged(v) for v in value))
        return (type(value), value)

    def typed(mapping: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple((k, tagged(v)) for k, v in mapping.items())

    try:
        key = (
            request.enterprise,
            request.dataset,
            typed(request.enterprise_attrs),
            typed(request.dataset_attrs),
            tuple((g, typed(a)) for g, a in request.dataset_groups.items()),
            tuple(
                (
                    g,
                    a["purpose"],
                    a["status"],
                    a["valid_from"],
                    a["valid_until"],
                    tagged(a["datasets"]),
                    tagged(a["groups"]),
                    grant_in_force(a, purpose=request.purpose, time=request.time),
                )
                for g, a in request.grants.items()
            ),
        )
        hash(key)
    except TypeError:
        return None
    return key


def merged(handles: Any, request: AccessRequest, determining: tuple[str, ...]) -> Any:
    """The merged obligations of an allow, cached per determining policies and the
    obligations of the grants they name. Raises ``KeyError`` for an unknown policy."""
    grants = tuple(
        (g, tuple(sorted(request.grants[g]["obligations"].items())))
        for p in determining
        if (g := handles.grant_scopes.get(p)) is not None and g in request.grants
    )
    key = (determining, grants)
    cached = handles.merged.get(key)
    if cached is None:
        cached = merge_obligations(_obligations_of(handles, request, determining))
        handles.remember(handles.merged, key, cached)
    return cached


def _obligations_of(
    handles: Any, request: AccessRequest, determining: tuple[str, ...]
) -> list[Mapping[str, str]]:
    """Each determining permit's annotations, and the registry obligations of the grant
    its principal scope names (``principal in Grant::"G"``): both bind, strictest wins."""
    each: list[Mapping[str, str]] = []
    for policy in determining:
        each.append(handles.obligations[policy])
        grant_id = handles.grant_scopes.get(policy)
        if grant_id is not None and grant_id in request.grants:
            each.append(obligations_of(request.grants[grant_id]["obligations"]))
    return each
