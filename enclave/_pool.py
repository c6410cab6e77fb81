"""Pre-started, single-use enclave workers.

Starting ``python -m enclave._worker`` costs its interpreter, its imports (DuckDB, Arrow,
OpenDP) and DuckDB's httpfs extension: seconds on a busy machine. A pool keeps the next
worker(s) already started, hardened and waiting on stdin, so a job does not wait for that.
The isolation is the same as before: every operation gets a fresh process, which hardens
itself (no core dumps, not dumpable, own network namespace) *before* it reads a request,
answers one request and exits. A worker is never given a second request; it is replaced.

Protocol: once hardened and warm, the worker writes one line ``{"ready": true, ...}`` to
stdout; only then does it read its request (all of stdin), and it writes the answer after
that line. A worker that never said ready never read a request, so it is safe to retry the
request once on a fresh worker (it crashed or was killed while it started). A worker that
said ready and then died without an answer may have read its request and touched data, so
that request fails (one fixed message, budget kept) rather than being run again.

Scheduling: a worker started ahead of use runs its first :data:`IDLE_START_S` seconds
under ``SCHED_IDLE`` (Linux), so its imports (about 1.5 s of CPU, on a machine of two
cores) do not slow the job that just finished its run and is recording it; then, or as
soon as a request is given to it, every thread of it moves back to normal scheduling
(by the pool, then by the worker itself on reading the request, which covers a thread
started in between). Bounded, so on a machine that is never idle a waiting worker still
gets ready. Leaving ``SCHED_IDLE`` needs ``RLIMIT_NICE`` of 20 or ``CAP_SYS_NICE``: the
pool tries it once on a thread of its own, and starts workers at normal priority if
that fails (a worker stuck at idle priority would run its job there).
"""

from __future__ import annotations

import functools
import json
import os
import select
import selectors
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enclave._errors import WorkerError

#: How long a pre-started worker runs at idle priority before it is moved back.
IDLE_START_S = 2.0


@dataclass(frozen=True)
class WorkerReply:
    """A worker's ready line, its answer (``None`` if it gave none) and exit status.

    ``returncode`` is ``None`` when the worker answered: it is then reaped in the
    background, because its exit (unmapping the memory its run used) takes a further
    10-15 ms at 10M rows that no caller needs to wait for."""

    ready: dict[str, Any]
    answer: dict[str, Any] | None
    returncode: int | None


class WorkerPool:
    """Keeps ``size`` workers started ahead of use; ``size=0`` starts each on demand."""

    def __init__(self, command: Sequence[str], *, env: dict[str, str], size: int = 1) -> None:
        if size < 0:
            raise ValueError("a pool size cannot be negative")
        self._command = list(command)
        self._env = dict(env)
        self._size = size
        self._idle: list[subprocess.Popen[bytes]] = []
        self._ready: dict[int, dict[str, Any]] = {}  # ready lines read by wait_ready
        self._lock = threading.Lock()
        self._closed = False

    def call(self, request: dict[str, Any], *, timeout_s: float) -> WorkerReply:
        """Send ``request`` to a fresh worker and return what it said.

        Raises :class:`WorkerError` when the worker does not finish in ``timeout_s`` (it is
        killed) or could not be started.
        """
        data = json.dumps(request).encode()
        for attempt in (1, 2):
            proc = self._take()
            try:
                out = _exchange(proc, data, timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
                proc.wait()
                raise WorkerError(
                    f"the enclave worker did not finish in {timeout_s:.0f} s"
                ) from None
            finally:
                # The next worker starts once this one is done, so its imports do not
                # compete for the CPU with the operation running now.
                self._refill()
            with self._lock:
                early = self._ready.pop(proc.pid, None)
            if early is not None:
                ready: dict[str, Any] | None = early
                rest = out
            else:
                first, _, rest = out.partition(b"\n")
                ready = _json_object(first)
            answer = _json_object(rest) if ready is not None else None
            if answer is None:
                proc.wait()  # it said nothing whole: its exit status says why
            else:
                _reap_later(proc)
            if ready is None or not ready.get("ready"):
                if attempt == 1:
                    continue  # it died before reading anything: a fresh one may run it
                raise WorkerError(
                    f"the enclave worker exited with status {proc.returncode} before it was ready"
                )
            return WorkerReply(ready=ready, answer=answer, returncode=proc.returncode)
        raise AssertionError("unreachable")  # pragma: no cover

    def idle_pids(self) -> list[int]:
        """Process ids of the live workers waiting for a request (diagnostics and tests)."""
        with self._lock:
            return [proc.pid for proc in self._idle if proc.poll() is None]

    def wait_ready(self, *, timeout_s: float = 120.0) -> int:
        """Start the pool's workers if none wait, and block until each has said ready (its
        imports done); returns how many are ready. For a gateway warming up, and benchmarks
        that time a job finding a worker waiting."""
        deadline = time.monotonic() + timeout_s
        self._refill()
        with self._lock:
            for proc in self._idle:
                if proc.pid in self._ready or proc.stdout is None:
                    continue
                left = max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select([proc.stdout], [], [], left)
                if not readable:
                    break
                line = _json_object(proc.stdout.readline())
                if line is not None and line.get("ready"):
                    self._ready[proc.pid] = line
            return sum(1 for proc in self._idle if proc.pid in self._ready)

    def close(self) -> None:
        """Stop the waiting workers; later calls start workers on demand."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
            self._ready.clear()
        for proc in idle:
            _stop(proc)

    def _refill(self) -> None:
        with self._lock:
            if not self._closed:
                while len(self._idle) < self._size:
                    self._idle.append(self._spawn())

    def _take(self) -> subprocess.Popen[bytes]:
        """An unused live worker, at normal scheduling: a pre-started one if there is one,
        else a new one."""
        with self._lock:
            chosen = None
            while self._idle and chosen is None:
                proc = self._idle.pop(0)
                if proc.poll() is None:
                    chosen = proc
                else:
                    self._ready.pop(proc.pid, None)
                    _stop(proc)  # died while waiting: _refill replaces it after this call
        if chosen is None:
            return self._spawn(idle=False)
        set_normal_scheduling(chosen.pid)
        return chosen

    def _spawn(self, *, idle: bool = True) -> subprocess.Popen[bytes]:
        try:
            proc = subprocess.Popen(
                self._command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=self._env,
            )
        except OSError as exc:
            raise WorkerError(f"the enclave worker could not be started: {exc}") from None
        if idle and _can_leave_idle():
            _set_policy(proc.pid, getattr(os, "SCHED_IDLE", None))
            timer = threading.Timer(IDLE_START_S, _promote_if_alive, (proc,))
            timer.daemon = True
            timer.start()
        return proc


def _promote_if_alive(proc: subprocess.Popen[bytes]) -> None:
    # Not reaped while poll() says it runs, so the pid is still this worker's.
    if proc.poll() is None:
        set_normal_scheduling(proc.pid)


@functools.cache
def _can_leave_idle() -> bool:
    """Whether a thread of this process may move from ``SCHED_IDLE`` back to normal."""
    idle, normal = getattr(os, "SCHED_IDLE", None), getattr(os, "SCHED_OTHER", None)
    if idle is None or normal is None or not hasattr(os, "sched_setscheduler"):
        return False
    outcome: list[bool] = []

    def attempt() -> None:  # on a thread of its own: only that thread changes policy
        try:
            os.sched_setscheduler(0, idle, os.sched_param(0))
            os.sched_setscheduler(0, normal, os.sched_param(0))
            outcome.append(True)
        except OSError:
            outcome.append(False)

    probe = threading.Thread(target=attempt, name="indomain-sched-probe")
    probe.start()
    probe.join()
    return outcome == [True]


def set_normal_scheduling(pid: int) -> None:
    """Move every thread of process ``pid`` (``0``: this one) to normal scheduling
    (``SCHED_OTHER``), where it can; a no-op off Linux."""
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid or 'self'}/task")]
    except (OSError, ValueError):
        tasks = [pid]
    for task in tasks:
        _set_policy(task, getattr(os, "SCHED_OTHER", None))


def _set_policy(task: int, policy: int | None) -> None:
    """Best effort: a scheduling policy only changes how fast a worker gets CPU time."""
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return
    try:
        os.sched_setscheduler(task, policy, os.sched_param(0))
    except OSError:
        pass  # the task has exited, or the system does not allow it


def _exchange(proc: subprocess.Popen[bytes], data: bytes, timeout_s: float) -> bytes:
    """Write ``data`` to the worker's stdin, close it, and read its stdout to end of file.

    What :meth:`subprocess.Popen.communicate` does, except that it returns at end of file
    instead of also waiting for the process to exit: a worker closes its stdout once it
    has answered (``enclave/_worker.py``), before its slow teardown. Raises
    :class:`subprocess.TimeoutExpired` if that takes more than ``timeout_s``.
    """
    assert proc.stdin is not None and proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    pending = memoryview(data)
    out_fd, in_fd = proc.stdout.fileno(), proc.stdin.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(out_fd, selectors.EVENT_READ)
        if pending:
            selector.register(in_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout_s)
            for key, _ in selector.select(left):
                if key.fd == in_fd:
                    try:
                        # At most PIPE_BUF bytes: a write the selector said fits never blocks.
                        pending = pending[os.write(in_fd, pending[: select.PIPE_BUF]) :]
                    except BrokenPipeError:
                        pending = pending[:0]  # it exited early: its stdout tells why
                    if not pending:
                        selector.unregister(in_fd)
                        proc.stdin.close()
                else:
                    chunk = os.read(out_fd, _PIPE_CHUNK)
                    if chunk:
                        chunks.append(chunk)
                    else:
                        selector.unregister(out_fd)
    if not proc.stdin.closed:
        proc.stdin.close()
    proc.stdout.close()
    return b"".join(chunks)


_PIPE_CHUNK = 1 << 16


def _reap_later(proc: subprocess.Popen[bytes]) -> None:
    """Collect an answered worker's exit status off the caller's path (no zombie stays)."""
    threading.Thread(target=proc.wait, name="indomain-reap", daemon=True).start()


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()
