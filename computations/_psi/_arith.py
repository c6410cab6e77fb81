"""Group and scalar arithmetic for the shuffle proof: libsodium's ristretto255, in bytes.

Points are 32-byte canonical encodings, scalars 32-byte little-endian integers below the
group order ``ℓ`` (RFC 9496 §4; libsodium's ``crypto_core_ristretto255_*``). Secret
scalars go through libsodium's constant-time scalar functions, never Python integers.
The identity is the all-zero encoding; libsodium's addition accepts it, its scalar
multiplication refuses to *return* it, which :func:`mul` maps back to the identity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Final

from computations._psi._group import POINT_BYTES, PsiError, _sodium

#: The order of ristretto255 (RFC 9496 §4.1): ``2^252 + 27742317777372353535851937790883648493``.
GROUP_ORDER: Final = 2**252 + 27742317777372353535851937790883648493
IDENTITY: Final = bytes(POINT_BYTES)
ZERO: Final = bytes(32)
ONE: Final = (1).to_bytes(32, "little")

#: Domain tag of the shuffle proof's independent generators ``H, H_1, …, H_N``: each is
#: ristretto255's one-way map of SHA-512 over this tag (length prefixed) and its index, so
#: nobody knows a discrete logarithm between any two of them or to the base point.
GENERATOR_DST: Final = b"indomain/psi/v1/shuffle-generators/ristretto255-SHA512"


def add(p: bytes, q: bytes) -> bytes:
    return bytes(_sodium().crypto_core_ristretto255_add(p, q))


def sub(p: bytes, q: bytes) -> bytes:
    return bytes(_sodium().crypto_core_ristretto255_sub(p, q))


def mul(k: bytes, p: bytes) -> bytes:
    """``k·p`` for a *valid* point ``p`` (checked by the caller) and scalar ``k``."""
    if p == IDENTITY or k == ZERO:
        return IDENTITY
    try:
        return bytes(_sodium().crypto_scalarmult_ristretto255(k, p))
    except ValueError:
        # ``p`` is valid, so libsodium refused only because the product is the identity.
        return IDENTITY


def base(k: bytes) -> bytes:
    """``k·G``, ``G`` the ristretto255 base point."""
    if k == ZERO:
        return IDENTITY
    try:
        return bytes(_sodium().crypto_scalarmult_ristretto255_base(k))
    except ValueError:
        return IDENTITY


def point_sum(points: Iterable[bytes]) -> bytes:
    total = IDENTITY
    for point in points:
        total = add(total, point)
    return total


def combination(scalars: Sequence[bytes], points: Sequence[bytes]) -> bytes:
    """``Σ scalars[i]·points[i]`` (one scalar multiplication and one addition per term:
    with libsodium's encoded points a Pippenger sum costs more additions than it saves;
    see bench/encrypted_bench.py)."""
    return point_sum(mul(k, p) for k, p in zip(scalars, points, strict=True))


def s_add(x: bytes, y: bytes) -> bytes:
    return bytes(_sodium().crypto_core_ristretto255_scalar_add(x, y))


def s_sub(x: bytes, y: bytes) -> bytes:
    return bytes(_sodium().crypto_core_ristretto255_scalar_sub(x, y))


def s_mul(x: bytes, y: bytes) -> bytes:
    return bytes(_sodium().crypto_core_ristretto255_scalar_mul(x, y))


def s_random() -> bytes:
    """A uniformly random non-zero scalar from libsodium's ``randombytes``."""
    return bytes(_sodium().crypto_core_ristretto255_scalar_random())


def hash_to_scalar(data: bytes) -> bytes:
    """SHA-512 of ``data`` reduced mod ``ℓ`` (libsodium ``scalar_reduce``): statistically
    uniform, the bias is below ``2^-250``."""
    return bytes(_sodium().crypto_core_ristretto255_scalar_reduce(hashlib.sha512(data).digest()))


def check_scalar(scalar: object) -> bytes:
    """``scalar`` if it is 32 bytes encoding an integer below ``ℓ``; raises :class:`PsiError`
    otherwise (a scalar ``≥ ℓ`` is a second encoding of a smaller one)."""
    if not isinstance(scalar, bytes) or len(scalar) != 32:
        raise PsiError("a shuffle proof scalar must be 32 bytes")
    if int.from_bytes(scalar, "little") >= GROUP_ORDER:
        raise PsiError("a shuffle proof scalar is not canonical (it is not below the order)")
    return scalar


def frame(data: bytes) -> bytes:
    """``data`` with its length first (u32, big-endian), so concatenations parse one way."""
    return len(data).to_bytes(4, "big") + data


@cache
def generators(n: int) -> tuple[bytes, tuple[bytes, ...], bytes]:
    """``(H, (H_1, …, H_n), Σ H_i)``: independent generators, derived from the tag and index
    alone (cached: every list of one session has the same length)."""
    sodium = _sodium()

    def derive(index: int) -> bytes:
        digest = hashlib.sha512(frame(GENERATOR_DST) + index.to_bytes(8, "big")).digest()
        return bytes(sodium.crypto_core_ristretto255_from_hash(digest))

    listed = tuple(derive(i) for i in range(1, n + 1))
    return derive(0), listed, point_sum(listed)
