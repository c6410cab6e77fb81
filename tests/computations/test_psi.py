"""PSI over ristretto255: correct sizes, unlinkable sessions, limits, hostile points, RR."""

from __future__ import annotations

import math
import os
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from computations import ComputationError
from computations._psi import (
    PsiClient,
    PsiError,
    PsiLimits,
    PsiOffer,
    PsiReblinded,
    PsiRequest,
    PsiServer,
    debias_counts,
    hash_to_group,
    keep_probability,
    randomised_response,
)
from computations._psi._group import blind, check_point, random_point, random_scalar
from computations._psi._protocol import blind_distinct

LIMITS = PsiLimits(max_set_size=1000, min_intersection=1)
#: So large an epsilon that the discrete Laplace noise is zero (P(noise != 0) ≈ 2e^-1000).
EXACT = 1000.0


def _ids(n: int, prefix: str) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


def _run(
    client_ids: list[bytes], records: dict[bytes, str], limits: PsiLimits = LIMITS
) -> tuple[PsiClient, PsiServer, PsiReblinded]:
    client = PsiClient(client_ids)
    server = PsiServer(records, limits=limits)
    offer = server.respond(client.request())
    return client, server, client.reblind(offer)


# -- correctness -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_intersection_size_on_random_sets(seed: int) -> None:
    rng = secrets.SystemRandom()
    dataset = [os.urandom(12) for _ in range(rng.randint(50, 200))]
    shared = rng.sample(dataset, rng.randint(1, 40))
    own = [os.urandom(12) for _ in range(rng.randint(0, 60))]
    client_ids = shared + own
    rng.shuffle(client_ids)
    _, server, reply = _run(client_ids, {i: "all" for i in dataset})
    assert server.intersection_size(reply, epsilon=EXACT).intersection_size == len(shared)


def test_membership_reports_group_of_each_item_in_order() -> None:
    records = {i: ("north" if n % 3 else "south") for n, i in enumerate(_ids(90, "r"))}
    client_ids = [b"r-1", b"stranger", b"r-3", b"r-4", b"nobody"]
    _, server, reply = _run(client_ids, records)
    # The true outcomes, before randomised response: 0 = absent, 1 = north, 2 = south.
    assert server._outcomes(reply) == [1, 0, 2, 1, 0]
    # At epsilon 10 a report flips with probability ~1e-4, so the debiased count of 3
    # matches cannot fall under the minimum of 1 unless three of five reports flip.
    result = server.membership(reply, epsilon=10.0)
    assert result.groups == ("north", "south")
    assert len(result.reports) == 5 and set(result.reports) <= {0, 1, 2}
    assert result.epsilon <= 10.0 * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(
    dataset_size=st.integers(1, 40),
    overlap=st.integers(0, 40),
    extra=st.integers(0, 30),
    groups=st.integers(1, 4),
)
def test_size_matches_plaintext_intersection(
    dataset_size: int, overlap: int, extra: int, groups: int
) -> None:
    overlap = min(overlap, dataset_size)
    dataset = _ids(dataset_size, "d")
    client_ids = dataset[:overlap] + _ids(extra, "e")
    if not client_ids:
        client_ids = [b"lonely"]
    records = {ident: f"g{n % groups}" for n, ident in enumerate(dataset)}
    _, server, reply = _run(client_ids, records, PsiLimits(1000, 1))
    offer_lengths = {len(group) for group in reply.groups}
    assert offer_lengths == {
        max(sum(1 for g in records.values() if g == name) for name in set(records.values()))
    }
    if overlap == 0:
        with pytest.raises(PsiError, match="smaller than 1"):
            server.intersection_size(reply, epsilon=EXACT)
    else:
        assert server.intersection_size(reply, epsilon=EXACT).intersection_size == overlap


# -- what each side sees ----------------------------------------------------------------


def test_fresh_keys_make_sessions_unlinkable() -> None:
    ids = _ids(50, "same")
    records = {i: "all" for i in ids}
    first = PsiClient(ids).request()
    second = PsiClient(ids).request()
    assert not set(first.items) & set(second.items)
    offer_1 = PsiServer(records, limits=LIMITS).respond(first)
    offer_2 = PsiServer(records, limits=LIMITS).respond(second)
    assert not set(offer_1.groups[0]) & set(offer_2.groups[0])


def test_the_sandbox_never_sees_an_identifier_or_its_hash() -> None:
    ids = _ids(20, "secret-national-id")
    request = PsiClient(ids).request()
    hashes = {hash_to_group(i) for i in ids}
    assert not hashes & set(request.items)
    wire = b"".join(request.items)
    assert all(i not in wire for i in ids)


def test_offer_is_shuffled_and_padded_to_one_length() -> None:
    records = {i: "big" for i in _ids(60, "b")} | {i: "small" for i in _ids(3, "s")}
    server = PsiServer(records, limits=LIMITS)
    offer = server.respond(PsiClient([b"b-1"]).request())
    assert [len(group) for group in offer.groups] == [60, 60]
    in_order = [blind(server._key, hash_to_group(i)) for i in _ids(60, "b")]
    assert list(offer.groups[0]) != in_order
    assert sorted(offer.groups[0]) == sorted(in_order)


def test_reblinded_groups_are_reshuffled_by_the_enterprise() -> None:
    records = {i: "all" for i in _ids(60, "x")}
    client = PsiClient([b"x-1"])
    offer = PsiServer(records, limits=LIMITS).respond(client.request())
    reply = client.reblind(offer)
    in_order = [blind(client._key, p) for p in offer.groups[0]]
    assert list(reply.groups[0]) != in_order
    assert sorted(reply.groups[0]) == sorted(in_order)


# -- limits ------------------------------------------------------------------------------


def test_cap_on_the_enterprise_set() -> None:
    server = PsiServer({b"a": "g"}, limits=PsiLimits(max_set_size=5, min_intersection=1))
    with pytest.raises(PsiError, match="at most 5"):
        server.respond(PsiClient(_ids(6, "c")).request())
    server.respond(PsiClient(_ids(5, "c")).request())


def test_intersection_below_minimum_is_refused_in_both_modes() -> None:
    records = {i: "all" for i in _ids(100, "r")}
    limits = PsiLimits(max_set_size=100, min_intersection=10)
    _, server, reply = _run(_ids(9, "r") + _ids(50, "other"), records, limits)
    with pytest.raises(PsiError, match="smaller than 10"):
        server.intersection_size(reply, epsilon=EXACT)
    _, server, reply = _run(_ids(9, "r"), records, limits)
    # Only matching items: a flip can only lower the debiased estimate of 9.
    with pytest.raises(PsiError, match="smaller than 10"):
        server.membership(reply, epsilon=10.0)
    _, server, reply = _run(_ids(10, "r"), records, limits)
    assert server.intersection_size(reply, epsilon=EXACT).intersection_size == 10


@pytest.mark.parametrize("bad", [(0, 1), (1, 0), (-3, 1), (True, 1), (1.5, 1)])
def test_limits_check_themselves(bad: tuple[object, object]) -> None:
    with pytest.raises(PsiError):
        PsiLimits(max_set_size=bad[0], min_intersection=bad[1])  # type: ignore[arg-type]


def test_one_request_per_session_and_reply_after_request() -> None:
    server = PsiServer({b"a": "g"}, limits=LIMITS)
    client = PsiClient([b"a"])
    with pytest.raises(PsiError, match="before the request"):
        server.intersection_size(PsiReblinded(((hash_to_group(b"a"),),)), epsilon=EXACT)
    offer = server.respond(client.request())
    with pytest.raises(PsiError, match="already has a request"):
        server.respond(client.request())
    assert server.intersection_size(client.reblind(offer), epsilon=EXACT).intersection_size == 1


def test_one_release_per_session() -> None:
    records = {i: "all" for i in _ids(5, "r")}
    _, server, reply = _run(_ids(5, "r"), records)
    server.intersection_size(reply, epsilon=EXACT)
    with pytest.raises(PsiError, match="already released"):
        server.intersection_size(reply, epsilon=EXACT)
    with pytest.raises(PsiError, match="already released"):
        server.membership(reply, epsilon=1.0)


SESSIONS = 400


def test_size_noise_is_discrete_laplace_at_epsilon() -> None:
    # Many one-identifier sessions: the released size is 1 + discrete Laplace(1/ε).
    epsilon = 1.0
    records = {b"only": "all"}
    limits = PsiLimits(max_set_size=1, min_intersection=1)
    noises = []
    for _ in range(SESSIONS):
        _, server, reply = _run([b"only"], records, limits)
        try:
            noises.append(server.intersection_size(reply, epsilon=epsilon).intersection_size - 1)
        except PsiError:
            noises.append(None)  # refused: the noisy size fell under the minimum of 1
    refused = noises.count(None) / SESSIONS
    a = math.exp(-epsilon)
    p_zero = (1 - a) / (1 + a)
    p_negative = a / (1 + a)  # P(noise <= -1): exactly the refusals
    assert abs(refused - p_negative) <= _tolerance(p_negative, SESSIONS)
    zero = noises.count(0) / SESSIONS
    assert abs(zero - p_zero) <= _tolerance(p_zero, SESSIONS)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.inf, math.nan])
def test_size_refuses_a_bad_epsilon(epsilon: float) -> None:
    _, server, reply = _run([b"r-1"], {b"r-1": "all"})
    with pytest.raises(PsiError, match="epsilon"):
        server.intersection_size(reply, epsilon=epsilon)


def test_duplicate_identifiers_are_refused() -> None:
    with pytest.raises(PsiError, match="repeat"):
        PsiClient([b"a", b"b", b"a"])
    point = PsiClient([b"a"]).request().items[0]
    with pytest.raises(PsiError, match="repeats"):
        PsiRequest((point, point))


# -- hostile points ----------------------------------------------------------------------

NON_CANONICAL = [
    bytes(32),  # the identity
    b"\xff" * 32,  # not a field element
    (2**255 - 19).to_bytes(32, "little"),  # p itself: non-canonical zero
    (1).to_bytes(32, "little"),  # odd: ristretto255 rejects negative s
    b"\x01" * 31,  # short
    b"\x01" * 33,  # long
]


@pytest.mark.parametrize("bad", NON_CANONICAL, ids=lambda b: b[:4].hex() + f"/{len(b)}")
def test_malformed_points_are_refused_everywhere(bad: bytes) -> None:
    good = PsiClient([b"a"]).request().items[0]
    with pytest.raises(PsiError):
        check_point(bad)
    with pytest.raises(PsiError):
        PsiRequest((good, bad))
    with pytest.raises(PsiError):
        PsiOffer(((good,), (bad,)))
    with pytest.raises(PsiError):
        PsiReblinded(((bad,),))
    with pytest.raises(PsiError):
        blind(random_scalar(), bad)


def _top_bit_twin(point: bytes) -> bytes:
    return point[:31] + bytes([point[31] | 0x80])


def test_a_point_with_bit_255_set_is_refused_though_libsodium_accepts_it() -> None:
    # libsodium 1.0.18 ignores bit 255: the twin decodes, and blinds, to the same element.
    import pysodium

    for _ in range(50):
        point = random_point()
        twin = _top_bit_twin(point)
        assert pysodium.crypto_core_ristretto255_is_valid_point(twin)
        with pytest.raises(PsiError, match="canonical"):
            check_point(twin)
        with pytest.raises(PsiError, match="canonical"):
            blind(random_scalar(), twin)
        with pytest.raises(PsiError, match="canonical"):
            PsiRequest((point, twin))


def test_a_request_whose_items_blind_to_one_value_is_refused() -> None:
    # The worker's own guard, whatever encoding trick got past the byte checks.
    key = random_scalar()
    point = PsiClient([b"a"]).request().items[0]
    other = PsiClient([b"b"]).request().items[0]
    assert len(blind_distinct(key, (point, other))) == 2
    with pytest.raises(PsiError, match="two encodings of one point"):
        blind_distinct(key, (point, other, point))


def test_top_bit_twins_in_a_request_cannot_double_a_row_s_reports() -> None:
    records = {i: "all" for i in _ids(20, "r")}
    client = PsiClient(_ids(4, "r"))
    items = client.request().items
    server = PsiServer(records, limits=LIMITS)
    # PsiRequest refuses the twins; a request forged past it is refused by the server.
    forged = object.__new__(PsiRequest)
    object.__setattr__(forged, "items", items + tuple(_top_bit_twin(p) for p in items))
    with pytest.raises(PsiError):
        server.respond(forged)


def test_malformed_messages_are_refused() -> None:
    good = PsiClient([b"a"]).request().items[0]
    for bad in ([good], (), "xx", ("not bytes",)):
        with pytest.raises(PsiError):
            PsiRequest(bad)  # type: ignore[arg-type]
    with pytest.raises(PsiError, match="common length"):
        PsiOffer(((good,), ()))
    with pytest.raises(PsiError):
        PsiReblinded(())
    with pytest.raises(PsiError, match="bytes"):
        PsiClient(["a string"])  # type: ignore[list-item]


def test_reply_must_have_the_shape_of_the_offer() -> None:
    records = {i: f"g{n % 2}" for n, i in enumerate(_ids(10, "r"))}
    _, server, reply = _run([b"r-1"], records)
    dropped = PsiReblinded(reply.groups[:1])
    with pytest.raises(PsiError, match="shape"):
        server.intersection_size(dropped, epsilon=EXACT)
    short = PsiReblinded((reply.groups[0][:-1], reply.groups[1]))
    with pytest.raises(PsiError, match="shape"):
        server.intersection_size(short, epsilon=EXACT)
    copied = PsiReblinded((reply.groups[0], reply.groups[0]), reply.key, reply.proofs)
    with pytest.raises(PsiError, match="does not verify"):
        server.intersection_size(copied, epsilon=EXACT)


def test_psi_error_is_a_computation_error() -> None:
    assert issubclass(PsiError, ComputationError)


# -- randomised response -----------------------------------------------------------------

TRIALS = 4000


def _tolerance(p: float, n: int) -> float:
    # Six binomial standard deviations. Five failed a correct sampler ~6e-7 of the time per
    # assertion, and a run makes 20 of them (1.3e-5 in the flip-rate tests, exact binomial
    # tails); at six the run's total is under 1e-7.
    return 6 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("outcomes", [2, 4])
def test_randomised_response_flip_rate_matches_epsilon(epsilon: float, outcomes: int) -> None:
    truths = [n % outcomes for n in range(TRIALS)]
    reports, stated = randomised_response(truths, outcomes=outcomes, epsilon=epsilon)
    assert stated <= epsilon * (1 + 1e-9)
    keep = keep_probability(epsilon, outcomes)
    assert math.isclose(keep / ((1 - keep) / (outcomes - 1)), math.exp(epsilon))
    kept = sum(r == t for r, t in zip(reports, truths, strict=True)) / TRIALS
    assert abs(kept - keep) <= _tolerance(keep, TRIALS)
    # A flip lands on each other outcome equally often.
    other = (1 - keep) / (outcomes - 1)
    for shift in range(1, outcomes):
        landed = sum(r == (t + shift) % outcomes for r, t in zip(reports, truths, strict=True))
        assert abs(landed / TRIALS - other) <= _tolerance(other, TRIALS)


def test_debiased_counts_estimate_the_truth() -> None:
    epsilon, outcomes = 1.0, 3
    truths = [0] * 2000 + [1] * 1500 + [2] * 500
    reports, _ = randomised_response(truths, outcomes=outcomes, epsilon=epsilon)
    estimate = debias_counts(reports, outcomes=outcomes, epsilon=epsilon)
    p = keep_probability(epsilon, outcomes)
    q = (1 - p) / (outcomes - 1)
    sd = math.sqrt(len(truths) * p * (1 - q)) / (p - q)  # a bound on each estimate's sd
    for true, est in zip([2000, 1500, 500], estimate, strict=True):
        assert abs(est - true) <= 5 * sd


@pytest.mark.parametrize("epsilon", [0.0, -1.0, 10.5, math.inf, math.nan])
def test_randomised_response_refuses_a_bad_epsilon(epsilon: float) -> None:
    with pytest.raises(PsiError, match="epsilon"):
        randomised_response([0, 1], outcomes=2, epsilon=epsilon)


def test_libsodium_hash_to_group_vector() -> None:
    # libsodium's crypto_core_ristretto255_from_hash example, as documented for PHP's
    # sodium_crypto_core_ristretto255_from_hash (php.net manual).
    from computations._psi._group import _sodium

    digest = bytes.fromhex(
        "5d1be09e3d0c82fc538112490e35701979d99e06ca3e2b5b54bffe8b4dc772c1"
        "4d98b696a1bbfb5ca32c436cc61c16563790306c79eaca7705668b47dffe5bb6"
    )
    point = _sodium().crypto_core_ristretto255_from_hash(digest)
    assert point.hex() == "3066f82a1a747d45120d1740f14358531a8f04bbffe6a819f86dfe50f44a0a46"
