"""The prime-order group for PSI: ristretto255 from libsodium, through pysodium.

Ristretto255 (RFC 9496) is a prime-order group built on Curve25519, so blinding by a secret
scalar is a bijection with no small-subgroup or cofactor traps, which raw X25519 on hashed
bytes would have. libsodium (>= 1.0.18) supplies the group; pysodium is a thin ctypes binding
to the system libsodium (PyNaCl 1.6 bundles libsodium but does not bind the ristretto255
functions). Everything here is a pure function over bytes.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Iterable
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
_WRONG_SIZE: Final = f"a PSI point must be {POINT_BYTES} bytes"
_TOP_BIT: Final = "a PSI point is not a canonical ristretto255 encoding (bit 255 is set)"
_INVALID: Final = "a PSI point is not a valid ristretto255 element"


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


def _digest(identifier: object) -> bytes:
    if not isinstance(identifier, bytes):
        raise PsiError("identifiers must be bytes")
    return hashlib.sha512(
        len(HASH_TO_GROUP_DST).to_bytes(1, "big") + HASH_TO_GROUP_DST + identifier
    ).digest()


def hash_to_group(identifier: bytes) -> bytes:
    """The ristretto255 element for ``identifier`` (32 bytes); deterministic, one-way.

    Raises :class:`PsiError` if ``identifier`` is not bytes.
    """
    return bytes(_sodium().crypto_core_ristretto255_from_hash(_digest(identifier)))


def hash_many(identifiers: Iterable[bytes]) -> tuple[bytes, ...]:
    """:func:`hash_to_group` of each identifier, in order, calling libsodium directly
    through the library pysodium loaded, into one buffer: pysodium's wrapper costs about
    8 µs per call here against libsodium's 30. Raises :class:`PsiError` as it does."""
    from_hash = _sodium().sodium.crypto_core_ristretto255_from_hash
    out = ctypes.create_string_buffer(POINT_BYTES)
    points = []
    for identifier in identifiers:
        if from_hash(out, _digest(identifier)) != 0:  # libsodium's map cannot fail
            raise PsiError("libsodium could not hash an identifier to ristretto255")
        points.append(out.raw)
    return tuple(points)


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
    encoded = _check_encoding(point)
    if encoded == _IDENTITY or not _sodium().crypto_core_ristretto255_is_valid_point(encoded):
        raise PsiError(_INVALID)
    return encoded


def _check_encoding(point: object) -> bytes:
    if not isinstance(point, bytes) or len(point) != POINT_BYTES:
        raise PsiError(_WRONG_SIZE)
    if point[-1] & 0x80:
        raise PsiError(_TOP_BIT)
    return point


def blind(scalar: bytes, point: bytes) -> bytes:
    """``scalar · point``; raises :class:`PsiError` if ``point`` is not a valid element or
    the product is the identity (or the encoding is not canonical, see :func:`check_point`)."""
    _check_encoding(point)
    try:
        # libsodium decodes ``point`` canonically and refuses an identity product (-1).
        return bytes(_sodium().crypto_scalarmult_ristretto255(scalar, point))
    except ValueError as exc:
        raise PsiError(_INVALID) from exc


def blind_many(scalar: bytes, points: Iterable[bytes]) -> tuple[bytes, ...]:
    """:func:`blind` of each point, in order, calling libsodium directly into one buffer
    (pysodium's per-call wrapper is about 5 % of a multiplication). Raises
    :class:`PsiError` for the first point :func:`blind` would refuse, with its message.
    """
    if not isinstance(scalar, bytes) or len(scalar) != SCALAR_BYTES:
        raise PsiError(f"a PSI key must be {SCALAR_BYTES} bytes")
    multiply = _sodium().sodium.crypto_scalarmult_ristretto255
    out = ctypes.create_string_buffer(POINT_BYTES)
    blinded = []
    for point in points:
        # As in blind: libsodium decodes canonically, refuses an identity product (-1).
        if multiply(out, scalar, _check_encoding(point)) != 0:
            raise PsiError(_INVALID)
        blinded.append(out.raw)
    return tuple(blinded)
