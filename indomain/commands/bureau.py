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
    home: HomeOpt = None,
) -> None:
    """Register a licensed enterprise and its public key (recorded on the ledger)."""
    with errors(), open_sandbox(home) as sandbox:
        enterprise = sandbox.register_enterprise(name, public_key)
        console.print(f"registered [bold]{enterprise.name}[/] key {enterprise.public_key_b64}")


@enterprise_app.command("list")
def enterprise_list(home: HomeOpt = None) -> None:
    """List registered enterprises."""
    with errors(), open_sandbox(home) as sandbox:
        table = Table("enterprise", "public key", "registered")
        for e in sandbox.store.enterprises():
            table.add_row(e.name, e.public_key_b64, e.registered_at)
        console.print(table)
