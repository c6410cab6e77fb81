"""``indomain budget``: privacy budget spent and remaining, for the operator and auditors."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from indomain.commands.common import HomeOpt, console, errors, open_sandbox, rows_table

budget_app = typer.Typer(
    help="Privacy budgets: epsilon spent and remaining per enterprise and dataset.",
    no_args_is_help=True,
)

_COLUMNS = [
    "enterprise",
    "dataset",
    "budget",
    "window",
    "epsilon_spent",
    "epsilon_remaining",
    "delta_spent",
    "jobs_charged",
]


@budget_app.command("show")
def show(
    home: HomeOpt = None,
    enterprise: Annotated[
        str | None, typer.Option("--enterprise", help="Only this enterprise [default: all]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Spent and remaining privacy budget in the current window, per enterprise and dataset."""
    with errors(), open_sandbox(home) as sandbox:
        views = sandbox.budgets(enterprise)
        if as_json:
            for view in views:
                console.print_json(json.dumps(view))
            return
        console.print(rows_table(_COLUMNS, views, title="privacy budgets"))
