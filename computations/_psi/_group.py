"""The prime-order group for PSI: ristretto255 from libsodium, through pysodium.

Ristretto255 (RFC 9496) is a prime-order group built on Curve25519, so blinding by a secret
scalar is a bijection with no small-subgroup or cofactor traps, which raw X25519 on hashed
bytes would have. libsodium (>= 1.0.18) supplies the group; pysodium is a thin ctypes binding
to the system libsodium (PyNaCl 1.6 bundles libsodium but does not bind the ristretto255
functions). Everything here is a pure function over bytes.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any, Final

from computations._errors import ComputationError

#: Encoded size of a group element and of a scalar (RFC 9496 §4.3).
POINT_BYTES: Final = 32
SCALAR_BYTES: Final = 32

#: Domain separation for hashing identifiers to the group: SHA-512 over this tag (length
#: prefixed) then the identifier, mapped with ristretto255's one-way map (RFC 9496 §4.3.4,
#: libsodium ``crypto_core_ristretto255_from_hash``). A new protocol version needs a new tag.
HASH_TO_GROUP_DST: Final = b"indomain/psi/v1/ristretto255-SHA512"

_IDENTITY: Final = bytes(POINT_BYTES)


class PsiError(ComputationError):
    """A PSI message or session was refused: malformed points, a set over the cap, an
    intersection under the minimum, or a message that does not fit the session."""


@cache
def _sodium() -> Any:
    # Imported on first use: a host without libsodium can still run every other computation.
    try:
        import pysodium
    except (ImportError, OSError, AttributeError) as exc:
        raise PsiError("PSI needs libsodium >= 1.0.18 (pysodium could not load it)") from exc
    return pysodium


def hash_to_group(identifier: bytes) -> bytes:
    """The ristretto255 element for ``identifier`` (32 bytes); deterministic, one-way.

    Raises :class:`PsiError` if ``identifier`` is not bytes.
    """
    if not isinstance(identifier, bytes):
        raise PsiError("identifiers must be bytes")
    digest = hashlib.sha512(
        len(HASH_TO_GROUP_DST).to_bytes(1, "big") + HASH_TO_GROUP_DST + identifier
    ).digest()
    return bytes(_sodium().crypto_core_ristretto255_from_hash(digest))


def random_scalar() -> bytes:
    """A fresh uniformly random non-zero scalar (libsodium's ``randombytes``)."""
    return bytes(_sodium().crypto_core_ristretto255_scalar_random())


def random_point() -> bytes:
    """A uniformly random group element: a dummy indistinguishable from a blinded one."""
    return bytes(_sodium().crypto_core_ristretto255_random())


def check_point(point: object) -> bytes:
    """``point`` if it is the canonical encoding of a non-identity ristretto255 element.

    Raises :class:`PsiError` otherwise (wrong type or length, non-canonical, identity).
    libsodium 1.0.18's ``crypto_core_ristretto255_is_valid_point`` ignores bit 255, so a
    valid point with its top bit set decodes to the same element: a second encoding that a
    comparison of bytes would take for a different point. RFC 9496 §4.3.1 requires that bit
    clear; it is refused here, before libsodium is asked.
    """
    if not isinstance(point, bytes) or len(point) != POINT_BYTES:
        raise PsiError(f"a PSI point must be {POINT_BYTES} bytes")
    if point[-1] & 0x80:
        raise PsiError("a PSI point is not a canonical ristretto255 encoding (bit 255 is set)")
    if point == _IDENTITY or not _sodium().crypto_core_ristretto255_is_valid_point(point):
        raise PsiError("a PSI point is not a valid ristretto255 element")
    return point


def blind(scalar: bytes, point: bytes) -> bytes:
    """``scalar · point``; raises :class:`PsiError` if ``point`` is not a valid element or
    the product is the identity (or the encoding is not canonical, see :func:`check_point`)."""
    if not isinstance(point, bytes) or len(point) != POINT_BYTES:
        raise PsiError(f"a PSI point must be {POINT_BYTES} bytes")
    if point[-1] & 0x80:
        raise PsiError("a PSI point is not a canonical ristretto255 encoding (bit 255 is set)")
    try:
        # libsodium decodes ``point`` canonically and refuses an identity product (-1).
        return bytes(_sodium().crypto_scalarmult_ristretto255(scalar, point))
    except ValueError as exc:
        raise PsiError("a PSI point is not a valid ristretto255 element") from exc
