"""The enclave worker: the only process that reads the master key or unwraps a dataset key.

It is started per operation as ``python -m enclave._worker``, reads one JSON request on
stdin and writes one JSON answer on stdout. Before touching keys it drops what it does not
need: no core dumps, not ptrace-able, and (where the kernel allows) a fresh network
namespace with no interfaces. Errors from the engine are reported by type only, because an
engine message can quote a value from a row.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import resource
import secrets
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from computations import DatasetSpec, Plan, get_computation, set_enclave_secret, table_to_ipc
from enclave import _engine
from enclave._errors import DatasetError, EnclaveError
from enclave._keys import (
    KEY_BYTES,
    load_master_key,
    load_signing_key,
    unwrap_dataset_key,
    wrap_dataset_key,
)
from enclave._records import DatasetRecord, RunAttestation, sha256_digest
from indomain.errors import IndomainError

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_SET_DUMPABLE = 4
_ALIAS = "ds"


def _harden(cpu_seconds: int) -> bool:
    """Apply process limits; return whether the network namespace could be isolated."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    for flags in (_CLONE_NEWNET, _CLONE_NEWUSER | _CLONE_NEWNET):
        if libc.unshare(flags) == 0:
            return True
    return False


def _try_connect(address: list[Any] | None) -> bool | None:
    """Diagnostics: can this worker open a TCP connection to ``address``?"""
    if not address:
        return None
    try:
        with socket.create_connection((str(address[0]), int(address[1])), timeout=2):
            return True
    except OSError:
        return False


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _import(request: dict[str, Any]) -> dict[str, Any]:
    keys_dir = Path(request["keys_dir"])
    datasets_dir = Path(request["datasets_dir"])
    source = Path(request["source"])
    spec = DatasetSpec.from_manifest(request["spec"], name=request["name"])
    reader = {"csv": "read_csv", "parquet": "read_parquet"}[request["format"]]
    master = load_master_key(keys_dir / "master.key")
    dataset_key = secrets.token_bytes(KEY_BYTES)

    final = datasets_dir / f"{spec.name}.duckdb"
    tmp = datasets_dir / f".{spec.name}.duckdb.importing"
    for stale in (tmp, tmp.with_name(tmp.name + ".wal")):
        stale.unlink(missing_ok=True)
    con = _engine.connect(datasets_dir / ".extensions")
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}(?)", [str(source)]).fetchall()
        file_columns = [row[0] for row in described]
        declared = [c.name for c in spec.columns]
        missing = [c for c in file_columns if c not in declared]
        if missing:
            raise DatasetError(
                f"columns {missing} of {source.name} are not classified in the manifest; "
                "every column needs a class (identifier, quasi_identifier, sensitive, public)"
            )
        absent = [c for c in declared if c not in file_columns]
        if absent:
            raise DatasetError(f"the manifest names columns {absent} that {source.name} lacks")
        _engine.attach_encrypted(con, tmp, dataset_key, alias=_ALIAS, read_only=False)
        table = f"{_ALIAS}.{_engine.quote_ident(spec.name)}"
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {reader}(?)", [str(source)])
        row_count = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        digest = _engine.content_hash(con, table)
        con.execute(f"CREATE TABLE {_ALIAS}.{_engine.META_TABLE} (key VARCHAR, value VARCHAR)")
        # Measured here, from the data, so a run can trust it: with at most one row per
        # privacy unit, contribution bounding needs no per-unit aggregation (much faster).
        unit = _engine.quote_ident(spec.privacy_unit)
        (unique,) = con.execute(
            f"SELECT COUNT({unit}) = COUNT(DISTINCT {unit}) FROM {table}"
        ).fetchone()
        con.execute(
            f"INSERT INTO {_ALIAS}.{_engine.META_TABLE} VALUES ('dataset', ?), ('content_hash', ?),"
            " ('unit_unique', ?)",
            [spec.name, digest, "true" if unique else "false"],
        )
        types = {row[0]: row[1] for row in con.execute(f"DESCRIBE {table}").fetchall()}
        con.execute(f"CHECKPOINT {_ALIAS}")
        con.execute(f"DETACH {_ALIAS}")
    finally:
        con.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    dir_fd = os.open(datasets_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return {
        "name": spec.name,
        "file": final.name,
        "wrapped_key": base64.b64encode(wrap_dataset_key(master, dataset_key, spec.name)).decode(),
        "content_hash": digest,
        "row_count": int(row_count),
        "column_types": types,
    }


def _run(request: dict[str, Any], network_isolated: bool) -> dict[str, Any]:
    keys_dir = Path(request["keys_dir"])
    datasets_dir = Path(request["datasets_dir"])
    record = DatasetRecord.from_json(request["record"])
    plan = Plan.from_json(request["plan"])
    if plan.dataset != record.name:
        raise EnclaveError(f"plan is for dataset {plan.dataset!r}, not {record.name!r}")
    computation = get_computation(plan.computation)
    master = load_master_key(keys_dir / "master.key")
    set_enclave_secret(master)  # PSI session keys are wrapped under a key derived from it
    key = unwrap_dataset_key(master, base64.b64decode(record.wrapped_key), record.name)
    con = _engine.connect(datasets_dir / ".extensions")
    try:
        _engine.attach_encrypted(con, datasets_dir / record.file, key, alias=_ALIAS, read_only=True)
        con.execute(f"USE {_ALIAS}")
        stored = dict(con.execute(f"SELECT key, value FROM {_engine.META_TABLE}").fetchall())
        if stored.get("dataset") != record.name or stored.get("content_hash") != (
            record.content_hash
        ):
            raise DatasetError(
                f"the encrypted file of dataset {record.name!r} does not match its record"
            )
        _engine.lock_down(con)
        result = computation.execute(
            plan,
            con,
            table=record.name,
            dataset=record.spec,
            unit_unique=stored.get("unit_unique") == "true",
        )
    finally:
        con.close()
    ipc = table_to_ipc(result.table)
    attestation = RunAttestation(
        enclave_kind="software-process",
        network_isolated=network_isolated,
        job_id=request["job_id"],
        computation=computation.name,
        code_hash=computation.code_hash,
        dataset=record.name,
        dataset_content_hash=stored["content_hash"],
        policy_version=request["policy_version"],
        params_digest=plan.params_digest,
        result_digest=sha256_digest(ipc),
        time=_now(),
    )
    signature = attestation.sign(load_signing_key(keys_dir / "enclave.key"))
    return {
        "result_ipc": base64.b64encode(ipc).decode(),
        "attestation": attestation.model_dump(),
        "signature": signature,
        "suppressed_groups": result.suppressed_groups,
        "notes": list(result.notes),
    }


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but the answer may reach the parent's pipe
    request = json.loads(sys.stdin.buffer.read())
    isolated = _harden(int(request.get("cpu_seconds", 600)))
    try:
        if request["op"] == "import":
            answer: dict[str, Any] = {"ok": True, **_import(request)}
        elif request["op"] == "run":
            answer = {"ok": True, **_run(request, isolated)}
        elif request["op"] == "probe":
            answer = {
                "ok": True,
                "network_isolated": isolated,
                "pid": os.getpid(),
                "reached": _try_connect(request.get("connect_to")),
            }
        else:
            answer = {"ok": False, "error": {"kind": "EnclaveError", "message": "unknown op"}}
    except IndomainError as exc:
        answer = {"ok": False, "error": {"kind": type(exc).__name__, "message": str(exc)}}
        for attr in ("rule", "reason", "fragment"):
            if hasattr(exc, attr):
                answer["error"][attr] = getattr(exc, attr)
    except Exception as exc:
        detail = str(exc) if request.get("op") == "import" else ""
        answer = {
            "ok": False,
            "error": {
                "kind": "EngineError",
                "message": f"the engine failed ({type(exc).__name__})"
                + (f": {detail}" if detail else ""),
            },
        }
    out.write(json.dumps(answer))
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
