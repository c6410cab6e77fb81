"""The Cedar entities and request of one decision, built from the registry's facts.

Entity types (see ``indomain/demo/policies/schema.cedarschema``)::

    Enterprise in [Licence, Grant]     the principal
    Licence                            the licence the enterprise holds (by its number)
    Grant                              a grant the bureau issued to the enterprise
    DatasetGroup in [Grant]            a family of datasets
    Dataset in [DatasetGroup, Grant]   the resource

The hierarchy carries the registry's meaning, so a policy can say
``permit (principal in Grant::"G-1", action == Action::"aggregate", resource in Grant::"G-1");``:

* ``principal in Grant::"G-1"`` holds only while G-1 is *in force for this job*: held by
  the principal, status ``active``, ``valid_from <= now < valid_until`` and the job's
  purpose the grant's purpose. An expired, revoked or other-purpose grant is still an
  entity (its attributes readable) but the principal is not in it, so a grant-scoped
  permit cannot match: expiry and revocation need no condition an author could forget.
* ``resource in Grant::"G-1"`` holds when the dataset, or one of its groups, is among
  the grant's datasets or groups.
* ``principal in Licence::"L-2026-001"`` holds for the holder of that licence number.

Uids are structured JSON (``{"type", "id"}``), never Cedar text, so no name can inject
syntax. Pure: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from policies._errors import PolicyError

if TYPE_CHECKING:
    from policies._decide import AccessRequest

PRINCIPAL_TYPE = "Enterprise"
RESOURCE_TYPE = "Dataset"
GROUP_TYPE = "DatasetGroup"
LICENCE_TYPE = "Licence"
GRANT_TYPE = "Grant"
ACTION_TYPE = "Action"
ACTIVE = "active"
LONG_MAX = 2**63 - 1  # Cedar's Long

GRANT_KEYS = frozenset(
    {"purpose", "valid_from", "valid_until", "status", "datasets", "groups", "obligations"}
)
GRANT_REQUIRED = frozenset({"purpose", "valid_from", "valid_until", "status"})


def check_grant(grant_id: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A grant's attributes checked and normalised; raises :class:`PolicyError`.

    ``purpose`` and ``status`` are str, ``valid_from`` / ``valid_until`` aware
    datetimes (from strictly before until), ``datasets`` / ``groups`` sequences of names,
    ``obligations`` a str → str mapping (checked by the caller against the known
    obligations). Unknown keys are an error.
    """
    where = f"grant {grant_id!r}"
    if not isinstance(grant_id, str) or not grant_id:
        raise PolicyError("a grant needs a non-empty id")
    if not isinstance(attrs, Mapping):
        raise PolicyError(f"{where}: must be a mapping")
    unknown = set(attrs) - GRANT_KEYS
    missing = GRANT_REQUIRED - set(attrs)
    if unknown or missing:
        raise PolicyError(
            f"{where}: unknown keys {sorted(map(str, unknown))}, missing keys {sorted(missing)}"
        )
    for name in ("purpose", "status"):
        if not isinstance(attrs[name], str):
            raise PolicyError(f"{where}: {name} must be a str")
    for name in ("valid_from", "valid_until"):
        value = attrs[name]
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise PolicyError(f"{where}: {name} must be a timezone-aware datetime")
    if not attrs["valid_from"] < attrs["valid_until"]:
        raise PolicyError(f"{where}: valid_from must be before valid_until")
    names: dict[str, tuple[str, ...]] = {}
    for name in ("datasets", "groups"):
        value = attrs.get(name, ())
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{where}: {name} must be a list of names")
        names[name] = tuple(sorted(set(value)))
    obligations = attrs.get("obligations", {})
    if not isinstance(obligations, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obligations.items()
    ):
        raise PolicyError(f"{where}: obligations must map names to str values")
    return {
        "purpose": attrs["purpose"],
        "status": attrs["status"],
        "valid_from": attrs["valid_from"].astimezone(UTC),
        "valid_until": attrs["valid_until"].astimezone(UTC),
        **names,
        "obligations": dict(obligations),
    }


def grant_in_force(grant: Mapping[str, Any], *, purpose: str, time: datetime) -> bool:
    """Whether a checked grant allows anything for ``purpose`` at ``time``."""
    return bool(
        grant["status"] == ACTIVE
        and grant["purpose"] == purpose
        and grant["valid_from"] <= time < grant["valid_until"]
    )


def grant_state(grant: Mapping[str, Any], *, purpose: str, time: datetime) -> str:
    """Why a checked grant is or is not in force for ``purpose`` at ``time``, in words."""
    if grant["status"] != ACTIVE:
        return f"not in force: {grant['status']}"
    if time < grant["valid_from"]:
        return f"not in force: valid from {grant['valid_from'].isoformat()}"
    if time >= grant["valid_until"]:
        return f"not in force: expired at {grant['valid_until'].isoformat()}"
    if grant["purpose"] != purpose:
        return f"not in force for this purpose: granted for {grant['purpose']}"
    return "in force"


def uid(entity_type: str, entity_id: str) -> dict[str, str]:
    # Structured uids, never Cedar text: a name cannot inject syntax.
    return {"type": entity_type, "id": entity_id}


def cedar_datetime(moment: datetime) -> dict[str, Any]:
    """Cedar ``datetime`` (millisecond precision, UTC) in Cedar's JSON extension form.

    Truncating to milliseconds never moves a time past an expiry boundary, since Cedar
    datetimes in policies have at most millisecond precision too.
    """
    # isoformat gives YYYY-MM-DDTHH:MM:SS.mmm+00:00 for an aware UTC time: keep 23 chars.
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z"
    return {"__extn": {"fn": "datetime", "arg": text}}


def cedar_decimal(value: Decimal) -> dict[str, Any]:
    """Cedar ``decimal`` (at most 4 places), rounded *up*: a job asking epsilon 0.50001
    must not pass a ``lessThanOrEqual(decimal("0.5"))`` test."""
    return {"__extn": {"fn": "decimal", "arg": _decimal_text(value)}}


@functools.lru_cache(maxsize=1024)
def _decimal_text(value: Decimal) -> str:
    # Equal decimals (0.5, 0.50) hash alike and round to the same text.
    return f"{value.quantize(Decimal('0.0001'), rounding=ROUND_CEILING):f}"


def cedar_value(value: Any) -> Any:
    """A Python attribute value in Cedar's JSON form; raises :class:`PolicyError`."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise PolicyError("entity attribute datetimes must be timezone-aware")
        return cedar_datetime(value)
    if isinstance(value, Decimal):
        return cedar_decimal(value)
    if isinstance(value, Mapping):
        return {str(k): cedar_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set | frozenset):
        return [cedar_value(v) for v in value]
    raise PolicyError(f"entity attribute of type {type(value).__name__} has no Cedar form")


def cedar_request(request: AccessRequest) -> dict[str, Any]:
    """The Cedar request (principal, action, resource, context) of ``request``."""
    epsilon = request.epsilon if request.epsilon is not None else Decimal(0)
    return {
        "principal": uid(PRINCIPAL_TYPE, request.enterprise),
        "action": uid(ACTION_TYPE, request.computation),
        "resource": uid(RESOURCE_TYPE, request.dataset),
        "context": {
            "purpose": request.purpose,
            "now": cedar_datetime(request.time),
            "job": {
                "epsilon": cedar_decimal(epsilon),
                "columns": list(request.columns),
                "result_size": LONG_MAX if request.result_size is None else request.result_size,
            },
        },
    }


def entities(request: AccessRequest) -> list[dict[str, Any]]:
    """The entities of ``request``: principal, its licence and grants, resource, groups."""
    attrs = request.enterprise_attrs
    principal_parents = []
    out: list[dict[str, Any]] = []
    number = attrs.get("licence_number")
    if isinstance(number, str) and number:
        principal_parents.append(uid(LICENCE_TYPE, number))
        out.append(
            {
                "uid": uid(LICENCE_TYPE, number),
                "attrs": cedar_value(
                    {
                        "number": number,
                        "holder": request.enterprise,
                        "expires": attrs.get("licence_expires"),
                        "status": attrs.get("status", ""),
                    }
                ),
                "parents": [],
            }
        )
    dataset_parents = [uid(GROUP_TYPE, g) for g in request.dataset_groups]
    group_parents: dict[str, list[dict[str, str]]] = {g: [] for g in request.dataset_groups}
    for grant_id, grant in request.grants.items():
        gid = uid(GRANT_TYPE, grant_id)
        if grant_in_force(grant, purpose=request.purpose, time=request.time):
            principal_parents.append(gid)
        if request.dataset in grant["datasets"]:
            dataset_parents.append(gid)
        for group in grant["groups"]:
            if group in group_parents:
                group_parents[group].append(gid)
        out.append(
            {
                "uid": gid,
                "attrs": cedar_value(
                    {
                        "holder": request.enterprise,
                        **{k: v for k, v in grant.items() if k != "obligations"},
                    }
                ),
                "parents": [],
            }
        )
    out.append(
        {
            "uid": uid(PRINCIPAL_TYPE, request.enterprise),
            "attrs": cedar_value(attrs),
            "parents": principal_parents,
        }
    )
    out.append(
        {
            "uid": uid(RESOURCE_TYPE, request.dataset),
            "attrs": cedar_value(request.dataset_attrs),
            "parents": dataset_parents,
        }
    )
    out.extend(
        {"uid": uid(GROUP_TYPE, g), "attrs": cedar_value(a), "parents": group_parents[g]}
        for g, a in request.dataset_groups.items()
    )
    return out


def principal_ancestors(items: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
    """The principal's parents in ``items`` (as built by :func:`entities`): its licence and
    grants in force. Licences and grants have no parents, so these are all its ancestors."""
    for item in items:
        if item["uid"]["type"] == PRINCIPAL_TYPE:
            return frozenset((p["type"], p["id"]) for p in item["parents"])
    return frozenset()


def probe_entities() -> list[dict[str, Any]]:
    """One of every entity the sandbox supplies, with every attribute, to check at load
    time that a folder's schema accepts them (otherwise every decision would deny)."""
    moment = datetime(2026, 1, 1, tzinfo=UTC)

    probe = SimpleNamespace(
        enterprise="probe",
        dataset="probe",
        purpose="probe",
        time=moment,
        enterprise_attrs={"licence_number": "L-probe", "licence_expires": moment, "status": ACTIVE},
        dataset_attrs={"sensitivity": 1},
        dataset_groups={"probe": {"sensitivity": 1}},
        grants={
            "G-probe": {
                "purpose": "probe",
                "valid_from": moment,
                "valid_until": moment.replace(year=2027),
                "status": ACTIVE,
                "datasets": ("probe",),
                "groups": ("probe",),
                "obligations": {},
            }
        },
    )
    return entities(probe)  # type: ignore[arg-type]
