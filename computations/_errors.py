"""Errors raised by the approved computations.

::

    IndomainError
    └── ComputationError     a computation cannot be set up or run (bad manifest, bad plan, …)
        └── QueryRefused     the checker refused a request; ``rule`` says which rule

Messages name rules, columns and fragments of the request, never values read from a dataset.
"""

from __future__ import annotations

from indomain.errors import IndomainError

#: Longest fragment of the request a refusal quotes; enough to point, not to echo.
MAX_FRAGMENT = 120


class ComputationError(IndomainError):
    """A computation could not be prepared or run; the message says why."""


class QueryRefused(ComputationError):
    """The checker refused the request.

    ``rule`` is a short stable id (``select-only``, ``aggregate-function``, …) that callers
    and tests can match on; ``fragment`` is the offending part of the request, as SQL text.
    """

    def __init__(self, rule: str, reason: str, fragment: str = "") -> None:
        self.rule = rule
        self.reason = reason
        self.fragment = shorten(fragment)
        message = f"refused ({rule}): {reason}"
        if self.fragment:
            message += f"; found {self.fragment}"
        super().__init__(message)

    def __reduce__(self) -> tuple[type[QueryRefused], tuple[str, str, str]]:
        # Keeps the error intact when it crosses a process boundary (pickle).
        return (type(self), (self.rule, self.reason, self.fragment))


def shorten(text: str, limit: int = MAX_FRAGMENT) -> str:
    """``text`` on one line and at most ``limit`` characters, ending in ``…`` when cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: limit - 1] + "…"
