"""The front door exports exactly its public API, and nothing leaks from the internals."""

from __future__ import annotations

import inspect

import policies
from indomain.errors import IndomainError

EXPECTED = {
    "AccessRequest",
    "CaseResult",
    "ConditionCheck",
    "Decision",
    "Explanation",
    "LintFinding",
    "PolicyCheck",
    "PolicyError",
    "PolicyInvalid",
    "PolicySet",
    "decide",
    "explain",
    "lint",
    "merge_obligations",
    "message",
    "run_cases",
}


def test_all_is_the_public_api() -> None:
    assert set(policies.__all__) == EXPECTED
    assert sorted(policies.__all__) == policies.__all__


def test_everything_in_all_exists_and_is_defined_in_the_package() -> None:
    for name in policies.__all__:
        member = getattr(policies, name)
        assert member.__module__.startswith("policies._"), name


def test_public_names_not_in_all_are_modules_only() -> None:
    public = {n for n in dir(policies) if not n.startswith("_")}
    extra = public - set(policies.__all__)
    assert all(inspect.ismodule(getattr(policies, n)) for n in extra), extra


def test_errors_hang_from_the_project_root() -> None:
    assert issubclass(policies.PolicyError, IndomainError)
    assert issubclass(policies.PolicyInvalid, policies.PolicyError)
    assert policies.PolicyInvalid(["a.cedar: x"]).problems == ("a.cedar: x",)
