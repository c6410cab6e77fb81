"""ECDH private set intersection over ristretto255, after Google's Private Join and Compute.

Three messages, each a frozen dataclass of 32-byte group elements::

    enterprise (key a)                                   sandbox (key b)
    PsiRequest    [a·H(c) for its identifiers c]  ──▶
                                                   ◀──  PsiOffer  per group g: shuffled
                                                         [b·H(s) for s in g], padded with
                                                         random points to one common length
    PsiReblinded  per group: shuffled [a·p for p]  ──▶
                                                         matches b·(a·H(c)) with a·(b·H(s))

Both keys are fresh per session (a new :class:`PsiClient` / :class:`PsiServer`), so nothing
is linkable across sessions. Under the decisional Diffie-Hellman assumption in ristretto255:

- the sandbox sees only blinded enterprise points: it never learns an enterprise identifier,
  and, because the enterprise re-shuffled each group, never which of its rows matched; it
  learns per blinded enterprise item whether it matched and in which group;
- the enterprise sees only blinded sandbox points, shuffled and padded, so it learns the
  number of groups and a common padded length (at least the largest group), and then what
  the sandbox releases, once per session: the intersection size with DP noise
  (:meth:`PsiServer.intersection_size`) or, per item, a randomised-response report of
  membership and group (:meth:`PsiServer.membership`).

Adversary: a malicious enterprise, as far as its reply goes. With its reply it publishes
``A = a·G`` and, per group, a zero-knowledge proof that the reply list is a permutation of
the offered list raised to that one ``a`` (``_shuffle.py``), bound to the session and the
group; the sandbox verifies every proof before it matches anything. So each offered point
is in exactly one reply slot, and, since request items must blind to distinct values,
each dataset person can be matched by at most one request item. docs/threat-model.md says
what remains.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from computations._aggregate._noise import discrete_laplace
from computations._psi._group import (
    PsiError,
    random_point,
    random_scalar,
)
from computations._psi._parallel import (
    blind_all,
    check_all,
    hash_and_blind,
    map_in_order,
    prove_all,
)
from computations._psi._rr import debias_counts, randomised_response
from computations._psi._shuffle import (
    ShuffleProof,
    key_commitment,
    verify_shuffle,
)

_SHUFFLER = secrets.SystemRandom()


def _shuffled(points: Iterable[bytes]) -> tuple[bytes, ...]:
    items = list(points)
    _SHUFFLER.shuffle(items)
    return tuple(items)


def blind_distinct(
    key: bytes, items: Sequence[bytes], *, workers: int | None = None
) -> tuple[bytes, ...]:
    """``key · item`` for each item, in order, in ``workers`` processes (by default one
    per core for large requests, ``_parallel.py``); raises :class:`PsiError` for an item
    :func:`~computations._psi._group.blind` refuses, or if two items blind to the same
    element. Comparing the blinded values, not the bytes sent, catches every second
    encoding of one point (bit 255, or any other trick a libsodium version lets through),
    so no identifier can be matched, and reported, twice in one request."""
    blinded = blind_all(key, items, workers=workers)
    if len(set(blinded)) != len(blinded):
        raise PsiError(
            "the PSI request holds two encodings of one point; send each identifier once"
        )
    return blinded


def reply_positions(reply: PsiReblinded) -> dict[bytes, int]:
    """Each reply point's group, as 1 + the index of its list; raises :class:`PsiError` if
    a point appears twice (a person must have one reply point, in one group)."""
    where: dict[bytes, int] = {}
    for g, group in enumerate(reply.groups):
        for point in group:
            if point in where:
                raise PsiError("the PSI reply repeats a point")
            where[point] = g + 1
    return where


def _check_lists(lists: Iterable[object], what: str) -> None:
    """Each list a tuple of valid points with no repeats; the points of every list are
    checked together, on every core when there are many (``_parallel.py``)."""
    tuples: list[tuple[object, ...]] = []
    for points in lists:
        if not isinstance(points, tuple):
            raise PsiError(f"{what} must be a tuple of points")
        tuples.append(points)
    check_all([point for points in tuples for point in points])
    for points in tuples:
        if len(set(points)) != len(points):
            raise PsiError(f"{what} repeats a point")


@dataclass(frozen=True)
class PsiLimits:
    """The policy's limits on one PSI session: the most enterprise identifiers it may send,
    and the smallest intersection the sandbox will answer for."""

    max_set_size: int
    min_intersection: int

    def __post_init__(self) -> None:
        for name in ("max_set_size", "min_intersection"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PsiError(f"{name} must be a positive integer")


@dataclass(frozen=True)
class PsiRequest:
    """Enterprise → sandbox: its blinded identifiers ``a·H(c)``, in the enterprise's order."""

    items: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _check_lists([self.items], "a PSI request")
        if not self.items:
            raise PsiError("a PSI request must hold at least one identifier")


@dataclass(frozen=True)
class PsiOffer:
    """Sandbox → enterprise: per group, its blinded identifiers ``b·H(s)``, shuffled and
    padded with random points so every group has the same length."""

    groups: tuple[tuple[bytes, ...], ...]
    #: What the enterprise's shuffle proofs are bound to (the session's public description).
    session: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.groups, tuple) or not self.groups:
            raise PsiError("a PSI offer must hold at least one group")
        _check_lists(self.groups, "a PSI offer group")
        if len({len(group) for group in self.groups}) != 1:
            raise PsiError("a PSI offer's groups must have one common length")


@dataclass(frozen=True)
class PsiReblinded:
    """Enterprise → sandbox: each offered group re-blinded ``a·(b·H(s))`` and re-shuffled,
    with ``key = a·G`` and one shuffle proof per group (:func:`verify_reply` checks them)."""

    groups: tuple[tuple[bytes, ...], ...]
    key: bytes | None = None
    proofs: tuple[ShuffleProof, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.groups, tuple) or not self.groups:
            raise PsiError("a PSI reply must hold at least one group")
        _check_lists(self.groups, "a PSI reply group")


def group_labels(count: int) -> tuple[str, ...]:
    """The labels proofs are bound to when the caller has none: ``"0"``, ``"1"``, …"""
    return tuple(str(g) for g in range(count))


def _verify_one(
    task: tuple[bytes, Sequence[bytes], Sequence[bytes], ShuffleProof, bytes, str],
) -> str | None:
    # Runs in a child process: returns the refusal's message (exceptions with their own
    # constructors do not always pickle back).
    key, offered, group, proof, session, label = task
    try:
        verify_shuffle(key, offered, group, proof, session=session, label=label)
    except PsiError as exc:
        return str(exc)
    return None


def verify_reply(
    reply: PsiReblinded,
    offered: Sequence[Sequence[bytes]],
    *,
    session: bytes,
    labels: Sequence[str],
    workers: int = 1,
) -> None:
    """Check that every reply list is a permutation of its offered list raised to the one
    key ``reply.key`` commits to, for ``session`` and each group's label. With
    ``workers > 1`` the groups are verified in that many forked processes (each proof is
    independent; libsodium holds the GIL).

    Raises :class:`PsiError` for a missing key or proof, a shape that does not fit the
    offer, or a proof that does not verify. Call it before matching anything.
    """
    if reply.key is None:
        raise PsiError("the PSI reply carries no key commitment A = a·G; prove the shuffle")
    if len(reply.groups) != len(offered) or len(labels) != len(offered):
        raise PsiError("the PSI reply does not have the shape of the offer")
    if len(reply.proofs) != len(offered):
        raise PsiError("the PSI reply needs one shuffle proof per offered group")
    tasks = [
        (reply.key, tuple(o), group, proof, session, label)
        for group, o, proof, label in zip(reply.groups, offered, reply.proofs, labels, strict=True)
    ]
    for failure in map_in_order(_verify_one, tasks, workers):
        if failure is not None:
            raise PsiError(failure)


@dataclass(frozen=True)
class PsiSize:
    """What the enterprise learns in size mode: the intersection size with discrete
    Laplace noise at ``epsilon`` (clamped at 0)."""

    intersection_size: int
    epsilon: float


@dataclass(frozen=True)
class PsiMembership:
    """What the enterprise learns in membership mode, per item of its request in order:
    ``0`` for "not in the dataset" or ``g + 1`` for "in the dataset, in ``groups[g]``",
    each reported under ``epsilon``-local differential privacy (randomised response)."""

    reports: tuple[int, ...]
    groups: tuple[str, ...]
    epsilon: float


def _check_identifiers(identifiers: Sequence[bytes]) -> tuple[bytes, ...]:
    items = tuple(identifiers)
    if not all(isinstance(identifier, bytes) for identifier in items):
        raise PsiError("identifiers must be bytes")
    # Equal identifiers hash to one point; distinct ones to distinct points (a collision
    # would be a SHA-512 collision), so comparing the bytes is comparing the points.
    if len(set(items)) != len(items):
        raise PsiError("the identifiers repeat; send each identifier once")
    return items


class PsiClient:
    """The enterprise side of one session: a fresh secret key, its identifiers in order.

    ``workers`` processes hash, blind and prove (by default one per core for large sets,
    ``_parallel.py``); the results are the same, in the same order, for any count.
    """

    def __init__(self, identifiers: Sequence[bytes], *, workers: int | None = None) -> None:
        self._identifiers = _check_identifiers(identifiers)
        self._key = random_scalar()
        self._workers = workers

    def request(self) -> PsiRequest:
        """The blinded identifiers ``a·H(c)``, in the order they were given."""
        return PsiRequest(hash_and_blind(self._key, self._identifiers, workers=self._workers))

    def reblind(self, offer: PsiOffer, *, labels: Sequence[str] | None = None) -> PsiReblinded:
        """Each offered point raised to the session key, each group shuffled anew, with
        ``A = a·G`` and a shuffle proof per group bound to ``offer.session`` and the
        group's label (``labels``, by default the group's index). Groups are proved in
        parallel processes, in order (each proof is independent)."""
        names = tuple(labels) if labels is not None else group_labels(len(offer.groups))
        if len(names) != len(offer.groups):
            raise PsiError("give one label per offered group")
        groups, proofs = prove_all(
            self._key, offer.groups, session=offer.session, labels=names, workers=self._workers
        )
        return PsiReblinded(tuple(groups), key_commitment(self._key), tuple(proofs))


class PsiServer:
    """The sandbox side of one session over its ``identifier → group`` records.

    A fresh secret key per instance; use one instance for one session. The group labels
    are the values of a public dimension (district, age band); size mode uses one group.
    """

    def __init__(
        self, records: Mapping[bytes, str], *, limits: PsiLimits, workers: int | None = None
    ) -> None:
        if not records:
            raise PsiError("the dataset side of a PSI session has no identifiers")
        if not all(isinstance(identifier, bytes) for identifier in records):
            raise PsiError("identifiers must be bytes")
        self._limits = limits
        self._key = random_scalar()
        self._workers = workers
        self._group_names = tuple(sorted(set(records.values())))
        index = {name: i for i, name in enumerate(self._group_names)}
        members: list[list[bytes]] = [[] for _ in self._group_names]
        for identifier, group in records.items():
            members[index[group]].append(identifier)
        self._members = members  # identifiers: hashed and blinded in one pass at respond
        self._request: tuple[bytes, ...] | None = None
        self._session = secrets.token_bytes(32)
        self._offered: tuple[tuple[bytes, ...], ...] = ()
        self._offered_length = 0
        self._released = False

    def respond(self, request: PsiRequest) -> PsiOffer:
        """Accept the enterprise's blinded identifiers and offer the dataset's.

        Raises :class:`PsiError` for a request over the cap or a second request.
        """
        if self._request is not None:
            raise PsiError("this PSI session already has a request")
        if len(request.items) > self._limits.max_set_size:
            raise PsiError(
                f"a PSI request may hold at most {self._limits.max_set_size} identifiers"
            )
        self._request = blind_distinct(self._key, request.items, workers=self._workers)
        self._offered_length = max(len(group) for group in self._members)
        everyone = [identifier for group in self._members for identifier in group]
        blinded = iter(hash_and_blind(self._key, everyone, workers=self._workers))
        groups = []
        for group in self._members:
            mine = [next(blinded) for _ in group]
            padding = [random_point() for _ in range(self._offered_length - len(group))]
            groups.append(_shuffled(mine + padding))
        self._offered = tuple(groups)
        return PsiOffer(self._offered, self._session)

    def _outcomes(self, reply: PsiReblinded) -> list[int]:
        """Per request item: 0 if unmatched, else 1 + its group's index."""
        if self._request is None:
            raise PsiError("a PSI reply came before the request")
        if len(reply.groups) != len(self._members) or any(
            len(group) != self._offered_length for group in reply.groups
        ):
            raise PsiError("the PSI reply does not have the shape of the offer")
        verify_reply(
            reply, self._offered, session=self._session, labels=group_labels(len(self._offered))
        )
        where = reply_positions(reply)
        return [where.get(point, 0) for point in self._request]

    def _release(self) -> None:
        # One release per session: fresh noise on a second release would average away.
        if self._released:
            raise PsiError("this PSI session has already released its answer")
        self._released = True

    def _refuse_below_minimum(self, estimate: float) -> None:
        # ``estimate`` is already private (a noisy or debiased count), so the refusal is
        # post-processing and reveals nothing beyond the release's epsilon.
        if estimate < self._limits.min_intersection:
            raise PsiError(
                f"refused: the intersection is smaller than {self._limits.min_intersection}"
            )

    def intersection_size(self, reply: PsiReblinded, *, epsilon: float) -> PsiSize:
        """The intersection size plus discrete Laplace noise (OpenDP) at ``epsilon``.

        Privacy: against a semi-honest enterprise one dataset row changes the exact size
        by at most 1, so noise of scale ``1/ε`` makes the release ε-DP; an exact size
        would reveal a row's membership by differencing two sessions. The minimum is
        checked on the noisy size. One release per session.

        Raises :class:`PsiError` if the noisy size is under the policy's minimum, for a
        second release, a bad ``epsilon`` or a ``reply`` that does not fit the offer.
        """
        outcomes = self._outcomes(reply)
        if isinstance(epsilon, bool) or not isinstance(epsilon, float | int):
            raise PsiError("a PSI size needs a numeric epsilon")
        if not (math.isfinite(epsilon) and epsilon > 0):
            raise PsiError("a PSI size needs a positive, finite epsilon")
        self._release()
        exact = sum(1 for outcome in outcomes if outcome)
        (noisy,) = discrete_laplace([exact], sensitivity=1, epsilon=float(epsilon))
        self._refuse_below_minimum(noisy)
        return PsiSize(max(noisy, 0), float(epsilon))

    def membership(self, reply: PsiReblinded, *, epsilon: float) -> PsiMembership:
        """Per request item, its membership and group under ``epsilon``-randomised response.

        The minimum is checked on the debiased count of matches estimated from the
        reports (post-processing). One release per session.

        Raises :class:`PsiError` if that estimate is under the policy's minimum, for a
        second release, a bad ``epsilon`` or a ``reply`` that does not fit the offer.
        """
        outcomes = self._outcomes(reply)
        categories = len(self._group_names) + 1
        reports, stated = randomised_response(outcomes, outcomes=categories, epsilon=epsilon)
        self._release()
        absent = debias_counts(reports, outcomes=categories, epsilon=epsilon)[0]
        self._refuse_below_minimum(len(reports) - absent)
        return PsiMembership(reports, self._group_names, stated)
