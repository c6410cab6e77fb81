"""Verification of RFC 9162 proofs: needs no storage, only the claimed hashes.

Both functions follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, so they can be read
against the RFC; they return ``None`` or raise :class:`LedgerVerificationError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from ledger._errors import LedgerVerificationError
from ledger._merkle import HASH_SIZE, node_hash


def _fail(reason: str) -> LedgerVerificationError:
    return LedgerVerificationError(reason)


def _proof_hashes(proof: Sequence[bytes]) -> list[bytes]:
    hashes = list(proof)
    if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in hashes):
        raise _fail("proof holds a value that is not a 32-byte hash")
    return hashes


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` shows leaf ``leaf_hash`` at ``index`` in the tree (size, root).

    Follows RFC 9162 §2.1.3.2. Returns ``None``; raises :class:`LedgerVerificationError`.
    """
    for name, value in (("index", index), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(f"{name} must be a non-negative integer")
    if index >= size:
        raise _fail(f"leaf index {index} is not below tree size {size}")
    if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
        raise _fail("leaf hash is not a 32-byte hash")
    fn, sn, r = index, size - 1, leaf_hash
    for p in _proof_hashes(proof):
        if sn == 0:
            raise _fail("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail("inclusion proof is too short")
    if not isinstance(root, bytes) or not hmac.compare_digest(r, root):
        raise _fail("inclusion proof does not lead to the tree root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that ``proof`` shows tree (old_size, old_root) is a prefix of (new_size, new_root).

    Follows RFC 9162 §2.1.4.2. A proof from the empty tree is refused (as the published
    transparency-dev vectors expect): it would prove nothing. Equal sizes need an empty
    proof and equal roots. Returns ``None``; raises :class:`LedgerVerificationError`.
    """
    for name, value in (("old size", old_size), ("new size", new_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _fail(f"{name} must be a non-negative integer")
    if old_size == 0:
        raise _fail("a consistency proof from the empty tree proves nothing")
    if old_size > new_size:
        raise _fail(f"old size {old_size} is larger than new size {new_size}")
    if not isinstance(old_root, bytes) or not isinstance(new_root, bytes):
        raise _fail("roots must be bytes")
    path = _proof_hashes(proof)
    if old_size == new_size:
        if path:
            raise _fail("equal sizes need an empty consistency proof")
        if not hmac.compare_digest(old_root, new_root):
            raise _fail("equal sizes but different roots")
        return
    if not path:
        raise _fail("consistency proof is empty")
    if len(old_root) != HASH_SIZE or len(new_root) != HASH_SIZE:
        raise _fail("roots must be 32-byte hashes")
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise _fail("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise _fail("consistency proof is too short")
    if not hmac.compare_digest(fr, old_root):
        raise _fail("consistency proof does not lead to the old root")
    if not hmac.compare_digest(sr, new_root):
        raise _fail("consistency proof does not lead to the new root")
