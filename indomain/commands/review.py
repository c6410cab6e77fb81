"""Reviewer commands: list, show, approve and reject proposed computations."""

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
    param_types,
    read_source,
)

review_app = typer.Typer(
    help="Reviewer: approve or reject proposed computations (two-person rule).",
    no_args_is_help=True,
)

ReviewerOpt = Annotated[
    str, typer.Option("--reviewer", envvar="INDOMAIN_REVIEWER", help="Your reviewer name")
]


@review_app.command("list")
def review_list(
    status: Annotated[
        str | None, typer.Option(help="pending, approved or rejected [default: all]")
    ] = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List proposals with their requester, purpose, datasets and review state."""
    with errors(), open_sandbox(home) as sandbox:
        proposals = sandbox.reviews.list(status=status)
        if as_json:
            print(json.dumps([p.to_json() for p in proposals], indent=2, ensure_ascii=False))
            return
        table = Table("id", "name", "requester", "purpose", "datasets", "ε", "status", "approvals")
        for p in proposals:
            table.add_row(
                p.id,
                p.name,
                p.requester,
                p.purpose,
                ", ".join(p.datasets),
                p.expected_epsilon,
                p.status,
                f"{len(p.approvals)}/{p.required_reviewers}",
            )
        console.print(table)


@review_app.command("show")
def review_show(proposal: Annotated[str, typer.Argument()], home: HomeOpt = None) -> None:
    """Everything a reviewer needs: template, parameters, columns, cost, code hash."""
    with errors(), open_sandbox(home) as sandbox:
        print(json.dumps(sandbox.reviews.get(proposal).to_json(), indent=2, ensure_ascii=False))


@review_app.command("propose")
def review_propose(
    requester: Annotated[str, typer.Option(help="The enterprise proposing it")],
    name: Annotated[str, typer.Option(help="Template name")],
    template: Annotated[Path, typer.Option(help="File with the SQL template (:placeholders)")],
    purpose: Annotated[str, typer.Option(help="Purpose it serves")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="Dataset (repeat)")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="name:int|number|string (repeat)")
    ] = None,
    epsilon: Annotated[str, typer.Option(help="Expected privacy cost per run")] = "0",
    home: HomeOpt = None,
) -> None:
    """Record a proposal on an enterprise's behalf (enterprises use POST /v1/proposals)."""
    from indomain.approvals import propose
    from indomain.proposals import ProposalError

    with errors(), open_sandbox(home) as sandbox:
        parameters = param_types(param, ProposalError)
        text = read_source(template, ProposalError)
        p = propose(
            sandbox,
            requester=requester,
            name=name,
            template=text,
            parameters=parameters,
            purpose=purpose,
            datasets=dataset,
            expected_epsilon=epsilon,
        )
        console.print(f"proposal {p.id} ({p.code_hash}) needs {p.required_reviewers} reviewers")


@review_app.command("propose-module")
def review_propose_module(
    requester: Annotated[str, typer.Option(help="The enterprise proposing it")],
    name: Annotated[str, typer.Option(help="Computation name")],
    module: Annotated[Path, typer.Option(help="File with the Python source (defines run)")],
    purpose: Annotated[str, typer.Option(help="Purpose it serves")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="Dataset (repeat)")],
    column: Annotated[list[str], typer.Option("--column", help="Dataset column it reads (repeat)")],
    epsilon: Annotated[str, typer.Option(help="Expected privacy cost per run")] = "0",
    home: HomeOpt = None,
) -> None:
    """Record a computation-module proposal on an enterprise's behalf, hashed over its exact
    bytes (see docs/policies.md for how approved modules run)."""
    from indomain.approvals import propose_module
    from indomain.proposals import ProposalError

    with errors(), open_sandbox(home) as sandbox:
        source = read_source(module, ProposalError)
        p = propose_module(
            sandbox,
            requester=requester,
            name=name,
            source=source,
            purpose=purpose,
            datasets=dataset,
            columns=column,
            expected_epsilon=epsilon,
        )
        console.print(f"proposal {p.id} ({p.code_hash}) needs {p.required_reviewers} reviewers")


ReviewerKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key",
        envvar="INDOMAIN_REVIEWER_KEY",
        help="Your Ed25519 private key (PEM), whose public key the bureau registered",
    ),
]


def _vote(
    proposal: str, reviewer: str, key: Path | None, verdict: str, reason: str, home: Path | None
) -> None:
    from datetime import UTC, datetime

    from indomain.approvals import load_reviewer_key, review_document, sign_review, signed_review
    from indomain.proposals import ProposalError

    with errors(), open_sandbox(home) as sandbox:
        if key is None:
            raise ProposalError(
                "a vote must be signed: give --key with your reviewer private key (the one "
                "whose public key was registered with `indomain review register-reviewer`)"
            )
        private = load_reviewer_key(key)
        document = review_document(
            sandbox.reviews.get(proposal),
            reviewer=reviewer,
            verdict=verdict,
            reason=reason,
            issued_at=datetime.now(UTC),
        )
        # The same signed document POST /v1/reviews takes, verified against the
        # registered key before anything is recorded.
        p = signed_review(sandbox, document, sign_review(document, private))
        console.print(
            f"{p.id}: {p.status} ({len(p.approvals)}/{p.required_reviewers} approvals), "
            f"code {p.code_hash}"
        )


@review_app.command("approve")
def review_approve(
    proposal: Annotated[str, typer.Argument()],
    reviewer: ReviewerOpt,
    key: ReviewerKeyOpt = None,
    reason: Annotated[str, typer.Option(help="Why")] = "",
    home: HomeOpt = None,
) -> None:
    """Approve (signed with --key); runnable once enough distinct reviewers approve."""
    _vote(proposal, reviewer, key, "approve", reason, home)


@review_app.command("reject")
def review_reject(
    proposal: Annotated[str, typer.Argument()],
    reviewer: ReviewerOpt,
    reason: Annotated[str, typer.Option(help="Why (shown to the requester)")],
    key: ReviewerKeyOpt = None,
    home: HomeOpt = None,
) -> None:
    """Reject (signed with --key); one rejection is final."""
    _vote(proposal, reviewer, key, "reject", reason, home)


@review_app.command("register-reviewer")
def review_register_reviewer(
    name: Annotated[str, typer.Argument(help="The reviewer's name")],
    public_key: Annotated[Path, typer.Option(help="Their Ed25519 public key (PEM)")],
    home: HomeOpt = None,
) -> None:
    """Let a reviewer review over HTTP with their key (recorded on the ledger)."""
    from indomain.approvals import register_reviewer
    from indomain.proposals import ProposalError

    with errors(), open_sandbox(home) as sandbox:
        try:
            pem = public_key.read_bytes()
        except OSError as exc:
            raise ProposalError(f"cannot read {public_key}: {exc.strerror}") from None
        register_reviewer(sandbox, name, pem)
        console.print(f"registered reviewer [bold]{name}[/]")
