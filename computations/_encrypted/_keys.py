"""The PSI session key, kept by the enclave: wrapped under a key only the worker derives.

A PSI session's sandbox scalar ``b`` must outlive the worker that drew it (the enterprise
answers the offer later, in another job), and must never be readable outside the enclave:
whoever holds ``b`` can unblind the offer and test guessed identifiers against the
dataset. So ``b`` leaves the worker only wrapped (AES-256-GCM) under a key derived from
the enclave master key (HKDF-SHA256, RFC 5869, its own ``info`` so it is independent of
the dataset-key wrapping), the session's public description as associated data, like the
dataset keys in ``enclave/_keys.py``. The enclave worker installs the master key with
:func:`set_enclave_secret` before it executes a plan; outside the worker no key is set
and wrapping fails closed.
"""

from __future__ import annotations

import secrets
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from computations._errors import ComputationError

#: HKDF ``info``: the purpose of the derived key; a new format needs a new label.
_INFO: Final = b"indomain/psi-session-key-wrap/v1"
_AAD_PREFIX: Final = b"indomain/psi-session/v1\x00"
_NONCE_BYTES: Final = 12

_wrapping_key: bytes | None = None


def set_enclave_secret(master_key: bytes) -> None:
    """Called by the enclave worker only: derive the session-key wrapping key from the
    enclave master key (the master key itself is not kept here)."""
    global _wrapping_key
    if not isinstance(master_key, bytes) or len(master_key) != 32:
        raise ComputationError("the enclave secret must be 32 bytes")
    _wrapping_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        master_key
    )


def _key() -> bytes:
    if _wrapping_key is None:
        raise ComputationError(
            "PSI session keys are only available inside the enclave worker; refusing"
        )
    return _wrapping_key


def wrap_session_key(scalar: bytes, *, binding: bytes) -> bytes:
    """``nonce || AES-GCM(scalar)`` under the enclave's wrapping key, bound to ``binding``
    (the session's description), so it cannot be moved to another session."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(_key()).encrypt(nonce, scalar, _AAD_PREFIX + binding)


def unwrap_session_key(wrapped: bytes, *, binding: bytes) -> bytes:
    """The scalar inside ``wrapped``; raises :class:`ComputationError` if it was not
    wrapped by this enclave for exactly this ``binding``."""
    if len(wrapped) <= _NONCE_BYTES:
        raise ComputationError("the PSI session key is malformed")
    try:
        return AESGCM(_key()).decrypt(
            wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _AAD_PREFIX + binding
        )
    except InvalidTag:
        raise ComputationError(
            "the PSI session key does not open in this enclave for this session"
        ) from None
