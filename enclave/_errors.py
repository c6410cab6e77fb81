"""Errors raised by the enclave."""

from __future__ import annotations

from indomain.errors import IndomainError


class EnclaveError(IndomainError):
    """The enclave could not do what was asked; the message says why and holds no row data."""


class DatasetError(EnclaveError):
    """A dataset cannot be imported or found: wrong file, wrong columns, unknown name."""

    exit_code = 2


class WorkerError(EnclaveError):
    """The worker process failed (crashed, timed out or answered nonsense)."""


class EnclaveKeyError(EnclaveError):
    """A key file is missing, has loose permissions, or does not decrypt what it should."""
