"""Noise for aggregate releases: OpenDP's discrete Laplace or discrete Gaussian on integers.

The privacy argument (pure epsilon-DP, neighbouring datasets differ by all rows of one
privacy unit), next to the code as STYLE.md asks:

1. After contribution bounding (``_sql.bounded_sql``) one unit is in at most ``G`` groups
   and changes, in each, the number of units by at most 1, a row count or column count by
   at most ``R``, and a sum by at most ``R * max(|low|, |high|)`` (scaled integers).
   So the L1 sensitivity of one measure's vector over all groups is ``G`` times that.
2. Each measure is released with OpenDP's ``make_laplace`` over
   ``vector_domain(atom_domain(T="i64"))`` with ``l1_distance``: for integer data this is
   the discrete Laplace (Canonne, Kamath, Steinke 2020), sampled exactly, no floating-point
   leak (Mironov 2012). Its privacy map gives epsilon = sensitivity / scale; we choose the
   scale and then check OpenDP's own map agrees.
3. A job with ``k`` measures gives each ``epsilon / k``; by basic composition the job is
   epsilon-DP. The accountant adds jobs up the same way (pure DP, no conversion needed).
4. When group keys are not public, a group is published only if its noisy unit count
   reaches ``tau = 1 + ceil(b * ln(G / delta))`` (and the minimum group size), ``b`` the
   unit count's scale. A group that exists only because of one unit has a true count of 1,
   and discrete Laplace gives ``P(Z >= t) <= exp(-t / b)``, so the chance that any of that
   unit's at most ``G`` such groups appears is at most ``G * exp(-(tau - 1) / b) <= delta``.
   The release is then (epsilon, delta)-DP (Wilson et al. 2020, section 5; Korolova et al.
   2009).

5. A quantile (MEDIAN, QUANTILE_CONT) of a group is chosen among a public grid of at most
   1001 candidates between the column's bounds by OpenDP's ``make_private_quantile``
   (the exponential mechanism over a rank score; Smith 2011), on the group's values after
   bounding (at most ``R`` per unit, so one unit moves the multiset by ``R``: its
   symmetric distance). Its scale is found by OpenDP's binary search for the epsilon the
   measure was given, divided by ``G`` because one unit can be in ``G`` groups.

6. Before noise every exact value is clamped into ``[-2**62, 2**62]`` (:func:`saturate`).
   Clamping is 1-Lipschitz, so it never increases a sensitivity, and it removes the one
   failure that could depend on data: a sum too large for OpenDP's 64-bit domain. A job
   that raised only when a hidden row pushed a sum over 2**63 would leak that row through
   the error (docs/security.md, "Error side channels").

7. ``mechanism: gaussian`` (manifest) releases each measure with OpenDP's ``make_gaussian``
   over ``vector_domain(atom_domain(T="i64"))`` with ``l2_distance``: the discrete Gaussian
   (Canonne, Kamath, Steinke 2020), which is rho-zCDP with ``rho = D2**2 / (2 * sigma**2)``
   for an L2 sensitivity ``D2``. After bounding one unit changes at most ``G`` groups by at
   most ``c`` each, so ``D2 <= c * sqrt(G)``; OpenDP takes an integer L2 distance, so we
   pass ``ceil(c * sqrt(G))`` (an upper bound) and check its map. ``k`` measures get
   ``rho / k`` each (zCDP composes by addition, Bun and Steinke 2016, Lemma 2.3); a quantile
   measure is ``eps``-DP with ``eps = sqrt(2 * rho / k)``, which is ``rho / k``-zCDP
   (Proposition 1.4). A rho-zCDP job is ``(rho + 2 * sqrt(rho * ln(1/delta)), delta)``-DP for
   every ``delta > 0`` (Proposition 1.3): :func:`zcdp_epsilon`, the conversion results and
   budgets state. Private group keys use the threshold of point 4 with the discrete
   Gaussian's sub-Gaussian tail ``P(Z >= t) <= exp(-t**2 / (2 * sigma**2))`` (Canonne et al.
   2020, Proposition 25): ``tau = 1 + ceil(sigma * sqrt(2 * ln(G / delta)))``.

Everything after the noise (rounding to the grid, dividing sum by count for AVG, clamping
counts at zero, withholding groups under the minimum) is post-processing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

from indomain.errors import InternalError

#: Exact values are clamped into this public range before noise (point 6): far inside
#: 64 bits, so neither the clamp nor the noise can overflow whatever the data.
SATURATION = 2**62


def saturate(values: Sequence[int]) -> list[int]:
    """``values`` clamped into ``[-SATURATION, SATURATION]`` (point 6); never raises."""
    return [max(-SATURATION, min(SATURATION, int(v))) for v in values]


@cache
def _opendp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def discrete_laplace(values: Sequence[int], *, sensitivity: int, epsilon: float) -> list[int]:
    """``values`` (saturated, point 6) plus discrete Laplace noise calibrated to ``epsilon``
    for an L1 ``sensitivity``. Never raises on data, whatever its size."""
    if sensitivity < 1 or not (math.isfinite(epsilon) and epsilon > 0):
        raise InternalError("noise needs a positive sensitivity and epsilon")
    dp = _opendp()
    scale = laplace_scale(sensitivity, epsilon)
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
    )
    # OpenDP's privacy map is the authority: the scale must give at most epsilon.
    if measurement.map(sensitivity) > epsilon * (1 + 1e-9):
        raise InternalError("noise scale does not meet the epsilon it was chosen for")
    if not values:
        return []
    return [int(v) for v in measurement(saturate(values))]


def discrete_gaussian(values: Sequence[int], *, l2_sensitivity: int, rho: float) -> list[int]:
    """``values`` (saturated, point 6) plus discrete Gaussian noise giving ``rho``-zCDP for an
    integer L2 ``l2_sensitivity`` (point 7). Never raises on data."""
    if l2_sensitivity < 1 or not (math.isfinite(rho) and rho > 0):
        raise InternalError("noise needs a positive sensitivity and rho")
    dp = _opendp()
    measurement = dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")),
        dp.l2_distance(T="i64"),
        scale=gaussian_scale(l2_sensitivity, rho),
    )
    if measurement.map(l2_sensitivity) > rho * (1 + 1e-9):
        raise InternalError("noise scale does not meet the rho it was chosen for")
    if not values:
        return []
    return [int(v) for v in measurement(saturate(values))]


def gaussian_scale(l2_sensitivity: int, rho: float) -> float:
    """The discrete Gaussian's ``sigma = D2 / sqrt(2 * rho)`` (point 7)."""
    return l2_sensitivity / math.sqrt(2 * rho)


def l2_bound(per_group: int, groups_per_unit: int) -> int:
    """``ceil(per_group * sqrt(groups_per_unit))``, exactly: the integer L2 sensitivity."""
    square = per_group * per_group * groups_per_unit
    root = math.isqrt(square)
    return root if root * root == square else root + 1


def zcdp_epsilon(rho: float, delta: float) -> float:
    """The epsilon of ``(epsilon, delta)``-DP implied by ``rho``-zCDP (point 7):
    ``rho + 2 * sqrt(rho * ln(1 / delta))`` (Bun and Steinke 2016, Proposition 1.3)."""
    if rho < 0 or not 0 < delta < 1:
        raise InternalError("converting zCDP needs rho >= 0 and 0 < delta < 1")
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


def zcdp_rho_for_epsilon(epsilon: float, delta: float) -> float:
    """The largest ``rho`` whose :func:`zcdp_epsilon` at ``delta`` is at most ``epsilon``:
    with ``L = ln(1/delta)``, ``sqrt(rho) = sqrt(L + epsilon) - sqrt(L)``."""
    if epsilon <= 0 or not 0 < delta < 1:
        raise InternalError("inverting the zCDP conversion needs epsilon > 0, 0 < delta < 1")
    log = math.log(1 / delta)
    # Written as epsilon / (sqrt(L + eps) + sqrt(L)) to avoid cancellation for small eps.
    return (epsilon / (math.sqrt(log + epsilon) + math.sqrt(log))) ** 2


def gaussian_key_threshold(
    *, scale: float, groups_per_unit: int, delta: float, minimum: int
) -> int:
    """The noisy unit count a private group key needs under Gaussian noise (point 7)."""
    if not 0 < delta < 1:
        raise InternalError("a key threshold needs 0 < delta < 1")
    return max(minimum, 1 + math.ceil(scale * math.sqrt(2 * math.log(groups_per_unit / delta))))


def laplace_scale(sensitivity: int, epsilon: float) -> float:
    """The discrete Laplace scale ``b = sensitivity / epsilon``."""
    return sensitivity / epsilon


def key_threshold(*, scale: float, groups_per_unit: int, delta: float, minimum: int) -> int:
    """The noisy unit count a private group key needs before it is released (point 4)."""
    if not 0 < delta < 1:
        raise InternalError("a key threshold needs 0 < delta < 1")
    return max(minimum, 1 + math.ceil(scale * math.log(groups_per_unit / delta)))


#: Most candidates a quantile chooses among: a public grid between the column's bounds.
QUANTILE_CANDIDATES = 1001


def quantile_grid(bounds: tuple[int, int]) -> tuple[int, ...]:
    """Evenly spaced integers from ``low`` to ``high`` (inclusive), at most 1001 of them."""
    low, high = bounds
    if high - low < QUANTILE_CANDIDATES:
        return tuple(range(low, high + 1))
    step = (high - low) / (QUANTILE_CANDIDATES - 1)
    return tuple(sorted({low + round(i * step) for i in range(QUANTILE_CANDIDATES)}))


@cache
def _quantile_measurement(
    candidates: tuple[int, ...], alpha: float, rows_per_unit: int, epsilon: float
) -> tuple[Any, float]:
    dp = _opendp()

    def make(scale: float) -> Any:
        return dp.m.make_private_quantile(
            dp.vector_domain(dp.atom_domain(T="i64")),
            dp.symmetric_distance(),
            dp.max_divergence(),
            candidates=list(candidates),
            alpha=alpha,
            scale=scale,
        )

    scale = float(dp.binary_search_param(make, d_in=rows_per_unit, d_out=epsilon))
    measurement = make(scale)
    if measurement.map(rows_per_unit) > epsilon * (1 + 1e-9):
        raise InternalError("quantile scale does not meet the epsilon it was chosen for")
    return measurement, scale


def private_quantile(
    values: Sequence[int],
    *,
    alpha: float,
    bounds: tuple[int, int],
    rows_per_unit: int,
    epsilon: float,
) -> tuple[int, float]:
    """An epsilon-DP ``alpha``-quantile of ``values`` (bounded, scaled integers) on the
    public grid, and the score scale used (point 5)."""
    if not (math.isfinite(epsilon) and epsilon > 0) or not 0 <= alpha <= 1:
        raise InternalError("a quantile needs a positive epsilon and 0 <= alpha <= 1")
    measurement, scale = _quantile_measurement(quantile_grid(bounds), alpha, rows_per_unit, epsilon)
    return int(measurement([int(v) for v in values])), scale
