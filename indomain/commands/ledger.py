"""Auditor commands: verify and inspect the audit ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from indomain.commands.common import (
    HomeOpt,
    console,
    err,
    errors,
)

ledger_app = typer.Typer(help="Auditor: verify and inspect the audit ledger.", no_args_is_help=True)


@ledger_app.command("verify")
def ledger_verify(
    home: HomeOpt = None,
    trusted: Annotated[
        Path | None,
        typer.Option(help="A checkpoint you kept earlier: the ledger must extend it"),
    ] = None,
) -> None:
    """Recompute every hash, the chain and the tree; check the signed checkpoint.

    Exits 4 naming the first bad entry if anything was changed, or if the ledger does not
    extend the --trusted checkpoint (truncation, rollback or a rewritten history).
    """
    from rich.progress import Progress

    import ledger
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        key = (h.keys / "ledger.pub").read_text().strip()
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("verifying ledger", total=None)

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = ledger.verify_ledger(
                h.ledger,
                key,
                progress=tick,
                trusted_checkpoint=trusted.read_text() if trusted else None,
            )
        console.print(
            f"[green]ledger verified[/]: {report.size} entries, root "
            f"{report.root_hash.hex()}, checkpoint signed by {key.split('+')[0]}"
        )


@ledger_app.command("show")
def ledger_show(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON entry per line")] = False,
    type_: Annotated[str | None, typer.Option("--type", help="Only entries of this type")] = None,
) -> None:
    """List ledger entries."""
    import ledger
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        with ledger.Ledger.open(h.ledger) as log:
            entries = [e for e in log.entries(0, log.size) if type_ in (None, e.type)]
        if as_json:
            for e in entries:
                print(e.canonical().decode())
            return
        table = Table("#", "time", "type", "who", "what")
        for e in entries:
            f = e.fields
            who = str(f.get("enterprise", ""))
            what = str(f.get("dataset") or f.get("policy_version") or f.get("job_id") or "")
            if e.type in ("job.denied", "job.refused"):
                what += f" ({(f.get('decision') or f.get('refusal') or {}).get('reason', '')})"
            table.add_row(str(e.index), e.time, e.type, who, what)
        console.print(table)
