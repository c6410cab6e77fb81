"""Policy author commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from indomain.commands.common import (
    HomeOpt,
    console,
    errors,
    open_sandbox,
)

policy_app = typer.Typer(
    help="Policy author: validate and apply Cedar policies.", no_args_is_help=True
)


@policy_app.command("validate")
def policy_validate(directory: Annotated[Path, typer.Argument(help="Policy folder")]) -> None:
    """Check a policy folder against its Cedar schema; prints every problem."""
    import policies

    with errors():
        policy_set = policies.PolicySet.load(directory)
        console.print(f"valid: {len(policy_set.policy_ids)} policies, version {policy_set.version}")


@policy_app.command("apply")
def policy_apply(
    directory: Annotated[Path, typer.Argument(help="Policy folder")], home: HomeOpt = None
) -> None:
    """Validate and install a policy folder; its version is appended to the ledger."""
    with errors(), open_sandbox(home) as sandbox:
        policy_set, index = sandbox.apply_policies(directory)
        console.print(f"applied policy version {policy_set.version} (ledger entry {index})")
