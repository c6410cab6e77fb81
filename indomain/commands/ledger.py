"""Auditor commands: export, verify, inspect and prove entries of the audit ledger.

``indomain ledger verify`` exit codes: 0 the ledger verifies; 4 it does not (the message
names the first bad entry, or prints both checkpoints of a rollback or fork); 2 bad input
(no ledger there, malformed key or checkpoint file, more than one source, gateway
unreachable).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from indomain.commands.common import (
    EXIT_LEDGER,
    EXIT_USAGE,
    HomeOpt,
    console,
    err,
    errors,
)

ledger_app = typer.Typer(
    help="Auditor: export, verify and inspect the audit ledger.", no_args_is_help=True
)

KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="INDOMAIN_LEDGER_KEY",
        help="The ledger's verifier key, or a file with one key per line (any of them may "
        "sign, e.g. across a key rotation), as the bureau published it "
        "[default: the key stored with the ledger or export]",
    ),
]
_TIME_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"]


@contextmanager
def _verifying() -> Iterator[None]:
    """Exit 4 when evidence does not verify (printing fork evidence), 2 for any bad input."""
    from indomain.errors import IndomainError
    from ledger import LedgerForkError, LedgerVerificationError

    try:
        yield
    except LedgerForkError as exc:
        err.print(f"[bold red]ledger does not verify:[/] {exc}", highlight=False)
        print("# the checkpoint you trusted:")
        print(exc.trusted, end="" if exc.trusted.endswith("\n") else "\n")
        print("# the ledger's latest checkpoint (both are signed by the ledger key):")
        print(exc.latest, end="" if exc.latest.endswith("\n") else "\n")
        raise typer.Exit(EXIT_LEDGER) from None
    except LedgerVerificationError as exc:
        err.print(f"[bold red]ledger does not verify:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_LEDGER) from None
    except IndomainError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None


def _read_text(path: Path, what: str) -> str:
    from indomain.errors import ConfigError

    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None


def _key(option: str | None, default: Path | None) -> list[str]:
    """The verifier key set: one key, or a file with one key per line (a key rotation)."""
    from indomain.errors import ConfigError

    if option is not None:
        path = Path(option)
        text = _read_text(path, "key file") if path.is_file() else option
    elif default is None:
        raise ConfigError("--key is required with --url: use the key the bureau published")
    else:
        text = _read_text(default, "verifier key file")
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise ConfigError("no verifier key given")
    return keys


@ledger_app.command("export")
def ledger_export(
    out: Annotated[Path, typer.Argument(help="New or empty folder to write the export to")],
    home: HomeOpt = None,
) -> None:
    """Write checkpoint, entries.jsonl and ledger.pub: all an auditor needs, as flat files."""
    import ledger
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        size = ledger.export_ledger(h.ledger, out)
        console.print(f"exported {size} entries to [bold]{out}[/]")


WitnessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        help="A witness key (name+keyid+base64(0x04||key)) you trust; repeat for several",
    ),
]


def _witnessed(
    cosigned: str | None, verifier: list[str], witnesses: list[str], quorum: int | None
) -> list[str]:
    """The cosigned checkpoint as an extra trusted note, once a quorum of witnesses signed it."""
    import ledger

    if not witnesses:
        return []
    if cosigned is None:
        raise ledger.LedgerVerificationError("no checkpoint has been cosigned by a witness")
    needed = len(witnesses) if quorum is None else quorum
    checkpoint, seen = ledger.open_cosigned(cosigned, verifier, witnesses, quorum=needed)
    err.print(
        f"checkpoint for size {checkpoint.size} cosigned by {', '.join(sorted(seen))}",
        highlight=False,
    )
    return [cosigned]


@ledger_app.command("verify")
def ledger_verify(
    home: HomeOpt = None,
    url: Annotated[str | None, typer.Option("--url", help="Verify a gateway's ledger")] = None,
    export: Annotated[Path | None, typer.Option("--export", help="Verify an export folder")] = None,
    trusted: Annotated[
        Path | None,
        typer.Option(help="A checkpoint you kept earlier: the ledger must extend it"),
    ] = None,
    key: KeyOpt = None,
    witness: WitnessOpt = None,
    quorum: Annotated[
        int | None, typer.Option(min=1, help="Witnesses needed [default: all given]")
    ] = None,
) -> None:
    """Recompute every entry, the chain and the tree; check signatures and checkpoints.

    Exits 4 naming the first bad entry if anything was changed, or if the ledger does not
    extend the --trusted checkpoint (rollback or fork: both checkpoints are printed), or
    the latest checkpoint cosigned by a quorum of --witness keys. Exits 2 on bad input.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    import ledger
    from indomain.errors import ConfigError
    from indomain.home import Home, resolve_home

    witnesses = list(witness or [])
    if key is None and url is None:
        err.print(
            "note: using the verifier key stored with the ledger; pass --key with the one the "
            "bureau published to trust nothing the operator holds",
            highlight=False,
        )
    with _verifying():
        if sum(x is not None for x in (home, url, export)) > 1:
            raise ConfigError("give one of --home, --url or --export")
        kept = [_read_text(trusted, "trusted checkpoint")] if trusted else []
        with Progress(
            *Progress.get_default_columns()[:1],
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("verifying ledger", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if url is not None:
                from gateway import LedgerFeed

                verifier = _key(key, None)
                with LedgerFeed(url) as feed:
                    cosigned = feed.cosigned_checkpoint() if witnesses else None
                    kept += _witnessed(cosigned, verifier, witnesses, quorum)
                    note = feed.checkpoint()
                    # Signed by a key that --key may reach only through a rotation the
                    # ledger records: verify_entries checks the signature after the scan.
                    size = ledger.claimed_size(note)
                    report = ledger.verify_entries(
                        feed.entries(0, size),
                        note,
                        verifier,
                        trusted_checkpoint=kept,
                        progress=tick,
                        covering=feed.covering_checkpoint,
                    )
                source = url
            elif export is not None:
                verifier = _key(key, export / "ledger.pub")
                path = export / "cosigned-checkpoint"
                cosigned = _read_text(path, "cosigned checkpoint") if path.is_file() else None
                kept += _witnessed(cosigned, verifier, witnesses, quorum)
                report = ledger.verify_export(
                    export, verifier, trusted_checkpoint=kept, progress=tick
                )
                source = str(export)
            else:
                h = Home.open(resolve_home(home))
                verifier = _key(key, h.keys / "ledger.pub")
                with ledger.Ledger.open(h.ledger) as log:
                    cosigned = log.cosigned_checkpoint()
                kept += _witnessed(cosigned, verifier, witnesses, quorum)
                report = ledger.verify_ledger(
                    h.ledger, verifier, progress=tick, trusted_checkpoint=kept
                )
                source = str(h.root)
        console.print(
            f"[green]ledger verified[/]: {report.size} entries from {source}, root "
            f"{report.root_hash.hex()}, checkpoint signed by "
            + ", ".join(sorted({k.split("+")[0] for k in verifier}))
            + (", extends the trusted checkpoint" if trusted else "")
            + (", extends the witnessed checkpoint" if witnesses else "")
        )


@ledger_app.command("cosign")
def ledger_cosign(
    url: Annotated[str, typer.Option("--url", help="The gateway whose ledger you witness")],
    witness_key_file: Annotated[
        Path, typer.Option("--witness-key", help="Your Ed25519 private key (PEM)")
    ],
    name: Annotated[str, typer.Option(help="Your witness name, e.g. witness.example/w1")],
    state: Annotated[
        Path, typer.Option(help="File holding the last checkpoint you cosigned (kept here)")
    ],
    key: KeyOpt = None,
) -> None:
    """Witness: check the ledger's latest checkpoint extends the last one you cosigned, then
    cosign it (C2SP tlog-cosignature) and hand the cosignature to the ledger.

    Exits 4 on a rollback or fork, printing both checkpoints; the state is then left as it
    was, so the evidence stays. The first run trusts the checkpoint it sees.
    """
    import ledger
    from gateway import LedgerFeed, load_private_key

    with _verifying():
        verifier = _key(key, None)
        private = load_private_key(witness_key_file)
        previous = _read_text(state, "witness state") if state.exists() else None
        with LedgerFeed(url) as feed:
            note = feed.checkpoint()
            new = ledger.open_checkpoint(note, verifier)
            proof: list[bytes] = []
            if previous is not None:
                old = ledger.open_checkpoint(previous, verifier)
                if 0 < old.size < new.size:
                    proof = feed.consistency_proof(old.size, new.size)
            checkpoint, line = ledger.witness_checkpoint(
                note, verifier, previous=previous, proof=proof, name=name, private_key=private
            )
            public = ledger.witness_key(name, private.public_key())
            feed.submit_cosignature(checkpoint.size, public, line)
        tmp = state.with_name(state.name + ".tmp")
        tmp.write_text(note, encoding="utf-8")
        tmp.replace(state)
        console.print(f"cosigned the checkpoint for size {checkpoint.size} as {public}")


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _about(fields: Mapping[str, Any], key: str) -> Any:
    """The enterprise or dataset an entry is about, wherever its type keeps it."""
    for holder in (fields, fields.get("request"), fields.get("attestation")):
        if isinstance(holder, Mapping) and key in holder:
            return holder[key]
    return None


@ledger_app.command("show")
def ledger_show(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON entry per line")] = False,
    type_: Annotated[str | None, typer.Option("--type", help="Only entries of this type")] = None,
    enterprise: Annotated[
        str | None, typer.Option(help="Only entries about this enterprise")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="Only entries about this dataset")] = None,
    since: Annotated[
        datetime | None, typer.Option(formats=_TIME_FORMATS, help="From this UTC time on")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(formats=_TIME_FORMATS, help="Before this UTC time")
    ] = None,
) -> None:
    """List ledger entries, filtered by type, enterprise, dataset and time (UTC)."""
    import ledger
    from indomain.home import Home, resolve_home

    lo, hi = _time(since), _time(until)

    def wanted(e: ledger.LedgerEntry) -> bool:
        return (
            type_ in (None, e.type)
            and enterprise in (None, _about(e.fields, "enterprise"))
            and dataset in (None, _about(e.fields, "dataset"))
            and (lo is None or e.time >= lo)
            and (hi is None or e.time < hi)
        )

    with errors():
        h = Home.open(resolve_home(home))
        with ledger.Ledger.open(h.ledger) as log:
            size = log.size
            entries = [
                e
                for start in range(0, size, 1000)
                for e in log.entries(start, min(start + 1000, size))
                if wanted(e)
            ]
        if as_json:
            for e in entries:
                print(e.canonical().decode())
            return
        table = Table("#", "time", "type", "who", "what")
        for e in entries:
            f = e.fields
            who = str(_about(f, "enterprise") or "")
            what = str(f.get("dataset") or f.get("policy_version") or f.get("job_id") or "")
            if e.type in ("job.denied", "job.refused"):
                what += f" ({(f.get('decision') or f.get('refusal') or {}).get('reason', '')})"
            table.add_row(str(e.index), e.time, e.type, who, what)
        console.print(table)


@ledger_app.command("proof")
def ledger_proof(
    index: Annotated[int, typer.Argument(help="The entry to prove", min=0)],
    home: HomeOpt = None,
    size: Annotated[
        int | None, typer.Option(help="Tree size to prove it in [default: latest]", min=1)
    ] = None,
) -> None:
    """Print a C2SP tlog-proof that entry INDEX is in the ledger, for offline checking."""
    import ledger
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        with ledger.Ledger.open(h.ledger) as log:
            receipt = log.receipt(index, size)
        print(ledger.tlog_proof(receipt.index, receipt.proof, receipt.checkpoint), end="")


@ledger_app.command("rotate-key")
def ledger_rotate_key(
    step: Annotated[str, typer.Argument(help="begin (new key signs too) or finish (old retires)")],
    home: HomeOpt = None,
) -> None:
    """Operator: rotate the ledger signing key with an overlap, recorded on the ledger.

    begin: make keys/ledger.next.key, append ledger.key_added; from then on checkpoints
    carry both signatures (give auditors keys/ledger.next.pub). finish: append
    ledger.key_retired; the new key becomes keys/ledger.key and keys/ledger.pub, the old
    one is kept as keys/ledger.key.retired-<key id> for you to destroy. Stop the gateway
    first; it signs with the keys it loaded.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    import ledger
    from gateway import load_private_key
    from indomain.errors import ConfigError
    from indomain.home import Home, resolve_home
    from indomain.sandbox import write_private_key

    with errors():
        h = Home.open(resolve_home(home))
        following, following_pub = h.keys / "ledger.next.key", h.keys / "ledger.next.pub"
        old = load_private_key(h.ledger_key)
        if step == "begin":
            # The key file first: losing a key the ledger names would stop all appends.
            if following.exists():  # resume a begin that stopped before its entry
                new = load_private_key(following)
                with ledger.Ledger.open(h.ledger) as log:
                    if ledger.verifier_key(h.origin, new.public_key()) in log.verifier_keys:
                        raise ConfigError(
                            "a rotation is under way: run `indomain ledger rotate-key finish`"
                        )
            else:
                new = Ed25519PrivateKey.generate()
                write_private_key(following, new)
            with ledger.Ledger.open(h.ledger, signing_key=old) as log:
                entry = log.add_signing_key(new)
                following_pub.write_text(log.verifier_key + "\n")
            console.print(
                f"entry {entry.index}: new ledger key {log.verifier_key}; both keys sign "
                "from now on. Give auditors keys/ledger.next.pub, then run "
                "`indomain ledger rotate-key finish`."
            )
        elif step == "finish":
            if not following.exists():
                raise ConfigError("no rotation under way: run `indomain ledger rotate-key begin`")
            new = load_private_key(following)
            with ledger.Ledger.open(h.ledger) as log:
                active = log.verifier_keys
            retired = next((k for k in active if k != following_pub.read_text().strip()), None)
            if retired is not None:  # else a previous finish stopped after retiring
                with ledger.Ledger.open(h.ledger, signing_key=[old, new]) as log:
                    entry = log.retire_signing_key(retired)
                console.print(f"entry {entry.index}: retired {retired}")
            key_id = ledger.verifier_key(h.origin, old.public_key()).split("+")[1]
            h.ledger_key.rename(h.keys / f"ledger.key.retired-{key_id}")
            following.rename(h.ledger_key)
            following_pub.replace(h.keys / "ledger.pub")
            console.print(
                "the new key is now keys/ledger.key; keys/ledger.pub holds its verifier key"
            )
        else:
            raise ConfigError("step must be begin or finish")


witness_app = typer.Typer(
    help="Operator: the witnesses whose cosignatures the ledger accepts.", no_args_is_help=True
)
ledger_app.add_typer(witness_app, name="witness")

WitnessKeyArg = Annotated[
    str,
    typer.Argument(
        help="The witness's key, name+keyid+base64(0x04||key), as `indomain ledger cosign` "
        "prints it"
    ),
]


@witness_app.command("add")
def ledger_witness_add(key: WitnessKeyArg, home: HomeOpt = None) -> None:
    """Accept cosignatures by this witness key (POST /v1/ledger/cosignatures refuses others)."""
    import ledger
    from indomain.errors import ConfigError
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        try:
            added = ledger.accept_witness(h.ledger, key)
        except ledger.LedgerError as exc:  # bad input: a malformed key, no ledger
            raise ConfigError(str(exc)) from None
        console.print(("accepting" if added else "already accepting") + f" cosignatures by {key}")


@witness_app.command("remove")
def ledger_witness_remove(key: WitnessKeyArg, home: HomeOpt = None) -> None:
    """Stop accepting new cosignatures by this witness key (those stored stay)."""
    import ledger
    from indomain.errors import ConfigError
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        if not ledger.remove_witness(h.ledger, key):
            raise ConfigError(
                "that witness key is not accepted: see `indomain ledger witness list`"
            )
        console.print(f"no longer accepting cosignatures by {key}")


@witness_app.command("list")
def ledger_witness_list(home: HomeOpt = None) -> None:
    """Print the accepted witness keys, one per line."""
    import ledger
    from indomain.home import Home, resolve_home

    with errors():
        h = Home.open(resolve_home(home))
        for key in ledger.accepted_witnesses(h.ledger):
            print(key)
