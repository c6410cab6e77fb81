"""The ``indomain`` command line: parses arguments and calls the core, nothing more.

Exit codes (scripts may rely on them):
  0  success
  1  the operation failed (a job failed, a verification failed, the server refused)
  2  bad input: wrong arguments, missing or invalid files, invalid policies or manifests
  3  refused by policy (a client job denied)
  4  the ledger does not verify
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from indomain.errors import IndomainError

T = TypeVar("T")

EXIT_FAILED, EXIT_USAGE, EXIT_DENIED, EXIT_LEDGER = 1, 2, 3, 4

app = typer.Typer(
    help="indomain: a sandbox where approved computations run on sensitive public data "
    "that never leaves the domain, with a verifiable audit ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
dataset_app = typer.Typer(help="Data operator: import and list datasets.", no_args_is_help=True)
enterprise_app = typer.Typer(
    help="Data operator: register licensed enterprises.", no_args_is_help=True
)
policy_app = typer.Typer(
    help="Policy author: validate and apply Cedar policies.", no_args_is_help=True
)
ledger_app = typer.Typer(help="Auditor: verify and inspect the audit ledger.", no_args_is_help=True)
client_app = typer.Typer(
    help="Licensed enterprise: keys, jobs and results over HTTP.", no_args_is_help=True
)
app.add_typer(dataset_app, name="dataset")
app.add_typer(enterprise_app, name="enterprise")
app.add_typer(policy_app, name="policy")
app.add_typer(ledger_app, name="ledger")
app.add_typer(client_app, name="client")

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


@contextmanager
def _errors() -> Iterator[None]:
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


def _sandbox(home: Path | None) -> Any:
    from indomain.home import resolve_home
    from indomain.sandbox import Sandbox

    return Sandbox.open(resolve_home(home))


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

    with _errors():
        root = resolve_home(home)
        with Sandbox.init(root, origin=origin) as sandbox:
            console.print(f"created sandbox home [bold]{root}[/]")
            console.print(f"ledger origin   {sandbox.home.origin}")
            console.print(f"ledger key      {sandbox.verifier_key}")
            console.print("give the ledger key to auditors; keep keys/ private")


# datasets -----------------------------------------------------------------------------


@dataset_app.command("import")
def dataset_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file to import")],
    name: Annotated[str, typer.Option(help="Dataset name (lower case, digits, _)")],
    manifest: Annotated[Path, typer.Option(help="YAML manifest classifying every column")],
    home: HomeOpt = None,
) -> None:
    """Encrypt a CSV/Parquet file into the sandbox as a dataset."""
    with _errors(), _sandbox(home) as sandbox:
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

    with _errors():
        data, manifest = write_residents(out, rows, seed=seed)
        console.print(f"wrote {data} ({rows:,} rows) and {manifest}")


@dataset_app.command("list")
def dataset_list(
    home: HomeOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """List datasets with their classes (never rows)."""
    with _errors(), _sandbox(home) as sandbox:
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
    with _errors(), _sandbox(home) as sandbox:
        enterprise = sandbox.register_enterprise(name, public_key)
        console.print(f"registered [bold]{enterprise.name}[/] key {enterprise.public_key_b64}")


@enterprise_app.command("list")
def enterprise_list(home: HomeOpt = None) -> None:
    """List registered enterprises."""
    with _errors(), _sandbox(home) as sandbox:
        table = Table("enterprise", "public key", "registered")
        for e in sandbox.store.enterprises():
            table.add_row(e.name, e.public_key_b64, e.registered_at)
        console.print(table)


# policies -----------------------------------------------------------------------------


@policy_app.command("validate")
def policy_validate(directory: Annotated[Path, typer.Argument(help="Policy folder")]) -> None:
    """Check a policy folder against its Cedar schema; prints every problem."""
    import policies

    with _errors():
        policy_set = policies.PolicySet.load(directory)
        console.print(f"valid: {len(policy_set.policy_ids)} policies, version {policy_set.version}")


@policy_app.command("apply")
def policy_apply(
    directory: Annotated[Path, typer.Argument(help="Policy folder")], home: HomeOpt = None
) -> None:
    """Validate and install a policy folder; its version is appended to the ledger."""
    with _errors(), _sandbox(home) as sandbox:
        policy_set, index = sandbox.apply_policies(directory)
        console.print(f"applied policy version {policy_set.version} (ledger entry {index})")


# serve --------------------------------------------------------------------------------


@app.command()
def serve(
    home: HomeOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
) -> None:
    """Run the HTTP gateway for licensed enterprises."""
    import uvicorn

    with _errors(), _sandbox(home) as sandbox:
        console.print(f"gateway on http://{host}:{port}  ledger key {sandbox.verifier_key}")
        uvicorn.run(sandbox.app(), host=host, port=port, log_level="info")


# ledger -------------------------------------------------------------------------------


@ledger_app.command("verify")
def ledger_verify(
    home: HomeOpt = None,
    trusted: Annotated[
        Path | None,
        typer.Option(help="A checkpoint you kept earlier: the ledger must extend it"),
    ] = None,
) -> None:
    """Recompute every hash, the chain and the tree; check the signed checkpoint.

    Exits 4 naming the first bad entry if anything was changed, or if the ledger does not
    extend the --trusted checkpoint (truncation, rollback or a rewritten history).
    """
    from rich.progress import Progress

    import ledger
    from indomain.home import Home, resolve_home

    with _errors():
        h = Home.open(resolve_home(home))
        key = (h.keys / "ledger.pub").read_text().strip()
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("verifying ledger", total=None)

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = ledger.verify_ledger(
                h.ledger,
                key,
                progress=tick,
                trusted_checkpoint=trusted.read_text() if trusted else None,
            )
        console.print(
            f"[green]ledger verified[/]: {report.size} entries, root "
            f"{report.root_hash.hex()}, checkpoint signed by {key.split('+')[0]}"
        )


@ledger_app.command("show")
def ledger_show(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON entry per line")] = False,
    type_: Annotated[str | None, typer.Option("--type", help="Only entries of this type")] = None,
) -> None:
    """List ledger entries."""
    import ledger
    from indomain.home import Home, resolve_home

    with _errors():
        h = Home.open(resolve_home(home))
        with ledger.Ledger.open(h.ledger) as log:
            entries = [e for e in log.entries(0, log.size) if type_ in (None, e.type)]
        if as_json:
            for e in entries:
                print(e.canonical().decode())
            return
        table = Table("#", "time", "type", "who", "what")
        for e in entries:
            f = e.fields
            who = str(f.get("enterprise", ""))
            what = str(f.get("dataset") or f.get("policy_version") or f.get("job_id") or "")
            if e.type in ("job.denied", "job.refused"):
                what += f" ({(f.get('decision') or f.get('refusal') or {}).get('reason', '')})"
            table.add_row(str(e.index), e.time, e.type, who, what)
        console.print(table)


# client -------------------------------------------------------------------------------


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

    with _errors():
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

    with _errors():
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


@client_app.command("status")
def client_status(
    job_id: Annotated[str, typer.Argument()], url: UrlOpt, enterprise: EnterpriseOpt, key: KeyOpt
) -> None:
    """Show a job's status as JSON."""
    with _errors(), _client(url, enterprise, key) as client:
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

    with _errors(), _client(url, enterprise, key) as client:
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
    with _errors(), _client(url, enterprise, key) as client:
        print(json.dumps(client.catalogue(), indent=2))


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

    with _errors():
        run_demo(rows=rows, keep=keep, console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
