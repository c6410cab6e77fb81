"""Benchmarks with their baselines measured in the same run.

    python -m bench [--rows 1000000] [--repeat 3]

1. Import (encryption into the enclave) and the end-to-end aggregate job
   (bench/aggregate_bench.py): signed HTTP submit on loopback → policy → pre-started worker
   (key unwrap, encrypted DuckDB) → ledger → result with receipt, against the same GROUP BY
   in DuckDB on an unencrypted copy and on Parquet, at ``--rows`` and 10M rows (the goal's
   size); ``--big`` adds the time breakdown at 10M rows.
2. The ledger (bench/ledger_bench.py): durable appends with 1 and 16 appenders against
   one fsync per insert, full verification against bare SHA-256, proof times, bytes per
   entry. ``--ledger-entries 1000000`` for the issue's size.
3. Encrypted views (bench/encrypted_bench.py): packed encrypted group sums on 100k items
   against one ciphertext per row, PSI throughput per side, the shuffle proofs (one of
   the ten lists proved and verified, scaled), accuracy at epsilon 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def bench_import(rows: int, work: Path) -> list[tuple[str, str, str, str]]:
    """Import (encrypt into the enclave) against writing the same rows as plain Parquet."""
    from indomain.demo_data import write_residents
    from indomain.sandbox import Sandbox

    start = time.perf_counter()
    data, manifest = write_residents(work / "src", rows)
    plain_s = time.perf_counter() - start
    sandbox = Sandbox.init(work / "home", origin="bench.indomain.example/ledger")
    start = time.perf_counter()
    sandbox.import_dataset(data, name="residents", manifest=manifest)
    import_s = time.perf_counter() - start
    sandbox.close()
    return [
        (
            f"import + encrypt, {rows:,} rows",
            f"{import_s * 1000:,.0f} ms",
            f"{plain_s * 1000:,.0f} ms (generating and writing plain Parquet)",
            f"{import_s / plain_s:,.2f}×",
        )
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
        with console.status("benchmarking the import"):
            rows = bench_import(args.rows, Path(tmp))
    table = Table("what", "indomain", "baseline (same run)", "ratio", title="indomain bench")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        "ratios: times are indomain over the baseline (lower is better), throughputs "
        f"indomain over the baseline (higher is better). Jobs: best of {args.repeat} runs."
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
        # One shuffle proof of the ten, scaled (all ten take ~10 minutes here).
        for extra in encrypted_tables(100_000, 10, 1_000, 20_000, 1.0, proof_lists=1):
            console.print(extra)


if __name__ == "__main__":
    main()
