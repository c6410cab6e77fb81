"""The enclave worker: the only process that reads the master key or unwraps a dataset key.

It is started per operation as ``python -m enclave._worker`` (ahead of use, by the pool in
``_pool.py``). Before anything else it drops what it does not need: no core dumps, not
ptrace-able, and (where the kernel allows) a fresh network namespace with no interfaces.
Then it imports and connects what every job needs, writes one ready line, reads one JSON
request on stdin, writes one JSON answer on stdout and exits. A run's failures all read
the same (:data:`RUN_FAILED`), because an engine message, or even its kind, can depend on
a row.
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

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from computations import (
    DatasetSpec,
    Plan,
    QueryRefused,
    code_hash_of,
    join_partner,
    runner_for,
    set_enclave_secret,
    stored_clamps,
    stored_codes,
    table_to_ipc,
    warm_up,
)
from enclave import _engine
from enclave._errors import DatasetError, EnclaveError, EnclaveKeyError
from enclave._keys import (
    KEY_BYTES,
    load_master_key,
    load_signing_key,
    unwrap_dataset_key,
    wrap_dataset_key,
)
from enclave._pool import set_normal_scheduling
from enclave._records import DatasetRecord, RunAttestation, sha256_digest
from indomain.errors import IndomainError

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4
_ALIAS = "ds"
_PARTNER = "partner_ds"  # where a join's partner dataset is attached


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


def _import(request: dict[str, Any], con: Any) -> dict[str, Any]:
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
        mistyped = spec.key_type_problems({row[0]: row[1] for row in described})
        if mistyped:
            raise DatasetError("; ".join(mistyped))
        _engine.attach_encrypted(con, tmp, dataset_key, alias=_ALIAS, read_only=False)
        table = f"{_ALIAS}.{_engine.quote_ident(spec.name)}"
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {reader}(?)", [str(source)])
        row_count = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        digest = _engine.content_hash(con, table)
        con.execute(f"CREATE TABLE {_ALIAS}.{_engine.META_TABLE} (key VARCHAR, value VARCHAR)")
        # Measured here, from the data, so a run can trust it: with at most one row per
        # privacy unit, contribution bounding needs no per-unit aggregation (much faster).
        # With no row lacking a unit, the run needs no filter on it, and a query whose
        # units are unique then need not read the unit column at all.
        unit = _engine.quote_ident(spec.privacy_unit)
        unique, complete = con.execute(
            f"SELECT COUNT({unit}) = COUNT(DISTINCT {unit}), COUNT(*) = COUNT({unit}) FROM {table}"
        ).fetchone()
        ranges = _value_ranges(con, table, spec)
        types = {row[0]: row[1] for row in con.execute(f"DESCRIBE {table}").fetchall()}
        # A clamped copy of each column some value takes outside its bounds, so that a run
        # reads it instead of clamping every row (computations' stored_clamps). After the
        # content hash and the column types: the copies are derived, not the dataset.
        clamps = stored_clamps(
            spec, column_types=types, value_ranges={c: (lo, hi) for c, (lo, hi) in ranges.items()}
        )
        # And each keyed dimension's key codes, so that a run with public keys groups by a
        # small integer instead of the value (computations' stored_codes). All copies are
        # written in one pass over the table.
        codes = stored_codes(spec, column_types=types)
        derived = [(copy, "BIGINT", clamp) for copy, clamp, _ in clamps.values()]
        derived += [(code.name, code.code_type, code.sql()) for code in codes]
        for copy, copy_type, _ in derived:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {_engine.quote_ident(copy)} {copy_type}")
        if derived:
            sets = ", ".join(f"{_engine.quote_ident(copy)} = {sql}" for copy, _, sql in derived)
            con.execute(f"UPDATE {table} SET {sets}")
        con.execute(
            f"INSERT INTO {_ALIAS}.{_engine.META_TABLE} VALUES ('dataset', ?), ('content_hash', ?),"
            " ('unit_unique', ?), ('unit_complete', ?), ('value_ranges', ?), ('clamped', ?),"
            " ('coded', ?)",
            [
                spec.name,
                digest,
                _flag(unique),
                _flag(complete),
                json.dumps(ranges),
                json.dumps({c: list(bounds) for c, (_, _, bounds) in clamps.items()}),
                json.dumps({code.column: code.record() for code in codes}),
            ],
        )
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


def _flag(value: object) -> str:
    return "true" if value else "false"


def _value_ranges(con: Any, table: str, spec: DatasetSpec) -> dict[str, list[int]]:
    """The smallest and largest value of each integer column with declared bounds: a run
    need not clamp a column that lies within its bounds (clamping is then the identity)."""
    bounded = [c.name for c in spec.columns if c.bounds is not None]
    if not bounded:
        return {}
    parts = ", ".join(
        f"MIN({_engine.quote_ident(c)}), MAX({_engine.quote_ident(c)})" for c in bounded
    )
    found = con.execute(f"SELECT {parts} FROM {table}").fetchone()
    ranges = {}
    for i, column in enumerate(bounded):
        low, high = found[2 * i], found[2 * i + 1]
        # Integers only (bool is an int in Python, but not a number to clamp).
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            ranges[column] = [low, high]
    return ranges


def _stored_ranges(raw: str | None) -> dict[str, tuple[int, int]]:
    """``value_ranges`` (or ``clamped``: the bounds of each stored clamped copy) from the
    meta table; absent or unreadable reads as none measured (or none stored)."""
    try:
        data = json.loads(raw) if raw else {}
        return {
            str(column): (int(pair[0]), int(pair[1]))
            for column, pair in data.items()
            if len(pair) == 2 and all(type(v) is int for v in pair)
        }
    except (ValueError, TypeError, AttributeError):
        return {}


def _stored_codes(raw: str | None) -> dict[str, dict[str, Any]]:
    """``coded`` from the meta table: column -> ``{"type", "keys"}`` of its key codes;
    absent or unreadable reads as none stored (the run then groups by the values)."""
    try:
        data = json.loads(raw) if raw else {}
        return {
            str(column): {"type": entry["type"], "keys": entry["keys"]}
            for column, entry in data.items()
            if isinstance(entry, dict) and isinstance(entry.get("keys"), list)
        }
    except (ValueError, TypeError, AttributeError, KeyError):
        return {}


def _run(request: dict[str, Any], network_isolated: bool, con: Any) -> dict[str, Any]:
    keys_dir = Path(request["keys_dir"])
    datasets_dir = Path(request["datasets_dir"])
    record = DatasetRecord.from_json(request["record"])
    plan = Plan.from_json(request["plan"])
    if plan.dataset != record.name:
        raise EnclaveError(f"plan is for dataset {plan.dataset!r}, not {record.name!r}")
    computation = runner_for(plan)  # an approved module's plan runs the module runner
    master = load_master_key(keys_dir / "master.key")
    set_enclave_secret(master)  # PSI session keys are wrapped under a key derived from it
    key = unwrap_dataset_key(master, base64.b64decode(record.wrapped_key), record.name)
    partner = _partner_record(request, plan)
    partner_stored: dict[str, str] = {}
    # The connection is not closed: this process answers and exits, and closing it first
    # (freeing the decrypted blocks) cost 5-14 ms before the answer. Nothing runs on it
    # after the computation.
    _engine.attach_encrypted(con, datasets_dir / record.file, key, alias=_ALIAS, read_only=True)
    con.execute(f"USE {_ALIAS}")
    stored = dict(con.execute(f"SELECT key, value FROM {_engine.META_TABLE}").fetchall())
    if stored.get("dataset") != record.name or stored.get("content_hash") != (record.content_hash):
        raise DatasetError(
            f"the encrypted file of dataset {record.name!r} does not match its record"
        )
    extra: dict[str, Any] = {}
    if partner is not None:
        # The partner is decrypted with its own wrapped key (bound to its name).
        partner_key = unwrap_dataset_key(
            master, base64.b64decode(partner.wrapped_key), partner.name
        )
        _engine.attach_encrypted(
            con, datasets_dir / partner.file, partner_key, alias=_PARTNER, read_only=True
        )
        partner_stored = dict(
            con.execute(f"SELECT key, value FROM {_PARTNER}.{_engine.META_TABLE}").fetchall()
        )
        if partner_stored.get("dataset") != partner.name or partner_stored.get("content_hash") != (
            partner.content_hash
        ):
            raise DatasetError(
                f"the encrypted file of dataset {partner.name!r} does not match its record"
            )
        extra = {"partner": partner.spec, "partner_table": f"{_PARTNER}.{partner.name}"}
    elif computation.name == "aggregate":
        # Datasets imported before this fact was measured lack it: they keep the filter.
        extra = {
            "unit_complete": stored.get("unit_complete") == "true",
            "value_ranges": _stored_ranges(stored.get("value_ranges")),
            "clamped": _stored_ranges(stored.get("clamped")),  # the same shape: column: [lo, hi]
            "coded": _stored_codes(stored.get("coded")),
        }
    _engine.lock_down(con)
    result = computation.execute(
        plan,
        con,
        table=record.name,
        dataset=record.spec,
        unit_unique=stored.get("unit_unique") == "true",
        **extra,
    )
    ipc = table_to_ipc(result.table)
    attestation = RunAttestation(
        enclave_kind="software-process",
        network_isolated=network_isolated,
        job_id=request["job_id"],
        computation=computation.name,
        code_hash=code_hash_of(plan),  # an approved module: its approved hash
        dataset=record.name,
        dataset_content_hash=stored["content_hash"],
        policy_version=request["policy_version"],
        params_digest=plan.params_digest,
        result_digest=sha256_digest(ipc),
        time=_now(),
        partner_dataset=partner.name if partner is not None else "",
        partner_content_hash=partner_stored.get("content_hash", ""),
    )
    signature = attestation.sign(load_signing_key(keys_dir / "enclave.key"))
    return {
        "result_ipc": base64.b64encode(ipc).decode(),
        "attestation": attestation.model_dump(),
        "signature": signature,
        "suppressed_groups": result.suppressed_groups,
        "notes": list(result.notes),
    }


def _partner_record(request: dict[str, Any], plan: Plan) -> DatasetRecord | None:
    """The record of the dataset ``plan`` joins to, which the request must carry."""
    wanted = join_partner(plan)
    raw = request.get("partner")
    if wanted is None:
        if raw is not None:
            raise EnclaveError("the request names a partner dataset but the plan joins none")
        return None
    if raw is None:
        raise EnclaveError(f"the plan joins dataset {wanted!r}: the request must carry it")
    partner = DatasetRecord.from_json(raw)
    if partner.name != wanted:
        raise EnclaveError(f"the plan joins {wanted!r}, the request carries {partner.name!r}")
    return partner


#: What the parent hears of any run that failed once the dataset was opened: one message,
#: whatever the exception, because which error a query hits (overflow, conversion, a
#: timeout of the engine) can depend on a row. docs/security.md, "Error side channels".
RUN_FAILED = (
    "the computation failed inside the enclave after the dataset was opened; details are "
    "withheld because they could depend on the data, and the job's budget stays spent"
)


def failure(exc: BaseException, *, op: str) -> dict[str, Any]:
    """The error answer for ``exc``: our refusals keep their rule, a run's other failures
    all read the same (see :data:`RUN_FAILED`), an import says what was wrong."""
    if isinstance(exc, QueryRefused):
        return {
            "kind": "QueryRefused",
            "message": str(exc),
            "rule": exc.rule,
            "reason": exc.reason,
            "fragment": exc.fragment,
        }
    if op == "run" and not isinstance(exc, DatasetError | EnclaveKeyError):
        return {"kind": "ComputationError", "message": RUN_FAILED}
    if isinstance(exc, IndomainError):
        return {"kind": type(exc).__name__, "message": str(exc)}
    detail = f": {exc}" if op == "import" else ""
    return {"kind": "EngineError", "message": f"the engine failed ({type(exc).__name__}){detail}"}


def _options(argv: list[str]) -> tuple[int, Path | None]:
    """``--cpu-seconds N`` and ``--extensions DIR`` (where DuckDB's extensions live)."""
    cpu_seconds, extensions = 600, None
    for flag, value in zip(argv[::2], argv[1::2], strict=False):
        if flag == "--cpu-seconds":
            cpu_seconds = int(value)
        elif flag == "--extensions":
            extensions = Path(value)
    return cpu_seconds, extensions


def main(argv: list[str] | None = None) -> int:
    """Harden, warm up, say ready, then serve exactly one request from stdin."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but the protocol may reach the parent's pipe
    cpu_seconds, extensions = _options(sys.argv[1:] if argv is None else argv)
    isolated = _harden(cpu_seconds)  # before anything is read: no key is in memory yet
    warm: Any = None
    try:
        warm_up()
        _warm_crypto()
        if extensions is not None:
            warm = _engine.connect(extensions)
    except Exception:  # warming is an optimisation: the request path starts afresh
        warm = None
    ready = {"ready": True, "pid": os.getpid(), "network_isolated": isolated}
    out.write(json.dumps(ready) + "\n")
    out.flush()
    raw = sys.stdin.buffer.read()
    if not raw.strip():
        return 0  # the parent went away (or closed its pool) before sending a request
    set_normal_scheduling(0)  # pre-started under SCHED_IDLE (_pool.py): now it has work
    request: dict[str, Any] = {}
    try:
        request = json.loads(raw)
        if request["op"] == "import":
            answer: dict[str, Any] = {"ok": True, **_import(request, _warm_for(warm, request))}
        elif request["op"] == "run":
            answer = {"ok": True, **_run(request, isolated, _warm_for(warm, request))}
        elif request["op"] == "probe":
            answer = {
                "ok": True,
                "network_isolated": isolated,
                "pid": os.getpid(),
                "dumpable": _dumpable(),
                "core_limit": resource.getrlimit(resource.RLIMIT_CORE)[1],
                "reached": _try_connect(request.get("connect_to")),
                "scheduling": _scheduling(),
            }
        else:
            answer = {"ok": False, "error": {"kind": "EnclaveError", "message": "unknown op"}}
    except Exception as exc:
        op = request.get("op") if isinstance(request, dict) else None
        answer = {"ok": False, "error": failure(exc, op=str(op))}
    out.write(json.dumps(answer))
    out.flush()
    return 0


def _warm_crypto() -> None:
    """Run each primitive a run uses once, on throwaway keys (never the enclave's: none is
    read before a request): the first HKDF, AES-GCM and Ed25519 calls of a process cost
    about 3 ms more than later ones (OpenSSL set-up), which a job would otherwise wait for.
    """
    throwaway = secrets.token_bytes(KEY_BYTES)
    # HKDF directly: set_enclave_secret would leave a throwaway wrapping key in place.
    HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"warm").derive(throwaway)
    unwrap_dataset_key(throwaway, wrap_dataset_key(throwaway, throwaway, "warm"), "warm")
    Ed25519PrivateKey.generate().sign(throwaway)


def _warm_for(warm: Any, request: dict[str, Any]) -> Any:
    """The pre-made connection if it uses this request's extension folder, else a new one."""
    wanted = Path(request["datasets_dir"]) / ".extensions"
    if warm is not None and Path(_engine.extension_dir(warm)) == wanted:
        return warm
    if warm is not None:
        warm.close()
    return _engine.connect(wanted)


def _scheduling() -> list[int]:
    """The scheduling policies of this process's threads (diagnostics and tests)."""
    found = set()
    for task in os.listdir("/proc/self/task") if sys.platform == "linux" else ():
        try:
            found.add(os.sched_getscheduler(int(task)))
        except OSError:
            continue  # the thread ended meanwhile
    return sorted(found)


def _dumpable() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))


if __name__ == "__main__":
    status = main()
    # The answer is written and flushed. Close our end of the stdout pipe now, so the parent
    # reads end of file at once rather than when the kernel has torn this process down
    # (unmapping a run's memory: 10-15 ms at 10M rows), and skip the interpreter's teardown
    # (a few hundred ms with DuckDB, Arrow and OpenDP loaded) altogether.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os._exit(status)
