"""``make demo``: the four roles on a fresh sandbox home, through the real HTTP gateway."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

import ledger
from computations import table_to_rows
from gateway import Client, PolicyDenied
from indomain.demo_data import write_residents
from indomain.demo_encrypted import PILOT, PILOT_ROWS, PILOT_SEED, encrypted_step
from indomain.errors import ConfigError
from indomain.sandbox import Sandbox
from indomain.server import serve_in_thread

DEMO_POLICIES = Path(__file__).parent / "demo" / "policies"
#: The grant for the encrypted step, applied together with DEMO_POLICIES.
ENCRYPTED_POLICIES = Path(__file__).parent / "demo" / "encrypted"
ENTERPRISE = "Acme Credit"
PURPOSE = "credit_risk_model"

JOBS = (
    (
        "Residents and mean income by district",
        PURPOSE,
        "SELECT district, COUNT(*) AS residents, AVG(income) AS mean_income "
        "FROM residents GROUP BY district",
    ),
    (
        "Social-insurance months by district and age band (small groups suppressed)",
        PURPOSE,
        "SELECT district, age_band, COUNT(*) AS residents, "
        "AVG(insurance_months) AS mean_insurance_months FROM residents "
        "GROUP BY district, age_band",
    ),
    (
        "The same query for direct marketing (not a licensed purpose)",
        "direct_marketing",
        "SELECT district, COUNT(*) AS residents FROM residents GROUP BY district",
    ),
)


def run_demo(*, rows: int, keep: Path | None, console: Console) -> None:
    started = time.monotonic()
    if keep is not None and keep.exists():
        raise ConfigError(f"{keep} exists; --keep needs a new folder")
    workdir = Path(tempfile.mkdtemp(prefix="indomain-demo-"))
    root = keep if keep is not None else workdir / "home"
    try:
        _tour(root, workdir, rows, console)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    console.print(
        f"\n[bold green]demo finished[/] in {time.monotonic() - started:.1f} s"
        + (f"; home kept at {root}" if keep else "")
    )


def _step(console: Console, role: str, text: str) -> None:
    console.print(f"\n[bold cyan]{role}[/] · {text}")


def _tour(root: Path, workdir: Path, rows: int, console: Console) -> None:
    console.print(Panel.fit("indomain demo: data usable but invisible (可用不可见)", style="bold"))

    _step(console, "data bureau", f"creating a sandbox home at {root}")
    with Sandbox.init(root, origin="demo.indomain.example/residents") as sandbox:
        ledger_key = sandbox.verifier_key
        with console.status(f"generating {rows:,} synthetic residents"):
            data, manifest = write_residents(workdir / "source", rows)
        with console.status("importing into an encrypted DuckDB file inside the enclave"):
            record = sandbox.import_dataset(data, name="residents", manifest=manifest)
        console.print(f"  imported residents: {record.row_count:,} rows, {record.content_hash}")
        data.unlink()  # the plaintext copy is gone; only the encrypted file remains
        # A PSI session blinds every identifier of its dataset: a small pilot registry
        # keeps the encrypted step quick. The demo keeps who is in which age band only to
        # print the plaintext truth beside the encrypted answer.
        pilot, pilot_manifest = write_residents(workdir / "pilot", PILOT_ROWS, seed=PILOT_SEED)
        truth = pq.read_table(pilot, columns=["resident_id", "age_band"]).to_pylist()
        record = sandbox.import_dataset(pilot, name=PILOT, manifest=pilot_manifest)
        pilot.unlink()
        console.print(f"  imported {PILOT}: {record.row_count:,} rows, for encrypted views")

        _step(console, "licensed enterprise", f"{ENTERPRISE} makes a key pair")
        enterprise_key = Ed25519PrivateKey.generate()
        public = workdir / "acme.pub"
        public.write_bytes(
            enterprise_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        _step(console, "data bureau", f"registers {ENTERPRISE}'s public key")
        sandbox.register_enterprise(ENTERPRISE, public)

        _step(console, "policy author", "validates and applies the Cedar policies")
        folder = workdir / "policies"
        shutil.copytree(DEMO_POLICIES, folder)
        for grant in ENCRYPTED_POLICIES.glob("*.cedar"):
            shutil.copy(grant, folder / grant.name)
        policy_set, index = sandbox.apply_policies(folder)
        console.print(f"  policy version {policy_set.version} recorded at ledger entry {index}")

        with serve_in_thread(sandbox.app()) as url:
            _step(console, "gateway", f"listening on {url}")
            with Client(url, enterprise=ENTERPRISE, private_key=enterprise_key) as client:
                _enterprise_jobs(client, ledger_key, console)
                encrypted_step(client, {r["resident_id"]: r["age_band"] for r in truth}, console)

    _step(console, "auditor", "verifies the whole ledger offline with only its public key")
    report = ledger.verify_ledger(root / "ledger", ledger_key)
    console.print(f"  [green]verified[/] {report.size} entries; root {report.root_hash.hex()}")
    with ledger.Ledger.open(root / "ledger") as log:
        table = Table("#", "type", "who", "detail", title="audit ledger")
        for entry in log.entries(0, log.size):
            f = entry.fields
            detail = f.get("dataset") or f.get("policy_version") or ""
            if "decision" in f:
                detail = f"{f.get('job_id')}: {f['decision']['reason']}"
            elif entry.type == "run.completed":
                detail = f"{f['job_id']}: result {f['attestation']['result_digest'][:23]}…"
            table.add_row(str(entry.index), entry.type, str(f.get("enterprise", "")), detail)
        console.print(table)


def _enterprise_jobs(client: Client, ledger_key: str, console: Console) -> None:
    catalogue = client.catalogue()
    table = Table("column", "class", "type", "group by", title="catalogue: residents")
    for column in catalogue[0]["columns"]:
        table.add_row(
            column["name"], column["class"], column["type"], "yes" if column["dimension"] else ""
        )
    console.print(table)

    for title, purpose, sql in JOBS:
        _step(console, "licensed enterprise", title)
        console.print(f"  [dim]{sql}[/]")
        try:
            answer = client.submit(
                computation="aggregate", dataset="residents", purpose=purpose, params={"sql": sql}
            )
        except PolicyDenied as denied:
            console.print(
                f"  [bold red]403[/] {denied.message} "
                f"(the refusal is ledger entry {denied.extra.get('ledger_index')})"
            )
            continue
        state = client.wait(answer["job_id"])
        if state["status"] != "succeeded":
            raise ConfigError(f"demo job {answer['job_id']} {state['status']}: {state}")
        result = client.result(answer["job_id"], ledger_key=ledger_key)
        out = Table(*result.table.column_names, title=f"{answer['job_id']}")
        for row in table_to_rows(result.table):
            out.add_row(*(f"{v:,.0f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(out)
        for note in state.get("notes", []):
            console.print(f"  [dim]privacy:[/] {note}")
        for window in state.get("budget", {}).get("windows", []):
            console.print(
                f"  [dim]budget:[/] epsilon {window['spent_after']:g} of {window['budget']} "
                f"spent in {window['window']}"
            )
        console.print(
            f"  [green]receipt verified[/]: run recorded at ledger entry "
            f"{state['run_ledger_index']}, inclusion proof checked against the signed checkpoint"
        )
