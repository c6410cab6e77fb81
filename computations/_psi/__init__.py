"""Private set intersection (ECDH over ristretto255), with a proof of shuffle for the reply."""

from computations._psi._group import PsiError, hash_to_group
from computations._psi._protocol import (
    PsiClient,
    PsiLimits,
    PsiMembership,
    PsiOffer,
    PsiReblinded,
    PsiRequest,
    PsiServer,
    PsiSize,
)
from computations._psi._rr import debias_counts, keep_probability, randomised_response

__all__ = [
    "PsiClient",
    "PsiError",
    "PsiLimits",
    "PsiMembership",
    "PsiOffer",
    "PsiReblinded",
    "PsiRequest",
    "PsiServer",
    "PsiSize",
    "debias_counts",
    "hash_to_group",
    "keep_probability",
    "randomised_response",
]
