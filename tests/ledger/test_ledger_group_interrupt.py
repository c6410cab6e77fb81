"""Group commit when a caller leaves by an exception while it waits or leads.

The exception is a real signal delivered to the main thread (``pthread_kill``), whose
handler raises, as KeyboardInterrupt does: CPython runs signal handlers in the main thread
even while it blocks on a lock or a condition, so this is exactly what Ctrl-C does to an
appender. Whatever role the interrupted caller had (queued first, so the next leader;
leader gathering its batch; leader committing), every other appender must still be
answered, and the log must stay consistent. Its own request is either durably appended
(its caller never hears) or not appended, never half.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import Ledger, verify_ledger
from ledger._group import GroupCommit
from ledger._merkle import leaf_hash, root_from_leaf_hashes
from tests.ledger.conftest import ORIGIN

DEADLINE = 10.0  # seconds all appenders may take to be answered (a hang fails the test)


class _Interrupted(Exception):
    pass


@contextmanager
def _interrupt_main_after(seconds: float) -> Iterator[None]:
    """Raise :class:`_Interrupted` in the main thread ``seconds`` from now, by a signal."""

    def handler(_signum: int, _frame: Any) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGINT, handler)
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(seconds, signal.pthread_kill, args=(main, signal.SIGINT))
    try:
        timer.start()
        yield
    finally:
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, previous)


def _start_later(seconds: float, threads: Sequence[threading.Thread]) -> threading.Timer:
    def start() -> None:
        for thread in threads:
            thread.start()

    timer = threading.Timer(seconds, start)
    timer.start()
    return timer


def _join_all(threads: Sequence[threading.Thread]) -> None:
    end = time.monotonic() + DEADLINE
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert hung == [], f"appenders never answered (the group commit hangs): {hung}"


class _SlowFirstCommit:
    """A commit whose first call takes ``first`` seconds (so callers queue behind it)."""

    def __init__(self, first: float) -> None:
        self.first = first
        self.started = threading.Event()
        self.batches: list[list[int]] = []

    def __call__(self, requests: Sequence[int]) -> list[int]:
        if not self.started.is_set():
            self.started.set()
            time.sleep(self.first)
        self.batches.append(list(requests))
        return [request * 10 for request in requests]


def test_a_caller_interrupted_while_first_in_the_queue_is_not_made_the_next_leader():
    """The interrupted caller is first in the queue when the running commit returns: it
    would be handed the leadership, which nobody then takes up, and everyone queued
    behind it waits forever. It must leave the queue instead; its request is not
    committed (nobody is there to hear about it)."""
    commit = _SlowFirstCommit(1.0)
    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=64, max_wait=0.0)
    results: dict[int, int] = {}

    def caller(n: int) -> None:
        results[n] = group.submit(n)

    first = threading.Thread(target=caller, args=(0,), daemon=True)
    first.start()  # leads the first commit, which takes 1 s
    assert commit.started.wait(5)
    others = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(1, 8)]
    starter = _start_later(0.05, others)  # they queue behind the main thread
    with _interrupt_main_after(0.4), pytest.raises(_Interrupted):
        group.submit(99)  # first in the queue: the next leader, had it not left
    starter.join()
    _join_all([first, *others])
    assert results == {n: n * 10 for n in range(8)}
    assert all(99 not in batch for batch in commit.batches)
    assert group.submit(8) == 80  # and the group still works


def test_a_leader_interrupted_while_gathering_its_batch_hands_the_leadership_on():
    """The interrupted caller leads and waits for the appenders of the last commit to come
    back (the batching window): the callers queued behind it must get a leader."""
    commit = _SlowFirstCommit(1.0)
    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=64, max_wait=5.0)
    results: dict[int, int] = {}

    def caller(n: int) -> None:
        results[n] = group.submit(n)

    first = threading.Thread(target=caller, args=(0,), daemon=True)
    first.start()
    assert commit.started.wait(5)
    behind = [threading.Thread(target=caller, args=(n,), daemon=True) for n in (1, 2)]
    starter = _start_later(0.05, behind)
    # The main thread is first in the queue, so it leads next; it waits for four requests
    # (the three queued, itself, 1 and 2, and caller 0's next one, which never comes)
    # and gathers for up to 1 s (as long as the last commit took): the signal comes in
    # the middle of that wait.
    with _interrupt_main_after(1.5), pytest.raises(_Interrupted):
        group.submit(99)
    starter.join()
    _join_all([first, *behind])
    assert results == {0: 0, 1: 10, 2: 20}
    assert all(99 not in batch for batch in commit.batches)
    assert group.submit(3) == 30


def test_a_leader_interrupted_while_committing_answers_its_whole_batch():
    """The leader is interrupted inside the commit: the commit fails, so every caller of
    that batch hears the failure (none is acknowledged), and the next batch commits."""
    inside = threading.Event()
    calls: list[list[int]] = []

    def commit(requests: Sequence[int]) -> list[int]:
        calls.append(list(requests))
        if len(calls) == 1:
            inside.set()
            time.sleep(1.0)  # interrupted here when the main thread leads
        return [request * 10 for request in requests]

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=64, max_wait=0.0)
    outcomes: dict[int, object] = {}

    def caller(n: int) -> None:
        try:
            outcomes[n] = group.submit(n)
        except _Interrupted as exc:
            outcomes[n] = exc

    later = [threading.Thread(target=caller, args=(n,), daemon=True) for n in range(1, 5)]

    def queue_behind() -> None:
        assert inside.wait(5)
        for thread in later:
            thread.start()

    starter = threading.Thread(target=queue_behind, daemon=True)
    starter.start()
    with _interrupt_main_after(0.3), pytest.raises(_Interrupted):
        group.submit(0)  # leads alone; its commit is interrupted
    starter.join(DEADLINE)
    _join_all(later)
    assert outcomes == {n: n * 10 for n in range(1, 5)}
    assert group.submit(5) == 50


# -- the same on a real ledger --------------------------------------------------------------


def _slow_commits(led: Ledger, seconds: float) -> threading.Event:
    """Make each of ``led``'s commits take ``seconds`` longer (a slow disk's fsync), so that
    appenders queue; return an event set when the first commit starts."""
    group = led._group
    commit: Callable[[Sequence[Any]], Any] = group._commit  # type: ignore[assignment]
    started = threading.Event()

    def slow(requests: Sequence[Any]) -> Any:
        started.set()
        time.sleep(seconds)
        return commit(requests)

    group._commit = slow  # type: ignore[method-assign]
    return started


def _check_log(directory: Path, key: str, expected: set[int], maybe: set[int]) -> list[int]:
    """The log verifies, its root equals a full recompute, its indexes are contiguous, and
    it holds each ``expected`` event once, plus possibly some of ``maybe``; nothing else."""
    report = verify_ledger(directory, key)
    with Ledger.open(directory) as led:
        size = led.size
        entries = led.entries(0, size)
        root = led.root()
        recomputed = root_from_leaf_hashes([leaf_hash(data) for data in led.raw_entries(0, size)])
    assert report.size == size
    assert [entry.index for entry in entries] == list(range(size))
    assert root == recomputed == report.root_hash
    seqs = [entry.fields["seq"] for entry in entries]
    assert len(seqs) == len(set(seqs)), "an event was appended twice"
    assert expected <= set(seqs) <= expected | maybe
    return seqs


def test_a_ledger_appender_interrupted_in_the_queue_leaves_the_others_acknowledged(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    directory = tmp_path / "l"
    led = Ledger.create(directory, origin=ORIGIN, signing_key=signing_key)
    started = _slow_commits(led, 1.0)
    acked: dict[int, int] = {}

    def appender(seq: int) -> None:
        acked[seq] = led.append("test.event", {"seq": seq}).index

    first = threading.Thread(target=appender, args=(0,), daemon=True)
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=appender, args=(n,), daemon=True) for n in range(1, 12)]
    starter = _start_later(0.05, others)
    with _interrupt_main_after(0.4), pytest.raises(_Interrupted):
        led.append("test.event", {"seq": 99})  # first in the queue
    starter.join()
    _join_all([first, *others])
    assert sorted(acked) == list(range(12))
    assert sorted(acked.values()) == list(range(12))  # unique, contiguous
    led.append("test.event", {"seq": 12})
    key = led.verifier_key
    led.close()
    seqs = _check_log(directory, key, set(range(13)), set())
    assert 99 not in seqs


def test_ledger_appenders_survive_interruptions_at_many_moments(
    tmp_path: Path, signing_key: Ed25519PrivateKey
) -> None:
    """The main thread appends in a loop among eight appender threads and is interrupted
    at a different moment each round (queued, leading, committing, preparing its event).
    No appender may hang; each is either acknowledged or, if the interrupted thread was
    committing its batch, told the commit failed; the log holds every acknowledged event
    once, and nothing but requested events."""
    directory = tmp_path / "l"
    led = Ledger.create(directory, origin=ORIGIN, signing_key=signing_key)
    _slow_commits(led, 0.003)
    acked: set[int] = set()
    requested: set[int] = set()
    lock = threading.Lock()
    counter = iter(range(10**9))

    def next_seq() -> int:
        with lock:
            seq = next(counter)
            requested.add(seq)
            return seq

    def appender(rounds: int) -> None:
        for _ in range(rounds):
            seq = next_seq()
            try:
                led.append("test.event", {"seq": seq})
            except _Interrupted:  # its batch was being committed by the interrupted leader
                continue
            with lock:
                acked.add(seq)

    for round_ in range(12):
        threads = [threading.Thread(target=appender, args=(15,), daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        with _interrupt_main_after(0.005 + 0.0037 * round_), pytest.raises(_Interrupted):
            while True:
                seq = next_seq()
                led.append("test.event", {"seq": seq})
                with lock:
                    acked.add(seq)
        _join_all(threads)
    key = led.verifier_key
    led.close()
    _check_log(directory, key, acked, requested - acked)
