"""``indomain catalogue``: what an enterprise sees, read from the bureau's side."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from indomain.commands.common import HomeOpt, console, errors, open_sandbox


def catalogue_command(
    enterprise: Annotated[
        str | None, typer.Option(help="Show what this enterprise's grants allow")
    ] = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Datasets, schema, classes, privacy rules, a synthetic sample (never real rows) and,
    with --enterprise, which computations and purposes its grants allow now."""
    with errors(), open_sandbox(home) as sandbox:
        entries = sandbox.catalogue_for(enterprise)
        if as_json:
            print(json.dumps(entries, indent=2, ensure_ascii=False, default=str))
            return
        for d in entries:
            console.print(
                f"[bold]{d['name']}[/] ({d['rows_rounded']} rows, rounded) "
                f"sensitivity {d['sensitivity']}, groups {', '.join(d['groups']) or 'none'}: "
                f"{d['description']}",
                highlight=False,
            )
            table = Table("column", "class", "type", "dimension", title="schema")
            for c in d["columns"]:
                table.add_row(c["name"], c["class"], c["type"], "yes" if c["dimension"] else "")
            console.print(table)
            if d.get("synthetic_sample"):
                names = list(d["synthetic_sample"][0])
                sample = Table(*names, title="synthetic sample (made up, not real rows)")
                for row in d["synthetic_sample"]:
                    sample.add_row(*(str(row[n]) for n in names))
                console.print(sample)
            for grant in d.get("allowed", []):
                obligations = ", ".join(f"{k}={v}" for k, v in grant["obligations"].items())
                later = ", ".join(grant.get("checked_at_submit", []))
                console.print(
                    f"  allowed: {grant['computation']} for {grant['purpose']} "
                    f"({obligations or 'no extra obligations'})"
                    + (
                        f"; conditions on {later} are checked when a job is submitted"
                        if later
                        else ""
                    ),
                    highlight=False,
                )
            if enterprise is not None and not d.get("allowed"):
                console.print("  allowed: nothing for this enterprise now")
