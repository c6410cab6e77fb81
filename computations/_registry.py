"""The registry of approved computations, by name.

A computation is added here only after review; its code hash then identifies it in policies
and attestations.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from computations._aggregate import AGGREGATE
from computations._computation import Computation
from computations._errors import ComputationError, shorten

_REGISTRY: Final[Mapping[str, Computation]] = MappingProxyType({AGGREGATE.name: AGGREGATE})


def get_computation(name: str) -> Computation:
    """The approved computation called ``name``.

    Raises :class:`ComputationError` naming the known computations if there is none.
    """
    computation = _REGISTRY.get(name) if isinstance(name, str) else None
    if computation is None:
        known = ", ".join(available_computations())
        raise ComputationError(
            f"unknown computation {shorten(str(name), 64)!r}; known computations: {known}"
        )
    return computation


def available_computations() -> tuple[str, ...]:
    """The names of the approved computations, sorted."""
    return tuple(sorted(_REGISTRY))


def warm_up() -> None:
    """Load what the computations need before a request arrives (the enclave's pre-started
    workers call this): their code hashes, and any library a computation loads lazily."""
    for computation in _REGISTRY.values():
        _ = computation.code_hash
        prepare = getattr(computation, "warm_up", None)
        if callable(prepare):
            prepare()
