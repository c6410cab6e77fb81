"""Loading enterprise TenSEAL contexts and ciphertexts: every refusal, on real contexts."""

from __future__ import annotations

from typing import Any

import pytest
import tenseal as ts

from computations import ComputationError
from computations._he import (
    MAX_COEFF_MODULUS_BITS_128,
    HeError,
    PublicContext,
    check_parameters,
    load_ckks_vector,
    load_public_context,
)


def _ckks(degree: int = 2048, bits: tuple[int, ...] = (20, 20), scale: int = 2**10) -> Any:
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=degree, coeff_mod_bit_sizes=list(bits)
    )
    context.global_scale = scale
    return context


def _public_bytes(context: Any) -> bytes:
    public = context.copy()
    public.make_context_public()
    return bytes(public.serialize())


@pytest.fixture(scope="module")
def small() -> Any:
    return _ckks()


@pytest.fixture(scope="module")
def loaded(small: Any) -> PublicContext:
    return load_public_context(_public_bytes(small))


def test_a_public_context_loads_with_its_parameters(loaded: PublicContext) -> None:
    assert (loaded.scheme, loaded.poly_modulus_degree, loaded.coeff_modulus_bits) == (
        "CKKS",
        2048,
        40,
    )
    assert not loaded.context.is_private()


def test_a_ciphertext_round_trips_and_computes() -> None:
    # Degree 2048 with a 2^10 scale is too noisy to compute on; 4096 with 2^20 is not.
    private = _ckks(4096, (40, 20, 40), 2**20)
    loaded = load_public_context(_public_bytes(private))
    vector = load_ckks_vector(loaded, ts.ckks_vector(private, [1.0, 2.0, 3.0]).serialize())
    result = ts.ckks_vector_from(private, vector.add([1.0, 1.0, 1.0]).serialize())
    assert [round(x, 2) for x in result.decrypt()] == [2.0, 3.0, 4.0]


def test_a_context_with_its_secret_key_is_refused(small: Any) -> None:
    with pytest.raises(HeError, match="secret key"):
        load_public_context(bytes(small.serialize(save_secret_key=True)))


def test_a_bfv_context_loads_but_is_not_ckks() -> None:
    bfv = ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=2048,
        plain_modulus=12289,
        coeff_mod_bit_sizes=[27, 27],
    )
    loaded = load_public_context(_public_bytes(bfv))
    assert loaded.scheme == "BFV"
    ciphertext = ts.bfv_vector(bfv, [1, 2]).serialize()
    with pytest.raises(HeError, match="CKKS context"):
        load_ckks_vector(loaded, ciphertext)


def test_degree_above_the_cap_is_refused() -> None:
    data = _public_bytes(_ckks(4096, (40, 20, 40), 2**20))
    assert load_public_context(data, max_poly_modulus_degree=4096).poly_modulus_degree == 4096
    with pytest.raises(HeError, match="above this policy's cap of 2048"):
        load_public_context(data, max_poly_modulus_degree=2048)


def test_the_largest_modulus_the_table_allows_loads() -> None:
    data = _public_bytes(_ckks(4096, (40, 29, 40), 2**29))
    assert load_public_context(data).coeff_modulus_bits == 109


def test_oversize_bytes_are_refused_before_parsing(small: Any) -> None:
    data = _public_bytes(small)
    with pytest.raises(HeError, match="larger than the cap"):
        load_public_context(data, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    "data", [b"", b"garbage", b"\x00" * 64, "text"], ids=["empty", "garbage", "zeros", "str"]
)
def test_malformed_contexts_are_refused(data: Any) -> None:
    with pytest.raises(HeError):
        load_public_context(data)


def test_truncated_and_flipped_contexts_are_refused(small: Any) -> None:
    data = _public_bytes(small)
    with pytest.raises(HeError, match="malformed"):
        load_public_context(data[: len(data) // 2])
    with pytest.raises(HeError, match="malformed"):
        load_public_context(data[:8] + bytes(b ^ 0xFF for b in data[8:40]) + data[40:])


# -- the 128-bit table, checked on its own ---------------------------------------------


@pytest.mark.parametrize(("degree", "bits"), sorted(MAX_COEFF_MODULUS_BITS_128.items()))
def test_table_boundaries(degree: int, bits: int) -> None:
    check_parameters(degree, bits, max_poly_modulus_degree=32768)
    with pytest.raises(HeError, match="128-bit table"):
        check_parameters(degree, bits + 1, max_poly_modulus_degree=32768)


def test_table_matches_the_he_standard() -> None:
    assert dict(MAX_COEFF_MODULUS_BITS_128) == {
        1024: 27,
        2048: 54,
        4096: 109,
        8192: 218,
        16384: 438,
        32768: 881,
    }


@pytest.mark.parametrize("degree", [512, 3000, 65536])
def test_degrees_outside_the_table_are_refused(degree: int) -> None:
    with pytest.raises(HeError, match="not in the 128-bit table"):
        check_parameters(degree, 20, max_poly_modulus_degree=65536)


def test_seal_itself_refuses_to_create_parameters_beyond_the_table() -> None:
    # Why the end-to-end tests cannot build an over-table context: SEAL refuses at creation.
    with pytest.raises(ValueError, match="not set correctly"):
        ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=2048, coeff_mod_bit_sizes=[30, 30])


# -- ciphertexts -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"garbage", "text", b"\x00" * 100])
def test_malformed_vectors_are_refused(loaded: PublicContext, data: Any) -> None:
    with pytest.raises(HeError):
        load_ckks_vector(loaded, data)


def test_truncated_vector_is_refused(small: Any, loaded: PublicContext) -> None:
    data = ts.ckks_vector(small, [1.0]).serialize()
    with pytest.raises(HeError, match="malformed"):
        load_ckks_vector(loaded, data[: len(data) // 2])


def test_vector_under_other_parameters_is_refused(loaded: PublicContext) -> None:
    other = _ckks(4096, (40, 20, 40), 2**20)
    with pytest.raises(HeError, match="not under this context"):
        load_ckks_vector(loaded, ts.ckks_vector(other, [1.0]).serialize())


def test_oversize_vector_is_refused(small: Any, loaded: PublicContext) -> None:
    data = ts.ckks_vector(small, [1.0]).serialize()
    with pytest.raises(HeError, match="larger than the cap"):
        load_ckks_vector(loaded, data, max_bytes=len(data) - 1)


def test_a_raw_context_is_not_accepted_in_place_of_a_checked_one(small: Any) -> None:
    with pytest.raises(HeError, match="checked CKKS context"):
        load_ckks_vector(small, ts.ckks_vector(small, [1.0]).serialize())


def test_he_error_is_a_computation_error() -> None:
    assert issubclass(HeError, ComputationError)


@pytest.mark.parametrize("seed", range(3))
def test_mutated_bytes_raise_only_he_error(small: Any, loaded: PublicContext, seed: int) -> None:
    # Random byte mutations: each either loads (an unauthenticated key or ciphertext byte
    # changed) or is refused with HeError; no foreign exception escapes.
    import random

    rng = random.Random(seed)  # a reproducible test input, not a secret
    for base, load in (
        (_public_bytes(small), load_public_context),
        (ts.ckks_vector(small, [1.0, 2.0]).serialize(), lambda d: load_ckks_vector(loaded, d)),
    ):
        for _ in range(20):
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                load(bytes(data))
            except HeError:
                pass
