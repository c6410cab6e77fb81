"""Group commit: concurrent appenders share one transaction, hence one fsync.

A durable append costs one fsync of the SQLite WAL (``synchronous=FULL``), a few
milliseconds on real disks, against tens of microseconds for the rest of the work. So
appenders queue their requests; whichever thread finds no commit in progress becomes the
*leader*, takes everything queued (up to ``max_batch``) and commits it as one transaction
(one WAL fsync, one signed checkpoint), while the others wait. When the commit returns,
every request in it is durable and its caller is acknowledged; the next leader takes
whatever queued up meanwhile. Under load batches grow by themselves; a lone appender
pays exactly one fsync, as before. (This is the leader/follower scheme of database group
commit, e.g. MySQL's binlog group commit and Tessera's batched integration.)

Indexes stay contiguous and unique: only the leader writes, inside ``BEGIN IMMEDIATE``,
which also excludes other processes. No request is acknowledged before its commit returns:
if the commit fails (disk full, EIO on fsync), every request of the batch gets the error
and the transaction is rolled back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from indomain.errors import InternalError

R = TypeVar("R")
T = TypeVar("T")


class _Slot(Generic[R, T]):
    __slots__ = ("done", "outcome", "request")

    def __init__(self, request: R) -> None:
        self.request = request
        self.done = False
        self.outcome: T | BaseException | None = None


class GroupCommit(Generic[R, T]):
    """Funnels concurrent :meth:`submit` calls into batches given to ``commit``.

    ``commit(requests)`` runs in the leader's thread, one call at a time, and returns one
    outcome per request (a result, or an exception for a request that alone failed); if it
    raises, every request of the batch fails with that exception.
    """

    def __init__(
        self, commit: Callable[[Sequence[R]], Sequence[T | BaseException]], *, max_batch: int
    ) -> None:
        if max_batch < 1:
            raise InternalError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Slot[R, T]] = []
        self._committing = False

    def submit(self, request: R) -> T:
        """Queue ``request``, wait until a commit covering it returns; return its result."""
        slot: _Slot[R, T] = _Slot(request)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while self._committing and not slot.done:
                    self._cond.wait()
                if slot.done:
                    break
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                self._committing = True
            self._lead(batch)
        outcome = slot.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]  # set by _lead with a T

    def submit_batch(self, requests: Sequence[R]) -> Sequence[T | BaseException]:
        """Commit ``requests`` together, as one batch of their own; return their outcomes.

        Waits for the commit in progress, then leads (others queue behind it).
        """
        with self._cond:
            while self._committing:
                self._cond.wait()
            self._committing = True
        try:
            outcomes = self._commit(requests)
        finally:
            with self._cond:
                self._committing = False
                self._cond.notify_all()
        return outcomes

    def _lead(self, batch: list[_Slot[R, T]]) -> None:
        outcomes: Sequence[T | BaseException]
        try:
            outcomes = self._commit([slot.request for slot in batch])
            if len(outcomes) != len(batch):
                raise InternalError("a group commit returned the wrong number of outcomes")
        except BaseException as exc:  # every waiter must hear of it
            outcomes = [exc] * len(batch)
        finally:
            with self._cond:
                self._committing = False
                for slot, outcome in zip(batch, outcomes, strict=False):
                    slot.outcome = outcome
                    slot.done = True
                self._cond.notify_all()
