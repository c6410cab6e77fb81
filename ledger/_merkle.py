"""RFC 9162 Merkle tree hashes and proofs: pure functions, no I/O.

Storage is reached only through :class:`HashReader`, which reads hashes by their *stored
hash index*, the dense layout of Go's ``golang.org/x/mod/sumdb/tlog`` (after Crosby and
Wallach, "Efficient Data Structures for Tamper-Evident Logging", §3.3): appending leaf n
stores its leaf hash followed by the roots of the perfect subtrees it completes, so a
root or a proof needs O(log n) reads. Proof verification is in :mod:`ledger._proofs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from indomain.errors import InternalError
from ledger._errors import LedgerError

HASH_SIZE = 32
# RFC 9162 §2.1.1: leaf = SHA-256(0x00 || data)
LEAF_PREFIX = b"\x00"
# RFC 9162 §2.1.1: node = SHA-256(0x01 || left || right)
NODE_PREFIX = b"\x01"
# RFC 9162 §2.1.1: the hash of an empty list is the hash of the empty string
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash of ``data``: SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + bytes(data)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash: SHA-256(0x01 || left || right).

    Raises :class:`LedgerError` unless both children are 32-byte hashes.
    """
    if len(left) != HASH_SIZE or len(right) != HASH_SIZE:
        raise LedgerError("node_hash needs two 32-byte hashes")
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class HashReader(Protocol):
    """Reads stored hashes by stored hash index (see :func:`stored_hash_index`)."""

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Return the hashes at ``indexes``, in the same order; raise if any is missing."""
        ...


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LedgerError(f"{name} must be a non-negative integer")


def _maxpow2(n: int) -> tuple[int, int]:
    """Return (k, log2 k) for the largest power of two k smaller than n (k = 1 when n = 1)."""
    level = max((n - 1).bit_length() - 1, 0)
    return 1 << level, level


def stored_hash_index(level: int, n: int) -> int:
    """Map tree coordinates (level, n) to the dense stored hash index (Go tlog layout)."""
    _check_size("level", level)
    _check_size("n", n)
    # Level L's n'th hash is stored right after level L+1's 2n+1'th hash: walk down to
    # level 0, where hash n sits at n + n/2 + n/4 + ...
    for _ in range(level):
        n = 2 * n + 1
    index = 0
    while n > 0:
        index += n
        n >>= 1
    return index + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """Invert :func:`stored_hash_index`: return (level, n)."""
    _check_size("index", index)
    n = index // 2
    index_n = stored_hash_index(0, n)
    if index_n > index:
        raise InternalError("bad math in split_stored_hash_index")
    while True:
        # Leaf n stores 1 + trailing_zeros(n+1) hashes; the next leaf's come right after.
        following = index_n + 1 + _trailing_zeros(n + 1)
        if following > index:
            break
        n += 1
        index_n = following
    level = index - index_n
    return level, n >> level


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def stored_hash_count(size: int) -> int:
    """Return how many stored hashes a tree of ``size`` leaves has."""
    _check_size("size", size)
    if size == 0:
        return 0
    count = stored_hash_index(0, size - 1) + 1
    i = size - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[bytes]:
    """Return the hashes to store, from ``stored_hash_index(0, n)`` on, when appending leaf n.

    The first is ``leaf_hash(data)``; each further one is the root of a perfect subtree
    completed by this leaf. Reads at most log2(n) earlier hashes through ``reader``.
    """
    return stored_hashes_for_leaf_hash(n, leaf_hash(data), reader)


def stored_hashes_for_leaf_hash(n: int, leaf: bytes, reader: HashReader) -> list[bytes]:
    """Like :func:`stored_hashes`, given the leaf hash instead of the leaf data."""
    _check_size("n", n)
    _check_hash("leaf hash", leaf)
    # Each trailing 1 bit of n completes a subtree whose left half is already stored.
    completed = _trailing_zeros(n + 1)
    indexes = [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(completed))]
    old = _read(reader, indexes)
    hashes = [leaf]
    current = leaf
    for i in range(completed):
        current = node_hash(old[completed - 1 - i], current)
        hashes.append(current)
    return hashes


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise LedgerError(f"{name} must be {HASH_SIZE} bytes")


def _read(reader: HashReader, indexes: list[int]) -> list[bytes]:
    if not indexes:
        return []
    hashes = reader.read_hashes(indexes)
    if len(hashes) != len(indexes) or any(len(h) != HASH_SIZE for h in hashes):
        raise LedgerError(f"hash reader returned bad hashes for {len(indexes)} indexes")
    return list(hashes)


def tree_root(size: int, reader: HashReader) -> bytes:
    """Return the RFC 9162 root of the first ``size`` leaves, in O(log size) reads.

    The empty tree's root is SHA-256 of the empty string (RFC 9162 §2.1.1), not Go's zeros.
    """
    _check_size("size", size)
    if size == 0:
        return EMPTY_ROOT
    indexes = _subtree_index(0, size, [])
    root, rest = _subtree_hash(0, size, _read(reader, indexes))
    if rest:
        raise InternalError("bad index math in tree_root")
    return root


def frontier(size: int, reader: HashReader) -> list[bytes]:
    """Return the roots of the perfect subtrees that make up a tree of ``size`` leaves.

    Largest first: one per set bit of ``size`` (RFC 9162 §2.1.1 splits at powers of
    two). They are all a tree needs to append leaves (:func:`extend_frontier`) and to
    compute its root (:func:`frontier_root`); O(log size) reads.
    """
    _check_size("size", size)
    return _read(reader, _subtree_index(0, size, []))


def extend_frontier(stack: list[bytes], size: int, leaf: bytes, stored: list[bytes]) -> None:
    """Append leaf number ``size`` to the frontier ``stack`` (changed in place).

    Adds to ``stored`` the hashes stored for that leaf (Go tlog layout): the leaf hash,
    then the root of each perfect subtree it completes, one per trailing 1 bit of ``size``.
    """
    stored.append(leaf)
    current = leaf
    count = size + 1
    while not count & 1:
        current = hashlib.sha256(NODE_PREFIX + stack.pop() + current).digest()
        stored.append(current)
        count >>= 1
    stack.append(current)


def frontier_root(stack: Sequence[bytes]) -> bytes:
    """Return the RFC 9162 root of the tree whose frontier is ``stack``."""
    if not stack:
        return EMPTY_ROOT
    current = stack[-1]
    for left in reversed(stack[:-1]):
        current = hashlib.sha256(NODE_PREFIX + left + current).digest()
    return current


def _subtree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the stored indexes needed to hash leaves [lo, hi) (RFC 9162 §2.1.1)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise InternalError("bad math in _subtree_index")
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _subtree_hash(lo: int, hi: int, hashes: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Hash leaves [lo, hi) from the hashes listed by :func:`_subtree_index`; return leftovers.

    [lo, hi) splits into perfect subtrees of decreasing size, each stored directly;
    the root folds them together from the right.
    """
    count = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        if lo & (k - 1):
            raise InternalError("bad math in _subtree_hash")
        count += 1
        lo += k
    if len(hashes) < count:
        raise InternalError("bad index math in _subtree_hash")
    current = hashes[count - 1]
    for i in range(count - 2, -1, -1):
        current = node_hash(hashes[i], current)
    return current, hashes[count:]


def inclusion_proof(index: int, size: int, reader: HashReader) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in a tree of ``size``.

    Raises :class:`LedgerError` unless 0 <= index < size.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise LedgerError(f"leaf {index} is not in a tree of size {size}")
    indexes = _leaf_proof_index(0, size, index, [])
    proof, rest = _leaf_proof(0, size, index, _read(reader, indexes))
    if rest:
        raise InternalError("bad index math in inclusion_proof")
    return proof


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo <= n < hi:
        raise InternalError("bad math in _leaf_proof_index")
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _leaf_proof_index(lo + k, hi, n, need)
    return need


def _leaf_proof(lo: int, hi: int, n: int, hashes: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    if not lo <= n < hi:
        raise InternalError("bad math in _leaf_proof")
    if lo + 1 == hi:
        return [], hashes  # the verifier knows the leaf hash itself
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        proof, hashes = _leaf_proof(lo, lo + k, n, hashes)
        sibling, hashes = _subtree_hash(lo + k, hi, hashes)
    else:
        sibling, hashes = _subtree_hash(lo, lo + k, hashes)
        proof, hashes = _leaf_proof(lo + k, hi, n, hashes)
    proof.append(sibling)
    return proof, hashes


def consistency_proof(old_size: int, new_size: int, reader: HashReader) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 proof that tree ``old_size`` is a prefix of ``new_size``.

    Raises :class:`LedgerError` unless 1 <= old_size <= new_size (a proof from the empty
    tree proves nothing, and :func:`verify_consistency` refuses it).
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if not 1 <= old_size <= new_size:
        raise LedgerError(f"no consistency proof from size {old_size} to size {new_size}")
    indexes = _tree_proof_index(0, new_size, old_size, [])
    proof, rest = _tree_proof(0, new_size, old_size, _read(reader, indexes))
    if rest:
        raise InternalError("bad index math in consistency_proof")
    return proof


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if not lo < n <= hi:
        raise InternalError("bad math in _tree_proof_index")
    if n == hi:
        return need if lo == 0 else _subtree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        _subtree_index(lo + k, hi, need)
    else:
        _subtree_index(lo, lo + k, need)
        _tree_proof_index(lo + k, hi, n, need)
    return need


def _tree_proof(lo: int, hi: int, n: int, hashes: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    if not lo < n <= hi:
        raise InternalError("bad math in _tree_proof")
    if n == hi:
        if lo == 0:
            return [], hashes  # exactly the old tree: the verifier has its root
        subtree, hashes = _subtree_hash(lo, hi, hashes)
        return [subtree], hashes
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        proof, hashes = _tree_proof(lo, lo + k, n, hashes)
        sibling, hashes = _subtree_hash(lo + k, hi, hashes)
    else:
        sibling, hashes = _subtree_hash(lo, lo + k, hashes)
        proof, hashes = _tree_proof(lo + k, hi, n, hashes)
    proof.append(sibling)
    return proof, hashes


class RootAccumulator:
    """Streams leaf hashes in order and keeps only the O(log n) perfect-subtree roots.

    :meth:`append` returns exactly the hashes Go's tlog stores for that leaf, so a
    verifier can rebuild the stored-hash table and the root without trusting either.
    """

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, subtree root)
        self.size = 0

    def append(self, leaf: bytes) -> list[bytes]:
        """Add the next leaf hash; return the hashes stored for it (leaf, then merged)."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise LedgerError(f"leaf hash must be {HASH_SIZE} bytes")
        created = [leaf]
        size, current = 1, leaf
        while self._stack and self._stack[-1][0] == size:
            _, left = self._stack.pop()
            current = node_hash(left, current)
            size *= 2
            created.append(current)
        self._stack.append((size, current))
        self.size += 1
        return created

    def root(self) -> bytes:
        """Return the RFC 9162 root of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        current = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            current = node_hash(left, current)
        return current


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the RFC 9162 root of ``leaf_hashes``, computed from scratch (no stored hashes)."""
    accumulator = RootAccumulator()
    for leaf in leaf_hashes:
        accumulator.append(leaf)
    return accumulator.root()
