"""Errors of the policies part, below the project root :class:`IndomainError`::

    IndomainError
    └── PolicyError      anything about policies a caller can act on
        └── PolicyInvalid    a policy folder or file set was refused; ``.problems`` says why

A *denied* request is not an error: :func:`policies.decide` returns a ``Decision``.
"""

from __future__ import annotations

from collections.abc import Iterable

from indomain.errors import IndomainError


class PolicyError(IndomainError):
    """A policy operation failed (bad request value, unwritable folder, …)."""

    exit_code = 2


class PolicyInvalid(PolicyError):
    """A policy set was refused; every problem is listed, each naming its file.

    ``problems`` is a tuple of human-readable lines such as
    ``acme.cedar: policy "acme-credit-aggregate": attribute `foo` … not found``.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        if not self.problems:
            # An empty list of problems would read as "invalid for no reason".
            self.problems = ("policy set is invalid (no details)",)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"policy set is invalid ({count} {noun}):\n{lines}")
