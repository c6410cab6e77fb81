"""Turn a mapping of policy files into parsed, schema-checked Cedar handles.

Pure (no file I/O): :class:`policies.PolicySet` calls it for ``load``, ``from_files`` and
direct construction alike, so a set that exists has passed every check here.

Every policy must carry a unique ``@id``. The combined Cedar policy set is built from
Cedar's JSON form with each policy's Cedar id *set to* its ``@id``, so Cedar's own
reasons and error messages name policies the way their author did, never as the
positional ``policy0``, ``policy1`` Cedar assigns when parsing text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import cedarpy

from policies._entities import probe_entities
from policies._errors import PolicyInvalid
from policies._obligations import check_annotations, obligations_of

SCHEMA_FILE = "schema.cedarschema"
POLICY_SUFFIX = ".cedar"

# Parsed handles are kept for a few recent sets so that constructing the same set twice
# (``from_files`` then ``__init__``) or reloading an unchanged folder parses once.
_CACHE_SIZE = 16

_PRINCIPAL_CACHE = 4096
_ENTITIES_CACHE = 4096

_POSITIONAL_ID = re.compile(r"policy(\d+)")


@dataclass(frozen=True)
class Compiled:
    """Parsed Cedar handles for one validated set of files."""

    schema: cedarpy.Schema
    policies: cedarpy.PolicySet
    policy_ids: tuple[str, ...]
    # @id -> Cedar JSON (EST) of the policy, for lint and explanations
    bodies: Mapping[str, Mapping[str, Any]]
    # @id -> its normalised obligations (see policies._obligations)
    obligations: Mapping[str, Mapping[str, str]]
    # principal uid -> the policies that can match it (see for_principal)
    # @id -> the grant its principal scope names (``principal in Grant::"G"``)
    grant_scopes: Mapping[str, str] = field(default_factory=dict)
    _by_principal: dict[tuple[str, str, frozenset[tuple[str, str]]], cedarpy.PolicySet] = field(
        default_factory=dict, compare=False, repr=False
    )
    # entities JSON -> parsed handle, validated against the schema when first built
    _entities: dict[str, cedarpy.Entities] = field(default_factory=dict, compare=False, repr=False)
    # actions whose requests Cedar has checked against the schema (see policies._decide)
    valid_actions: set[str] = field(default_factory=set, compare=False, repr=False)
    # registry facts of a request -> (policies that can match, parsed entities)
    prepared: dict[Any, tuple[cedarpy.PolicySet, cedarpy.Entities]] = field(
        default_factory=dict, compare=False, repr=False
    )

    # (determining policies, their grants' obligations) -> merged obligations
    merged: dict[Any, Mapping[str, str]] = field(default_factory=dict, compare=False, repr=False)

    def remember(self, cache: dict[Any, Any], key: Any, value: Any) -> None:
        """Keep ``value`` in one of the bounded caches above, cleared when full."""
        if len(cache) >= _ENTITIES_CACHE:
            cache.clear()
        cache[key] = value

    def entities_handle(self, items: list[dict[str, Any]]) -> cedarpy.Entities:
        """Cedar's parsed form of ``items``, schema-checked once and then reused.

        Keyed by the exact JSON, so a registry change (a suspension, a new grant, a grant
        leaving its window) is a different key: nothing stale can be served. Raises
        ``ValueError`` if the entities do not conform to the schema. A bounded cache,
        cleared when full.
        """
        text = json.dumps(items, separators=(",", ":"), ensure_ascii=False)
        cached = self._entities.get(text)
        if cached is None:
            cached = cedarpy.Entities.from_json_str(text, self.schema)
            if len(self._entities) >= _ENTITIES_CACHE:
                self._entities.clear()
            self._entities[text] = cached
        return cached

    def for_principal(
        self, entity_type: str, entity_id: str, ancestors: frozenset[tuple[str, str]] = frozenset()
    ) -> cedarpy.PolicySet:
        """The policies whose principal scope can match ``entity_type::entity_id``.

        A policy scoped ``principal == X`` can never match another principal, and one
        scoped ``principal in X`` can match only if X is the principal or one of its
        ``ancestors`` (its licence and the grants in force: the whole hierarchy above an
        ``Enterprise``), so Cedar need not evaluate them: dropping them changes no
        decision, no reason and no error (Cedar does not evaluate the condition of a
        policy whose scope does not match). With one grant per enterprise this keeps a
        decision's cost flat in the number of enterprises. Cached per principal and
        ancestors; a bounded cache, cleared when full.
        """
        key = (entity_type, entity_id, ancestors)
        cached = self._by_principal.get(key)
        if cached is not None:
            return cached
        uid = {"type": entity_type, "id": entity_id}
        reachable = [uid, *({"type": t, "id": i} for t, i in sorted(ancestors))]
        subset = {}
        for pid, body in self.bodies.items():
            scope = body.get("principal", {})
            if scope.get("op") == "==" and scope.get("entity") != uid:
                continue
            if scope.get("op") == "in" and scope.get("entity") not in reachable:
                continue
            subset[pid] = body
        document = {"staticPolicies": subset, "templates": {}, "templateLinks": []}
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
        if len(self._by_principal) >= _PRINCIPAL_CACHE:
            self._by_principal.clear()
        self._by_principal[key] = policy_set
        return policy_set


@dataclass
class _ParsedFile:
    name: str
    text: str
    # (@id or None, Cedar JSON of the policy) in source order
    policies: list[tuple[str | None, dict[str, Any]]]
    # positional Cedar id -> label used in messages
    labels: dict[str, str]


def is_policy_file_name(name: str) -> bool:
    """Whether ``name`` may be a policy file: a plain ``*.cedar`` name, no path parts."""
    return (
        name.endswith(POLICY_SUFFIX)
        and len(name) > len(POLICY_SUFFIX)
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and name not in (".", "..")
    )


def compile_files(files: tuple[tuple[str, str], ...]) -> Compiled:
    """Validate ``files`` (sorted ``(name, text)`` pairs) and return the parsed handles.

    Raises :class:`PolicyInvalid` listing every problem found.
    """
    return _compile_cached(files)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_cached(files: tuple[tuple[str, str], ...]) -> Compiled:
    problems: list[str] = []
    texts = dict(files)

    schema = _parse_schema(texts, problems)
    parsed: list[_ParsedFile] = []
    for name, text in files:
        if name == SCHEMA_FILE:
            continue
        if not is_policy_file_name(name):
            problems.append(
                f"{name}: not a policy file name (expected {SCHEMA_FILE} or a plain *.cedar name)"
            )
            continue
        one = _parse_policy_file(name, text, problems)
        if one is not None:
            parsed.append(one)

    static = _collect_ids(parsed, problems)
    for pid, body in static.items():
        scope = _grant_scope(body)
        named = [g for g in _grants_in_conditions(body) if g != scope]
        if body.get("effect") == "permit" and named:
            problems.append(
                f"{pid}: names Grant::{json.dumps(named[0])} in a condition; name a grant in "
                f'the principal scope (principal in Grant::"{named[0]}"), where its validity '
                "and its obligations apply"
            )
    if schema is not None:
        for one in parsed:
            _validate_against_schema(one, schema, problems)
    unparsed = sum(1 for name, _ in files if is_policy_file_name(name)) - len(parsed)
    if unparsed == 0 and not any(one.labels for one in parsed):
        problems.append(
            "no policies: the set must contain at least one policy in a *.cedar file "
            "(an empty set would silently deny everything)"
        )
    if problems:
        raise PolicyInvalid(problems)
    assert schema is not None

    document = {"staticPolicies": static, "templates": {}, "templateLinks": []}
    try:
        combined = cedarpy.PolicySet.from_json_str(json.dumps(document))
    except ValueError as exc:
        raise PolicyInvalid([f"policies cannot be combined into one set: {exc}"]) from exc
    return Compiled(
        schema=schema,
        policies=combined,
        policy_ids=tuple(static),
        bodies=MappingProxyType(static),
        obligations=MappingProxyType(
            {
                i: MappingProxyType(obligations_of(b.get("annotations", {})))
                for i, b in static.items()
            }
        ),
        grant_scopes=MappingProxyType(
            {i: g for i, b in static.items() if (g := _grant_scope(b)) is not None}
        ),
    )


def _grant_scope(body: Mapping[str, Any]) -> str | None:
    """The grant a permit's principal scope names (``principal in Grant::"G"`` or
    ``principal is Enterprise in Grant::"G"``), if any."""
    scope = body.get("principal", {})
    if not isinstance(scope, Mapping):
        return None
    if scope.get("op") == "is" and isinstance(scope.get("in"), Mapping):
        scope = {"op": "in", **scope["in"]}
    entity = scope.get("entity")
    if (
        body.get("effect") == "permit"
        and scope.get("op") == "in"
        and isinstance(entity, Mapping)
        and entity.get("type") == "Grant"
        and isinstance(entity.get("id"), str)
    ):
        return str(entity["id"])
    return None


def _grants_in_conditions(body: Mapping[str, Any]) -> list[str]:
    """Ids of grants named by entity literals in a policy's conditions."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            entity = node.get("__entity")
            if isinstance(entity, Mapping) and entity.get("type") == "Grant":
                found.append(str(entity.get("id")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(body.get("conditions", []))
    return found


def _parse_schema(texts: dict[str, str], problems: list[str]) -> cedarpy.Schema | None:
    text = texts.get(SCHEMA_FILE)
    if text is None:
        problems.append(f"{SCHEMA_FILE}: missing; every policy folder needs its Cedar schema")
        return None
    try:
        schema = cedarpy.Schema.from_str(text)
    except ValueError as exc:
        problems.append(f"{SCHEMA_FILE}: schema does not parse: {exc}")
        return None
    try:
        cedarpy.Entities.from_json_str(json.dumps(probe_entities()), schema)
    except ValueError:
        problems.append(
            f"{SCHEMA_FILE}: does not declare the entities the sandbox supplies: "
            "Enterprise in [Licence, Grant] {licence_number, licence_expires?, status}, "
            "Licence {number, holder, expires?, status}, Grant {holder, purpose, valid_from, "
            "valid_until, status, datasets, groups}, DatasetGroup in [Grant] {sensitivity}, "
            "Dataset in [DatasetGroup, Grant] {sensitivity}; start from "
            "indomain/demo/policies/schema.cedarschema"
        )
        return None
    return schema


def _parse_policy_file(name: str, text: str, problems: list[str]) -> _ParsedFile | None:
    try:
        est = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as exc:
        problems.append(f"{name}: syntax error: {exc}")
        return None

    # Cedar numbers policies and templates together in source order: policy0, policy1, …
    entries: list[tuple[int, str, dict[str, Any], bool]] = []
    for kind, is_template in (("staticPolicies", False), ("templates", True)):
        for cedar_id, body in est.get(kind, {}).items():
            match = _POSITIONAL_ID.fullmatch(cedar_id)
            position = int(match.group(1)) if match else len(entries)
            entries.append((position, cedar_id, body, is_template))
    entries.sort(key=lambda e: e[0])

    result = _ParsedFile(name=name, text=text, policies=[], labels={})
    for number, (_, cedar_id, body, is_template) in enumerate(entries, start=1):
        annotated = body.get("annotations", {}).get("id")
        policy_id = annotated if isinstance(annotated, str) and annotated else None
        label = (
            f'policy "{policy_id}"'
            if policy_id is not None
            else f"policy #{number} ({body.get('effect', '?')}, no @id)"
        )
        result.labels[cedar_id] = label
        if is_template:
            problems.append(
                f"{name}: {label}: templates (?principal / ?resource slots) are not "
                "supported; write a static policy"
            )
            continue
        if policy_id is None:
            problems.append(
                f'{name}: {label}: every policy needs a non-empty @id("...") annotation '
                "so decisions can name it"
            )
        for problem in check_annotations(
            body.get("annotations", {}), effect=str(body.get("effect", "?"))
        ):
            problems.append(f"{name}: {label}: {problem}")
        result.policies.append((policy_id, body))
    return result


def _collect_ids(parsed: list[_ParsedFile], problems: list[str]) -> dict[str, dict[str, Any]]:
    """Map each ``@id`` to its policy, reporting duplicates (which would make names ambiguous)."""
    static: dict[str, dict[str, Any]] = {}
    seen_in: dict[str, str] = {}
    for one in parsed:
        for policy_id, body in one.policies:
            if policy_id is None:
                continue
            if policy_id in seen_in:
                problems.append(
                    f'{one.name}: policy "{policy_id}": duplicate @id, '
                    f"already used in {seen_in[policy_id]}"
                )
                continue
            seen_in[policy_id] = one.name
            static[policy_id] = body
    return static


def _validate_against_schema(one: _ParsedFile, schema: cedarpy.Schema, problems: list[str]) -> None:
    try:
        result = cedarpy.validate_policies(one.text, schema)
    except ValueError as exc:
        problems.append(f"{one.name}: cannot be validated: {exc}")
        return
    for error in result.errors:
        label = one.labels.get(error.policy_id)
        if label is None:
            problems.append(f"{one.name}: {error.error}")
            continue
        # Cedar's message names the positional id (policy0, …); name the author's @id instead.
        message = error.error.removeprefix(f"for policy `{error.policy_id}`, ")
        message = message.replace(f"`{error.policy_id}`", label)
        problems.append(f"{one.name}: {label}: {message}")
