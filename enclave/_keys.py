"""Key files and envelope encryption.

Each dataset has its own random 256-bit DuckDB encryption key. It is stored only wrapped by
the enclave master key (AES-256-GCM, the dataset name as associated data, so a wrapped key
cannot be moved to another dataset's record). Only the worker process reads the master key.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave._errors import EnclaveKeyError

KEY_BYTES = 32
NONCE_BYTES = 12
_WRAP_CONTEXT = b"indomain/dataset-key/v1\x00"


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and ``data``; never overwrites an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret_file(path: Path) -> bytes:
    """Read a key file, refusing one that others can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise EnclaveKeyError(f"key file {path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise EnclaveKeyError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
            "run: chmod 600 " + str(path)
        )
    return path.read_bytes()


def new_master_key(path: Path) -> None:
    write_secret_file(path, secrets.token_bytes(KEY_BYTES))


def load_master_key(path: Path) -> bytes:
    key = read_secret_file(path)
    if len(key) != KEY_BYTES:
        raise EnclaveKeyError(f"master key {path} has {len(key)} bytes, expected {KEY_BYTES}")
    return key


def wrap_dataset_key(master_key: bytes, dataset_key: bytes, dataset: str) -> bytes:
    """Return nonce || AES-GCM(master_key, dataset_key, aad=context||dataset)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    aad = _WRAP_CONTEXT + dataset.encode()
    return nonce + AESGCM(master_key).encrypt(nonce, dataset_key, aad)


def unwrap_dataset_key(master_key: bytes, wrapped: bytes, dataset: str) -> bytes:
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + 16:
        raise EnclaveKeyError(f"wrapped key of dataset {dataset!r} has the wrong length")
    aad = _WRAP_CONTEXT + dataset.encode()
    try:
        return AESGCM(master_key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
    except InvalidTag:
        raise EnclaveKeyError(
            f"the wrapped key of dataset {dataset!r} does not open with this master key"
        ) from None


def new_signing_key(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    key = Ed25519PrivateKey.generate()
    write_secret_file(
        private_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(read_secret_file(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise EnclaveKeyError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise EnclaveKeyError(f"public key file {path} is missing") from None
    except ValueError as exc:
        raise EnclaveKeyError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise EnclaveKeyError(f"{path} is not an Ed25519 public key")
    return key
