"""The demo's encrypted step: an enterprise joins its borrowers to a public registry by
private set intersection and gets per-group sums of its own values, encrypted under its
own TenSEAL key, then debiased (docs/threat-model.md).

The registry is a small pilot (:data:`PILOT_ROWS` residents): a PSI session blinds every
identifier of its dataset, which would dominate the demo's time on the full registry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from gateway import Client

PILOT: Final = "residents_pilot"
PILOT_ROWS: Final = 2_000
PILOT_SEED: Final = 20270101
PURPOSE: Final = "credit_risk_model"
DIMENSION: Final = "age_band"
#: How many of the enterprise's borrowers are in the registry, and how many are not.
MATCHED: Final = 1_400
STRANGERS: Final = 100
#: CKKS n = 4096 (128-bit): the smaller ring keeps the key and uploads small. Products
#: are not rescaled, so the values are kept small: loan amounts in thousands.
_RING: Final = (4096, [35, 34, 40], 2**26)


def _loan(i: int) -> float:
    """A made-up loan amount in thousands (5 to 44), the same at every run."""
    return float(5 + (i * 7919) % 40)


def _secret_context() -> Any:
    import tenseal as ts

    degree, bits, scale = _RING
    context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=bits)
    context.global_scale = scale
    context.generate_galois_keys()
    return context


def encrypted_step(client: Client, band_of: Mapping[Any, str], console: Console) -> None:
    """Open a PSI session on :data:`PILOT` by age band, run ``encrypted_group_sum`` with a
    fresh TenSEAL key and print the debiased sums beside the plaintext truth.

    ``band_of`` maps the pilot's resident ids to their age band: only the demo knows both
    sides; neither the sandbox nor the enterprise sees it. Raises what the client raises.
    """
    console.print(
        f"\n[bold cyan]licensed enterprise[/] · encrypted view: loan totals of its "
        f"borrowers by {DIMENSION}, joined to {PILOT} by private set intersection"
    )
    started = time.monotonic()
    context = _secret_context()
    console.print("  made a CKKS key (n = 4096); only its public part is uploaded")
    session, offer = client.open_psi_session(dataset=PILOT, purpose=PURPOSE, dimension=DIMENSION)
    groups = sorted(set(offer.column("group").to_pylist()))
    console.print(
        f"  PSI session {session}: the sandbox offered {offer.num_rows:,} blinded points "
        f"in {len(groups)} shuffled, padded lists"
    )
    borrowers = [*sorted(band_of)[:MATCHED], *(f"not-a-resident-{i}" for i in range(STRANGERS))]
    loans = [_loan(i) for i in range(len(borrowers))]
    answers = client.encrypted_group_sum(
        dataset=PILOT,
        purpose=PURPOSE,
        session=session,
        offer=offer,
        identifiers=borrowers,
        values=loans,
        context=context,
    )
    table = Table(
        DIMENSION,
        "loans (k), debiased",
        "± 2 sd",
        "plaintext truth",
        "borrowers, debiased",
        "truth",
        title=f"encrypted_group_sum over {len(borrowers):,} borrowers ({STRANGERS} not in {PILOT})",
    )
    for row in answers:
        band = row["group"]
        truth = sum(v for b, v in zip(borrowers, loans, strict=True) if band_of.get(b) == band)
        count = sum(1 for b in borrowers if band_of.get(b) == band)
        table.add_row(
            band,
            f"{row['sum_estimate']:,.0f}",
            f"{2 * math.sqrt(row['sum_variance_bound']):,.0f}",
            f"{truth:,.0f}",
            f"{row['count_estimate']:,.0f} ± {2 * math.sqrt(row['count_variance_bound']):,.0f}",
            f"{count:,}",
        )
    console.print(table)
    console.print(
        f"  [dim]time:[/] {time.monotonic() - started:.1f} s for the session, the uploads "
        "(each checked in a separate process) and the job"
    )
    console.print(
        "  [dim]accuracy:[/] the error bar is the price of randomising each borrower's "
        "match and band locally; it shrinks as 1/sqrt(borrowers)"
    )
    console.print(
        "  [dim]privacy:[/] each borrower's match and band were randomised (epsilon 1 per "
        f"report) before meeting a ciphertext; the job is charged {len(groups)} x epsilon. "
        "The sandbox never saw a loan amount or which borrowers matched; the enterprise "
        "never saw a resident's band."
    )
