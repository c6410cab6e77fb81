"""Blinding in forked processes (computations/_psi/_parallel.py): the same points in the
same order as one process, and every refusal a child meets reaches the caller unchanged."""

from __future__ import annotations

import os

import pytest

from computations._psi import PsiClient, PsiLimits, PsiOffer, PsiRequest, PsiServer, hash_to_group
from computations._psi import _parallel as par
from computations._psi._group import PsiError, blind, random_point, random_scalar
from computations._psi._protocol import blind_distinct, verify_reply

LIMITS = PsiLimits(max_set_size=1000, min_intersection=1)
#: So large an epsilon that the discrete Laplace noise is zero.
EXACT = 1000.0

BAD_POINTS = {
    "top bit set": lambda p: p[:31] + bytes([p[31] | 0x80]),
    "not a field element": lambda p: b"\xff" * 32,
    "identity": lambda p: bytes(32),
    "short": lambda p: p[:31],
    "odd (negative s)": lambda p: (1).to_bytes(32, "little"),
}


def _serial_error(key: bytes, points: list[bytes]) -> str:
    with pytest.raises(PsiError) as caught:
        [blind(key, p) for p in points]
    return str(caught.value)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_parallel_blinding_gives_the_serial_points_in_order(workers: int) -> None:
    key = random_scalar()
    ids = [f"p-{i}".encode() for i in range(41)]
    points = [hash_to_group(i) for i in ids]
    serial = tuple(blind(key, p) for p in points)
    assert par.blind_all(key, points, workers=workers) == serial
    assert par.hash_and_blind(key, ids, workers=workers) == serial


@pytest.mark.parametrize("kind", sorted(BAD_POINTS))
@pytest.mark.parametrize("workers", [2, 3])
def test_a_bad_point_in_the_second_half_is_refused_with_the_same_error(
    kind: str, workers: int
) -> None:
    # The caller's process blinds the first chunk, children the rest: the bad point sits
    # in a child's chunk, and its refusal must come back as the serial one would.
    key = random_scalar()
    points = [random_point() for _ in range(30)]
    points[23] = BAD_POINTS[kind](points[23])
    expected = _serial_error(key, points)
    with pytest.raises(PsiError) as caught:
        par.blind_all(key, points, workers=workers)
    assert str(caught.value) == expected
    with pytest.raises(PsiError) as again:
        blind_distinct(key, points, workers=workers)
    assert str(again.value) == expected


def test_the_first_bad_point_in_order_is_the_one_reported() -> None:
    key = random_scalar()
    points = [random_point() for _ in range(30)]
    points[12] = bytes(32)  # the second of three chunks: "not a valid element"
    points[25] = points[25][:31] + bytes([points[25][31] | 0x80])  # the third: "canonical"
    expected = _serial_error(key, points)
    assert "valid ristretto255 element" in expected
    with pytest.raises(PsiError) as caught:
        par.blind_all(key, points, workers=3)
    assert str(caught.value) == expected


def test_an_identifier_that_is_not_bytes_is_refused_from_a_child() -> None:
    ids: list[object] = [f"p-{i}".encode() for i in range(20)]
    ids[15] = "p-15"
    with pytest.raises(PsiError, match="identifiers must be bytes"):
        par.hash_and_blind(random_scalar(), ids, workers=2)  # type: ignore[arg-type]


def test_one_point_twice_across_chunks_is_still_one_encoding_too_many() -> None:
    key = random_scalar()
    points = [random_point() for _ in range(20)]
    points[17] = points[2]  # first chunk and second chunk
    with pytest.raises(PsiError, match="two encodings of one point"):
        blind_distinct(key, points, workers=2)


def test_large_lists_use_every_core_by_default() -> None:
    assert par.default_workers(par.PARALLEL_FROM - 1) == 1
    assert par.default_workers(par.PARALLEL_FROM) == par.cores()
    assert par.cores() == len(os.sched_getaffinity(0))


def test_a_session_with_parallel_sides_finds_the_intersection() -> None:
    dataset = [f"r-{i}".encode() for i in range(60)]
    records = {ident: ("north" if i % 3 else "south") for i, ident in enumerate(dataset)}
    client_ids = dataset[10:35] + [f"x-{i}".encode() for i in range(15)]
    client = PsiClient(client_ids, workers=2)
    server = PsiServer(records, limits=LIMITS, workers=2)
    offer = server.respond(client.request())
    reply = client.reblind(offer)
    assert server.intersection_size(reply, epsilon=EXACT).intersection_size == 25


def test_groups_proved_in_parallel_verify_and_are_shuffled_independently() -> None:
    client = PsiClient([b"a"], workers=2)
    server = PsiServer({f"r-{i}".encode(): str(i % 4) for i in range(64)}, limits=LIMITS, workers=1)
    offer = server.respond(client.request())
    reply = client.reblind(offer)
    verify_reply(reply, offer.groups, session=offer.session, labels=["0", "1", "2", "3"])
    # Each child shuffles with the OS's randomness: no two groups share a permutation.
    key = client._key
    orders = [
        tuple(sorted(range(len(g)), key=lambda i, g=g: reply.groups[n].index(blind(key, g[i]))))
        for n, g in enumerate(offer.groups)
    ]
    assert len(set(orders)) == len(orders)


@pytest.mark.parametrize("kind", sorted(BAD_POINTS))
def test_checking_in_parallel_refuses_a_bad_point_in_the_second_half_alike(kind: str) -> None:
    points = [random_point() for _ in range(30)]
    points[20] = BAD_POINTS[kind](points[20])
    with pytest.raises(PsiError) as serial:
        par.check_all(points, workers=1)
    with pytest.raises(PsiError) as parallel:
        par.check_all(points, workers=2)
    assert str(parallel.value) == str(serial.value)
    par.check_all([p for n, p in enumerate(points) if n != 20], workers=2)


def test_a_long_message_is_checked_on_every_core_and_still_refuses_a_bad_point() -> None:
    # Past PARALLEL_FROM the message's own check forks: a bad point a child checks, in
    # the last list of an offer, is refused as in one process.
    assert par.default_workers(2 * 2048) > 1
    good = [tuple(random_point() for _ in range(2048)) for _ in range(2)]
    PsiOffer((good[0], good[1]))
    twin = good[1][2000][:31] + bytes([good[1][2000][31] | 0x80])
    bad = (*good[1][:2000], twin, *good[1][2001:])
    with pytest.raises(PsiError, match="bit 255 is set"):
        PsiOffer((good[0], bad))
    with pytest.raises(PsiError, match="bit 255 is set"):
        PsiRequest(good[0] + bad)
    with pytest.raises(PsiError, match="repeats a point"):
        PsiRequest(good[0] + good[0][:1])


@pytest.mark.parametrize("kind", sorted(BAD_POINTS))
def test_a_group_that_cannot_be_proved_in_a_child_is_refused_as_in_one_process(
    kind: str,
) -> None:
    key = random_scalar()
    groups = [tuple(random_point() for _ in range(6)) for _ in range(3)]
    groups[2] = (*groups[2][:4], BAD_POINTS[kind](groups[2][4]), groups[2][5])
    messages = []
    for workers in (1, 2):
        with pytest.raises(PsiError) as caught:
            par.prove_all(key, groups, session=b"s", labels=["0", "1", "2"], workers=workers)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    replies, proofs = par.prove_all(key, groups[:2], session=b"s", labels=["0", "1"], workers=2)
    assert [len(r) for r in replies] == [6, 6] and len(proofs) == 2
