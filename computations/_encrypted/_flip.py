"""Randomised response on bits, with an exact flip probability and the OS's CSPRNG.

The mechanism is OpenDP's ``make_randomized_response_bitvec`` (RAPPOR's symmetric flip):
every bit is flipped independently with probability ``f/2``. OpenDP's own sampler draws
an exact Bernoulli per bit and costs about 0.8 µs a bit (0.88 s for the 10⁶ bits of
100,000 items in 10 groups, most of ``encrypted_group_sum``'s time), so the bits are
flipped here and OpenDP is asked only for the privacy map of the same mechanism.

How a bit is flipped, exactly: draw ``U``, 32 bits from :func:`secrets.token_bytes`
(uniform on ``[0, 2³²)``); flip iff ``U < T``. The flip probability is then exactly
``T / 2³²``, with no floating point involved; the mechanism is OpenDP's with
``f = 2T / 2³²`` (a float that holds this value exactly), and OpenDP's map for that ``f``
states its ε (rounded upwards by OpenDP). :func:`flip_rule` takes the smallest ``T``
whose stated ε is at most the target, so the realised ε never exceeds it.

The privacy argument (RAPPOR, Erlingsson et al. 2014; OpenDP's proof for the map): an
item's outcome is written as bits of which two outcomes differ in at most two (one set
bit each, or none), and each bit's likelihood ratio is at most ``(1 − q)/q`` with
``q = T/2³²``, so the report is ``2·ln((1 − q)/q)``-LDP, OpenDP's ``max_weight = 1`` case.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import numpy as np

from indomain.errors import InternalError

#: Bits per draw: the flip probability is a multiple of ``2^-DRAW_BITS``.
DRAW_BITS: Final = 32
_RANGE: Final = 1 << DRAW_BITS


@cache
def _opendp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class FlipRule:
    """Flip a bit iff a uniform ``DRAW_BITS``-bit draw is below ``threshold``; ``epsilon``
    is what OpenDP's map states for one item (at most the target it was made for)."""

    threshold: int
    epsilon: float

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= _RANGE // 2:
            raise InternalError("a flip threshold must be in (0, 2^31]")

    @property
    def flip(self) -> float:
        """The exact probability ``q = T / 2³²`` that a bit is flipped."""
        return self.threshold / _RANGE

    @property
    def keep(self) -> float:
        """``p = 1 − q``: the probability a set bit reads 1 (exact in a float)."""
        return (_RANGE - self.threshold) / _RANGE


def stated_epsilon(threshold: int) -> float:
    """OpenDP's per-item ε for bit-vector randomised response flipping with probability
    ``threshold / 2³²`` (``f = 2·threshold / 2³²``, ``max_weight = 1``)."""
    dp = _opendp()
    measurement = dp.m.make_randomized_response_bitvec(
        dp.bitvector_domain(max_weight=1),
        dp.discrete_distance(),
        f=2 * threshold / _RANGE,
    )
    return float(measurement.map(1))


def flip_rule(epsilon: float) -> FlipRule:
    """The smallest threshold whose OpenDP-stated ε is at most ``epsilon`` (> 0).

    Starts from ``⌈2³² / (1 + e^{ε/2})⌉`` (where ``2·ln((1 − q)/q) = ε``) and moves by one
    until OpenDP's map agrees. Raises :class:`InternalError` for ``epsilon <= 0``.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InternalError("a flip rule needs a positive epsilon")
    threshold = min(_RANGE // 2, math.ceil(_RANGE / (1.0 + math.exp(epsilon / 2))))
    while stated_epsilon(threshold) > epsilon:  # float rounding put it a little low
        if threshold == _RANGE // 2:
            raise InternalError("no flip threshold meets this epsilon")
        threshold += 1
    while threshold > 1 and stated_epsilon(threshold - 1) <= epsilon:
        threshold -= 1  # float rounding put it a little high: keep the most signal
    return FlipRule(threshold, stated_epsilon(threshold))


def flip_bits(bits: np.ndarray, rule: FlipRule) -> np.ndarray:
    """``bits`` (boolean, any shape) with each bit flipped independently with probability
    exactly ``rule.flip``; one 32-bit draw from :func:`secrets.token_bytes` per bit."""
    truth = np.asarray(bits, dtype=bool)
    draws = np.frombuffer(secrets.token_bytes(4 * truth.size), dtype="<u4")
    return truth ^ (draws < rule.threshold).reshape(truth.shape)
