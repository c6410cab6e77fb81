"""Errors raised by the ledger.

::

    IndomainError
    └── LedgerError                  bad argument, missing or corrupt storage, read-only ledger
        ├── WitnessNotAccepted       a cosignature by a witness the operator did not configure
        └── LedgerVerificationError  a proof, signature, entry or checkpoint does not verify
            └── LedgerForkError      the ledger does not extend a checkpoint the auditor trusted
"""

from __future__ import annotations

from typing import Any

from indomain.errors import IndomainError


class LedgerError(IndomainError):
    """The ledger cannot do what was asked; the message says why."""


class WitnessNotAccepted(LedgerError):
    """A cosignature was offered by a witness key the ledger's operator has not configured."""


class LedgerVerificationError(LedgerError):
    """Evidence did not verify: a proof, a signed checkpoint, a receipt or a stored entry.

    ``index`` is the first bad entry when the failure is tied to one (else ``None``);
    ``reason`` says what is wrong, without repeating entry contents.
    """

    def __init__(self, reason: str, index: int | None = None) -> None:
        self.reason = reason
        self.index = index
        super().__init__(reason if index is None else f"entry {index}: {reason}")

    def __reduce__(self) -> tuple[type[LedgerVerificationError], tuple[str, int | None]]:
        # Keep reason and index when the error crosses a process boundary.
        return (type(self), (self.reason, self.index))


class LedgerForkError(LedgerVerificationError):
    """The ledger is not an extension of a checkpoint the auditor kept: rollback or fork.

    ``trusted`` and ``latest`` are the two signed notes, the evidence an auditor keeps:
    both verify under the ledger key, and they cannot both be true of one append-only log.
    """

    def __init__(
        self, reason: str, index: int | None = None, trusted: str = "", latest: str = ""
    ) -> None:
        super().__init__(reason, index)
        self.trusted = trusted
        self.latest = latest

    def __reduce__(self) -> Any:
        return (type(self), (self.reason, self.index, self.trusted, self.latest))
