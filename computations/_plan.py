"""Plans and results: the values that pass between the checker and the enclave.

A :class:`Plan` is what the checker approved. It crosses a process boundary into the
enclave worker as JSON, so it is plain data, validated again on the way in, and deeply
immutable once built. It names the computation and dataset, digests the parameters it was
checked from, and carries a computation-specific body: never the request's raw text.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pyarrow as pa
import rfc8785

from computations._dataset import DATASET_NAME_PATTERN
from computations._errors import ComputationError

#: Version of the JSON form of a plan; bumped when the shape changes.
PLAN_VERSION = 1
_PLAN_KEYS = frozenset({"version", "computation", "dataset", "params_digest", "body"})
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(DATASET_NAME_PATTERN)
_MAX_SAFE_INTEGER = 2**53 - 1


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 hex of the parameters' RFC 8785 canonical JSON.

    The same bytes the gateway and ledger digest, so an attestation ties a run to a request.
    Raises :class:`ComputationError` if the parameters are not plain JSON.
    """
    try:
        canonical = rfc8785.dumps(dict(params))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ComputationError("parameters are not canonical JSON values") from exc
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class Plan:
    """An approved run of ``computation`` on ``dataset``, produced by a checker.

    ``body`` is frozen on construction (mappings become read-only, lists become tuples);
    :meth:`to_json` gives back plain dicts and lists.
    """

    computation: str
    dataset: str
    params_digest: str
    body: Mapping[str, Any] = field(repr=False)

    def __post_init__(self) -> None:
        for label, value in (("computation", self.computation), ("dataset", self.dataset)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise ComputationError(f"plan {label} must be a plain lower-case identifier")
        if not isinstance(self.params_digest, str) or not _DIGEST.fullmatch(self.params_digest):
            raise ComputationError("plan params_digest must be 64 lower-case hex digits")
        if not isinstance(self.body, Mapping):
            raise ComputationError("plan body must be a mapping")
        try:
            frozen = _freeze(self.body, "body")
        except RecursionError as exc:
            raise ComputationError("plan body is nested too deeply") from exc
        object.__setattr__(self, "body", frozen)

    def __hash__(self) -> int:
        return hash(rfc8785.dumps(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        """The plan as plain JSON values (what crosses into the enclave worker)."""
        return {
            "version": PLAN_VERSION,
            "computation": self.computation,
            "dataset": self.dataset,
            "params_digest": self.params_digest,
            "body": thaw(self.body),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Rebuild a plan from :meth:`to_json` output, refusing anything else.

        Raises :class:`ComputationError` on unknown or missing keys, a wrong version or
        values of the wrong type. The body is checked by the computation when it executes.
        """
        if not isinstance(data, Mapping):
            raise ComputationError("a plan must be a JSON object")
        keys = set(data)
        if keys != _PLAN_KEYS:
            extra = sorted(str(k) for k in keys - _PLAN_KEYS)
            missing = sorted(_PLAN_KEYS - keys)
            raise ComputationError(f"malformed plan: unknown keys {extra}, missing keys {missing}")
        version = data["version"]
        if type(version) is not int or version != PLAN_VERSION:
            raise ComputationError(f"unsupported plan version; expected {PLAN_VERSION}")
        return cls(
            computation=data["computation"],
            dataset=data["dataset"],
            params_digest=data["params_digest"],
            body=data["body"],
        )


@dataclass(frozen=True)
class ComputationResult:
    """What a computation returns inside the enclave: a disclosure-controlled table.

    ``suppressed_groups`` counts groups withheld for being too small; ``notes`` are short
    human-readable remarks (never row values).
    """

    table: pa.Table
    suppressed_groups: int
    notes: tuple[str, ...] = ()


def _freeze(value: Any, where: str) -> Any:
    """A read-only copy of a JSON value; raises on anything JSON cannot carry."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        # RFC 8785 §3.2.2.3: only integers that are exact IEEE 754 doubles are canonical.
        if abs(value) > _MAX_SAFE_INTEGER:
            raise ComputationError(f"plan {where} holds an integer too large for JSON")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ComputationError(f"plan {where} holds a non-finite number")
        return value
    if isinstance(value, Mapping):
        frozen = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ComputationError(f"plan {where} has a non-string key")
            frozen[key] = _freeze(item, f"{where}.{key}")
        return MappingProxyType(frozen)
    if isinstance(value, list | tuple):
        return tuple(_freeze(item, f"{where}[{i}]") for i, item in enumerate(value))
    raise ComputationError(f"plan {where} holds a {type(value).__name__}, not a JSON value")


def thaw(value: Any) -> Any:
    """A frozen plan value as plain JSON data (dicts and lists)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value
