"""Randomised response on a PSI outcome: "not in the dataset" or "in the dataset, group g".

Privacy argument (Warner 1965; k-ary randomised response, Kairouz et al. 2016): with ``k``
outcomes, the true one is kept with probability ``p = e^ε / (e^ε + k − 1)`` and otherwise
replaced by one of the other ``k − 1`` uniformly, each with ``q = 1 / (e^ε + k − 1)``. For
any two true outcomes and any report, the likelihood ratio is at most ``p / q = e^ε``: the
report of each item is ε-locally differentially private, and everything computed from the
reports is post-processing, whatever the enterprise later encrypts or asks. OpenDP's
``make_randomized_response`` draws the reports; its privacy map is the authority on ε.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any, Final

from computations._psi._group import PsiError
from indomain.errors import InternalError

#: Above this a report says almost surely the truth (keep probability > 0.9999 for k = 2),
#: and OpenDP's privacy map starts to overshoot ε in floating point.
MAX_EPSILON: Final = 10.0


@cache
def _opendp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def keep_probability(epsilon: float, outcomes: int) -> float:
    """The probability ``e^ε / (e^ε + k − 1)`` that ``k``-ary randomised response keeps the
    true outcome."""
    return 1.0 / (1.0 + (outcomes - 1) * math.exp(-epsilon))


def randomised_response(
    truths: Sequence[int], *, outcomes: int, epsilon: float
) -> tuple[tuple[int, ...], float]:
    """Each of ``truths`` (in ``range(outcomes)``) reported under ε-local DP.

    Returns the reports, in order, and the ε that OpenDP's privacy map states (at most
    ``epsilon``). Raises :class:`PsiError` for an ε outside ``(0, MAX_EPSILON]`` or fewer
    than two outcomes.
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, float | int):
        raise PsiError("randomised response needs a numeric epsilon")
    if not (math.isfinite(epsilon) and 0 < epsilon <= MAX_EPSILON):
        raise PsiError(f"randomised response needs an epsilon in (0, {MAX_EPSILON:g}]")
    if outcomes < 2:
        raise PsiError("randomised response needs at least two outcomes")
    if any(not 0 <= t < outcomes for t in truths):
        raise InternalError("a PSI outcome is outside its categories")
    dp = _opendp()
    measurement = dp.m.make_randomized_response(
        categories=list(range(outcomes)), prob=keep_probability(float(epsilon), outcomes)
    )
    stated = float(measurement.map(1))
    if stated > epsilon * (1 + 1e-9):
        raise InternalError("randomised response does not meet the epsilon it was set for")
    return tuple(int(measurement(t)) for t in truths), stated


def debias_counts(reports: Sequence[int], *, outcomes: int, epsilon: float) -> list[float]:
    """Unbiased estimates of how many items truly had each outcome, from their reports.

    ``E[observed_j] = n·q + (p − q)·true_j``, so ``true_j ≈ (observed_j − n·q) / (p − q)``.
    The variance of each estimate is ``n·q·(1 − q) / (p − q)²`` plus a term in ``true_j``
    that is at most of the same size.
    """
    n = len(reports)
    p = keep_probability(epsilon, outcomes)
    q = (1.0 - p) / (outcomes - 1)
    observed = [0] * outcomes
    for report in reports:
        observed[report] += 1
    return [(o - n * q) / (p - q) for o in observed]
