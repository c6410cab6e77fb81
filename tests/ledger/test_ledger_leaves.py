"""Leaf hashes kept by chunk, and the stored hashes a chunk checks, against plain Merkle code."""

from __future__ import annotations

import hashlib

import pytest

from ledger import root_from_leaf_hashes, stored_hash_index, stored_hashes
from ledger._chunks import chunk_tasks, stored_range
from ledger._leaves import LeafHashes, chunk_stored_hashes
from ledger._merkle import (
    split_stored_hash_index,
    stored_hash_count,
    stored_hashes_for_leaf_hash,
)

LEAVES = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(70)]


class ListReader:
    """Stored hashes in a list, as the ledger stores them (Go tlog layout)."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []

    def read_hashes(self, indexes):
        return [self.hashes[i] for i in indexes]


def all_stored(leaves: list[bytes]) -> list[bytes]:
    reader = ListReader()
    for n, leaf in enumerate(leaves):
        reader.hashes.extend(stored_hashes_for_leaf_hash(n, leaf, reader))
    return reader.hashes


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_every_prefix_root_equals_the_plain_root(level):
    for how in ("append", "chunks"):
        leaves = LeafHashes(level)
        if how == "append":
            for leaf in LEAVES:
                leaves.append(leaf)
        else:
            for start, end in chunk_tasks(len(LEAVES), level):
                leaves.add_chunk(b"".join(LEAVES[start:end]), None)
        assert len(leaves) == len(LEAVES) and leaves.last() == LEAVES[-1]
        for size in range(len(LEAVES) + 1):
            assert leaves.root(size) == root_from_leaf_hashes(LEAVES[:size]), (how, size)


@pytest.mark.parametrize("level", [0, 2, 3])
def test_truncating_keeps_exactly_the_prefix(level):
    for size in range(len(LEAVES) + 1):
        leaves = LeafHashes(level)
        for leaf in LEAVES:
            leaves.append(leaf)
        leaves.truncate(size)
        assert len(leaves) == size and leaves.root() == root_from_leaf_hashes(LEAVES[:size])
        leaves.append(LEAVES[0])
        assert leaves.root() == root_from_leaf_hashes([*LEAVES[:size], LEAVES[0]])


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
def test_chunks_check_exactly_their_share_of_the_stored_hashes(level):
    """The chunks' ranges and the hashes above them tile the stored-hash table exactly."""
    table = all_stored(LEAVES)
    assert len(table) == stored_hash_count(len(LEAVES))
    covered: list[int] = []
    for start, end in chunk_tasks(len(LEAVES), level):
        first, stop = stored_range(start, end, level)
        stored, stack = chunk_stored_hashes(LEAVES[start:end])
        assert stored == table[first:stop]
        if end - start == 1 << level:  # a whole chunk: one root, the last hash it checks
            assert stack == [stored[-1]] == [table[stored_hash_index(level, start >> level)]]
        covered.extend(range(first, stop))
    # What the chunks do not cover is exactly the hashes above whole chunks.
    above = sorted(set(range(len(table))) - set(covered))
    assert all(split_stored_hash_index(i)[0] > level for i in above)
    assert len(covered) == len(set(covered))


def test_the_plain_stored_hashes_agree_with_the_chunk_ones():
    reader = ListReader()
    for n in range(8):
        reader.hashes.extend(stored_hashes(n, b"entry %d" % n, reader))
    leaves = [hashlib.sha256(b"\x00entry %d" % n).digest() for n in range(8)]
    assert chunk_stored_hashes(leaves)[0] == reader.hashes


def test_a_broken_worker_pool_falls_back_to_this_process(make_ledger, monkeypatch):
    """E.g. a script without an ``if __name__ == "__main__"`` guard cannot start workers."""
    from concurrent.futures.process import BrokenProcessPool

    from ledger import Ledger, _verify, verify_ledger

    class BrokenPool:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, *args, **kwargs):
            raise BrokenProcessPool("a child process terminated abruptly")

    directory = make_ledger(9)
    with Ledger.open(directory) as log:
        key = log.verifier_key
    monkeypatch.setattr(_verify, "ProcessPoolExecutor", BrokenPool)
    monkeypatch.setattr(_verify, "CHUNK_LEVEL", 1)
    assert verify_ledger(directory, key, workers=2).size == 9


@pytest.mark.parametrize("level", range(0, 7))
def test_perfect_stored_hashes_are_the_per_leaf_ones_in_stored_order(level: int):
    from ledger._leaves import perfect_stored_hashes

    leaves = LEAVES[: 1 << level]
    stored, stack = chunk_stored_hashes(leaves)
    joined, root = perfect_stored_hashes(leaves)
    assert joined == b"".join(stored) and [root] == stack
