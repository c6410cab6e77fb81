"""``indomain demo`` end to end on a small registry: every step runs through the real
gateway, the encrypted step's debiased answers sit within their error bars of the
plaintext truth, and the auditor's verification of the kept home's ledger passes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.console import Console

import ledger
from indomain.demo_encrypted import MATCHED, STRANGERS
from indomain.demo_tour import run_demo

pytestmark = pytest.mark.slow

_ROW = re.compile(
    r"│ (18-29|30-44|45-59|60-74|75\+) +│ +(-?[\d,]+) +│ +([\d,]+) +│ +([\d,]+) +"
    r"│ +(-?[\d,]+) ± ([\d,]+) +│ +([\d,]+) +│"
)


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_the_demo_runs_every_step_and_its_encrypted_answers_hold(tmp_path: Path) -> None:
    console = Console(record=True, width=160, force_terminal=False)
    home = tmp_path / "home"
    run_demo(rows=3000, keep=home, console=console)
    text = console.export_text()

    assert "demo finished" in text
    assert f"encrypted_group_sum over {MATCHED + STRANGERS:,} borrowers" in text
    rows = _ROW.findall(text)
    assert [r[0] for r in rows] == ["18-29", "30-44", "45-59", "60-74", "75+"]
    total = 0.0
    for _, estimate, bar, truth, count, count_bar, true_count in rows:
        # The bar is 2 standard deviations, and the variance bound is the exact variance
        # (a flipped bit's variance is p·q whether it was set or not): three bars are 6 sd,
        # which ten assertions miss 2e-8 of runs. (Two bars, 4 sd, missed about 6e-4.)
        assert abs(_number(estimate) - _number(truth)) <= 3 * _number(bar)
        assert abs(_number(count) - _number(true_count)) <= 3 * _number(count_bar)
        total += _number(true_count)
    assert total == MATCHED  # the strangers are in no band

    # The auditor's step passed in the demo; verify the kept home's ledger again here.
    key = (home / "keys" / "ledger.pub").read_text().strip()
    report = ledger.verify_ledger(home / "ledger", key)
    assert f"verified {report.size} entries" in text
    with ledger.Ledger.open(home / "ledger") as log:
        entries = list(log.entries(0, log.size))
    accepted = {
        e.fields["job_id"]: e.fields["request"]["computation"]
        for e in entries
        if e.type == "job.accepted"
    }
    completed = [accepted.get(e.fields["job_id"]) for e in entries if e.type == "run.completed"]
    assert "psi" in completed and "encrypted_group_sum" in completed
    assert sum(e.type == "upload.stored" for e in entries) == 5  # with the shuffle proofs
