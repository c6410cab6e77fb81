"""Pre-started workers: started ahead, hardened before any request, used once, replaced."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from enclave import Enclave, WorkerError
from enclave._pool import IDLE_START_S, WorkerPool, _can_leave_idle

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


@pytest.fixture()
def enclave(tmp_path: Path) -> Enclave:
    made = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    yield made
    made.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _exits(pid: int, *, within_s: float = 30.0) -> bool:
    """Whether ``pid`` exits and is reaped (a zombie still answers ``kill(pid, 0)``) in
    time: an answered worker's exit is collected in the background."""
    deadline = time.monotonic() + within_s
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_next_operation_runs_in_the_worker_started_ahead(enclave: Enclave) -> None:
    first = enclave.probe()
    waiting, _ = enclave.pool.idle_pids()
    assert waiting != first["pid"]
    second = enclave.probe()
    assert second["pid"] == waiting
    assert _exits(first["pid"]) and _exits(second["pid"])  # each served once, then exited


def test_two_operations_back_to_back_both_find_a_worker_started_ahead(enclave: Enclave) -> None:
    assert enclave.warm() == 2
    ahead = enclave.pool.idle_pids()
    served = [enclave.probe()["pid"], enclave.probe()["pid"]]
    assert served == ahead  # the second did not wait for a worker to start
    assert len(enclave.pool.idle_pids()) == 2  # both replaced


def _policies(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add(os.sched_getscheduler(int(task)))
        except OSError:
            continue  # ended meanwhile
    return found


@linux_only
@pytest.mark.skipif(not _can_leave_idle(), reason="SCHED_IDLE cannot be left here")
def test_workers_start_at_idle_priority_and_serve_at_normal_priority(enclave: Enclave) -> None:
    """A worker starting ahead first takes only CPU time nothing else wants, then (after
    IDLE_START_S) normal time; the one that serves a request runs all its threads at
    normal priority (or the job would crawl)."""
    enclave.probe()  # the pool starts two workers after it
    starting = enclave.pool.idle_pids()
    assert len(starting) == 2
    assert all(_policies(pid) == {os.SCHED_IDLE} for pid in starting)
    answer = enclave.probe()  # given a request while still at idle priority: moved back
    assert answer["pid"] == starting[0]
    assert answer["scheduling"] == [os.SCHED_OTHER]
    deadline = time.monotonic() + IDLE_START_S + 30
    while _policies(starting[1]) != {os.SCHED_OTHER}:  # the other one, after IDLE_START_S
        assert time.monotonic() < deadline, "a waiting worker stayed at idle priority"
        time.sleep(0.05)
    # On demand (nothing waiting), a worker never starts at idle priority.
    on_demand = Enclave(keys_dir=enclave.keys_dir, datasets_dir=enclave.datasets_dir, pool_size=0)
    assert on_demand.probe()["scheduling"] == [os.SCHED_OTHER]


def test_a_pooled_worker_is_hardened_before_it_reads_anything(enclave: Enclave) -> None:
    enclave.probe()
    waiting, _ = enclave.pool.idle_pids()
    # Inside, it reports no core dumps and not dumpable (as the worker saw itself).
    answer = enclave.probe()
    assert answer["pid"] == waiting
    assert answer["dumpable"] == 0 and answer["core_limit"] == 0
    if os.geteuid() == 0:
        assert answer["network_isolated"] is True


@linux_only
@pytest.mark.skipif(os.geteuid() != 0, reason="reading another process's namespaces")
def test_an_idle_worker_is_in_its_own_network_namespace_before_any_request(
    enclave: Enclave,
) -> None:
    enclave.probe()
    waiting, _ = enclave.pool.idle_pids()
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + 60
    while os.readlink(f"/proc/{waiting}/ns/net") == ours:  # it hardens first thing
        assert time.monotonic() < deadline, "the idle worker never left our namespace"
        time.sleep(0.05)
    limits = Path(f"/proc/{waiting}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]


def test_a_killed_idle_worker_is_replaced(enclave: Enclave) -> None:
    enclave.probe()
    waiting, _ = enclave.pool.idle_pids()
    os.kill(waiting, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while waiting in enclave.pool.idle_pids():  # all its threads must end before it is reaped
        assert time.monotonic() < deadline
        time.sleep(0.01)
    answer = enclave.probe()
    assert answer["ok"] and answer["pid"] != waiting
    assert len(enclave.pool.idle_pids()) == 2  # and the pool is full again


def test_a_worker_that_dies_mid_request_fails_that_request_only(tmp_path: Path) -> None:
    """The first worker dies after reading its request: that request fails (it may have
    touched data, so it is not silently run again); the next one gets a fresh worker."""
    marker = tmp_path / "died-once"
    script = (
        "import json, os, pathlib, signal, sys\n"
        "print(json.dumps({'ready': True}), flush=True)\n"
        "request = sys.stdin.read()\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch(); os.kill(os.getpid(), signal.SIGKILL)\n"
        "print(json.dumps({'ok': True, 'pid': os.getpid()}), flush=True)\n"
    )
    pool = WorkerPool([sys.executable, "-c", script], env={}, size=1)
    died = pool.call({"op": "probe"}, timeout_s=60)
    assert died.answer is None and died.returncode == -signal.SIGKILL
    served = pool.call({"op": "probe"}, timeout_s=60)
    assert served.answer is not None and served.answer["ok"] is True
    pool.close()


def test_a_worker_that_dies_before_it_is_ready_is_replaced_for_the_same_request(
    tmp_path: Path,
) -> None:
    """Dying before the ready line means it never read the request: a fresh worker runs it."""
    marker = tmp_path / "died-once"
    script = (
        "import json, os, pathlib, sys\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch(); sys.exit(1)\n"
        "print(json.dumps({'ready': True}), flush=True)\n"
        "sys.stdin.read()\n"
        "print(json.dumps({'ok': True}), flush=True)\n"
    )
    pool = WorkerPool([sys.executable, "-c", script], env={}, size=0)
    reply = pool.call({"op": "probe"}, timeout_s=60)
    assert reply.answer == {"ok": True}
    assert marker.exists()


def test_no_two_operations_share_a_worker(enclave: Enclave) -> None:
    enclave.probe()
    with ThreadPoolExecutor(max_workers=5) as threads:
        answers = list(threads.map(lambda _: enclave.probe(), range(5)))
    pids = [a["pid"] for a in answers]
    assert len(set(pids)) == len(pids) == 5
    assert all(_exits(pid) for pid in pids)


def test_a_worker_that_never_gets_ready_is_an_error_not_a_hang(tmp_path: Path) -> None:
    pool = WorkerPool([sys.executable, "-c", "import sys; sys.exit(3)"], env={}, size=1)
    with pytest.raises(WorkerError, match="before it was ready"):
        pool.call({"op": "probe"}, timeout_s=30)
    pool.close()


def test_a_worker_out_of_time_is_killed(tmp_path: Path) -> None:
    sleeper = "import sys, time; print('{\"ready\": true}', flush=True); time.sleep(60)"
    pool = WorkerPool([sys.executable, "-c", sleeper], env={}, size=0)
    started = time.monotonic()
    with pytest.raises(WorkerError, match="did not finish"):
        pool.call({"op": "probe"}, timeout_s=1)
    assert time.monotonic() - started < 30


def test_closing_stops_the_waiting_workers(enclave: Enclave) -> None:
    enclave.probe()
    waiting = enclave.pool.idle_pids()
    enclave.close()
    assert enclave.pool.idle_pids() == []
    assert all(_gone(pid) for pid in waiting)
    assert enclave.probe()["ok"]  # still usable: workers start on demand
    assert enclave.pool.idle_pids() == []


def test_warming_waits_for_a_ready_worker_which_then_serves_the_next_operation(
    enclave: Enclave,
) -> None:
    assert enclave.warm() == 2
    waiting, _ = enclave.pool.idle_pids()
    assert enclave.warm() == 2  # idempotent: the same workers, not others
    assert enclave.pool.idle_pids()[0] == waiting
    answer = enclave.probe()
    assert answer["pid"] == waiting and answer["dumpable"] == 0


def test_the_answer_is_taken_at_end_of_file_not_at_exit(tmp_path: Path) -> None:
    """A worker that closes its stdout after answering (as ``enclave._worker`` does) is
    heard at once; its slow exit is reaped in the background, not waited for."""
    lingers = (
        "import json, os, sys, time\n"
        "print(json.dumps({'ready': True}), flush=True)\n"
        "sys.stdin.buffer.read()\n"
        "print(json.dumps({'ok': True, 'pid': os.getpid()}), flush=True)\n"
        "os.dup2(os.open(os.devnull, os.O_WRONLY), 1)\n"
        "time.sleep(60)\n"
    )
    pool = WorkerPool([sys.executable, "-c", lingers], env={}, size=0)
    started = time.monotonic()
    reply = pool.call({"op": "probe"}, timeout_s=120)
    assert time.monotonic() - started < 45  # it did not wait out the minute
    assert reply.answer is not None and reply.answer["ok"] is True
    assert reply.returncode is None  # still exiting when the answer came
    os.kill(reply.answer["pid"], signal.SIGKILL)
    assert _exits(reply.answer["pid"])  # and the background reaper collects it


def test_a_request_larger_than_a_pipe_buffer_arrives_whole(tmp_path: Path) -> None:
    echo = (
        "import hashlib, json, sys\n"
        "print(json.dumps({'ready': True}), flush=True)\n"
        "raw = sys.stdin.buffer.read()\n"
        "print(json.dumps({'ok': True, 'sha': hashlib.sha256(raw).hexdigest()}), flush=True)\n"
    )
    pool = WorkerPool([sys.executable, "-c", echo], env={}, size=0)
    request = {"op": "probe", "padding": "x" * (1 << 20)}
    reply = pool.call(request, timeout_s=120)
    assert reply.answer is not None
    assert reply.answer["sha"] == hashlib.sha256(json.dumps(request).encode()).hexdigest()
