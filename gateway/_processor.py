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
