"""Encrypted group sums over locally randomised memberships: the packed pattern.

The enterprise encrypts its values ``v_i`` (one per item of its PSI request, in request
order) packed ``S`` to a CKKS ciphertext, ``S`` the context's slot count. The sandbox
multiplies the chunks by plaintext masks built from the reports, adds the products and
sums slots with rotations, so that every group's total lands in a slot of one ciphertext
(or of one per binary digit of ``⌈G/2⌉``, when that is cheaper; ``_layout.py`` has the
slot algebra)::

    Enc(out)[slot of g] = Σ_i v_i · report_i[g]      (real or imaginary part)

never one ciphertext per row. Every slot of a reply ciphertext is a copy of one channel's
full sum (two groups, as real and imaginary part) or zero: nothing finer than the group
sums is in it.

The masks are *not* the true memberships. Each item's outcome is written as ``G`` bits
(bit ``g`` set iff the item is in the dataset, in group ``g``; all clear if absent) and
every bit is flipped as in OpenDP's
``make_randomized_response_bitvec`` (RAPPOR's symmetric flip: a bit reads 1 with
probability ``p = 1 − f/2`` if set and ``q = f/2`` if clear). Two outcomes differ in at
most two bits, so each item's report is ``2·ln((2 − f)/f)``-locally differentially
private; ``f/2`` is the smallest multiple of ``2⁻³²`` at which OpenDP's own privacy map
(on one item, ``max_weight = 1``) states at most ε, and the bits are flipped with exactly
that probability from the OS's CSPRNG (``_flip.py`` says why not OpenDP's sampler: speed).
The bits are flipped independently, so flipping all items' bits at once is the per-item
mechanism applied to each item (parallel composition over disjoint items).

Whatever the enterprise encrypted (one-hot, powers of two), what it decrypts is then a
function of the reports alone: post-processing of ε-LDP data.

Debiasing (Warner 1965): ``E[S_g] = q·V + (p − q)·T_g`` where ``V`` is the sum of all the
enterprise's values (it knows ``V``) and ``T_g`` the true group sum; hence
``T̂_g = (S_g − q·V) / (p − q)``, with variance ``Σ_i v_i² π_i (1 − π_i) / (p − q)²``,
``π_i ∈ {p, q}``, at most ``p·q · Σ v_i² / (p − q)²`` (here ``p(1−p) = q(1−q) = pq``).
Counts debias the same way with ``v_i = 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from computations._encrypted._flip import _opendp, flip_bits, flip_rule
from computations._encrypted._layout import Place, channel_count, packed_sums
from computations._he import HeError, PublicContext
from computations._he._seal import SealSlots, _sealapi, vector_bytes
from computations._psi import PsiError
from indomain.errors import InternalError

#: Above this a report says almost surely the truth, and OpenDP's map overshoots in floats.
MAX_EPSILON = 10.0


@dataclass(frozen=True, eq=False)
class Randomised:
    """The reports: ``bits[i, g]`` says item ``i`` was reported in group ``g``; ``keep``
    (p) and ``other`` (q) the probabilities a set and a clear bit read 1; ``epsilon`` the
    per-item ε OpenDP states."""

    bits: np.ndarray
    epsilon: float
    keep: float
    other: float


def one_hot(outcomes: Sequence[int], groups: int) -> np.ndarray:
    """The ``n × groups`` 0/1 matrix of ``outcomes`` (0 absent, ``g + 1`` in group ``g``)."""
    values = np.asarray(outcomes, dtype=np.int64)
    if values.size and (values.min() < 0 or values.max() > groups):
        raise InternalError("a PSI outcome is outside its groups")
    bits = np.zeros((len(values), groups), dtype=np.uint8)
    present = values > 0
    bits[np.nonzero(present)[0], values[present] - 1] = 1
    return bits


def randomise(outcomes: Sequence[int], *, groups: int, epsilon: float) -> Randomised:
    """Each outcome's bits through bit-vector randomised response at ``epsilon`` per item
    (module docstring), flipped by :mod:`._flip` with OpenDP's map stating the ε.

    Raises :class:`computations.PsiError` for an ε outside ``(0, 10]``.
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, float | int):
        raise PsiError("randomised response needs a numeric epsilon")
    if not (math.isfinite(epsilon) and 0 < epsilon <= MAX_EPSILON):
        raise PsiError(f"randomised response needs an epsilon in (0, {MAX_EPSILON:g}]")
    if groups < 1:
        raise InternalError("randomised response needs at least one group")
    rule = flip_rule(float(epsilon))
    bits = flip_bits(one_hot(outcomes, groups).astype(bool), rule)
    return Randomised(bits, rule.epsilon, rule.keep, rule.flip)


def count_estimates(randomised: Randomised) -> list[tuple[float, float]]:
    """Per group ``g`` (in order), the debiased count of items truly in ``g`` and a bound on
    its variance ``n·p·q / (p − q)²``."""
    n = len(randomised.bits)
    p, q = randomised.keep, randomised.other
    observed = randomised.bits.sum(axis=0) if n else np.zeros(randomised.bits.shape[1])
    bound = n * p * q / (p - q) ** 2
    return [(float((o - n * q) / (p - q)), bound) for o in observed]


def _slots(context: PublicContext) -> int:
    return context.poly_modulus_degree // 2


def chunks_needed(context: PublicContext, items: int) -> int:
    """How many full ciphertexts hold ``items`` values under ``context``."""
    return max(1, math.ceil(items / _slots(context)))


@dataclass(frozen=True)
class PackedSums:
    """The reply: ``ciphertexts`` (TenSEAL CKKS vector bytes, scale ``Δ²``) and, per
    group in order, the :class:`Place` of its sum in them."""

    ciphertexts: tuple[bytes, ...]
    places: tuple[Place, ...]


def packed_group_sums(
    context: PublicContext, chunks: Sequence[Any], masks: np.ndarray
) -> PackedSums:
    """Per group ``g`` (column ``g`` of the ``n × G`` 0/1 ``masks``) the encrypted
    ``Σ v_i`` over the items whose mask bit is set, placed as ``_layout.py`` plans.

    ``chunks`` are the enterprise's loaded CKKS vectors, each exactly ``S`` slots, item
    ``i`` in slot ``i mod S`` of chunk ``i div S``; slots past the last item are masked
    to zero whatever they hold. Products are not rescaled (masks are 0/1 and ``j``), so
    the result has scale ``Δ²`` at the chunks' level: choose a coefficient modulus with
    room for it. Raises :class:`HeError` for chunks of the wrong number or size, a context
    without Galois keys (the slot sums rotate), or ciphertexts that do not combine
    (different scales or levels, a scale with no room).
    """
    slots = _slots(context)
    items, groups = masks.shape
    if len(chunks) != chunks_needed(context, items):
        raise HeError(
            f"expected {chunks_needed(context, items)} ciphertexts of {slots} slots "
            f"for {items} items, got {len(chunks)}"
        )
    for chunk in chunks:
        if int(chunk.size()) != slots:
            raise HeError(f"every ciphertext must hold exactly {slots} slots (pad with zeros)")
    if channel_count(groups) > slots:
        raise HeError(
            f"{groups} groups need {channel_count(groups)} slots and this context has "
            f"{slots}: use a larger ring"
        )
    arithmetic = SealSlots(context, chunks)
    try:
        outs, where = packed_sums(arithmetic, masks, chunks=len(chunks), slots=slots)
        ciphertexts = tuple(vector_bytes(out, slots=slots, scale=arithmetic.scale) for out in outs)
    except HeError:
        raise
    except Exception as exc:  # SEAL: ValueError, RuntimeError on scale or level mismatch
        raise HeError(
            "the ciphertexts do not combine under this context "
            "(different scales or levels, or no room for the scale Δ² of the products)"
        ) from exc
    return PackedSums(ciphertexts, tuple(where))


def _zero_like(context: PublicContext, chunk: Any) -> Any:
    ts = _tenseal()
    scale = float(chunk.data.ciphertext()[0].scale) ** 2
    return ts.ckks_vector(context.context, [0.0] * _slots(context), scale=scale)


def _tenseal() -> Any:
    import tenseal

    return tenseal


def warm_up() -> None:
    """Load TenSEAL (with SEAL's own bindings) and OpenDP (with its contrib features)
    now, in a pre-started worker, rather than on the clock of the first job."""
    _tenseal()
    _sealapi()
    _opendp()


def debias_sum(
    decrypted: float, *, total: float, total_of_squares: float, keep: float, other: float
) -> tuple[float, float]:
    """The enterprise's side: from a decrypted group sum, the unbiased estimate of the true
    group sum and a bound on its variance (module docstring).

    ``total`` is the sum of all values it encrypted, ``total_of_squares`` the sum of their
    squares; ``keep`` and ``other`` come with the result.
    """
    spread = keep - other
    if not spread > 0:
        raise HeError("keep probability must exceed the other-outcome probability")
    estimate = (decrypted - other * total) / spread
    bound = max(keep * (1 - keep), other * (1 - other)) * total_of_squares / spread**2
    return estimate, bound
