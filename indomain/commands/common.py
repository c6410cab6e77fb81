"""What every command module shares: consoles, options, exit codes, error handling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from indomain.errors import IndomainError

EXIT_FAILED, EXIT_USAGE, EXIT_DENIED, EXIT_LEDGER = 1, 2, 3, 4

console = Console()
err = Console(stderr=True)

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", help="Sandbox home folder [default: $INDOMAIN_HOME or ./.indomain]"),
]
UrlOpt = Annotated[str, typer.Option("--url", envvar="INDOMAIN_URL", help="Gateway base URL")]
EnterpriseOpt = Annotated[
    str, typer.Option("--enterprise", envvar="INDOMAIN_ENTERPRISE", help="Your registered name")
]
KeyOpt = Annotated[
    Path,
    typer.Option("--key", envvar="INDOMAIN_KEY", help="Your Ed25519 private key (PEM)"),
]


def read_source(path: Path, error: type[IndomainError]) -> str:
    """The UTF-8 text of a file given on the command line (a template, a module);
    raises ``error`` saying what was wrong with it."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 text") from None


def param_types(items: list[str] | None, error: type[IndomainError]) -> dict[str, str]:
    """Template placeholders from repeated ``--param name:type`` options."""
    types = {}
    for item in items or []:
        name, sep, kind = item.partition(":")
        if not sep:
            raise error(f"--param {item!r}: write name:type")
        types[name] = kind
    return types


@contextmanager
def errors() -> Iterator[None]:
    """Turn our errors into one clear line on stderr and the documented exit code."""
    try:
        yield
    except IndomainError as exc:
        from gateway import PolicyDenied
        from ledger import LedgerVerificationError

        code = exc.exit_code
        if isinstance(exc, PolicyDenied):
            code = EXIT_DENIED
        elif isinstance(exc, LedgerVerificationError):
            code = EXIT_LEDGER
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code) from None


def open_sandbox(home: Path | None) -> Any:
    from indomain.home import resolve_home
    from indomain.sandbox import Sandbox

    return Sandbox.open(resolve_home(home))


def rows_table(columns: list[str], rows: list[dict[str, Any]], *, title: str = "") -> Table:
    table = Table(*columns, title=title or None)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
