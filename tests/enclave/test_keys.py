"""Envelope encryption of dataset keys and the key files that hold them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enclave import EnclaveKeyError
from enclave._keys import (
    load_master_key,
    new_master_key,
    unwrap_dataset_key,
    wrap_dataset_key,
)


@given(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=40))
def test_wrapped_key_opens_with_the_master_key_and_its_own_dataset_name(
    dataset_key: bytes, name: str
) -> None:
    master = secrets.token_bytes(32)
    assert unwrap_dataset_key(master, wrap_dataset_key(master, dataset_key, name), name) == (
        dataset_key
    )


def test_wrapped_key_does_not_open_under_another_dataset_name() -> None:
    master, key = secrets.token_bytes(32), secrets.token_bytes(32)
    wrapped = wrap_dataset_key(master, key, "residents")
    with pytest.raises(EnclaveKeyError, match="does not open"):
        unwrap_dataset_key(master, wrapped, "companies")


def test_wrapped_key_does_not_open_with_another_master_key() -> None:
    key = secrets.token_bytes(32)
    wrapped = wrap_dataset_key(secrets.token_bytes(32), key, "residents")
    with pytest.raises(EnclaveKeyError):
        unwrap_dataset_key(secrets.token_bytes(32), wrapped, "residents")


def test_a_flipped_bit_in_a_wrapped_key_is_detected() -> None:
    master, key = secrets.token_bytes(32), secrets.token_bytes(32)
    wrapped = bytearray(wrap_dataset_key(master, key, "residents"))
    for i in range(len(wrapped)):
        wrapped[i] ^= 1
        with pytest.raises(EnclaveKeyError):
            unwrap_dataset_key(master, bytes(wrapped), "residents")
        wrapped[i] ^= 1


def test_master_key_file_is_0600_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    new_master_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        new_master_key(path)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    new_master_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(EnclaveKeyError, match="chmod 600"):
        load_master_key(path)
