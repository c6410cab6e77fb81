"""Data operator commands: datasets and licensed enterprises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from indomain.commands.common import (
    HomeOpt,
    console,
    errors,
    open_sandbox,
)

dataset_app = typer.Typer(help="Data operator: import and list datasets.", no_args_is_help=True)
enterprise_app = typer.Typer(
    help="Data operator: register licensed enterprises.", no_args_is_help=True
)


@dataset_app.command("import")
def dataset_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file to import")],
    name: Annotated[str, typer.Option(help="Dataset name (lower case, digits, _)")],
    manifest: Annotated[Path, typer.Option(help="YAML manifest classifying every column")],
    home: HomeOpt = None,
) -> None:
    """Encrypt a CSV/Parquet file into the sandbox as a dataset."""
    with errors(), open_sandbox(home) as sandbox:
        with console.status(f"importing {file.name} into the enclave…"):
            record = sandbox.import_dataset(file, name=name, manifest=manifest)
        console.print(
            f"imported [bold]{record.name}[/]: {record.row_count} rows, "
            f"{len(record.spec.columns)} columns, content {record.content_hash}"
        )


@dataset_app.command("synthesize")
def dataset_synthesize(
    out: Annotated[Path, typer.Argument(help="Folder for residents.parquet and its manifest")],
    rows: Annotated[int, typer.Option(min=1, help="Number of synthetic residents")] = 200_000,
    seed: Annotated[int, typer.Option(help="Generator seed")] = 20261122,
) -> None:
    """Write a realistic synthetic residents dataset and its manifest (no real people)."""
    from indomain.demo_data import write_residents

    with errors():
        data, manifest = write_residents(out, rows, seed=seed)
        console.print(f"wrote {data} ({rows:,} rows) and {manifest}")


@dataset_app.command("list")
def dataset_list(
    home: HomeOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """List datasets with their classes (never rows)."""
    with errors(), open_sandbox(home) as sandbox:
        catalogue = sandbox.catalogue()
        if as_json:
            print(json.dumps(catalogue, indent=2))
            return
        table = Table("dataset", "rows (rounded)", "columns", "min group")
        for d in catalogue:
            cols = ", ".join(f"{c['name']}:{c['class']}" for c in d["columns"])
            table.add_row(d["name"], str(d["rows_rounded"]), cols, str(d["min_group_size"]))
        console.print(table)


# enterprises --------------------------------------------------------------------------


@enterprise_app.command("register")
def enterprise_register(
    name: Annotated[str, typer.Argument(help="The enterprise's licensed name")],
    public_key: Annotated[Path, typer.Option(help="Its Ed25519 public key (PEM)")],
    licence_number: Annotated[str, typer.Option(help="Its licence number")] = "",
    licence_expires: Annotated[
        str | None, typer.Option(help="Licence expiry: YYYY-MM-DD (midnight UTC) or RFC 3339")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Register a licensed enterprise and its public key (recorded on the ledger)."""
    from indomain.registry import parse_expiry

    with errors(), open_sandbox(home) as sandbox:
        expires = parse_expiry(licence_expires) if licence_expires else None
        enterprise = sandbox.register_enterprise(
            name, public_key, licence_number=licence_number, licence_expires=expires
        )
        console.print(f"registered [bold]{enterprise.name}[/] key {enterprise.public_key_b64}")


@enterprise_app.command("list")
def enterprise_list(home: HomeOpt = None) -> None:
    """List registered enterprises with their licence (number, expiry, status)."""
    with errors(), open_sandbox(home) as sandbox:
        table = Table("enterprise", "public key", "registered", "licence", "expires", "status")
        for e in sandbox.store.enterprises():
            licence = sandbox.registry.licence(e.name).to_json()
            table.add_row(
                e.name,
                e.public_key_b64,
                e.registered_at,
                licence["licence_number"] or "-",
                licence["licence_expires"] or "-",
                licence["status"],
            )
        console.print(table)


def _licence_change(name: str, home: Path | None, **change: object) -> None:
    with errors(), open_sandbox(home) as sandbox:
        licence = sandbox.update_licence(name, **change)
        expires = licence.to_json()["licence_expires"] or "none"
        console.print(
            f"[bold]{licence.enterprise}[/]: licence {licence.licence_number or '(no number)'}, "
            f"status {licence.status}, expires {expires} (recorded on the ledger; "
            "enforced from the next decision)"
        )


@enterprise_app.command("licence")
def enterprise_licence(
    name: Annotated[str, typer.Argument(help="The enterprise's licensed name")],
    number: Annotated[str | None, typer.Option(help="New licence number")] = None,
    expires: Annotated[
        str | None, typer.Option(help="New expiry: YYYY-MM-DD (midnight UTC) or RFC 3339")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Renew or change an enterprise's licence number and expiry."""
    from indomain.registry import parse_expiry

    with errors():
        when = parse_expiry(expires) if expires else None
    _licence_change(name, home, licence_number=number, expires=when)


@enterprise_app.command("suspend")
def enterprise_suspend(
    name: Annotated[str, typer.Argument(help="The enterprise's licensed name")],
    home: HomeOpt = None,
) -> None:
    """Suspend a licence: every later job of this enterprise is denied, no restart needed."""
    _licence_change(name, home, status="suspended")


@enterprise_app.command("reinstate")
def enterprise_reinstate(
    name: Annotated[str, typer.Argument(help="The enterprise's licensed name")],
    home: HomeOpt = None,
) -> None:
    """Lift a suspension."""
    _licence_change(name, home, status="active")


@enterprise_app.command("expire")
def enterprise_expire(
    name: Annotated[str, typer.Argument(help="The enterprise's licensed name")],
    home: HomeOpt = None,
) -> None:
    """End a licence now: its expiry becomes the present moment."""
    from datetime import UTC, datetime

    _licence_change(name, home, expires=datetime.now(UTC))


@dataset_app.command("classify")
def dataset_classify(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    sensitivity: Annotated[
        int, typer.Option(min=1, max=4, help="1 public, 2 internal, 3 confidential, 4 restricted")
    ],
    group: Annotated[
        list[str] | None, typer.Option("--group", help="A DatasetGroup it belongs to (repeat)")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Set a dataset's sensitivity and groups, as policies see them (recorded on the ledger)."""
    with errors(), open_sandbox(home) as sandbox:
        value = sandbox.classify_dataset(name, sensitivity=sensitivity, groups=tuple(group or ()))
        groups = ", ".join(value.groups) or "none"
        console.print(f"[bold]{name}[/]: sensitivity {value.sensitivity}, groups {groups}")
