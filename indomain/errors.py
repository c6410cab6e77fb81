"""The project-wide error root.

Every error a caller can act on derives from :class:`IndomainError`; each part adds its own
subclasses in its ``_errors.py`` and exports them from its front door::

    IndomainError
    ├── ConfigError              (indomain)   bad home, missing file, bad manifest
    ├── LedgerError              (ledger)
    │   └── LedgerVerificationError
    ├── PolicyError              (policies)
    │   └── PolicyInvalid
    ├── ComputationError         (computations)
    │   └── QueryRefused
    ├── EnclaveError             (enclave)
    │   └── DatasetError
    └── GatewayError             (gateway)
        ├── InvalidJob, AuthenticationError, ReplayError, NotFound, PolicyDenied

:class:`InternalError` is separate: it marks our own bugs, and is never caught to be shown
as a user error.

Messages never carry row-level data: they name rules, columns and fragments of the
request, not values read from a dataset.
"""

from __future__ import annotations


class IndomainError(Exception):
    """Root of every error indomain raises on purpose.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1


class ConfigError(IndomainError):
    """The sandbox home, a manifest or a command-line input is wrong; the message says how."""

    exit_code = 2


class InternalError(AssertionError):
    """A bug in indomain itself: an invariant we rely on does not hold."""


__all__ = ["ConfigError", "IndomainError", "InternalError"]
