"""The walking skeleton end to end, as the README tells it: the CLI for every role, the
gateway as its own process on loopback, and an auditor who catches a changed byte."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ledger
from indomain.demo_data import write_residents
from tests._ports import free_port

pytestmark = pytest.mark.slow

DEMO_POLICIES = Path(__file__).resolve().parents[2] / "indomain" / "demo" / "policies"
SQL = (
    "SELECT district, COUNT(*) AS residents, AVG(income) AS mean_income "
    "FROM residents GROUP BY district"
)


def indomain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indomain.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("e2e")
    root, keys = base / "home", base / "acme"
    data, manifest = write_residents(base / "source", 5000)
    assert indomain("init", "--home", str(root)).returncode == 0
    imported = indomain(
        "dataset",
        "import",
        str(data),
        "--name",
        "residents",
        "--manifest",
        str(manifest),
        "--home",
        str(root),
    )
    assert imported.returncode == 0, imported.stderr
    assert indomain("client", "keygen", "--out", str(keys)).returncode == 0
    registered = indomain(
        "enterprise",
        "register",
        "Acme Credit",
        "--public-key",
        str(keys / "enterprise.pub"),
        "--home",
        str(root),
    )
    assert registered.returncode == 0, registered.stderr
    assert indomain("policy", "validate", str(DEMO_POLICIES)).returncode == 0
    applied = indomain("policy", "apply", str(DEMO_POLICIES), "--home", str(root))
    assert applied.returncode == 0, applied.stderr

    port = free_port()
    log = (base / "gateway.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "indomain.cli", "serve", "--home", str(root), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/v1/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.1)
    client_env = {
        "INDOMAIN_URL": url,
        "INDOMAIN_ENTERPRISE": "Acme Credit",
        "INDOMAIN_KEY": str(keys / "enterprise.key"),
        "INDOMAIN_LEDGER_KEY": (root / "keys" / "ledger.pub").read_text().strip(),
    }
    try:
        yield {"root": root, "env": client_env, "url": url}
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_init_makes_private_key_files_and_refuses_to_overwrite(home: dict[str, object]) -> None:
    root = home["root"]
    assert isinstance(root, Path)
    for name in ("ledger.key", "master.key", "enclave.key"):
        assert (root / "keys" / name).stat().st_mode & 0o777 == 0o600
    again = indomain("init", "--home", str(root))
    assert again.returncode == 2
    assert "never overwrites" in again.stderr


def test_an_allowed_job_returns_a_verified_result(home: dict[str, object]) -> None:
    env = home["env"]
    assert isinstance(env, dict)
    submitted = indomain(
        "client",
        "submit",
        "--dataset",
        "residents",
        "--purpose",
        "credit_risk_model",
        "--sql",
        SQL,
        "--wait",
        env=env,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert job_id.startswith("job_")
    result = indomain("client", "result", job_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "receipt verified" in result.stderr
    rows = json.loads(result.stdout)["rows"]
    # Counts are noisy (differential privacy): near the 5000 residents, not exactly.
    assert abs(sum(r["residents"] for r in rows) - 5000) <= 200
    assert {"district", "residents", "mean_income"} == set(rows[0])


def test_a_denied_job_exits_3_with_the_reason(home: dict[str, object]) -> None:
    env = home["env"]
    assert isinstance(env, dict)
    denied = indomain(
        "client",
        "submit",
        "--dataset",
        "residents",
        "--purpose",
        "direct_marketing",
        "--sql",
        SQL,
        env=env,
    )
    assert denied.returncode == 3
    assert "no policy permits" in denied.stderr


def test_refused_sql_exits_non_zero_with_the_rule(home: dict[str, object]) -> None:
    env = home["env"]
    assert isinstance(env, dict)
    refused = indomain(
        "client",
        "submit",
        "--dataset",
        "residents",
        "--purpose",
        "credit_risk_model",
        "--sql",
        "SELECT * FROM residents",
        env=env,
    )
    assert refused.returncode == 1
    assert "refused" in refused.stderr


def test_the_auditor_verifies_and_then_catches_one_changed_byte(
    home: dict[str, object], tmp_path: Path
) -> None:
    root = home["root"]
    assert isinstance(root, Path)
    verified = indomain("ledger", "verify", "--home", str(root))
    assert verified.returncode == 0, verified.stderr
    assert "ledger verified" in verified.stdout
    shown = indomain("ledger", "show", "--home", str(root), "--json")
    types = [json.loads(line)["type"] for line in shown.stdout.splitlines()]
    assert types[:4] == [
        "sandbox.created",  # entry 0 records the enclave key auditors check runs with
        "dataset.imported",
        "enterprise.registered",
        "policy.applied",
    ]
    assert {"job.accepted", "run.completed", "job.denied", "job.refused"} <= set(types)

    # Tamper with a copy so the other tests keep a good ledger.
    copy = tmp_path / "home"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    target = 3  # policy.applied
    db = sqlite3.connect(copy / "ledger" / "ledger.sqlite")
    table, index_col, data_col = _entries_table(db)
    (data,) = db.execute(
        f"SELECT {data_col} FROM {table} WHERE {index_col} = ?", (target,)
    ).fetchone()
    changed = bytearray(data)
    position = bytes(data).index(b"policy_version") + 3
    changed[position] ^= 0x01
    db.execute(f"UPDATE {table} SET {data_col} = ? WHERE {index_col} = ?", (bytes(changed), target))
    db.commit()
    db.close()
    broken = indomain("ledger", "verify", "--home", str(copy))
    assert broken.returncode == 4
    assert f"entry {target}" in broken.stderr


def _entries_table(db: sqlite3.Connection) -> tuple[str, str, str]:
    """Find the ledger's entry table without depending on more than its shape."""
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
        if "entries" in name and len(columns) >= 2:
            blob = next(c for c in columns if c in ("data", "entry", "bytes", "canonical"))
            return name, columns[0], blob
    raise AssertionError("no entries table in the ledger storage")


def test_a_truncated_ledger_is_caught_against_a_checkpoint_the_auditor_kept(
    home: dict[str, object], tmp_path: Path
) -> None:
    root, url = home["root"], home["url"]
    assert isinstance(root, Path) and isinstance(url, str)
    kept = tmp_path / "kept.checkpoint"
    kept.write_text(httpx.get(url + "/v1/ledger/checkpoint").text)
    copy = tmp_path / "home"
    subprocess.run(["cp", "-a", str(root), str(copy)], check=True)
    db = sqlite3.connect(copy / "ledger" / "ledger.sqlite")
    (size,) = db.execute("SELECT count(*) FROM entries").fetchone()
    # The operator drops the last entry and every trace of it: hashes and checkpoint.
    db.execute("DELETE FROM entries WHERE idx = ?", (size - 1,))
    db.execute("DELETE FROM checkpoints WHERE size = ?", (size,))
    first_hash_of_last_leaf = ledger.stored_hash_index(0, size - 1)
    db.execute("DELETE FROM hashes WHERE idx >= ?", (first_hash_of_last_leaf,))
    db.commit()
    db.close()
    alone = indomain("ledger", "verify", "--home", str(copy))
    assert alone.returncode == 0, alone.stderr  # a clean cut looks whole on its own
    against = indomain("ledger", "verify", "--home", str(copy), "--trusted", str(kept))
    assert against.returncode == 4, against.stdout + against.stderr
    good = indomain("ledger", "verify", "--home", str(root), "--trusted", str(kept))
    assert good.returncode == 0, good.stderr
