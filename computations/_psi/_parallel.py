"""Hashing, blinding, checking and proving many points at once, on every core, in order.

Each side of a session does about two scalar multiplications per identifier (about 100 µs
each in libsodium 1.0.18, which holds the GIL), so one process is bounded near 5,000
identifiers per second. The work is independent per point, so it is split into one
contiguous chunk per core: the caller's process blinds the first chunk while forked
children blind the others (the pattern ``verify_reply`` uses for the shuffle proofs).
Results come back in input order; a refused point is reported with the same
:class:`PsiError` message as one process would give, for the first bad point in order.

The secret scalar reaches the children in their task (a pipe between this process and
its own forks; a forked child holds a copy of the parent's memory anyway). Children draw
no randomness here. Below :data:`PARALLEL_FROM` points a fork costs more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Final, TypeVar

from computations._psi._group import PsiError, blind_many, check_point, hash_many
from computations._psi._shuffle import ShuffleProof, prove_shuffle

#: Lists of at least this many points are blinded in parallel (about 0.4 s of libsodium
#: on one core; forking a worker with TenSEAL loaded costs a few milliseconds).
PARALLEL_FROM: Final = 4096

_Task = tuple[bytes, Sequence[bytes], bool]
_In = TypeVar("_In")
_Out = TypeVar("_Out")


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(items: int) -> int:
    """How many processes blind ``items`` points: one per core from
    :data:`PARALLEL_FROM` points up (where ``fork`` exists), else one."""
    if items < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return cores()


def map_in_order(fn: Callable[[_In], _Out], tasks: Sequence[_In], workers: int) -> list[_Out]:
    """``fn`` of each task, in order: in this process when ``workers <= 1`` or there is
    one task, else in up to ``workers`` forked processes. ``fn`` should return a failure
    rather than raise it, so that a refusal reads the same from either path."""
    if workers <= 1 or len(tasks) <= 1:
        return [fn(task) for task in tasks]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
        return list(pool.map(fn, tasks))


def _check_chunk(points: Sequence[object]) -> str | None:
    # As ``_blind_chunk``: the refusal's message, or None when every point is valid.
    try:
        for point in points:
            check_point(point)
    except PsiError as exc:
        return str(exc)
    return None


def check_all(points: Sequence[object], *, workers: int | None = None) -> None:
    """:func:`~computations._psi._group.check_point` on every point, in ``workers``
    processes (default :func:`default_workers`); raises :class:`PsiError` for the first
    invalid point in order, with its message. Parsing a message checks every point
    (about 10 µs each); left on one core it would cap what blinding on two can gain."""
    count = default_workers(len(points)) if workers is None else max(1, int(workers))
    count = min(count, len(points))
    if count <= 1:
        failures = [_check_chunk(points)]
    else:
        size = -(-len(points) // count)
        chunks = [tuple(points[k : k + size]) for k in range(0, len(points), size)]
        with ProcessPoolExecutor(
            len(chunks) - 1, mp_context=multiprocessing.get_context("fork")
        ) as pool:
            others = pool.map(_check_chunk, chunks[1:])
            failures = [_check_chunk(chunks[0]), *others]
    for failure in failures:
        if failure is not None:
            raise PsiError(failure)


def _blind_chunk(task: _Task) -> tuple[tuple[bytes, ...], str | None]:
    # Runs in a child process too: returns the refusal's message rather than raising it
    # (the error then reads the same whichever process met the bad point).
    key, items, hashed = task
    try:
        return blind_many(key, hash_many(items) if hashed else items), None
    except PsiError as exc:
        return (), str(exc)


def _run(
    key: bytes, items: Sequence[bytes], *, hashed: bool, workers: int | None
) -> tuple[bytes, ...]:
    count = default_workers(len(items)) if workers is None else max(1, int(workers))
    count = min(count, len(items))
    if count <= 1:
        done, failure = _blind_chunk((key, items, hashed))
        if failure is not None:
            raise PsiError(failure)
        return done
    size = -(-len(items) // count)  # ceiling: ``count`` contiguous chunks, in order
    tasks = [(key, tuple(items[k : k + size]), hashed) for k in range(0, len(items), size)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(len(tasks) - 1, mp_context=context) as pool:
        others = pool.map(_blind_chunk, tasks[1:])
        results = [_blind_chunk(tasks[0]), *others]  # this process takes the first chunk
    out: list[bytes] = []
    for done, failure in results:  # in order: the first bad point's message wins
        if failure is not None:
            raise PsiError(failure)
        out.extend(done)
    return tuple(out)


def blind_all(
    key: bytes, points: Sequence[bytes], *, workers: int | None = None
) -> tuple[bytes, ...]:
    """``key · point`` for every point, in order; ``workers`` processes (default
    :func:`default_workers`). Raises :class:`PsiError` for the first point in order that
    :func:`~computations._psi._group.blind` refuses, with its message."""
    return _run(key, points, hashed=False, workers=workers)


def hash_and_blind(
    key: bytes, identifiers: Sequence[bytes], *, workers: int | None = None
) -> tuple[bytes, ...]:
    """``key · H(identifier)`` for every identifier, in order, in ``workers`` processes
    (default :func:`default_workers`). Raises :class:`PsiError` for an identifier that is
    not bytes."""
    return _run(key, identifiers, hashed=True, workers=workers)


def _prove_one(
    task: tuple[bytes, tuple[bytes, ...], bytes, str],
) -> tuple[tuple[bytes, ...], ShuffleProof] | str:
    # Runs in a child process too: returns a refusal's message. The proof's randomness
    # comes from the OS on each call (libsodium's ``randombytes``, ``secrets``), never
    # from state a fork would copy, so children draw independently.
    key, group, session, label = task
    try:
        return prove_shuffle(key, group, session=session, label=label)
    except PsiError as exc:
        return str(exc)


def prove_all(
    key: bytes,
    groups: Sequence[tuple[bytes, ...]],
    *,
    session: bytes,
    labels: Sequence[str],
    workers: int | None = None,
) -> tuple[list[tuple[bytes, ...]], list[ShuffleProof]]:
    """Each group raised to ``key`` and shuffled, with its proof (``prove_shuffle``),
    groups in order, one process per group up to ``workers`` (default
    :func:`default_workers` of all their points). Raises :class:`PsiError` for the first
    group, in order, that cannot be proved, with its message."""
    tasks = [(key, group, session, label) for group, label in zip(groups, labels, strict=True)]
    points = sum(len(group) for group in groups)
    count = default_workers(points) if workers is None else max(1, int(workers))
    made = map_in_order(_prove_one, tasks, count)
    replies, proofs = [], []
    for result in made:
        if isinstance(result, str):
            raise PsiError(result)
        replies.append(result[0])
        proofs.append(result[1])
    return replies, proofs
