"""Where one end-to-end aggregate job's time goes, phase by phase.

    python -m bench.aggregate_phases [--rows 10000000] [--repeat 3]

The same HTTP job as ``aggregate_bench.end_to_end`` (signed submit over loopback, a
pre-started worker waiting, result fetched and its receipt verified), with a stopwatch
around each step the gateway process takes: admission (policy decision, plan check,
budget reservation, ledger append), execution (re-check, ``Enclave.run``, run journal,
ledger append, receipt, result storage), and inside ``Enclave.run`` the worker hand-off.
The worker's own steps (key unwrap, encrypted attach, bounded SQL, noise, Arrow IPC,
attestation) run in another process, so they are timed by running the worker's ``_run``
in this process on the same encrypted file, step by step.

This is a diagnostic, not a baseline comparison: the wrappers cost microseconds, and the
numbers are the best of ``--repeat`` jobs.
"""

from __future__ import annotations

import argparse
import base64
import functools
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.aggregate_bench import SQL, demo_sandbox, timed_job

_times: dict[str, list[float]] = defaultdict(list)
_lock = threading.Lock()


def _record(name: str, took: float) -> None:
    with _lock:
        _times[name].append(took)


def _timed(owner: Any, attr: str, name: str) -> Callable[[], None]:
    """Wrap ``owner.attr`` with a stopwatch; returns a function that restores it."""
    original = getattr(owner, attr)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _record(name, time.perf_counter() - start)

    setattr(owner, attr, wrapper)
    return lambda: setattr(owner, attr, original)


@contextmanager
def _stopwatches(targets: list[tuple[Any, str, str]]) -> Iterator[None]:
    undo = [_timed(owner, attr, name) for owner, attr, name in targets]
    try:
        yield
    finally:
        for restore in reversed(undo):
            restore()


def http_phases(rows: int, repeat: int, work: Path) -> tuple[list[tuple[str, float]], Path]:
    """Best-of-``repeat`` phase times of HTTP jobs on ``rows`` rows (seconds)."""
    import enclave._enclave as enclave_mod
    import enclave._pool as pool_mod
    import gateway._app as app_mod
    import indomain.admission as admission_mod
    import indomain.execution as execution_mod
    from gateway import Client
    from indomain import budgets
    from indomain.server import serve_in_thread

    sandbox, key, _, imported = demo_sandbox(work, rows)
    print(f"import of {rows:,} rows: {imported:.1f} s")
    ledger_cls = type(sandbox.ledger)
    targets = [
        (sandbox, "admit", "admission (all)"),
        (admission_mod, "_decide", "  policy decision"),
        (budgets, "reserve_for_plan", "  budget reservation"),
        (sandbox, "execute", "execution (all)"),
        (execution_mod, "_forget_finished", "  forget finished journal"),
        (execution_mod, "recheck", "  re-check policy"),
        (sandbox.enclave, "run", "  Enclave.run"),
        (pool_mod.WorkerPool, "call", "    pool.call (hand-off, worker, answer)"),
        (pool_mod.WorkerPool, "_take", "      take a worker"),
        (pool_mod.WorkerPool, "_refill", "      start the next worker"),
        (type(sandbox.enclave), "verify_attestation", "    verify attestation"),
        (execution_mod, "table_from_ipc", "  read result IPC (privacy statement)"),
        (enclave_mod, "_error_from", "    (error mapping)"),
        (ledger_cls, "append", "ledger append (any)"),
        (ledger_cls, "receipt", "  receipt"),
        (type(sandbox.run_journal), "put", "  run journal put"),
        (type(sandbox.store), "update_job", "store.update_job (any)"),
        (app_mod, "_execute", "gateway run_job (all)"),
    ]
    client_stages: dict[str, list[float]] = defaultdict(list)
    with (
        _stopwatches(targets),
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise="Acme Credit", private_key=key) as client,
    ):

        def job(i: int) -> None:
            took = timed_job(client, sandbox.verifier_key, i, poll=0.02)
            for name, seconds in zip(
                (
                    "client: submit",
                    "client: wait for run",
                    "client: result + receipt check",
                    "client: total",
                ),
                took,
                strict=True,
            ):
                client_stages[name].append(seconds)

        job(10_000)  # starts the pool
        _times.clear()
        client_stages.clear()
        for i in range(repeat):
            sandbox.enclave.warm()
            time.sleep(0.5)  # let the machine settle after the worker's imports
            job(i)
    sandbox.close()
    out = [(name, statistics.median(v)) for name, v in client_stages.items()]
    out += [(name, statistics.median(v)) for name, v in _times.items()]
    return out, work / "home"


def worker_phases(home: Path, repeat: int) -> list[tuple[str, float]]:
    """The worker's own steps of one run, timed in this process on the same encrypted file."""
    import computations._aggregate._execute as agg_exec
    import computations._aggregate._noise as noise_mod
    import enclave._keys as keys_mod
    import enclave._records as records_mod
    import enclave._worker as worker
    from computations import get_computation
    from enclave import _engine
    from indomain.sandbox import Sandbox

    sandbox = Sandbox.open(home)
    record = sandbox.enclave.dataset("residents")
    aggregate = get_computation("aggregate")
    targets = [
        (worker._engine, "attach_encrypted", "worker: attach encrypted file"),
        (worker, "unwrap_dataset_key", "worker: unwrap dataset key"),
        (worker, "load_master_key", "worker: read master key"),
        (agg_exec, "_integer_columns", "worker: column types"),
        (agg_exec, "_query", "worker: bounded SQL (DuckDB)"),
        (agg_exec, "discrete_laplace", "worker: noise (OpenDP)"),
        (agg_exec, "_result", "worker: result table"),
        (worker, "table_to_ipc", "worker: Arrow IPC"),
        (records_mod.RunAttestation, "sign", "worker: sign attestation"),
        (worker, "load_signing_key", "worker: read signing key"),
        (worker, "_run", "worker: _run (all)"),
    ]
    del keys_mod, noise_mod
    _times.clear()
    with _stopwatches(targets):
        for i in range(repeat):
            plan = aggregate.check({"sql": SQL.format(i=i)}, record.spec)
            con = _engine.connect(sandbox.enclave.datasets_dir / ".extensions")
            request = {
                "op": "run",
                "record": record.to_json(),
                "plan": plan.to_json(),
                "job_id": f"job_phase_{i}",
                "policy_version": "v",
                "keys_dir": str(sandbox.enclave.keys_dir.resolve()),
                "datasets_dir": str(sandbox.enclave.datasets_dir.resolve()),
            }
            start = time.perf_counter()
            answer = worker._run(request, False, con)
            _record("worker: _run incl. answer", time.perf_counter() - start)
            con.close()  # a worker exits instead (enclave/_worker.py)
            start = time.perf_counter()
            import json

            json.dumps({"ok": True, **answer})
            base64.b64decode(answer["result_ipc"])
            _record("worker answer JSON + base64", time.perf_counter() - start)
    sandbox.close()
    return [(name, min(v)) for name, v in _times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="indomain-agg-phases-") as tmp:
        phases, home = http_phases(args.rows, args.repeat, Path(tmp))
        for name, took in phases:
            print(f"{name:<40} {took * 1000:8.1f} ms (median)")
        for name, took in worker_phases(home, args.repeat):
            print(f"{name:<40} {took * 1000:8.1f} ms (best)")


if __name__ == "__main__":
    main()
