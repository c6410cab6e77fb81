"""Benchmarks with their baselines measured in the same run.

    python -m bench [--rows 1000000] [--repeat 3]

1. End-to-end aggregate job: signed HTTP submit on loopback → policy → worker process
   (key unwrap, encrypted DuckDB) → ledger → result with receipt, against the same GROUP BY
   run directly in DuckDB on an unencrypted Parquet copy (the floor).
2. The ledger (bench/ledger_bench.py): durable appends with 1 and 16 appenders against
   one fsync per insert, full verification against bare SHA-256, proof times, bytes per
   entry. ``--ledger-entries 1000000`` for the issue's size.
3. Encrypted views (bench/encrypted_bench.py): packed encrypted group sums on 100k items
   against one ciphertext per row, PSI throughput per side, accuracy at epsilon 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.table import Table

SQL = (
    "SELECT district, age_band, COUNT(*) AS n, SUM(income) AS total_income "
    "FROM residents GROUP BY district, age_band"
)


def _best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_aggregate(rows: int, repeat: int, work: Path) -> list[tuple[str, str, str, str]]:
    from cryptography.hazmat.primitives import serialization

    from gateway import Client
    from indomain.demo_data import write_residents
    from indomain.sandbox import Sandbox
    from indomain.server import serve_in_thread

    data, manifest = write_residents(work / "src", rows)
    sandbox = Sandbox.init(work / "home", origin="bench.indomain.example/ledger")
    start = time.perf_counter()
    sandbox.import_dataset(data, name="residents", manifest=manifest)
    import_s = time.perf_counter() - start
    key = Ed25519PrivateKey.generate()
    pub = work / "acme.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    sandbox.register_enterprise("Acme Credit", pub)
    sandbox.apply_policies(Path(__file__).resolve().parent.parent / "indomain/demo/policies")

    con = duckdb.connect()
    direct = _best(
        lambda: con.execute(
            SQL.replace("FROM residents", f"FROM read_parquet('{data}')")
        ).to_arrow_table(),
        repeat,
    )
    with (
        serve_in_thread(sandbox.app()) as url,
        Client(url, enterprise="Acme Credit", private_key=key) as client,
    ):
        runs = iter(range(1_000_000))

        def job() -> None:
            # A new alias each time: a repeated query would be answered from the stored
            # release (no run), and this measures runs.
            job_id = client.submit(
                computation="aggregate",
                dataset="residents",
                purpose="credit_risk_model",
                params={"sql": SQL.replace("AS n,", f"AS n{next(runs)},")},
            )["job_id"]
            client.wait(job_id, poll=0.01)
            client.result(job_id, ledger_key=sandbox.verifier_key)

        end_to_end = _best(job, repeat)
    sandbox.close()
    return [
        (
            f"aggregate job, {rows:,} rows",
            f"{end_to_end * 1000:,.0f} ms",
            f"{direct * 1000:,.0f} ms (DuckDB on plain Parquet)",
            f"{end_to_end / direct:,.1f}×",
        ),
        (f"import + encrypt, {rows:,} rows", f"{import_s * 1000:,.0f} ms", "", ""),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ledger-entries", type=int, default=100_000)
    parser.add_argument("--big", action="store_true", help="aggregate breakdown at 10M rows too")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="indomain-bench-") as tmp:
        work = Path(tmp)
        with console.status("benchmarking the aggregate job"):
            rows = bench_aggregate(args.rows, args.repeat, work / "agg")
    table = Table("what", "indomain", "baseline (same run)", "ratio", title="indomain bench")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        "ratio: for jobs, indomain's time over the baseline's (lower is better); for the "
        f"ledger, indomain's throughput over the baseline's. Jobs: best of {args.repeat} runs."
    )
    from bench.aggregate_bench import tables as aggregate_tables

    for extra in aggregate_tables(args.rows, args.repeat, big=args.big, console=console):
        console.print(extra)
    from bench.policy_bench import policy_table

    with console.status("benchmarking policy decisions"):
        console.print(policy_table(2_000))
    from bench.ledger_bench import ledger_table

    console.print(ledger_table(args.ledger_entries, console=console))
    from bench.encrypted_bench import tables as encrypted_tables

    with console.status("benchmarking encrypted views"):
        for extra in encrypted_tables(100_000, 10, 1_000, 20_000, 1.0):
            console.print(extra)


if __name__ == "__main__":
    main()
