"""The Python client for licensed enterprises: sign, submit, wait, fetch and verify."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pyarrow as pa
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ledger
from computations import (
    debias_scores,
    frame_vectors,
    prepare_group_sum,
    read_group_sums,
    session_of,
    table_from_ipc,
)
from gateway._errors import GatewayError, Refused, TransportError, error_from_json
from gateway._jobs import RECEIPT_HEADER, format_time, new_job, sign_job, sign_request
from gateway._store import FINAL_STATUSES

#: Longest one status request of :meth:`Client.wait` asks the gateway to hold (seconds).
LONG_POLL_S = 10.0


@dataclass(frozen=True)
class JobResult:
    """A result as Arrow, with the receipt that ties it to the ledger."""

    job_id: str
    table: pa.Table
    ipc: bytes
    receipt: dict[str, Any]


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise GatewayError(f"no key file at {path}", code="client_key") from None
    except ValueError:
        raise GatewayError(f"{path} is not a PEM private key", code="client_key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise GatewayError(f"{path} is not an Ed25519 private key", code="client_key")
    return key


def verify_result(ipc: bytes, receipt: dict[str, Any], ledger_key: str) -> ledger.Checkpoint:
    """Check that ``ipc`` is the result the ledger recorded, under a checkpoint signed by
    ``ledger_key`` (a C2SP verifier key). Raises LedgerVerificationError otherwise."""
    entry_bytes = receipt["entry"].encode()
    checkpoint = ledger.verify_receipt(
        ledger.Receipt.from_json(receipt["receipt"]), entry_bytes, ledger_key
    )
    entry = ledger.LedgerEntry.parse(entry_bytes)
    digest = "sha256:" + hashlib.sha256(ipc).hexdigest()
    recorded = entry.fields.get("attestation", {}).get("result_digest")
    if entry.type != "run.completed" or recorded != digest:
        raise ledger.LedgerVerificationError(
            index=entry.index, reason="the result's digest is not the one the ledger recorded"
        )
    return checkpoint


class Client:
    """Talks to one gateway as one enterprise."""

    def __init__(
        self,
        base_url: str,
        *,
        enterprise: str,
        private_key: Ed25519PrivateKey,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        audience: str | None = None,
    ) -> None:
        self.enterprise = enterprise
        self._key = private_key
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._audience = audience
        self._long_poll = min(LONG_POLL_S, timeout / 2)  # well inside the HTTP timeout

    @classmethod
    def from_key_file(cls, base_url: str, *, enterprise: str, key_file: Path) -> Client:
        return cls(base_url, enterprise=enterprise, private_key=load_private_key(key_file))

    def close(self) -> None:
        self._http.close()

    @property
    def audience(self) -> str:
        """The sandbox this client signs for: its ledger origin, given or read once from
        ``GET /v1/ledger/checkpoint`` (the note's first line)."""
        if self._audience is None:
            note = self._request("GET", "/v1/ledger/checkpoint", signed=False).text
            origin = note.split("\n", 1)[0]
            if not origin or any(c.isspace() for c in origin):
                raise TransportError("the gateway's checkpoint has no origin line")
            self._audience = origin
        return self._audience

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, *, computation: str, dataset: str, purpose: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Sign and submit a job; returns {"job_id", "status", "ledger_index"}.

        Raises PolicyDenied (403), Refused (422/404), AuthenticationError, ReplayError, ...
        """
        job = new_job(
            enterprise=self.enterprise,
            computation=computation,
            dataset=dataset,
            purpose=purpose,
            params=params,
            audience=self.audience,
        )
        body = {"job": job.model_dump(exclude_none=True), "signature": sign_job(job, self._key)}
        return self._send("POST", "/v1/jobs", content=json.dumps(body).encode())

    def status(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/v1/jobs/{job_id}")

    def wait(self, job_id: str, *, timeout: float = 300.0, poll: float = 0.1) -> dict[str, Any]:
        """Wait until the job is final; returns its last status document.

        Each request is a long poll (``?wait=``): the gateway answers as soon as the job
        ends, or after at most :data:`LONG_POLL_S` (half the HTTP timeout if that is
        less). ``poll`` is the pause between requests to a gateway that answers at once
        (one without long polls), growing each time.
        """
        deadline = time.monotonic() + timeout
        while True:
            hold = max(0.0, min(deadline - time.monotonic(), self._long_poll))
            state = self._get(f"/v1/jobs/{job_id}?wait={hold:.3f}")
            if state["status"] in FINAL_STATUSES:
                return state
            if time.monotonic() > deadline:
                raise TransportError(f"job {job_id} still {state['status']} after {timeout} s")
            time.sleep(poll)
            poll = min(poll * 1.5, 2.0)

    def result(self, job_id: str, *, ledger_key: str | None = None) -> JobResult:
        """Fetch the Arrow result and its receipt; verify both when ``ledger_key`` is given."""
        response = self._request("GET", f"/v1/jobs/{job_id}/result")
        ipc = response.content
        carried = response.headers.get(RECEIPT_HEADER)
        if carried is not None:  # the gateway sent the receipt along: no second request
            try:
                receipt: dict[str, Any] = json.loads(base64.b64decode(carried, validate=True))
            except ValueError:
                receipt = {}
            if not isinstance(receipt, dict) or not receipt:
                raise TransportError("the result's receipt header is not a base64 JSON object")
        else:
            receipt = self._get(f"/v1/jobs/{job_id}/receipt")
        if ledger_key is not None:
            verify_result(ipc, receipt, ledger_key)
        return JobResult(job_id=job_id, table=table_from_ipc(ipc), ipc=ipc, receipt=receipt)

    def result_json(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/v1/jobs/{job_id}/result?" + urlencode({"format": "json"}))

    def catalogue(self) -> list[dict[str, Any]]:
        datasets: list[dict[str, Any]] = self._get("/v1/catalogue")["datasets"]
        return datasets

    def checkpoint(self) -> str:
        return self._request("GET", "/v1/ledger/checkpoint", signed=False).text

    # proposals for the bureau's review (gateway/_review_routes.py) --------------------

    def propose(
        self,
        *,
        name: str,
        template: str,
        parameters: dict[str, str],
        purpose: str,
        datasets: list[str],
        expected_epsilon: str,
    ) -> dict[str, Any]:
        """Sign and submit a SQL template for review (``parameters`` maps each ``:name``
        to its type); returns the stored proposal, ``status`` ``pending``. Raises
        :class:`Refused` (``proposal_refused``) with the reason the sandbox gives."""
        return self._propose(
            {
                "name": name,
                "template": template,
                "parameters": dict(parameters),
                "purpose": purpose,
                "datasets": list(datasets),
                "expected_epsilon": str(expected_epsilon),
            }
        )

    def propose_module(
        self,
        *,
        name: str,
        module: str,
        columns: list[str],
        purpose: str,
        datasets: list[str],
        expected_epsilon: str,
    ) -> dict[str, Any]:
        """Sign and submit a computation module (its Python source and the columns it
        reads) for review; as :meth:`propose`."""
        return self._propose(
            {
                "kind": "computation_module",
                "name": name,
                "module": module,
                "columns": list(columns),
                "purpose": purpose,
                "datasets": list(datasets),
                "expected_epsilon": str(expected_epsilon),
            }
        )

    def proposals(self) -> list[dict[str, Any]]:
        """This enterprise's proposals and their review state."""
        found: list[dict[str, Any]] = self._get("/v1/proposals")["proposals"]
        return found

    def _propose(self, fields: dict[str, Any]) -> dict[str, Any]:
        # Signed in the body like a job: a fresh nonce against replay, the time against
        # late use, the audience against use at another sandbox.
        proposal = {
            **fields,
            "enterprise": self.enterprise,
            "issued_at": format_time(datetime.now(UTC)),
            "nonce": secrets.token_urlsafe(24),
            "audience": self.audience,
        }
        signature = base64.b64encode(self._key.sign(rfc8785.dumps(proposal))).decode()
        body = json.dumps({"proposal": proposal, "signature": signature}).encode()
        stored: dict[str, Any] = self._send("POST", "/v1/proposals", content=body)["proposal"]
        return stored

    # encrypted views (docs/threat-model.md) -------------------------------------------

    def upload(self, kind: str, data: bytes, *, context: str | None = None) -> dict[str, Any]:
        """Upload one input of an encrypted job (``request``, ``reply``, ``proof``,
        ``context`` or ``values``; ``context`` names the context digest values are under).
        The signed path carries the body's digest. Returns the sandbox's record of the upload;
        raises :class:`Refused` (``upload_refused``) with the reason."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = f"/v1/uploads/{kind}/{digest}"
        if context is not None:
            path += "?" + urlencode({"context": context})
        response = self._request("PUT", path, content=data, content_type="application/octet-stream")
        stored: dict[str, Any] = response.json()["upload"]
        return stored

    def _finished(self, job_id: str, timeout: float) -> JobResult:
        state = self.wait(job_id, timeout=timeout)
        if state["status"] != "succeeded":
            reason = state.get("error") or state["status"]
            raise Refused(f"job {job_id} {state['status']}: {reason}", code="job_failed")
        return self.result(job_id)

    def open_psi_session(
        self, *, dataset: str, purpose: str, dimension: str, timeout: float = 600.0
    ) -> tuple[str, pa.Table]:
        """Run a ``psi`` job: the sandbox's offer for a session grouped by ``dimension``.
        Returns the session (the job id) and the offer table."""
        params = {"dimension": dimension, "nonce": secrets.token_urlsafe(24)}
        job_id = self.submit(computation="psi", dataset=dataset, purpose=purpose, params=params)[
            "job_id"
        ]
        return job_id, self._finished(job_id, timeout).table

    def encrypted_group_sum(
        self,
        *,
        dataset: str,
        purpose: str,
        session: str,
        offer: pa.Table,
        identifiers: list[Any],
        values: list[float],
        context: Any,
        timeout: float = 600.0,
    ) -> list[dict[str, Any]]:
        """Per group, the debiased sum of ``values`` over ``identifiers`` found in the
        dataset, with variance bounds: blinds and encrypts here (``context`` holds the
        secret key, which never leaves), uploads, runs the job, decrypts and debiases.
        Raises :class:`Refused` (``set_too_large``) before uploading anything when there
        are more identifiers than the session's policy allows."""
        cap = session_of(offer).get("max_set_size")
        if isinstance(cap, int) and len(identifiers) > cap:
            raise Refused(
                f"{len(identifiers)} identifiers, but this session's policy allows at most "
                f"{cap} in one job (@psi_max_set_size): split your list",
                code="set_too_large",
            )
        prepared = prepare_group_sum(offer, identifiers, values, context)
        params = prepared.params(session)
        for kind in ("request", "reply", "proof", "context"):
            self.upload(kind, prepared.uploads[kind])
        self.upload("values", prepared.uploads["values"], context=params["context"])
        job_id = self.submit(
            computation="encrypted_group_sum", dataset=dataset, purpose=purpose, params=params
        )["job_id"]
        return read_group_sums(self._finished(job_id, timeout).table, prepared, context)

    def encrypted_linear_score(
        self,
        *,
        dataset: str,
        purpose: str,
        dimension: str,
        features: list[str],
        weights: list[float],
        context: Any,
        timeout: float = 600.0,
    ) -> dict[str, tuple[float, float]]:
        """Per group, the debiased sum of ``weights · features`` over the dataset's rows
        and a bound on its variance. The weights are encrypted here under ``context``
        (which holds the secret key, never sent); only the public context and one
        ciphertext are uploaded."""
        import tenseal as ts

        slots = context.data.seal_context().key_context_data().parms().poly_modulus_degree() // 2
        padded = [float(w) for w in weights] + [0.0] * (slots - len(weights))
        public = context.copy()
        public.make_context_public()
        context_bytes = bytes(public.serialize(save_galois_keys=True))
        values = frame_vectors([bytes(ts.ckks_vector(context, padded).serialize())])
        context_digest = self.upload("context", context_bytes)["digest"]
        values_digest = self.upload("values", values, context=context_digest)["digest"]
        params = {
            "dimension": dimension,
            "features": list(features),
            "context": context_digest,
            "values": values_digest,
        }
        job_id = self.submit(
            computation="encrypted_linear_score", dataset=dataset, purpose=purpose, params=params
        )["job_id"]
        table = self._finished(job_id, timeout).table
        privacy = json.loads((table.schema.metadata or {})[b"indomain.privacy"])
        decrypted = {
            row["group"]: float(ts.ckks_vector_from(context, row["encrypted_score"]).decrypt()[0])
            for row in table.to_pylist()
        }
        return debias_scores(decrypted, privacy, [float(w) for w in weights])

    def _get(self, path: str) -> dict[str, Any]:
        return self._send("GET", path)

    def _send(self, method: str, path: str, content: bytes | None = None) -> dict[str, Any]:
        data: dict[str, Any] = self._request(method, path, content=content).json()
        return data

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        signed: bool = True,
        content_type: str = "application/json",
    ) -> httpx.Response:
        """Send one request; GETs and uploads (PUT) carry a read signature, jobs (POST)
        are signed in their body. Raises the gateway's error, or :class:`TransportError`."""
        headers = {"Content-Type": content_type} if content is not None else {}
        if signed and method in ("GET", "PUT"):
            headers.update(
                sign_request(
                    enterprise=self.enterprise,
                    key=self._key,
                    method=method,
                    path=path,
                    audience=self.audience,
                )
            )
        try:
            response = self._http.request(method, path, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the gateway: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise error_from_json(response.status_code, body)
        return response
