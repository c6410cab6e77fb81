"""Only the worker process reads the enclave master key: the gateway process never does."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gateway import Client

_opened: list[str] = []
_watching = False


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if _watching and event == "open" and args and isinstance(args[0], str | bytes | Path):
        _opened.append(str(args[0]))


sys.addaudithook(_hook)


def test_the_gateway_process_never_opens_the_master_key(world: Any) -> None:
    global _watching
    _opened.clear()
    _watching = True
    try:
        with Client(world.url, enterprise="Acme Credit", private_key=world.acme_key) as client:
            job_id = client.submit(
                computation="aggregate",
                dataset="residents",
                purpose="credit_risk_model",
                params={"sql": "SELECT sex, COUNT(*) AS n FROM residents GROUP BY sex"},
            )["job_id"]
            assert client.wait(job_id)["status"] == "succeeded"
            result = client.result(job_id, ledger_key=world.ledger_key)
    finally:
        _watching = False
    assert result.table.num_rows == 2
    assert _opened, "the audit hook saw no file opens at all; it is not watching"
    assert not [p for p in _opened if p.endswith(("master.key", "enclave.key"))]
