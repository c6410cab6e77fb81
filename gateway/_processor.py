"""What the gateway needs from the rest of the sandbox, as a narrow protocol.

The gateway authenticates and stores; deciding, recording and running belong to the
sandbox wiring, which implements :class:`JobProcessor`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway._jobs import JobDocument


@dataclass(frozen=True)
class Admission:
    """The sandbox's answer to a signed job, already recorded on the ledger."""

    outcome: Literal["accepted", "denied", "refused"]
    code: str
    reason: str
    ledger_index: int
    policies: tuple[str, ...] = ()
    policy_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "code": self.code,
            "reason": self.reason,
            "ledger_index": self.ledger_index,
            "policies": list(self.policies),
            "policy_version": self.policy_version,
            **self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Admission:
        """Rebuild an admission from what :meth:`to_json` stored with the job."""
        known = {"outcome", "code", "reason", "ledger_index", "policies", "policy_version"}
        return cls(
            outcome=data["outcome"],
            code=str(data["code"]),
            reason=str(data["reason"]),
            ledger_index=int(data["ledger_index"]),
            policies=tuple(data.get("policies", ())),
            policy_version=data.get("policy_version"),
            details={k: v for k, v in data.items() if k not in known},
        )


@dataclass(frozen=True)
class Execution:
    """A finished run: Arrow IPC bytes and the receipt bundle that proves it was recorded."""

    result_ipc: bytes
    receipt: dict[str, Any]
    summary: dict[str, Any]


class JobProcessor(Protocol):
    def admit(self, job: JobDocument, *, job_id: str, signature: str) -> Admission:
        """Decide and record; never raises for a policy refusal (that is an outcome)."""

    def execute(self, job: JobDocument, *, job_id: str, admission: Admission) -> Execution:
        """Run an accepted job; raises IndomainError with a row-free message on failure."""

    def record_failure(self, job: JobDocument, *, job_id: str, reason: str) -> int:
        """Record a failed run on the ledger; returns the ledger index."""

    def catalogue(self) -> list[dict[str, Any]]:
        """Dataset metadata and schema for licensed enterprises; never rows."""

    def checkpoint(self) -> str:
        """The ledger's latest signed checkpoint (C2SP signed note)."""
