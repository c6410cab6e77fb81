"""The parent-side handle on the enclave: starts workers, keeps dataset records.

This process never reads the master key: it hands the worker paths and wrapped keys, and
gets back results, attestations and (on import) the newly wrapped key.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import tempfile
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from computations import ComputationError, DatasetSpec, Plan, QueryRefused, join_partner
from enclave._errors import DatasetError, EnclaveError, EnclaveKeyError, WorkerError
from enclave._keys import load_public_key, new_master_key, new_signing_key
from enclave._pool import WorkerPool
from enclave._records import DatasetRecord, RunAttestation, RunOutput

_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Enclave:
    """Runs approved plans over encrypted datasets in a separate worker process."""

    def __init__(
        self,
        *,
        keys_dir: Path,
        datasets_dir: Path,
        timeout_s: float = 900.0,
        pool_size: int = 2,
        cpu_seconds: int = 600,
    ) -> None:
        self.keys_dir = keys_dir
        self.datasets_dir = datasets_dir
        self.timeout_s = timeout_s
        env = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH") if k in os.environ}
        env["LANG"] = "C.UTF-8"
        # Workers are started ahead of use (enclave/_pool.py) but each serves one operation.
        # Two wait, so a job that follows another does not wait for a worker to start
        # (about 200 MB each while they wait).
        self.pool = WorkerPool(
            [
                sys.executable,
                "-m",
                "enclave._worker",
                "--cpu-seconds",
                str(cpu_seconds),
                "--extensions",
                str((datasets_dir / ".extensions").resolve()),
            ],
            env=env,
            size=pool_size,
        )
        weakref.finalize(self, self.pool.close)

    def close(self) -> None:
        """Stop the workers waiting for a request (a later operation starts one again)."""
        self.pool.close()

    def warm(self, *, timeout_s: float = 120.0) -> int:
        """Start the next worker(s) now and wait until they are ready; returns how many."""
        return self.pool.wait_ready(timeout_s=timeout_s)

    @classmethod
    def initialise(cls, *, keys_dir: Path, datasets_dir: Path) -> Enclave:
        """Create the master key and the attestation key pair (files 0600)."""
        keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        datasets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        new_master_key(keys_dir / "master.key")
        new_signing_key(keys_dir / "enclave.key", keys_dir / "enclave.pub")
        return cls(keys_dir=keys_dir, datasets_dir=datasets_dir)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key that verifies this enclave's run attestations."""
        return load_public_key(self.keys_dir / "enclave.pub")

    def verify_attestation(self, attestation: dict[str, Any], signature: str) -> RunAttestation:
        parsed = RunAttestation.model_validate(attestation)
        parsed.verify(signature, self.public_key)
        return parsed

    # datasets -------------------------------------------------------------------------

    def datasets(self) -> list[DatasetRecord]:
        return [
            DatasetRecord.from_json(json.loads(p.read_text()))
            for p in sorted(self.datasets_dir.glob("*.json"))
        ]

    def dataset(self, name: str) -> DatasetRecord:
        path = self.datasets_dir / f"{name}.json"
        if not _NAME.match(name) or not path.is_file():
            known = ", ".join(r.name for r in self.datasets()) or "none"
            raise DatasetError(f"unknown dataset {name!r} (known: {known})")
        return DatasetRecord.from_json(json.loads(path.read_text()))

    def import_dataset(self, source: Path, spec: DatasetSpec) -> DatasetRecord:
        """Load a CSV or Parquet file into a new encrypted DuckDB file; never replaces one."""
        if not source.is_file():
            raise DatasetError(f"no file at {source}")
        fmt = _FORMATS.get(source.suffix.lower())
        if fmt is None:
            raise DatasetError(f"{source.name}: only .csv and .parquet files can be imported")
        if (self.datasets_dir / f"{spec.name}.json").exists():
            raise DatasetError(f"dataset {spec.name!r} already exists; choose another name")
        answer = self._call(
            {
                "op": "import",
                "name": spec.name,
                "source": str(source.resolve()),
                "format": fmt,
                "spec": spec.to_manifest(),
            }
        )
        record = DatasetRecord(
            name=answer["name"],
            spec=spec,
            file=answer["file"],
            wrapped_key=answer["wrapped_key"],
            content_hash=answer["content_hash"],
            row_count=answer["row_count"],
            column_types=answer["column_types"],
            imported_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        _atomic_write(self.datasets_dir / f"{spec.name}.json", json.dumps(record.to_json()))
        return record

    # runs -----------------------------------------------------------------------------

    def run(self, plan: Plan, *, job_id: str, policy_version: str) -> RunOutput:
        """Execute an approved plan; raises QueryRefused/ComputationError/EnclaveError."""
        record = self.dataset(plan.dataset)
        request = {
            "op": "run",
            "record": record.to_json(),
            "plan": plan.to_json(),
            "job_id": job_id,
            "policy_version": policy_version,
        }
        partner = join_partner(plan)
        if partner is not None:  # a declared join: the worker decrypts both datasets
            request["partner"] = self.dataset(partner).to_json()
        answer = self._call(request)
        attestation = self.verify_attestation(answer["attestation"], answer["signature"])
        ipc = base64.b64decode(answer["result_ipc"])
        return RunOutput(
            result_ipc=ipc,
            attestation=attestation,
            signature=answer["signature"],
            suppressed_groups=answer["suppressed_groups"],
            notes=tuple(answer["notes"]),
        )

    def probe(self, connect_to: tuple[str, int] | None = None) -> dict[str, Any]:
        """Start a worker that only reports its isolation and, given an address, whether it
        could reach it over TCP (diagnostics and tests)."""
        return self._call({"op": "probe", "connect_to": list(connect_to) if connect_to else None})

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        request = {
            **request,
            "keys_dir": str(self.keys_dir.resolve()),
            "datasets_dir": str(self.datasets_dir.resolve()),
        }
        reply = self.pool.call(request, timeout_s=self.timeout_s)
        answer = reply.answer
        if answer is None:
            raise WorkerError(
                f"the enclave worker exited with status {reply.returncode} without an answer"
            )
        if not answer.get("ok"):
            raise _error_from(answer.get("error", {}))
        return answer


_KINDS: dict[str, type[Exception]] = {
    "DatasetError": DatasetError,
    "ComputationError": ComputationError,
    "WorkerError": WorkerError,
    "EnclaveKeyError": EnclaveKeyError,
}


def _error_from(error: dict[str, Any]) -> Exception:
    kind = error.get("kind", "EnclaveError")
    message = str(error.get("message", "the enclave worker failed"))
    if kind == "QueryRefused":
        return QueryRefused(
            str(error.get("rule", "")),
            str(error.get("reason", message)),
            str(error.get("fragment", "")),
        )
    return _KINDS.get(kind, EnclaveError)(message)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
