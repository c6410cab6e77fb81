"""Loading an enterprise's TenSEAL context and ciphertexts, refusing anything unsafe.

The enterprise keeps its secret key; the sandbox receives a *public* context (parameters,
public key, relinearisation and Galois keys) and computes on ciphertexts under it. What is
refused, and why:

- a context carrying a secret key: the sandbox must never hold a key that decrypts the
  enterprise's data (or its own results), so the context is refused and dropped;
- parameters outside the HomomorphicEncryption.org standard's 128-bit table (Albrecht et
  al., "Homomorphic Encryption Security Standard", 2018, Table 1, uniform ternary secret;
  the same numbers as SEAL's ``CoeffModulus::MaxBitCount(n, sec_level_type::tc128)``):
  a larger total coefficient modulus for a ring degree weakens RLWE below 128 bits;
- a ring degree above the policy's cap or bytes above a size cap, which bound the memory
  and time a context costs the worker (Galois keys for n = 8192 are already ~35 MB);
- bytes TenSEAL cannot parse, and ciphertexts that do not belong to the context.

Parsing runs in TenSEAL's C++ code: feed it untrusted bytes only inside an enclave worker
process, whose crash or resource limit then costs only that job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from computations._errors import ComputationError

#: Largest total coefficient-modulus bits for 128-bit classical security, per ring degree
#: (HE standard, Table 1; SEAL ``util/globals.cpp``, ``tc128``).
MAX_COEFF_MODULUS_BITS_128: Final[Mapping[int, int]] = MappingProxyType(
    {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
)

DEFAULT_MAX_POLY_MODULUS_DEGREE: Final = 8192
DEFAULT_MAX_CONTEXT_BYTES: Final = 64 * 1024 * 1024
DEFAULT_MAX_VECTOR_BYTES: Final = 8 * 1024 * 1024

_SCHEMES: Final = frozenset({"CKKS", "BFV"})


class HeError(ComputationError):
    """An enterprise's HE context or ciphertext was refused; the message says why."""


@dataclass(frozen=True)
class PublicContext:
    """A checked TenSEAL context without a secret key, and the parameters read from it."""

    context: Any
    scheme: str
    poly_modulus_degree: int
    coeff_modulus_bits: int


def _tenseal() -> Any:
    import tenseal

    return tenseal


def check_parameters(
    poly_modulus_degree: int,
    coeff_modulus_bits: int,
    *,
    max_poly_modulus_degree: int = DEFAULT_MAX_POLY_MODULUS_DEGREE,
) -> None:
    """Refuse parameters outside the 128-bit table or above the degree cap.

    Raises :class:`HeError` naming the rule broken.
    """
    limit = MAX_COEFF_MODULUS_BITS_128.get(poly_modulus_degree)
    if limit is None:
        known = ", ".join(str(n) for n in MAX_COEFF_MODULUS_BITS_128)
        raise HeError(
            f"poly modulus degree {poly_modulus_degree} is not in the 128-bit table ({known})"
        )
    if poly_modulus_degree > max_poly_modulus_degree:
        raise HeError(
            f"poly modulus degree {poly_modulus_degree} is above this policy's cap of "
            f"{max_poly_modulus_degree}"
        )
    if not 0 < coeff_modulus_bits <= limit:
        raise HeError(
            f"a coefficient modulus of {coeff_modulus_bits} bits for degree "
            f"{poly_modulus_degree} is outside the 128-bit table (at most {limit} bits)"
        )


def load_public_context(
    data: bytes,
    *,
    max_poly_modulus_degree: int = DEFAULT_MAX_POLY_MODULUS_DEGREE,
    max_bytes: int = DEFAULT_MAX_CONTEXT_BYTES,
) -> PublicContext:
    """Parse an enterprise's serialised TenSEAL context and check it is safe to use.

    Returns the :class:`PublicContext`. Raises :class:`HeError` if ``data`` is not bytes,
    is empty or larger than ``max_bytes``, does not parse, carries a secret key, uses a
    scheme other than CKKS or BFV, or has parameters outside the 128-bit table or above
    ``max_poly_modulus_degree``.
    """
    if not isinstance(data, bytes) or not data:
        raise HeError("an HE context must be non-empty bytes")
    if len(data) > max_bytes:
        raise HeError(f"the HE context is larger than the cap of {max_bytes} bytes")
    ts = _tenseal()
    try:
        context = ts.context_from(data)
    except Exception as exc:  # TenSEAL raises ValueError, RuntimeError, TypeError, …
        raise HeError("the HE context is malformed") from exc
    try:
        private = bool(context.is_private()) or bool(context.has_secret_key())
        seal = context.data.seal_context()
        key_data = seal.key_context_data()
        parms = key_data.parms()
        degree = int(parms.poly_modulus_degree())
        bits = int(key_data.total_coeff_modulus_bit_count())
        scheme = str(parms.scheme().name)
        valid = bool(seal.parameters_set())
    except Exception as exc:
        raise HeError("the HE context is malformed") from exc
    if private:
        raise HeError(
            "the HE context carries a secret key; send a public context "
            "(TenSEAL: make_context_public() before serialize())"
        )
    if scheme not in _SCHEMES:
        raise HeError(f"the HE scheme {scheme} is not supported (CKKS or BFV)")
    if not valid:
        raise HeError("the HE context's parameters are not valid")
    check_parameters(degree, bits, max_poly_modulus_degree=max_poly_modulus_degree)
    return PublicContext(context, scheme, degree, bits)


def load_ckks_vector(
    context: PublicContext, data: bytes, *, max_bytes: int = DEFAULT_MAX_VECTOR_BYTES
) -> Any:
    """Parse a serialised CKKS vector under ``context``.

    Returns the TenSEAL ``CKKSVector``. Raises :class:`HeError` if ``context`` is not a
    CKKS :class:`PublicContext`, or ``data`` is not bytes, is empty or over ``max_bytes``,
    does not parse, does not belong to the context's parameters, or holds no slots or more
    slots than the context has.
    """
    if not isinstance(context, PublicContext) or context.scheme != "CKKS":
        raise HeError("a CKKS vector needs a checked CKKS context")
    if not isinstance(data, bytes) or not data:
        raise HeError("a CKKS vector must be non-empty bytes")
    if len(data) > max_bytes:
        raise HeError(f"the CKKS vector is larger than the cap of {max_bytes} bytes")
    ts = _tenseal()
    try:
        vector = ts.ckks_vector_from(context.context, data)
        size = int(vector.size())
    except Exception as exc:
        raise HeError("the CKKS vector is malformed or not under this context") from exc
    if not 0 < size <= context.poly_modulus_degree // 2:
        raise HeError("the CKKS vector holds no slots or more than its context has")
    return vector
