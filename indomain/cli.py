"""The ``indomain`` command line: parses arguments and calls the core, nothing more.

Each role's commands live in :mod:`indomain.commands`. Exit codes (scripts may rely on them):
  0  success
  1  the operation failed (a job failed, a verification failed, the server refused)
  2  bad input: wrong arguments, missing or invalid files, invalid policies or manifests
  3  refused by policy (a client job denied)
  4  the ledger does not verify
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from indomain.commands.budget import budget_app
from indomain.commands.bureau import dataset_app, enterprise_app
from indomain.commands.catalogue import catalogue_command
from indomain.commands.client import client_app
from indomain.commands.common import HomeOpt, console, errors, open_sandbox
from indomain.commands.encrypted import encrypted_app
from indomain.commands.ledger import ledger_app
from indomain.commands.policy import policy_app
from indomain.commands.review import review_app
from indomain.commands.uploads import uploads_app
from indomain.gateway_lock import gateway_lock

app = typer.Typer(
    help="indomain: a sandbox where approved computations run on sensitive public data "
    "that never leaves the domain, with a verifiable audit ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(dataset_app, name="dataset")
app.add_typer(enterprise_app, name="enterprise")
app.add_typer(policy_app, name="policy")
app.add_typer(review_app, name="review")
app.command("catalogue")(catalogue_command)
app.add_typer(ledger_app, name="ledger")
app.add_typer(client_app, name="client")
app.add_typer(budget_app, name="budget")
app.add_typer(encrypted_app, name="encrypted")
app.add_typer(uploads_app, name="uploads")


# init ---------------------------------------------------------------------------------


@app.command()
def init(
    home: HomeOpt = None,
    origin: Annotated[
        str | None, typer.Option(help="Ledger origin line, e.g. ledger.bureau.example/2026")
    ] = None,
) -> None:
    """Create a sandbox home: keys (0600), empty ledger, empty state. Never overwrites."""
    from indomain.home import resolve_home
    from indomain.sandbox import Sandbox

    with errors():
        root = resolve_home(home)
        with Sandbox.init(root, origin=origin) as sandbox:
            console.print(f"created sandbox home [bold]{root}[/]")
            console.print(f"ledger origin   {sandbox.home.origin}")
            console.print(f"ledger key      {sandbox.verifier_key}")
            console.print("give the ledger key to auditors; keep keys/ private")


# serve --------------------------------------------------------------------------------


@app.command()
def serve(
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    upload_quota_mb: Annotated[
        int, typer.Option(help="Most MiB one enterprise's stored uploads may hold", min=1)
    ] = 2048,
    upload_max_age_hours: Annotated[
        float, typer.Option(help="Remove uploads no job used after this many hours", min=0.0)
    ] = 168.0,
    prune_every_minutes: Annotated[
        float, typer.Option(help="How often to remove uploads nothing needs", min=0.1)
    ] = 60.0,
) -> None:
    """Run the HTTP gateway for licensed enterprises."""
    from datetime import timedelta

    import uvicorn

    from indomain.uploads import janitor

    with errors(), open_sandbox(home) as sandbox, gateway_lock(sandbox.home.root):
        sandbox.upload_quota = upload_quota_mb << 20
        console.print(f"gateway on http://{host}:{port}  ledger key {sandbox.verifier_key}")
        with janitor(
            sandbox,
            every=timedelta(minutes=prune_every_minutes),
            max_age=timedelta(hours=upload_max_age_hours),
        ):
            uvicorn.run(sandbox.app(lock=False), host=host, port=port, log_level="info")


# demo ---------------------------------------------------------------------------------


@app.command()
def demo(
    rows: Annotated[int, typer.Option(help="Synthetic residents to generate")] = 200_000,
    keep: Annotated[
        Path | None, typer.Option(help="Keep the demo home in this (new) folder")
    ] = None,
) -> None:
    """Run the whole story on a fresh home: bureau, policy author, enterprise, auditor."""
    from indomain.demo_tour import run_demo

    with errors():
        run_demo(rows=rows, keep=keep, console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
