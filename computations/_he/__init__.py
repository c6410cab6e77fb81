"""Enterprise TenSEAL contexts and ciphertexts: the hygiene checks on loading
(``_context.py``) and SEAL-level slot arithmetic TenSEAL does not expose (``_seal.py``)."""

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
