"""RFC 9162 Merkle tree: known answers, every small tree exhaustively, and tampered proofs.

The oracle functions below transcribe RFC 9162 §2.1.1, §2.1.3.1 and §2.1.4.1 literally
(recursive, no stored hashes), so the stored-hash implementation is checked against the
RFC's own definitions, not against itself.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import (
    LedgerError,
    LedgerVerificationError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    stored_hash_index,
    stored_hashes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from ledger._merkle import split_stored_hash_index, stored_hash_count

EMPTY_ROOT_HEX = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# The certificate-transparency reference leaves and MTH(D[n]) for n = 1..8, as used in
# google/certificate-transparency's merkle tests and transparency-dev/merkle.
RFC6962_LEAVES = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


class MemoryTree:
    """A HashReader over an in-memory stored-hash list, filled with ``stored_hashes``."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.leaves: list[bytes] = []
        self.reads = 0

    def read_hashes(self, indexes):
        self.reads += 1
        return [self.hashes[i] for i in indexes]

    def append(self, data: bytes) -> None:
        n = len(self.leaves)
        assert len(self.hashes) == stored_hash_index(0, n)
        self.hashes.extend(stored_hashes(n, data, self))
        self.leaves.append(leaf_hash(data))


def build(count: int) -> MemoryTree:
    tree = MemoryTree()
    for i in range(count):
        tree.append(b"leaf %d" % i)
    return tree


# The stored hashes of a tree of size n are a prefix of those of any larger tree, so one
# tree serves every size up to its own.
TREE = build(1100)
LEAVES = TREE.leaves


def largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def oracle_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = largest_power_of_two_below(len(leaves))
    return node_hash(oracle_root(leaves[:k]), oracle_root(leaves[k:]))


def oracle_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = largest_power_of_two_below(len(leaves))
    if m < k:
        return [*oracle_path(m, leaves[:k]), oracle_root(leaves[k:])]
    return [*oracle_path(m - k, leaves[k:]), oracle_root(leaves[:k])]


def oracle_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [oracle_root(leaves)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*oracle_subproof(m, leaves[:k], complete), oracle_root(leaves[k:])]
    return [*oracle_subproof(m - k, leaves[k:], False), oracle_root(leaves[:k])]


def rejects(verify, *args) -> bool:
    """True when ``verify(*args)`` raises LedgerVerificationError (cheaper than pytest.raises)."""
    try:
        verify(*args)
    except LedgerVerificationError:
        return True
    return False


def flip(value: bytes, bit: int) -> bytes:
    raw = bytearray(value)
    raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


# -- known answers --------------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing():
    assert tree_root(0, TREE).hex() == EMPTY_ROOT_HEX
    assert root_from_leaf_hashes([]).hex() == EMPTY_ROOT_HEX


def test_leaf_and_node_hash_domain_separation():
    assert leaf_hash(b"").hex() == RFC6962_ROOTS[0]
    left, right = leaf_hash(b""), leaf_hash(b"\x00")
    assert node_hash(left, right).hex() == RFC6962_ROOTS[1]
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    with pytest.raises(LedgerError):
        node_hash(left, right[:31])


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_reference_roots(size):
    tree = MemoryTree()
    for leaf in RFC6962_LEAVES[:size]:
        tree.append(bytes.fromhex(leaf))
    assert tree_root(size, tree).hex() == RFC6962_ROOTS[size - 1]
    assert root_from_leaf_hashes(tree.leaves).hex() == RFC6962_ROOTS[size - 1]


def test_rfc6962_reference_proofs():
    # Values from the same CT test data: PATH(0, D[8]) and PROOF(3, D[8]).
    tree = MemoryTree()
    for leaf in RFC6962_LEAVES:
        tree.append(bytes.fromhex(leaf))
    assert [h.hex() for h in inclusion_proof(0, 8, tree)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [h.hex() for h in consistency_proof(3, 8, tree)] == [
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]


# -- stored-hash layout ---------------------------------------------------------------


def test_stored_hash_index_matches_go_tlog_layout():
    # Leaf 0; leaf 1 then node (1,0); leaf 2; leaf 3 then (1,1) then (2,0); leaf 4 ...
    expected = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (0, 2): 3, (0, 3): 4, (1, 1): 5, (2, 0): 6}
    expected |= {(0, 4): 7}
    for (level, n), index in expected.items():
        assert stored_hash_index(level, n) == index
        assert split_stored_hash_index(index) == (level, n)


def test_split_inverts_stored_hash_index():
    for index in range(5000):
        level, n = split_stored_hash_index(index)
        assert stored_hash_index(level, n) == index


def test_stored_hash_count_and_layout_agree_with_appends():
    tree = MemoryTree()
    for n in range(300):
        assert stored_hash_count(n) == len(tree.hashes)
        tree.append(b"%d" % n)
        # Each stored hash is the root of the perfect subtree its coordinates name.
        for index in range(stored_hash_index(0, n), len(tree.hashes)):
            level, k = split_stored_hash_index(index)
            lo = k << level
            assert tree.hashes[index] == oracle_root(tree.leaves[lo : lo + (1 << level)])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 100, 1023, 1024, 1025])
def test_root_and_proofs_use_one_read_of_logarithmically_many_hashes(size):
    class Counting:
        def __init__(self):
            self.calls: list[int] = []

        def read_hashes(self, indexes):
            self.calls.append(len(indexes))
            return TREE.read_hashes(indexes)

    bound = 1 + math.ceil(math.log2(size)) if size > 1 else 1
    reader = Counting()
    tree_root(size, reader)
    inclusion_proof(size // 2, size, reader)
    consistency_proof(max(1, size // 3), size, reader)
    assert len(reader.calls) <= 3
    assert all(count <= 2 * bound for count in reader.calls)


# -- exhaustive small trees -----------------------------------------------------------


def test_every_root_from_stored_hashes_equals_recomputation_up_to_100():
    for size in range(101):
        expected = root_from_leaf_hashes(LEAVES[:size])
        assert tree_root(size, TREE) == expected
        assert oracle_root(LEAVES[:size]) == expected


def test_every_inclusion_proof_verifies_up_to_100():
    for size in range(1, 101):
        root = tree_root(size, TREE)
        for index in range(size):
            proof = inclusion_proof(index, size, TREE)
            verify_inclusion(LEAVES[index], index, size, proof, root)
            if size <= 48:
                assert proof == oracle_path(index, LEAVES[:size])


def test_every_consistency_proof_verifies_up_to_100():
    roots = [tree_root(size, TREE) for size in range(101)]
    for new in range(1, 101):
        for old in range(1, new + 1):
            proof = consistency_proof(old, new, TREE)
            verify_consistency(old, new, roots[old], roots[new], proof)
            if new <= 48:
                assert proof == oracle_subproof(old, LEAVES[:new], True)


# Every leaf of these sizes; for the larger ones only the first, middle and last leaf.
FLIP_CASES = [(size, range(size)) for size in range(1, 17)] + [
    (size, (0, size // 2, size - 1)) for size in (31, 32, 33, 100)
]


@pytest.mark.parametrize(("size", "indexes"), FLIP_CASES, ids=[str(s) for s, _ in FLIP_CASES])
def test_every_single_bit_flip_breaks_inclusion(size, indexes):
    root = tree_root(size, TREE)
    for index in indexes:
        proof = inclusion_proof(index, size, TREE)
        leaf = LEAVES[index]
        for position, bit in itertools.product(range(len(proof)), range(256)):
            bad = [*proof]
            bad[position] = flip(bad[position], bit)
            assert rejects(verify_inclusion, leaf, index, size, bad, root), (index, position, bit)
        for bit in range(256):
            assert rejects(verify_inclusion, flip(leaf, bit), index, size, proof, root)
            assert rejects(verify_inclusion, leaf, index, size, proof, flip(root, bit))


@pytest.mark.parametrize("new", range(2, 13))
def test_every_single_bit_flip_breaks_consistency(new):
    roots = [tree_root(size, TREE) for size in range(new + 1)]
    for old in range(1, new):
        proof = consistency_proof(old, new, TREE)
        for position, bit in itertools.product(range(len(proof)), range(256)):
            bad = [*proof]
            bad[position] = flip(bad[position], bit)
            assert rejects(verify_consistency, old, new, roots[old], roots[new], bad)
        for bit in range(256):
            assert rejects(verify_consistency, old, new, flip(roots[old], bit), roots[new], proof)
            assert rejects(verify_consistency, old, new, roots[old], flip(roots[new], bit), proof)


def test_proofs_with_wrong_shape_fail():
    size, index = 13, 5
    root = tree_root(size, TREE)
    proof = inclusion_proof(index, size, TREE)
    for bad in (proof[:-1], [*proof, proof[0]], [proof[0], *proof], [], proof[::-1]):
        with pytest.raises(LedgerVerificationError):
            verify_inclusion(LEAVES[index], index, size, bad, root)
    for wrong_index in (index - 1, index + 1, size, -1):
        with pytest.raises(LedgerVerificationError):
            verify_inclusion(LEAVES[index], wrong_index, size, proof, root)
    with pytest.raises(LedgerVerificationError):
        verify_inclusion(LEAVES[index], index, size, [*proof[:-1], b"short"], root)
    consistency = consistency_proof(6, size, TREE)
    old_root = tree_root(6, TREE)
    for bad in (consistency[:-1], [*consistency, consistency[0]], []):
        with pytest.raises(LedgerVerificationError):
            verify_consistency(6, size, old_root, root, bad)
    # Not (6, size + 1): the proof's last hash is an opaque subtree root, so RFC 9162
    # cannot tell a 1-leaf from a 2-leaf right edge; the signed size binds that.
    for old, new in ((5, size), (7, size), (6, 2 * size), (size, 6)):
        with pytest.raises(LedgerVerificationError):
            verify_consistency(old, new, old_root, root, consistency)


def test_consistency_from_or_to_the_empty_tree_is_refused():
    empty = tree_root(0, TREE)
    with pytest.raises(LedgerVerificationError):
        verify_consistency(0, 0, empty, empty, [])
    with pytest.raises(LedgerVerificationError):
        verify_consistency(0, 5, empty, tree_root(5, TREE), [])
    with pytest.raises(LedgerError):
        consistency_proof(0, 5, TREE)


def test_equal_sizes_need_empty_proof_and_equal_roots():
    root = tree_root(9, TREE)
    verify_consistency(9, 9, root, root, [])
    assert consistency_proof(9, 9, TREE) == []
    with pytest.raises(LedgerVerificationError):
        verify_consistency(9, 9, root, tree_root(8, TREE), [])
    with pytest.raises(LedgerVerificationError):
        verify_consistency(9, 9, root, root, [root])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5), (True, 5), (0, -1)])
def test_inclusion_proof_refuses_indexes_outside_the_tree(index, size):
    with pytest.raises(LedgerError):
        inclusion_proof(index, size, TREE)


def test_tree_root_refuses_negative_size_and_short_reader():
    with pytest.raises(LedgerError):
        tree_root(-1, TREE)

    class Short:
        def read_hashes(self, indexes):
            return TREE.read_hashes(indexes)[:-1]

    with pytest.raises(LedgerError):
        tree_root(7, Short())


# -- properties over larger trees -----------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data(), size=st.integers(1, len(LEAVES)))
def test_random_inclusion_proofs_verify_and_any_flip_fails(data, size):
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, TREE)
    root = tree_root(size, TREE)
    verify_inclusion(LEAVES[index], index, size, proof, root)
    assert root == root_from_leaf_hashes(LEAVES[:size])
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        proof[position] = flip(proof[position], bit)
        with pytest.raises(LedgerVerificationError):
            verify_inclusion(LEAVES[index], index, size, proof, root)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), new=st.integers(1, len(LEAVES)))
def test_random_consistency_proofs_verify_and_any_flip_fails(data, new):
    old = data.draw(st.integers(1, new))
    proof = consistency_proof(old, new, TREE)
    old_root, new_root = tree_root(old, TREE), tree_root(new, TREE)
    verify_consistency(old, new, old_root, new_root, proof)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        proof[position] = flip(proof[position], bit)
        with pytest.raises(LedgerVerificationError):
            verify_consistency(old, new, old_root, new_root, proof)
