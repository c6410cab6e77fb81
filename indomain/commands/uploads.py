"""Operator commands for enterprises' stored uploads (inputs of encrypted jobs).

    indomain uploads prune [--max-age-hours 168]      # while no gateway serves the home

``indomain serve`` prunes by itself at start and every ``--prune-every-minutes``; see
:mod:`indomain.uploads` for what is removed and why nothing later needs it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from indomain.commands.common import HomeOpt, console, errors, open_sandbox

uploads_app = typer.Typer(
    help="Operator: stored uploads of encrypted jobs (quota, clean-up).", no_args_is_help=True
)

MaxAgeOpt = Annotated[
    float,
    typer.Option(help="Remove uploads no job has used after this many hours", min=0.0),
]


@uploads_app.command("prune")
def prune_command(home: HomeOpt = None, max_age_hours: MaxAgeOpt = 168.0) -> None:
    """Remove uploads no unfinished job needs: inputs of finished jobs, and uploads no job
    used within --max-age-hours. Refused while a gateway serves the home (it prunes)."""
    from indomain.gateway_lock import gateway_lock

    with errors(), open_sandbox(home) as sandbox, gateway_lock(sandbox.home.root):
        report = sandbox.prune_uploads(max_age=timedelta(hours=max_age_hours))
        console.print(
            f"removed {report.used} inputs of finished jobs, {report.expired} unused "
            f"uploads older than {max_age_hours:g} h and {report.partial} partial files "
            f"({report.freed_bytes} bytes); kept {report.kept}"
        )
