"""Obligations: what a permit requires of the run it allows, written as Cedar annotations.

A grant (a ``permit`` policy) may carry, beside its ``@id``::

    @min_group_size("10")      smallest group a result may show      strictest: largest
    @epsilon_per_job("0.5")    most epsilon one job may spend        strictest: smallest
    @budget("5.0/month")       epsilon per enterprise and dataset    strictest: smallest amount,
                               per day, week, month, year or total   then the longest period
    @review("two-person")      distinct reviewers a new computation  strictest: most reviewers
                               needs (none, one-person, two-person, three-person)
    @allowed_columns("a,b")    the only columns the job may use      strictest: intersection
    @psi_max_set_size("1000")  most identifiers one PSI request may   strictest: smallest
                               hold (psi, encrypted_group_sum)

When several permits match, each obligation is merged strictest-first, so adding a grant
can never loosen what another grant requires. Any other annotation is an error, not
ignored: a misspelt ``@min_grop_size`` would otherwise silently lift a protection.
Obligations on a ``forbid`` are an error too (a forbid allows nothing to oblige).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from types import MappingProxyType

ID_ANNOTATION = "id"

REVIEW_LEVELS = {"none": 0, "one-person": 1, "two-person": 2, "three-person": 3}
# "total": one budget for the grant's whole life (the longest window there is).
BUDGET_PERIODS = {"day": 1, "week": 7, "month": 31, "year": 366, "total": 10**9}

_BUDGET = re.compile(r"(\d+(?:\.\d+)?)/(day|week|month|year|total)")
_POSITIVE_DECIMAL = re.compile(r"\d+(?:\.\d+)?")
_COLUMN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _int_at_least_2(value: str) -> str:
    if not value.isdigit() or int(value) < 2 or value != str(int(value)):
        raise ValueError("must be a whole number of at least 2, written plainly (e.g. 10)")
    return value


def _whole_at_least_1(value: str) -> str:
    if not value.isdigit() or int(value) < 1 or value != str(int(value)):
        raise ValueError("must be a whole number of at least 1, written plainly (e.g. 100000)")
    return value


def _positive_decimal(value: str) -> str:
    if not _POSITIVE_DECIMAL.fullmatch(value):
        raise ValueError('must be a positive decimal number such as "0.5"')
    try:
        if Decimal(value) <= 0:
            raise ValueError('must be greater than zero, such as "0.5"')
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes these
        raise ValueError("must be a decimal number") from exc
    return value


def _budget(value: str) -> str:
    match = _BUDGET.fullmatch(value)
    if match is None or Decimal(match.group(1)) <= 0:
        raise ValueError('must be "<epsilon>/<day|week|month|year|total>", such as "5.0/month"')
    return value


def _review(value: str) -> str:
    if value not in REVIEW_LEVELS:
        raise ValueError(f"must be one of {', '.join(REVIEW_LEVELS)}")
    return value


def _columns(value: str) -> str:
    names = [c.strip() for c in value.split(",")]
    if not names or not all(_COLUMN.fullmatch(c) for c in names):
        raise ValueError('must be a comma-separated list of column names, such as "age,district"')
    return ",".join(sorted(set(names)))


def _budget_key(value: str) -> tuple[Decimal, int]:
    match = _BUDGET.fullmatch(value)
    assert match is not None
    # Smaller amount is stricter; for the same amount, a longer period is stricter.
    return (Decimal(match.group(1)), -BUDGET_PERIODS[match.group(2)])


def _merge_columns(values: Iterable[str]) -> str:
    sets = [set(v.split(",")) for v in values]
    common = set.intersection(*sets)
    return ",".join(sorted(common))


# name -> (check and normalise one value, merge several values strictest-first)
_OBLIGATIONS: dict[str, tuple[Callable[[str], str], Callable[[list[str]], str]]] = {
    "min_group_size": (_int_at_least_2, lambda vs: max(vs, key=int)),
    "epsilon_per_job": (_positive_decimal, lambda vs: min(vs, key=Decimal)),
    "budget": (_budget, lambda vs: min(vs, key=_budget_key)),
    "review": (_review, lambda vs: max(vs, key=REVIEW_LEVELS.__getitem__)),
    "allowed_columns": (_columns, _merge_columns),
    "psi_max_set_size": (_whole_at_least_1, lambda vs: min(vs, key=int)),
}

KNOWN_OBLIGATIONS = tuple(sorted(_OBLIGATIONS))


def check_annotations(annotations: Mapping[str, object], *, effect: str) -> list[str]:
    """Problems with one policy's annotations (empty when they are all known and valid)."""
    problems = []
    for name, value in sorted(annotations.items()):
        if name == ID_ANNOTATION:
            continue
        if name not in _OBLIGATIONS:
            known = ", ".join(f"@{n}" for n in (ID_ANNOTATION, *KNOWN_OBLIGATIONS))
            problems.append(f"unknown annotation @{name} (known: {known})")
            continue
        if effect != "permit":
            problems.append(f"@{name} on a {effect}: only a permit can carry obligations")
            continue
        if not isinstance(value, str):
            problems.append(f'@{name} needs a value, such as @{name}("...")')
            continue
        try:
            _OBLIGATIONS[name][0](value)
        except ValueError as exc:
            problems.append(f"@{name}({value!r}) {exc}")
    return problems


def obligations_of(annotations: Mapping[str, object]) -> dict[str, str]:
    """The normalised obligations among one (already checked) policy's annotations."""
    return {
        name: _OBLIGATIONS[name][0](str(value))
        for name, value in annotations.items()
        if name in _OBLIGATIONS
    }


def merge_obligations(each: Iterable[Mapping[str, str]]) -> Mapping[str, str]:
    """Merge the obligations of every matching permit, strictest value per obligation."""
    each = list(each)
    if len(each) == 1:  # one permit: its values are already checked and normalised
        return MappingProxyType(dict(each[0]))
    values: dict[str, list[str]] = {}
    for one in each:
        for name, value in one.items():
            values.setdefault(name, []).append(value)
    return MappingProxyType(
        {name: _OBLIGATIONS[name][1](vs) for name, vs in sorted(values.items())}
    )
