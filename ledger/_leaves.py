"""Leaf hashes of a verified prefix, kept so that any prefix's root is cheap.

Verification recomputes the root of the whole log, of each checkpoint size it binary
searches when locating a tampered entry, and of every trusted checkpoint. Recomputing each
from the leaves costs one node hash per leaf; keeping the root of every aligned *chunk*
(a perfect subtree of ``2**level`` leaves, RFC 9162 §2.1.1) makes it cost one chunk plus
one node hash per chunk. Chunks are also the unit of parallel verification
(:mod:`ledger._chunks`): a worker hashes one chunk and returns its leaves and its root.

Pure: no I/O.
"""

from __future__ import annotations

import functools
import hashlib

from indomain.errors import InternalError
from ledger._merkle import EMPTY_ROOT, HASH_SIZE, LEAF_PREFIX, NODE_PREFIX, root_from_leaf_hashes

CHUNK_LEVEL = 14  # 16,384 entries per chunk: ~7 MB of entries, ~0.1 s of work per task


def chunk_stored_hashes(leaves: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Return (stored hashes, subtree stack) for ``leaves`` starting at an aligned index.

    The stored hashes are those Go's tlog layout stores for these leaves, in stored-hash
    order, as far as they lie within the leaves' own aligned subtrees: for a whole chunk
    that is every leaf and node up to the chunk's root (``2 * len - 1`` hashes); the
    levels above it need other chunks. The stack holds the perfect-subtree roots left
    over, largest first (a whole chunk leaves one: its root). Same hashes as
    :class:`~ledger._merkle.RootAccumulator`, inlined because it runs once per entry.
    """
    sha256 = hashlib.sha256
    stored: list[bytes] = []
    stack: list[bytes] = []
    for count, leaf in enumerate(leaves, start=1):
        stored.append(leaf)
        current = leaf
        while not count & 1:  # a perfect subtree completes once per trailing zero bit
            current = sha256(NODE_PREFIX + stack.pop() + current).digest()
            stored.append(current)
            count >>= 1
        stack.append(current)
    return stored, stack


def perfect_stored_hashes(leaves: list[bytes]) -> tuple[bytes, bytes]:
    """Return (stored hashes joined, root) for ``2**k`` leaves starting at an aligned index.

    The same hashes, in the same order, as :func:`chunk_stored_hashes` for a whole chunk,
    computed a level at a time (one comprehension per level, no per-leaf Python loop: a
    third of a chunk's verification time went to that loop) and then put in stored-hash
    order by a permutation that depends only on the size.
    """
    count = len(leaves)
    if count == 0 or count & (count - 1):
        raise InternalError("perfect_stored_hashes needs a power-of-two number of leaves")
    sha256 = hashlib.sha256
    flat = list(leaves)
    level = leaves
    while len(level) > 1:
        level = [
            sha256(NODE_PREFIX + a + b).digest()
            for a, b in zip(level[::2], level[1::2], strict=True)
        ]
        flat += level
    return b"".join(map(flat.__getitem__, _stored_order(count))), level[0]


@functools.lru_cache(maxsize=4)
def _stored_order(count: int) -> tuple[int, ...]:
    """Positions in ``leaves + level 1 + level 2 + ...`` of a perfect tree, in stored-hash
    order (Go tlog: leaf i, then the root of each subtree it completes, lowest first)."""
    offsets = [0]
    size = count
    while size:
        offsets.append(offsets[-1] + size)
        size //= 2
    order = []
    for i in range(count):
        order.append(i)
        done, height = i + 1, 1
        while not done & 1:  # leaf i completes a subtree per trailing zero bit of i + 1
            order.append(offsets[height] + ((i + 1) >> height) - 1)
            done >>= 1
            height += 1
    return tuple(order)


def leaf_hash_fast(data: bytes) -> bytes:
    """RFC 9162 leaf hash without :func:`~ledger.leaf_hash`'s copy (``data`` is bytes)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


class LeafHashes:
    """Leaf hashes in log order, with the root of every whole aligned chunk.

    Leaves arrive one at a time (:meth:`append`) or a chunk at a time (:meth:`add_chunk`).
    """

    def __init__(self, level: int = CHUNK_LEVEL) -> None:
        if level < 0:
            raise InternalError("chunk level must be non-negative")
        self._chunk = 1 << level
        self._full: list[tuple[bytes, bytes]] = []  # (leaves joined, chunk root) per chunk
        self._tail: list[bytes] = []  # leaves after the last whole chunk

    def __len__(self) -> int:
        return len(self._full) * self._chunk + len(self._tail)

    @property
    def chunk(self) -> int:
        """Leaves per chunk."""
        return self._chunk

    def chunk_roots(self) -> list[bytes]:
        """The roots of the whole chunks, in order."""
        return [root for _, root in self._full]

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        self._tail.append(leaf)
        if len(self._tail) == self._chunk:
            self._seal(b"".join(self._tail), root_from_leaf_hashes(self._tail))

    def add_chunk(self, joined: bytes, root: bytes | None) -> None:
        """Add the leaves of one chunk (joined, ``HASH_SIZE`` bytes each) at a chunk boundary.

        ``root`` is the chunk's subtree root when the chunk is whole (computed by whoever
        hashed it); fewer leaves become the tail.
        """
        if self._tail or len(joined) % HASH_SIZE:
            raise InternalError("a chunk must start at a chunk boundary")
        count = len(joined) // HASH_SIZE
        if count > self._chunk or (root is not None and count != self._chunk):
            raise InternalError("a chunk root needs exactly one whole chunk")
        if count == self._chunk and root is not None:  # the usual case: nothing to split
            self._seal(joined, root)
            return
        leaves = [joined[i : i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE)]
        if count == self._chunk:
            self._seal(joined, root_from_leaf_hashes(leaves))
        else:
            self._tail = leaves

    def _seal(self, joined: bytes, root: bytes) -> None:
        self._full.append((joined, root))
        self._tail = []

    def last(self) -> bytes | None:
        """The last leaf hash, or ``None`` when there is none."""
        if self._tail:
            return self._tail[-1]
        if self._full:
            return self._full[-1][0][-HASH_SIZE:]
        return None

    def _leaves(self, lo: int, hi: int) -> list[bytes]:
        """Leaves ``[lo, hi)``, which lie within one chunk."""
        number = lo // self._chunk
        offset = lo - number * self._chunk
        if number < len(self._full):
            joined = self._full[number][0]
            return [
                joined[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(offset, offset + hi - lo)
            ]
        return self._tail[offset : offset + hi - lo]

    def root(self, size: int | None = None) -> bytes:
        """Return the RFC 9162 root of the first ``size`` leaves (default: all of them)."""
        n = len(self) if size is None else size
        if not 0 <= n <= len(self):
            raise InternalError(f"root of {n} leaves asked of {len(self)}")
        return EMPTY_ROOT if n == 0 else self._subtree(0, n)

    def _subtree(self, lo: int, hi: int) -> bytes:
        # RFC 9162 §2.1.1 MTH over [lo, hi). Each range starts at a multiple of the
        # smallest power of two >= its length, so a range of at most one chunk lies in one.
        n = hi - lo
        if n == self._chunk and lo % self._chunk == 0:
            return self._full[lo // self._chunk][1]
        if n <= self._chunk:
            return root_from_leaf_hashes(self._leaves(lo, hi))
        k = 1 << ((n - 1).bit_length() - 1)
        left, right = self._subtree(lo, lo + k), self._subtree(lo + k, hi)
        return hashlib.sha256(NODE_PREFIX + left + right).digest()

    def truncate(self, size: int) -> None:
        """Keep only the first ``size`` leaves."""
        if not 0 <= size <= len(self):
            raise InternalError(f"cannot truncate {len(self)} leaves to {size}")
        whole, rest = divmod(size, self._chunk)
        tail = self._leaves(whole * self._chunk, size) if rest else []
        del self._full[whole:]
        self._tail = tail
