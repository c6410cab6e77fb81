"""Encrypted group sums over locally randomised memberships: the packed pattern.

The enterprise encrypts its values ``v_i`` (one per item of its PSI request, in request
order) packed ``S`` to a CKKS ciphertext, ``S`` the context's slot count. For each group
``g`` the sandbox multiplies every chunk by a plaintext 0/1 mask, adds the products and
sums the slots once (``log2 S`` rotations)::

    Enc(S_g) = slotsum( sum_k  Enc(v[kS:(k+1)S]) * mask_g[kS:(k+1)S] )

never one ciphertext per row. The masks are *not* the true memberships: each item's
outcome ("absent", or "in group g") is first replaced by its k-ary randomised response
(``_psi._rr``, OpenDP), ``k = G + 1``. So whatever the enterprise encrypted (one-hot,
powers of two), what it decrypts is a function of the reports alone, and each report is
ε-locally differentially private: the decrypted sums are post-processing.

Debiasing (Warner 1965): a report keeps the truth with probability ``p`` and otherwise
names each other outcome with ``q``, so ``E[S_g] = q·V + (p − q)·T_g`` where ``V`` is the
sum of all the enterprise's values (it knows ``V``) and ``T_g`` the true group sum; hence
``T̂_g = (S_g − q·V) / (p − q)``, with variance ``Σ_i v_i² π_i (1 − π_i) / (p − q)²``,
``π_i ∈ {p, q}``, at most ``max(p(1−p), q(1−q)) · Σ v_i² / (p − q)²``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from computations._he import HeError, PublicContext
from computations._psi import debias_counts, keep_probability, randomised_response


@dataclass(frozen=True)
class Randomised:
    """Per item, the randomised report (0 absent, ``g + 1`` in group ``g``), and the
    mechanism's parameters: ``keep`` (p), ``other`` (q), the ε OpenDP states."""

    reports: tuple[int, ...]
    categories: int
    epsilon: float
    keep: float
    other: float


def randomise(outcomes: Sequence[int], *, groups: int, epsilon: float) -> Randomised:
    """Each outcome (0 or ``g + 1`` for ``g < groups``) through k-ary randomised response.

    Raises :class:`computations.PsiError` for an ε outside ``(0, 10]``.
    """
    categories = groups + 1
    reports, stated = randomised_response(outcomes, outcomes=categories, epsilon=epsilon)
    keep = keep_probability(epsilon, categories)
    return Randomised(reports, categories, stated, keep, (1.0 - keep) / (categories - 1))


def count_estimates(randomised: Randomised) -> list[tuple[float, float]]:
    """Per group ``g`` (in order), the debiased count of items truly in ``g`` and a bound on
    its variance ``n · max(p(1−p), q(1−q)) / (p − q)²``."""
    estimates = debias_counts(
        randomised.reports, outcomes=randomised.categories, epsilon=randomised.epsilon
    )
    p, q = randomised.keep, randomised.other
    bound = len(randomised.reports) * max(p * (1 - p), q * (1 - q)) / (p - q) ** 2
    return [(estimate, bound) for estimate in estimates[1:]]


def _slots(context: PublicContext) -> int:
    return context.poly_modulus_degree // 2


def chunks_needed(context: PublicContext, items: int) -> int:
    """How many full ciphertexts hold ``items`` values under ``context``."""
    return max(1, math.ceil(items / _slots(context)))


def packed_group_sums(
    context: PublicContext, chunks: Sequence[Any], reports: Sequence[int], *, groups: int
) -> list[Any]:
    """Per group ``g`` (``0 … groups − 1``) the CKKS ciphertext of ``Σ v_i`` over the items
    whose report is ``g + 1``, its sum in every slot.

    ``chunks`` are the enterprise's loaded CKKS vectors, each exactly ``S`` slots, item
    ``i`` in slot ``i mod S`` of chunk ``i div S``; slots past the last item are masked
    to zero whatever they hold. Products are not rescaled (masks are exact 0/1), so the
    result has scale ``Δ²`` at the top level: choose a coefficient modulus with room for
    it. Raises :class:`HeError` for chunks of the wrong number or size, a context
    without Galois keys (the slot sum rotates), or ciphertexts that do not combine
    (different scales or levels).
    """
    slots = _slots(context)
    if len(chunks) != chunks_needed(context, len(reports)):
        raise HeError(
            f"expected {chunks_needed(context, len(reports))} ciphertexts of {slots} slots "
            f"for {len(reports)} items, got {len(chunks)}"
        )
    for chunk in chunks:
        if int(chunk.size()) != slots:
            raise HeError(f"every ciphertext must hold exactly {slots} slots (pad with zeros)")
    ts_context = context.context
    if not ts_context.has_galois_keys():
        raise HeError(
            "the HE context has no Galois keys; the slot sum needs them "
            "(generate_galois_keys() before make_context_public())"
        )
    ts_context.auto_rescale = False
    padded = np.zeros(len(chunks) * slots, dtype=np.int64)
    padded[: len(reports)] = np.asarray(reports, dtype=np.int64)
    results = []
    try:
        for g in range(1, groups + 1):
            selected = padded == g
            total = None
            for k, chunk in enumerate(chunks):
                mask = selected[k * slots : (k + 1) * slots]
                if not mask.any():
                    continue  # a zero plaintext would make a transparent ciphertext
                product = chunk * mask.astype(np.float64).tolist()
                total = product if total is None else total + product
            if total is None:
                # No report in this group: an encryption of zero at the products' scale.
                total = _zero_like(context, chunks[0])
            results.append(total.sum())
    except HeError:
        raise
    except Exception as exc:  # TenSEAL: ValueError, RuntimeError on scale or level mismatch
        raise HeError(
            "the ciphertexts do not combine under this context (different scales or levels)"
        ) from exc
    return results


def _zero_like(context: PublicContext, chunk: Any) -> Any:
    ts = _tenseal()
    scale = float(chunk.data.ciphertext()[0].scale) ** 2
    return ts.ckks_vector(context.context, [0.0] * _slots(context), scale=scale)


def _tenseal() -> Any:
    import tenseal

    return tenseal


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
