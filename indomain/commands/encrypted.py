"""Licensed-enterprise commands for encrypted views: an HE key, a PSI session, a group sum.

    indomain encrypted context --out acme.tenseal            # secret CKKS context, 0600
    indomain encrypted open --dataset residents --purpose … --dimension district \\
        --offer offer.arrow                                  # prints the session id
    indomain encrypted group-sum --dataset residents --purpose … --session ID \\
        --offer offer.arrow --input customers.csv --context acme.tenseal
    indomain encrypted linear-score --dataset residents --purpose … --dimension district \
        --features income,insurance_months --weights 0.00001,0.01 --context acme.tenseal

The secret key and the identifiers stay on the enterprise's machine: only the public
context, blinded points and ciphertexts are uploaded (docs/threat-model.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from indomain.commands.common import EnterpriseOpt, KeyOpt, UrlOpt, console, err, errors, rows_table

encrypted_app = typer.Typer(
    help="Licensed enterprise: PSI sessions and encrypted group sums under your own HE key.",
    no_args_is_help=True,
)

_RINGS = {8192: ([60, 40, 40, 60], 2**40), 4096: ([35, 34, 40], 2**26)}


def _secret_context(path: Path) -> Any:
    """The enterprise's TenSEAL context (with its secret key) from ``path``."""
    import tenseal as ts

    from indomain.errors import ConfigError

    try:
        return ts.context_from(path.read_bytes())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{path} is not a TenSEAL context file: {exc}") from None


def _client(url: str, enterprise: str, key: Path) -> Any:
    from gateway import Client

    return Client.from_key_file(url, enterprise=enterprise, key_file=key)


@encrypted_app.command("context")
def context_command(
    out: Annotated[Path, typer.Option(help="File for the secret context (created 0600)")],
    degree: Annotated[int, typer.Option(help="CKKS ring degree: 8192 or 4096")] = 8192,
) -> None:
    """Make a secret CKKS context (128-bit parameters, Galois keys); keep the file secret."""
    import tenseal as ts

    from indomain.errors import ConfigError

    with errors():
        if degree not in _RINGS:
            raise ConfigError("--degree must be 8192 or 4096")
        bits, scale = _RINGS[degree]
        context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=bits)
        context.global_scale = scale
        context.generate_galois_keys()
        data = bytes(context.serialize(save_secret_key=True, save_galois_keys=True))
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError(f"{out} exists; not overwriting a key") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        console.print(f"wrote {out} ({len(data) / 1e6:.1f} MB, holds your secret key)")


@encrypted_app.command("open")
def open_command(
    url: UrlOpt,
    enterprise: EnterpriseOpt,
    key: KeyOpt,
    dataset: Annotated[str, typer.Option(help="Dataset name from the catalogue")],
    purpose: Annotated[str, typer.Option(help="Declared purpose, as licensed")],
    dimension: Annotated[str, typer.Option(help="Public dimension to group by")],
    offer: Annotated[Path, typer.Option(help="Where to write the session's offer (Arrow)")],
) -> None:
    """Open a PSI session; prints its id on stdout and writes the offer."""
    from computations import table_to_ipc

    with errors(), _client(url, enterprise, key) as client:
        session, table = client.open_psi_session(
            dataset=dataset, purpose=purpose, dimension=dimension
        )
        offer.write_bytes(table_to_ipc(table))
        print(session)
        err.print(f"offer written to {offer}: {table.num_rows} points")


@encrypted_app.command("group-sum")
def group_sum_command(
    url: UrlOpt,
    enterprise: EnterpriseOpt,
    key: KeyOpt,
    dataset: Annotated[str, typer.Option(help="Dataset name from the catalogue")],
    purpose: Annotated[str, typer.Option(help="Declared purpose, as licensed")],
    session: Annotated[str, typer.Option(help="Session id from `indomain encrypted open`")],
    offer: Annotated[Path, typer.Option(help="The session's offer file")],
    input: Annotated[Path, typer.Option(help="CSV with your identifiers and values")],
    context: Annotated[Path, typer.Option(help="Your secret context file")],
    id_column: Annotated[str, typer.Option(help="Identifier column of --input")] = "identifier",
    value_column: Annotated[str, typer.Option(help="Value column of --input")] = "value",
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON")] = False,
) -> None:
    """Per group, the debiased sum of your values over your identifiers in the dataset."""
    import pyarrow.csv as pv

    from computations import table_from_ipc
    from indomain.errors import ConfigError

    with errors():
        try:
            table = pv.read_csv(input)
            identifiers = table.column(id_column).to_pylist()
            values = [float(v) for v in table.column(value_column).to_pylist()]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{input}: need a CSV with columns {id_column} and {value_column} (numbers): {exc}"
            ) from None
        secret = _secret_context(context)
        offered = table_from_ipc(offer.read_bytes())
        with _client(url, enterprise, key) as client:
            answers = client.encrypted_group_sum(
                dataset=dataset,
                purpose=purpose,
                session=session,
                offer=offered,
                identifiers=identifiers,
                values=values,
                context=secret,
            )
        if as_json:
            print(json.dumps(answers, indent=2))
        else:
            columns = ["group", "sum_estimate", "sum_variance_bound", "count_estimate"]
            console.print(rows_table(columns, answers, title=f"session {session}"))


@encrypted_app.command("linear-score")
def linear_score_command(
    url: UrlOpt,
    enterprise: EnterpriseOpt,
    key: KeyOpt,
    dataset: Annotated[str, typer.Option(help="Dataset name from the catalogue")],
    purpose: Annotated[str, typer.Option(help="Declared purpose, as licensed")],
    dimension: Annotated[str, typer.Option(help="Public dimension to group by")],
    features: Annotated[str, typer.Option(help="Feature columns, comma-separated")],
    weights: Annotated[str, typer.Option(help="Your model's weights, comma-separated")],
    context: Annotated[Path, typer.Option(help="Your secret context file")],
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON")] = False,
) -> None:
    """Per group, the debiased sum of your linear model's scores; the weights are sent
    encrypted."""

    from indomain.errors import ConfigError

    with errors():
        names = [f.strip() for f in features.split(",") if f.strip()]
        try:
            values = [float(w) for w in weights.split(",")]
        except ValueError:
            raise ConfigError("--weights must be numbers separated by commas") from None
        if len(values) != len(names):
            raise ConfigError("give one weight per feature")
        secret = _secret_context(context)
        with _client(url, enterprise, key) as client:
            answers = client.encrypted_linear_score(
                dataset=dataset,
                purpose=purpose,
                dimension=dimension,
                features=names,
                weights=values,
                context=secret,
            )
        rows = [
            {"group": g, "score_estimate": e, "score_variance_bound": v}
            for g, (e, v) in sorted(answers.items())
        ]
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            console.print(rows_table(list(rows[0]), rows, title="encrypted linear score"))
