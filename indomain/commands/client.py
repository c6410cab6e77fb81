"""Licensed-enterprise commands: keys, jobs and results over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from indomain.commands.common import (
    EXIT_FAILED,
    EnterpriseOpt,
    KeyOpt,
    UrlOpt,
    console,
    err,
    errors,
    param_types,
    read_source,
    rows_table,
)

client_app = typer.Typer(
    help="Licensed enterprise: keys, jobs and results over HTTP.", no_args_is_help=True
)


@client_app.command("keygen")
def client_keygen(
    out: Annotated[
        Path, typer.Option(help="Folder for enterprise.key (0600) and enterprise.pub")
    ] = Path("."),
) -> None:
    """Make an Ed25519 key pair; send enterprise.pub to the data bureau."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from indomain.errors import ConfigError
    from indomain.sandbox import write_private_key

    with errors():
        out.mkdir(parents=True, exist_ok=True)
        private, public = out / "enterprise.key", out / "enterprise.pub"
        if private.exists() or public.exists():
            raise ConfigError(f"{out} already holds an enterprise key; not overwriting it")
        key = Ed25519PrivateKey.generate()
        write_private_key(private, key)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        console.print(f"wrote {private} (keep it secret) and {public} (give it to the bureau)")


def _client(url: str, enterprise: str, key: Path) -> Any:
    from gateway import Client

    return Client.from_key_file(url, enterprise=enterprise, key_file=key)


@client_app.command("submit")
def client_submit(
    url: UrlOpt,
    enterprise: EnterpriseOpt,
    key: KeyOpt,
    dataset: Annotated[str, typer.Option(help="Dataset name from the catalogue")],
    purpose: Annotated[str, typer.Option(help="Declared purpose, as licensed")],
    computation: Annotated[str, typer.Option(help="Approved computation")] = "aggregate",
    sql: Annotated[str | None, typer.Option(help="SQL for the aggregate computation")] = None,
    params: Annotated[str | None, typer.Option(help="Parameters as a JSON object")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to finish")] = False,
) -> None:
    """Sign and submit a job; prints the job id on stdout (status on stderr with --wait)."""
    from indomain.errors import ConfigError

    with errors():
        if (sql is None) == (params is None):
            raise ConfigError("give exactly one of --sql or --params")
        try:
            parameters = {"sql": sql} if sql is not None else json.loads(params or "")
        except ValueError:
            raise ConfigError("--params is not valid JSON") from None
        if not isinstance(parameters, dict):
            raise ConfigError("--params must be a JSON object")
        with _client(url, enterprise, key) as client:
            answer = client.submit(
                computation=computation, dataset=dataset, purpose=purpose, params=parameters
            )
            print(answer["job_id"])  # stdout carries only the id, for scripts
            err.print(f"accepted, recorded at ledger entry {answer['ledger_index']}")
            if wait:
                state = client.wait(answer["job_id"])
                err.print(f"job {state['status']}")
                if state["status"] != "succeeded":
                    err.print(f"[bold red]error:[/] {state.get('error', state['status'])}")
                    raise typer.Exit(EXIT_FAILED)


@client_app.command("propose")
def client_propose(
    url: UrlOpt,
    enterprise: EnterpriseOpt,
    key: KeyOpt,
    name: Annotated[str, typer.Option(help="Name of the computation")],
    purpose: Annotated[str, typer.Option(help="Declared purpose, as licensed")],
    dataset: Annotated[list[str], typer.Option("--dataset", help="Dataset it reads (repeat)")],
    template: Annotated[
        Path | None, typer.Option(help="File with a SQL template (:placeholders)")
    ] = None,
    module: Annotated[
        Path | None, typer.Option(help="File with a computation module's Python source")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="Template placeholder as name:int|number|string (repeat)"),
    ] = None,
    column: Annotated[
        list[str] | None, typer.Option("--column", help="Column a module reads (repeat)")
    ] = None,
    epsilon: Annotated[str, typer.Option(help="Expected privacy cost per run")] = "0",
) -> None:
    """Sign and send a new computation (a SQL template or a module) for the bureau's
    reviewers; prints the proposal id on stdout. Run it once approved with
    ``submit --params '{"proposal": "prop_…", "values": {…}}'``."""
    from indomain.errors import ConfigError

    with errors():
        source = template if template is not None else module
        if source is None or (template is not None and module is not None):
            raise ConfigError("give exactly one of --template or --module")
        if template is not None and column:
            raise ConfigError("--column is for modules; a template's columns are read from it")
        if module is not None and param:
            raise ConfigError("--param is for templates; a module takes job values")
        parameters = param_types(param, ConfigError)
        text = read_source(source, ConfigError)
        with _client(url, enterprise, key) as client:
            if template is not None:
                stored = client.propose(
                    name=name,
                    template=text,
                    parameters=parameters,
                    purpose=purpose,
                    datasets=dataset,
                    expected_epsilon=epsilon,
                )
            else:
                stored = client.propose_module(
                    name=name,
                    module=text,
                    columns=column or [],
                    purpose=purpose,
                    datasets=dataset,
                    expected_epsilon=epsilon,
                )
        print(stored["id"])  # stdout carries only the id, for scripts
        err.print(
            f"proposal {stored['status']}: {stored['code_hash']}, needs "
            f"{stored['required_reviewers']} reviewers"
        )


@client_app.command("status")
def client_status(
    job_id: Annotated[str, typer.Argument()], url: UrlOpt, enterprise: EnterpriseOpt, key: KeyOpt
) -> None:
    """Show a job's status as JSON."""
    with errors(), _client(url, enterprise, key) as client:
        print(json.dumps(client.status(job_id), indent=2))


@client_app.command("result")
def client_result(
    job_id: Annotated[str, typer.Argument()],
    url: UrlOpt,
    enterprise: EnterpriseOpt,
    key: KeyOpt,
    ledger_key: Annotated[
        str | None,
        typer.Option(envvar="INDOMAIN_LEDGER_KEY", help="Ledger verifier key to check the receipt"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the Arrow IPC result here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON")] = False,
) -> None:
    """Fetch a result; with --ledger-key, verify its receipt against the ledger first."""
    from computations import table_to_rows

    with errors(), _client(url, enterprise, key) as client:
        result = client.result(job_id, ledger_key=ledger_key)
        if out is not None:
            out.write_bytes(result.ipc)
        rows = table_to_rows(result.table)
        if as_json:
            print(json.dumps({"columns": result.table.column_names, "rows": rows}, indent=2))
        else:
            console.print(rows_table(result.table.column_names, rows, title=job_id))
        if ledger_key:
            err.print("[green]receipt verified[/] against the ledger key")


@client_app.command("health")
def client_health(url: UrlOpt) -> None:
    """Exit 0 when the gateway answers its health check (for scripts waiting on it)."""
    import httpx

    try:
        ok = httpx.get(url.rstrip("/") + "/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        ok = False
    if not ok:
        err.print(f"no healthy gateway at {url}")
        raise typer.Exit(EXIT_FAILED)
    console.print(f"gateway at {url} is up")


@client_app.command("catalogue")
def client_catalogue(url: UrlOpt, enterprise: EnterpriseOpt, key: KeyOpt) -> None:
    """Show the datasets you can query: schema and classes, never rows."""
    with errors(), _client(url, enterprise, key) as client:
        print(json.dumps(client.catalogue(), indent=2))
