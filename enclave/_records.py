"""The values the enclave hands out: dataset records and signed run attestations."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from computations import DatasetSpec
from enclave._errors import EnclaveError

ATTESTATION_FORMAT = "indomain-run-attestation/v1"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class DatasetRecord(BaseModel):
    """What the sandbox knows about an imported dataset, outside the encrypted file.

    ``wrapped_key`` opens only with the master key; ``content_hash`` is also stored inside
    the encrypted file, which is what the worker attests to.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    spec: DatasetSpec
    file: str
    wrapped_key: str
    content_hash: str
    row_count: int
    column_types: dict[str, str]
    imported_at: str

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"spec"})
        data["spec"] = self.spec.to_manifest()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetRecord:
        data = dict(data)
        data["spec"] = DatasetSpec.from_manifest(data["spec"], name=data.get("name"))
        return cls.model_validate(data)

    @property
    def rounded_row_count(self) -> int:
        """Row count shown outside the domain: rounded to two significant figures."""
        n = self.row_count
        if n < 100:
            return 0 if n < 50 else 100
        digits = len(str(n)) - 2
        return round(n, -digits)


class RunAttestation(BaseModel):
    """Signed statement of what ran: code, data, policy, parameters and the result's digest.

    Today the signer is a software worker process; a hardware enclave would produce the same
    fields under its own quote. ``enclave_kind`` says which.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = ATTESTATION_FORMAT
    enclave_kind: str
    network_isolated: bool
    job_id: str
    computation: str
    code_hash: str
    dataset: str
    dataset_content_hash: str
    policy_version: str
    params_digest: str
    result_digest: str
    time: str
    #: The dataset a join read as well, and its content hash; empty without a join.
    partner_dataset: str = ""
    partner_content_hash: str = ""

    @model_serializer(mode="wrap")
    def _without_empty_partner(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Attestations without a join keep their earlier form, signed and on the ledger.
        data: dict[str, Any] = handler(self)
        if not self.partner_dataset and not self.partner_content_hash:
            data.pop("partner_dataset", None)
            data.pop("partner_content_hash", None)
        return data

    def canonical(self) -> bytes:
        return rfc8785.dumps(self.model_dump())

    def sign(self, key: Ed25519PrivateKey) -> str:
        return base64.b64encode(key.sign(self.canonical())).decode()

    def verify(self, signature_b64: str, public_key: Ed25519PublicKey) -> None:
        """Raise EnclaveError unless ``signature_b64`` is the enclave's signature over this."""
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            public_key.verify(signature, self.canonical())
        except (InvalidSignature, ValueError):
            raise EnclaveError("run attestation signature does not verify") from None


class RunOutput(BaseModel):
    """A finished run: the Arrow IPC result, its attestation and the enclave's signature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result_ipc: bytes
    attestation: RunAttestation
    signature: str
    suppressed_groups: int
    notes: tuple[str, ...] = ()

    def attestation_json(self) -> dict[str, Any]:
        return {"attestation": self.attestation.model_dump(), "signature": self.signature}
