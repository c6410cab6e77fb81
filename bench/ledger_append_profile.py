"""Where the time of a group commit goes, with 16 concurrent durable appenders.

    python -m bench.ledger_append_profile [--appenders 16] [--per-appender 400]

The issue's goal (20,000 durable appends/s with 16 appenders on 2 cores) is a budget of
16 / 20,000 s = 800 µs per commit cycle when every commit holds all 16 appenders'
entries (it does: see ``entries/commit``). A cycle is the leader's commit (build the
entries, insert them, sign the checkpoint, COMMIT with its WAL fsync) plus the gap
until the next commit starts, in which the 16 callers are woken one after another,
return, prepare their next event and queue again (each needs the GIL in turn). This
prints the medians of each part, measured on the real ledger, and two references run
in the same process: a bare ``BEGIN; INSERT; COMMIT`` with the same fsync, and the
group commit's hand-offs alone (``GroupCommit`` around a commit that only sleeps for
the median commit time): what 16 appenders reach when the commit costs no CPU at all.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ledger
from bench.ledger_bench import FIELDS, ORIGIN, _fsync_per_insert
from ledger import _store
from ledger._entry import prepare_event
from ledger._group import GroupCommit

PHASES = {  # phase: (the mark it starts at, the mark it ends at), in commit order
    "BEGIN IMMEDIATE": ("enter", "begun"),
    "data_version": ("begun", "checked"),
    "build entries": ("checked", "inserting"),
    "inserts": ("inserting", "inserted"),
    "sign + insert checkpoint": ("inserted", "body done"),
    "COMMIT (WAL fsync)": ("body done", "committed"),
}


@contextlib.contextmanager
def _patched(target: Any, name: str, value: Any) -> Iterator[None]:
    original = getattr(target, name)
    setattr(target, name, value)
    try:
        yield
    finally:
        setattr(target, name, original)


def profile_appends(appenders: int, per_appender: int) -> dict[str, float]:
    """Append with ``appenders`` threads; return rates and per-commit times (µs).

    Marks are taken where the commit calls into :mod:`ledger._store` (only the leader
    commits, one commit at a time, so one set of marks suffices).
    """
    marks: dict[str, float] = {}
    phases: dict[str, list[float]] = {phase: [] for phase in PHASES}
    batches: list[tuple[float, float, int]] = []  # (start, end, entries) of each commit
    transaction, data_version, insert_run = (
        _store.transaction,
        _store.data_version,
        _store.insert_run,
    )

    @contextlib.contextmanager
    def marked_transaction(connection: Any, *, write: bool) -> Iterator[None]:
        marks.clear()
        marks["enter"] = time.perf_counter()
        with transaction(connection, write=write):
            marks["begun"] = time.perf_counter()
            yield
            marks["body done"] = time.perf_counter()
        marks["committed"] = time.perf_counter()
        if write and len(marks) == 7:  # an append's commit (not a read, not the creation)
            for phase, (first, last) in PHASES.items():
                phases[phase].append(marks[last] - marks[first])

    def marked_data_version(connection: Any) -> int:
        version = data_version(connection)
        marks["checked"] = time.perf_counter()
        return version

    def marked_insert_run(*args: Any) -> None:
        marks.setdefault("inserting", time.perf_counter())
        insert_run(*args)
        marks["inserted"] = time.perf_counter()

    key = Ed25519PrivateKey.generate()
    with (
        tempfile.TemporaryDirectory(prefix="indomain-append-profile-") as tmp,
        _patched(_store, "transaction", marked_transaction),
        _patched(_store, "data_version", marked_data_version),
        _patched(_store, "insert_run", marked_insert_run),
    ):
        with ledger.Ledger.create(Path(tmp) / "l", origin=ORIGIN, signing_key=key) as log:
            group = log._group
            commit: Callable[[Sequence[Any]], Any] = group._commit  # type: ignore[assignment]

            def timed_commit(requests: Sequence[Any]) -> Any:
                start = time.perf_counter()
                try:
                    return commit(requests)
                finally:
                    batches.append((start, time.perf_counter(), len(requests)))

            group._commit = timed_commit  # type: ignore[method-assign]
            start_line = threading.Barrier(appenders + 1)

            def work() -> None:
                start_line.wait()
                for _ in range(per_appender):
                    log.append("bench.entry", FIELDS)

            threads = [threading.Thread(target=work) for _ in range(appenders)]
            for thread in threads:
                thread.start()
            start_line.wait()
            started, cpu = time.perf_counter(), time.process_time()
            for thread in threads:
                thread.join()
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        floor = _fsync_per_insert(Path(tmp) / "bare.sqlite", 300, b"x" * 350)
    steady = batches[3:-3] or batches  # leave out the start and the end
    total = appenders * per_appender
    median = statistics.median
    found = {
        "rate": total / elapsed,
        "cpu_us": cpu / total * 1e6,
        "per_commit": median(size for _, _, size in steady),
        "commit_us": median(end - start for start, end, _ in steady) * 1e6,
        "gap_us": median(b[0] - a[1] for a, b in itertools.pairwise(steady)) * 1e6,
        "commit_mean_us": statistics.mean(end - start for start, end, _ in steady) * 1e6,
        "bare_fsync_us": 1e6 / floor,
    }
    found.update((phase, median(times) * 1e6) for phase, times in phases.items())
    return found


def handoffs_only(appenders: int, per_appender: int, commit_seconds: float) -> float:
    """Appends/s through :class:`GroupCommit` when a commit only sleeps (no CPU)."""

    def commit(requests: Sequence[Any]) -> list[Any]:
        time.sleep(commit_seconds)
        return list(requests)

    group: GroupCommit[Any, Any] = GroupCommit(commit, max_batch=4096)
    start_line = threading.Barrier(appenders + 1)

    def work() -> None:
        start_line.wait()
        for _ in range(per_appender):
            group.submit(prepare_event("bench.entry", FIELDS, None))

    threads = [threading.Thread(target=work) for _ in range(appenders)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return appenders * per_appender / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appenders", type=int, default=16)
    parser.add_argument("--per-appender", type=int, default=400)
    args = parser.parse_args()
    found = profile_appends(args.appenders, args.per_appender)
    alone = handoffs_only(args.appenders, args.per_appender, found["commit_us"] / 1e6)
    load = os.getloadavg()[0]
    cycle = found["commit_us"] + found["gap_us"]
    print(
        f"{args.appenders} appenders: {found['rate']:,.0f} appends/s, "
        f"{found['per_commit']:.0f} entries/commit, {found['cpu_us']:.0f} µs CPU/entry "
        f"(load average {load:.1f})"
    )
    commit, gap = found["commit_us"], found["gap_us"]
    print(
        f"  cycle {cycle:,.0f} µs = commit {commit:,.0f} + gap {gap:,.0f} (medians; the mean "
        f"commit, with the slow fsyncs, {found['commit_mean_us']:,.0f})"
    )
    print(
        "  commit: "
        + ", ".join(f"{phase} {found[phase]:,.0f}" for phase in PHASES)
        + "; the rest (locks, bookkeeping, the GIL back after COMMIT) "
        + f"{commit - sum(found[phase] for phase in PHASES):,.0f}"
    )
    print(
        f"  gap: {found['gap_us'] / found['per_commit']:,.0f} µs per appender "
        "(woken in turn, return, prepare the next event, queue)"
    )
    print(
        f"  references: bare BEGIN/INSERT/COMMIT {found['bare_fsync_us']:,.0f} µs; "
        f"hand-offs alone around a {found['commit_us']:,.0f} µs commit that only sleeps: "
        f"{alone:,.0f} appends/s; the goal needs a cycle of "
        f"{found['per_commit'] / 20_000 * 1e6:,.0f} µs"
    )


if __name__ == "__main__":
    main()
