"""The bit-flip sampler of randomised response: exact threshold, ε never above its target,
flip frequencies as stated, randomness from ``secrets`` only."""

from __future__ import annotations

import ast
import inspect
import math
import secrets
from decimal import Decimal, getcontext

import numpy as np
import pytest

from computations._encrypted import _flip
from computations._encrypted._flip import DRAW_BITS, FlipRule, flip_bits, flip_rule
from computations._encrypted._group_sum import randomise
from indomain.errors import InternalError

EPSILONS = [1e-3, 0.01, 0.1, 0.25, 0.5, 1.0, math.log(3), 2.0, 3.0, 5.0, 7.5, 10.0]


def _realised_epsilon(threshold: int) -> Decimal:
    """``2·ln((2³² − T)/T)`` in 60-digit decimal arithmetic: the ε of flipping with
    probability exactly ``T/2³²`` (two bits differ between outcomes)."""
    getcontext().prec = 60
    total = Decimal(2) ** DRAW_BITS
    return 2 * ((total - threshold) / Decimal(threshold)).ln()


@pytest.mark.parametrize("epsilon", EPSILONS)
def test_the_realised_epsilon_never_exceeds_the_target(epsilon: float) -> None:
    rule = flip_rule(epsilon)
    assert _realised_epsilon(rule.threshold) <= Decimal(epsilon)
    assert rule.epsilon <= epsilon  # what OpenDP states, and what the result publishes
    assert _realised_epsilon(rule.threshold) <= Decimal(rule.epsilon)
    # ... and barely below it: the rounding costs a few steps of 2^-32 at most.
    assert _realised_epsilon(rule.threshold) > Decimal(epsilon) - Decimal("1e-6")


@pytest.mark.parametrize("epsilon", EPSILONS)
def test_the_probabilities_are_the_threshold_exactly(epsilon: float) -> None:
    rule = flip_rule(epsilon)
    assert Decimal(rule.flip) == Decimal(rule.threshold) / Decimal(2**DRAW_BITS)
    assert Decimal(rule.keep) == 1 - Decimal(rule.threshold) / Decimal(2**DRAW_BITS)
    assert 0 < rule.flip < 0.5 < rule.keep < 1


def test_epsilon_is_what_randomise_publishes() -> None:
    randomised = randomise([0, 1, 2], groups=2, epsilon=1.0)
    rule = flip_rule(1.0)
    assert (randomised.epsilon, randomised.keep, randomised.other) == (
        rule.epsilon,
        rule.keep,
        rule.flip,
    )


def test_flip_frequencies_match_the_stated_probability() -> None:
    """2²⁰ clear and 2²⁰ set bits at ε = 1: the flips of each are within 6 binomial
    standard deviations of ``n·q`` (a correct sampler fails this about once in 10⁹)."""
    rule = flip_rule(1.0)
    n = 1 << 20
    for start in (False, True):
        flipped = int(np.count_nonzero(flip_bits(np.full(n, start), rule) != start))
        sd = math.sqrt(n * rule.flip * (1 - rule.flip))
        assert abs(flipped - n * rule.flip) < 6 * sd


def test_each_bit_flips_on_its_own() -> None:
    """Pairs of bits in a row flip together with probability ``q²`` (independence), and
    the shape is kept."""
    rule = flip_rule(2.0)
    n = 1 << 19
    flipped = flip_bits(np.zeros((n, 2), dtype=bool), rule)
    assert flipped.shape == (n, 2)
    both = int(np.count_nonzero(flipped.all(axis=1)))
    q2 = rule.flip**2
    assert abs(both - n * q2) < 6 * math.sqrt(n * q2 * (1 - q2))


def test_the_draws_come_from_secrets_token_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """All-zero draws are below any threshold (every bit flips); all-one draws are not
    (none flips): the sampler reads ``secrets.token_bytes`` and nothing else."""
    rule = flip_rule(1.0)
    bits = np.array([[True, False], [False, False]])
    monkeypatch.setattr(secrets, "token_bytes", lambda n: b"\x00" * n)
    assert (flip_bits(bits, rule) == ~bits).all()
    monkeypatch.setattr(secrets, "token_bytes", lambda n: b"\xff" * n)
    assert (flip_bits(bits, rule) == bits).all()


def test_the_sampler_module_uses_no_other_randomness() -> None:
    """House rule: privacy randomness from OpenDP or ``secrets``, never ``random`` or
    numpy's generators."""
    tree = ast.parse(inspect.getsource(_flip))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(str(node.module))
        elif isinstance(node, ast.Attribute):
            assert node.attr != "random", "numpy.random (or a .random attribute) is used"
    assert "random" not in imported and "numpy.random" not in imported
    assert "secrets" in imported


def test_bad_rules_are_refused() -> None:
    with pytest.raises(InternalError):
        flip_rule(0.0)
    with pytest.raises(InternalError):
        flip_rule(float("nan"))
    with pytest.raises(InternalError):
        FlipRule(0, 1.0)
    with pytest.raises(InternalError):
        FlipRule(2**31 + 1, 1.0)
