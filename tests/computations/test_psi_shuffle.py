"""The shuffle proof alone (computations/_psi/_shuffle.py): honest proofs verify, and
every way of changing the statement or the proof is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computations import PsiError
from computations._psi import _arith as ar
from computations._psi._group import blind, random_point, random_scalar
from computations._psi._protocol import PsiClient, PsiLimits, PsiReblinded, PsiServer
from computations._psi._shuffle import (
    ShuffleProof,
    key_commitment,
    proof_size,
    prove_shuffle,
    verify_shuffle,
)

SESSION = b"session-1"


def _statement(n: int) -> tuple[bytes, list[bytes], tuple[bytes, ...], ShuffleProof]:
    key = random_scalar()
    offered = [random_point() for _ in range(n)]
    reply, proof = prove_shuffle(key, offered, session=SESSION, label="north")
    return key, offered, reply, proof


def _verify(
    key_point: bytes, offered: list[bytes], reply: tuple[bytes, ...], proof: ShuffleProof
) -> None:
    verify_shuffle(key_point, offered, reply, proof, session=SESSION, label="north")


@settings(max_examples=25)
@given(n=st.integers(min_value=1, max_value=20), data=st.data())
def test_honest_proofs_verify_and_the_reply_is_the_permuted_offer(
    n: int, data: st.DataObject
) -> None:
    key = random_scalar()
    offered = [random_point() for _ in range(n)]
    permutation = data.draw(st.permutations(range(n)))
    reply, proof = prove_shuffle(
        key, offered, session=SESSION, label="north", permutation=permutation
    )
    assert reply == tuple(blind(key, offered[j]) for j in permutation)
    parsed = ShuffleProof.from_bytes(proof.to_bytes(), n)
    assert parsed == proof and len(proof.to_bytes()) == proof_size(n)
    _verify(key_commitment(key), offered, reply, parsed)


@settings(max_examples=25)
@given(n=st.integers(min_value=2, max_value=20), data=st.data())
def test_any_reply_that_is_not_the_proved_shuffle_is_refused(n: int, data: st.DataObject) -> None:
    key, offered, reply, proof = _statement(n)
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    swapped = list(reply)
    swapped[i], swapped[j] = swapped[j], swapped[i]  # still a shuffle, not the proved one
    replaced = list(reply)
    replaced[i] = blind(random_scalar(), offered[0])  # one point under another key
    for bad in (swapped, replaced, [*reply[:i], random_point(), *reply[i + 1 :]]):
        with pytest.raises(PsiError, match="does not verify"):
            _verify(key_commitment(key), offered, tuple(bad), proof)


def test_a_single_point_and_the_empty_list() -> None:
    key, offered, reply, proof = _statement(1)
    _verify(key_commitment(key), offered, reply, proof)
    with pytest.raises(PsiError, match="empty"):
        prove_shuffle(key, [], session=SESSION, label="north")
    with pytest.raises(PsiError, match="empty"):
        verify_shuffle(key_commitment(key), [], (), proof, session=SESSION, label="north")
    with pytest.raises(PsiError, match="at least one"):
        ShuffleProof.from_bytes(b"", 0)


def test_a_proof_is_bound_to_its_session_group_key_and_lists() -> None:
    key, offered, reply, proof = _statement(6)
    good = key_commitment(key)
    with pytest.raises(PsiError, match="does not verify"):
        verify_shuffle(good, offered, reply, proof, session=b"session-2", label="north")
    with pytest.raises(PsiError, match="does not verify"):
        verify_shuffle(good, offered, reply, proof, session=SESSION, label="south")
    with pytest.raises(PsiError, match="does not verify"):
        _verify(key_commitment(random_scalar()), offered, reply, proof)  # wrong A
    with pytest.raises(PsiError, match="does not verify"):
        _verify(good, offered[::-1], reply, proof)  # the same set, another offer order
    # The proof of one list does not carry over to another list of the same key.
    other = [random_point() for _ in range(6)]
    other_reply, _ = prove_shuffle(key, other, session=SESSION, label="north")
    with pytest.raises(PsiError, match="does not verify"):
        _verify(good, other, other_reply, proof)


def test_every_bit_flip_in_a_proof_is_refused() -> None:
    n = 3
    key, offered, reply, proof = _statement(n)
    data = proof.to_bytes()
    for word in range(len(data) // 32):
        for bit in (0, 7, 130, 251, 255):
            flipped = bytearray(data)
            flipped[word * 32 + bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(PsiError):
                _verify(
                    key_commitment(key), offered, reply, ShuffleProof.from_bytes(bytes(flipped), n)
                )


def test_non_canonical_scalars_and_points_are_refused() -> None:
    _key, offered, reply, proof = _statement(2)
    data = bytearray(proof.to_bytes())
    # s'_last + ℓ: the same residue, a second encoding, refused before any arithmetic.
    last = int.from_bytes(data[-32:], "little") + ar.GROUP_ORDER
    if last < 2**256:
        data[-32:] = last.to_bytes(32, "little")
        with pytest.raises(PsiError, match="not canonical"):
            ShuffleProof.from_bytes(bytes(data), 2)
    twin = bytearray(proof.to_bytes())
    twin[31] |= 0x80  # bit 255 of the first commitment
    with pytest.raises(PsiError, match="canonical"):
        ShuffleProof.from_bytes(bytes(twin), 2)
    with pytest.raises(PsiError, match="bytes"):
        ShuffleProof.from_bytes(proof.to_bytes()[:-1], 2)
    with pytest.raises(PsiError):
        _verify(ar.IDENTITY, offered, reply, proof)


def test_the_protocol_server_refuses_unproved_and_misproved_replies() -> None:
    records = {f"p{i}".encode(): f"g{i % 3}" for i in range(30)}
    server = PsiServer(records, limits=PsiLimits(max_set_size=100, min_intersection=1))
    client = PsiClient([b"p1", b"p2", b"x"])
    offer = server.respond(client.request())
    reply, offered = client.reblind(offer), offer.groups
    with pytest.raises(PsiError, match="no key commitment"):
        server.intersection_size(PsiReblinded(reply.groups), epsilon=10.0)
    with pytest.raises(PsiError, match="one shuffle proof per"):
        server.intersection_size(
            PsiReblinded(reply.groups, reply.key, reply.proofs[:1]), epsilon=10.0
        )
    # Proofs swapped with their lists: each is a true shuffle of the other group's list.
    swapped = PsiReblinded(
        (reply.groups[1], reply.groups[0], reply.groups[2]),
        reply.key,
        (reply.proofs[1], reply.proofs[0], reply.proofs[2]),
    )
    with pytest.raises(PsiError, match="does not verify"):
        server.membership(swapped, epsilon=10.0)
    # Every list under its own key: copies of one offered list under the right key
    # are impossible to prove, so try the multi-key copy with each list's own proof.
    keys = [random_scalar() for _ in offered]
    forged = [
        prove_shuffle(k, offered[0], session=offer.session, label=str(g))
        for g, k in enumerate(keys)
    ]
    multi = PsiReblinded(
        tuple(r for r, _ in forged), key_commitment(keys[0]), tuple(p for _, p in forged)
    )
    with pytest.raises(PsiError, match="does not verify"):
        server.membership(multi, epsilon=10.0)
    assert server.intersection_size(reply, epsilon=10.0).intersection_size >= 0


@pytest.mark.parametrize("workers", [1, 2])
def test_replies_verify_the_same_in_parallel_processes(workers: int) -> None:
    from computations._psi._protocol import verify_reply

    key = random_scalar()
    offered = [[random_point() for _ in range(5)] for _ in range(3)]
    made = [prove_shuffle(key, o, session=SESSION, label=str(g)) for g, o in enumerate(offered)]
    reply = PsiReblinded(tuple(r for r, _ in made), key_commitment(key), tuple(p for _, p in made))
    labels = ["0", "1", "2"]
    verify_reply(reply, offered, session=SESSION, labels=labels, workers=workers)
    bad = PsiReblinded((reply.groups[0], reply.groups[2], reply.groups[1]), reply.key, reply.proofs)
    with pytest.raises(PsiError, match="group '1' does not verify"):
        verify_reply(bad, offered, session=SESSION, labels=labels, workers=workers)
