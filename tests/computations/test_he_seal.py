"""SEAL-level slot arithmetic on TenSEAL's own objects: it agrees with the numpy model,
hands back TenSEAL's exact bytes, and refuses ciphertexts that do not combine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tenseal as ts

from computations._encrypted._layout import PlainSlots, block_sum, diagonal_masks, rotation_steps
from computations._he import HeError, load_ckks_vector, load_public_context
from computations._he._seal import (
    SealSlots,
    decrypt_slots,
    encrypt_chunks,
    public_context_bytes,
    vector_bytes,
)

DEGREE, BITS, SCALE = 4096, (35, 34, 40), 2**26
SLOTS = DEGREE // 2


@pytest.fixture(scope="module")
def secret() -> Any:
    context = ts.context(ts.SCHEME_TYPE.CKKS, DEGREE, coeff_mod_bit_sizes=list(BITS))
    context.global_scale = SCALE
    context.generate_galois_keys()
    return context


@pytest.fixture(scope="module")
def public(secret: Any) -> Any:
    copy = secret.copy()
    copy.make_context_public()
    return load_public_context(bytes(copy.serialize(save_galois_keys=True)))


def _chunk(secret: Any, public: Any, values: list[float]) -> Any:
    return ts.ckks_vector_from(public.context, bytes(ts.ckks_vector(secret, values).serialize()))


def test_vector_bytes_are_tenseals_own_serialisation(secret: Any) -> None:
    vector = ts.ckks_vector(secret, [1.5, -2.0] + [0.0] * (SLOTS - 2))
    (ciphertext,) = vector.data.ciphertext()
    assert vector_bytes(ciphertext, slots=SLOTS, scale=float(SCALE)) == bytes(vector.serialize())


def test_a_block_on_ciphertexts_matches_the_model(secret: Any, public: Any) -> None:
    """One diagonal block of period 4 over two chunks, on SEAL and on numpy: every slot
    (real and imaginary) agrees within CKKS's error."""
    rng = np.random.default_rng(8)
    values = [rng.uniform(0, 10, SLOTS) for _ in range(2)]
    rows = rng.integers(0, 2, (2 * SLOTS, 3)) + 1j * rng.integers(0, 2, (2 * SLOTS, 3))

    def masks_of(k: int) -> np.ndarray:
        return diagonal_masks(rows[k * SLOTS : (k + 1) * SLOTS], 4)

    chunks = [_chunk(secret, public, v.tolist()) for v in values]
    sealed = SealSlots(public, chunks)
    encrypted = block_sum(sealed, masks_of, chunks=2, period=4, slots=SLOTS)
    model = block_sum(PlainSlots(values), masks_of, chunks=2, period=4, slots=SLOTS)
    data = vector_bytes(encrypted, slots=SLOTS, scale=sealed.scale)
    assert np.abs(decrypt_slots(secret, data) - model).max() < 1e-2


def test_an_empty_block_is_a_fresh_encryption_of_zero(secret: Any, public: Any) -> None:
    sealed = SealSlots(public, [_chunk(secret, public, [3.0] * SLOTS)])
    zero = block_sum(
        sealed, lambda _: np.zeros((2, SLOTS), complex), chunks=1, period=2, slots=SLOTS
    )
    assert not zero.is_transparent()
    assert zero.scale == pytest.approx(float(SCALE) ** 2)
    slots = decrypt_slots(secret, vector_bytes(zero, slots=SLOTS, scale=sealed.scale))
    assert np.abs(slots).max() < 1e-3


def test_chunks_at_different_scales_are_refused(secret: Any, public: Any) -> None:
    one = _chunk(secret, public, [1.0] * SLOTS)
    other = ts.ckks_vector_from(
        public.context, bytes(ts.ckks_vector(secret, [1.0] * SLOTS, scale=2**20).serialize())
    )
    with pytest.raises(HeError, match="one scale"):
        SealSlots(public, [one, other])


def test_a_context_without_galois_keys_is_refused(secret: Any) -> None:
    bare = secret.copy()
    bare.make_context_public()
    context = load_public_context(bytes(bare.serialize(save_galois_keys=False)))
    chunk = ts.ckks_vector_from(context.context, bytes(ts.ckks_vector(secret, [1.0]).serialize()))
    with pytest.raises(HeError, match="Galois"):
        SealSlots(context, [chunk])


def test_decrypting_foreign_bytes_is_a_clear_error(secret: Any) -> None:
    with pytest.raises(HeError, match="does not decrypt"):
        decrypt_slots(secret, b"not a vector")


def test_secret_key_encryption_loads_in_the_sandbox_at_half_the_bytes(
    secret: Any, public: Any
) -> None:
    values = [float(i) for i in range(SLOTS + 10)]
    vectors = encrypt_chunks(secret, values)
    assert len(vectors) == 2
    seeded = len(vectors[0])
    full = len(bytes(ts.ckks_vector(secret, values[:SLOTS]).serialize()))
    assert seeded < 0.6 * full  # the seed stands for the uniform half
    for k, data in enumerate(vectors):
        chunk = load_ckks_vector(public, data)  # the sandbox's own hygiene checks
        assert chunk.size() == SLOTS
        slots = decrypt_slots(secret, data).real
        want = np.zeros(SLOTS)
        part = values[k * SLOTS : (k + 1) * SLOTS]
        want[: len(part)] = part
        assert np.abs(slots - want).max() < 1e-3


def test_encrypting_needs_the_secret_key(public: Any) -> None:
    with pytest.raises(HeError, match="secret key"):
        encrypt_chunks(public.context, [1.0])


def test_the_public_context_carries_exactly_the_left_power_of_two_keys(
    secret: Any,
) -> None:
    data = public_context_bytes(secret, rotations=rotation_steps(SLOTS))
    context = load_public_context(data)  # no secret key, parameters in the table
    keys = context.context.data.galois_keys()
    assert keys.size() == len(rotation_steps(SLOTS)) == 11
    assert not context.context.data.has_relin_keys()
    full = secret.copy()
    full.make_context_public()
    assert len(data) < 0.6 * len(bytes(full.serialize(save_galois_keys=True)))
    chunk = load_ckks_vector(context, encrypt_chunks(secret, [1.0] * SLOTS)[0])
    sealed = SealSlots(context, [chunk])
    for step in rotation_steps(SLOTS):
        sealed.rotate(chunk.data.ciphertext()[0], step)
    with pytest.raises(HeError, match="no Galois key for a left rotation by -1"):
        sealed.rotate(chunk.data.ciphertext()[0], -1)
