"""Hygiene for enterprise TenSEAL contexts and ciphertexts; not yet wired into jobs."""

from computations._he._context import (
    MAX_COEFF_MODULUS_BITS_128,
    HeError,
    PublicContext,
    check_parameters,
    load_ckks_vector,
    load_public_context,
)

__all__ = [
    "MAX_COEFF_MODULUS_BITS_128",
    "HeError",
    "PublicContext",
    "check_parameters",
    "load_ckks_vector",
    "load_public_context",
]
