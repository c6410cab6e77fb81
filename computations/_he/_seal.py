"""CKKS slot arithmetic on the SEAL objects inside TenSEAL vectors, for what TenSEAL's
vector API does not offer: rotations by chosen steps and plaintext masks encoded once.

TenSEAL exposes rotations only inside ``sum`` (rotate-and-add by ``size/2, …, 1``) and
``matmul``; the packed group sum needs rotations by ``1`` and by ``P, 2P, …`` to put every
group's total into one ciphertext (``computations/_encrypted/_layout.py``), which is ~16–25
rotations for 10 groups instead of 10 × 12. TenSEAL ships SEAL's own Python bindings
(``tenseal.sealapi``), whose Evaluator and CKKSEncoder work on the very ciphertexts and
keys of a TenSEAL context; :class:`SealSlots` uses them and nothing else.

Masks are encoded at the chunks' level and scale ``Δ`` and never rescaled, as TenSEAL's
``mul_plain`` did: results have scale ``Δ²`` at the chunks' level. A SEAL ciphertext is
handed back as TenSEAL vector bytes (:func:`vector_bytes`: TenSEAL's ``CKKSVectorProto``,
three protobuf fields), so the enterprise loads it with ``ts.ckks_vector_from``.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from computations._he._context import HeError, PublicContext

#: TenSEAL's ``CKKSVectorProto`` (tenseal/proto/tensors.proto): ``repeated uint32 sizes = 1``
#: (packed), ``repeated bytes ciphertexts = 2``, ``double scale = 3``; protobuf wire tags
#: are ``field << 3 | wire type`` (2: length-delimited, 1: 64-bit).
_SIZES_TAG: Final = bytes([1 << 3 | 2])
_CIPHERTEXT_TAG: Final = bytes([2 << 3 | 2])
_SCALE_TAG: Final = bytes([3 << 3 | 1])


def _sealapi() -> Any:
    import tenseal.sealapi

    return tenseal.sealapi


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


class SealSlots:
    """:class:`computations._encrypted._layout.SlotArithmetic` on the enterprise's CKKS
    chunks (TenSEAL vectors of exactly ``S`` slots, checked by the caller).

    Raises :class:`HeError` if the context has no Galois or public key, or the chunks are
    not plain two-part CKKS ciphertexts at one level and one scale.
    """

    def __init__(self, context: PublicContext, chunks: Sequence[Any]) -> None:
        seal = _sealapi()
        data = context.context.data
        if not data.has_galois_keys():
            raise HeError(
                "the HE context has no Galois keys; the slot sums need them "
                "(generate_galois_keys() before make_context_public())"
            )
        if not data.has_public_key():
            raise HeError("the HE context has no public key")
        try:
            ciphertexts = [chunk.data.ciphertext() for chunk in chunks]
        except Exception as exc:
            raise HeError("the CKKS vectors are malformed") from exc
        if not ciphertexts or any(len(c) != 1 for c in ciphertexts):
            raise HeError("every CKKS vector must be one ciphertext")
        self._chunks = [c[0] for c in ciphertexts]
        first = self._chunks[0]
        self._parms = first.parms_id()
        self.scale = float(first.scale)
        for ct in self._chunks:
            if ct.size() != 2 or not ct.is_ntt_form():
                raise HeError("a CKKS ciphertext must have two parts (relinearised)")
            if ct.parms_id() != self._parms or float(ct.scale) != self.scale:
                raise HeError("the CKKS vectors are not all at one level and one scale")
        seal_context = data.seal_context()
        self._evaluator = seal.Evaluator(seal_context)
        self._encoder = seal.CKKSEncoder(seal_context)
        self._encryptor = seal.Encryptor(seal_context, data.public_key())
        self._galois = data.galois_keys()
        self._plain = seal.Plaintext()
        self._seal = seal

    def product(self, chunk: int, mask: np.ndarray) -> Any:
        """Chunk ``chunk`` times ``mask`` (complex, ``S`` slots) encoded at scale ``Δ``."""
        self._encoder.encode(mask.tolist(), self._parms, self.scale, self._plain)
        out = self._seal.Ciphertext()
        self._evaluator.multiply_plain(self._chunks[chunk], self._plain, out)
        return out

    def add(self, into: Any, other: Any) -> Any:
        self._evaluator.add_inplace(into, other)
        return into

    def rotate(self, value: Any, steps: int) -> Any:
        out = self._seal.Ciphertext()
        try:
            self._evaluator.rotate_vector(value, steps, self._galois, out)
        except Exception as exc:  # SEAL: "Galois key not present"
            raise HeError(
                f"the HE context has no Galois key for a left rotation by {steps}: "
                "send keys for every power of two below the slot count"
            ) from exc
        return out

    def zero(self) -> Any:
        """A fresh encryption of zero at the products' level and scale ``Δ²``."""
        out = self._seal.Ciphertext()
        self._encryptor.encrypt_zero(self._parms, out)
        out.scale = self.scale * self.scale
        return out


def vector_bytes(ciphertext: Any, *, slots: int, scale: float) -> bytes:
    """``ciphertext`` as the bytes of a TenSEAL CKKS vector of ``slots`` slots.

    SEAL's Python bindings save only to a path, so the ciphertext goes through a private
    temporary directory (0700). Raises :class:`HeError` if SEAL cannot save it.
    """
    with tempfile.TemporaryDirectory(prefix="indomain-he-") as folder:
        path = os.path.join(folder, "ciphertext")
        try:
            ciphertext.save(path)
        except Exception as exc:
            raise HeError("the result ciphertext could not be saved") from exc
        with open(path, "rb") as f:
            raw = f.read()
    sizes = _varint(slots)
    return b"".join(
        (
            _SIZES_TAG + _varint(len(sizes)) + sizes,
            _CIPHERTEXT_TAG + _varint(len(raw)) + raw,
            _SCALE_TAG + struct.pack("<d", scale),
        )
    )


def encrypt_chunks(secret_context: Any, values: Sequence[float]) -> list[bytes]:
    """``values`` packed ``S`` to a TenSEAL CKKS vector of exactly ``S`` slots (zeros after
    the last), each encrypted under the *secret* key at the context's global scale.

    Symmetric encryption is SEAL's ``encrypt_symmetric``: the same RLWE ciphertext as
    with the public key (``c0 = −a·s + e + m``), but ``a`` is stored as the seed it is
    expanded from, so a vector is half the bytes, and it costs about half the time
    (7.6 against 13.4 ms for n = 8192, three primes). The sandbox loads it as any other
    (SEAL expands the seed). Raises :class:`HeError` if the context holds no secret key.
    """
    seal = _sealapi()
    data = secret_context.data
    if not data.has_secret_key():
        raise HeError("encrypting the values needs the context with its secret key")
    seal_context = data.seal_context()
    slots = seal_context.key_context_data().parms().poly_modulus_degree() // 2
    scale = float(data.global_scale)
    encoder = seal.CKKSEncoder(seal_context)
    encryptor = seal.Encryptor(seal_context, data.secret_key())
    padded = np.zeros(max(1, -(-len(values) // slots)) * slots)
    padded[: len(values)] = np.asarray(values, dtype=np.float64)
    plain = seal.Plaintext()
    out = []
    for k in range(len(padded) // slots):
        encoder.encode(padded[k * slots : (k + 1) * slots].tolist(), scale, plain)
        out.append(vector_bytes(encryptor.encrypt_symmetric(plain), slots=slots, scale=scale))
    return out


def public_context_bytes(secret_context: Any, *, rotations: Sequence[int]) -> bytes:
    """The public copy of ``secret_context`` (public key, no secret key), serialised with
    Galois keys for exactly the left ``rotations`` and without relinearisation keys.

    TenSEAL's ``generate_galois_keys`` makes keys for every power of two in both
    directions (24 keys, 33 MB at n = 8192 with three primes); a computation that only
    rotates left by powers of two needs half of them, and every one costs the sandbox
    parse time. Raises :class:`HeError` if the context holds no secret key.
    """
    seal = _sealapi()
    if not secret_context.data.has_secret_key():
        raise HeError("making Galois keys needs the context with its secret key")
    secret_key = secret_context.data.secret_key()
    public = secret_context.copy()
    public.make_context_public()
    data = public.data
    if not data.has_galois_keys():
        data.generate_galois_keys(secret_key)  # TenSEAL has no setter: make the object
    seal_context = data.seal_context()
    elements = seal_context.key_context_data().galois_tool().get_elts_from_steps(list(rotations))
    # SEAL clears the key object and fills it with exactly these keys.
    seal.KeyGenerator(seal_context, secret_key).create_galois_keys(elements, data.galois_keys())
    return bytes(public.serialize(save_galois_keys=True, save_relin_keys=False))


def decrypt_slots(secret_context: Any, data: bytes) -> np.ndarray:
    """Every slot (complex) of the TenSEAL CKKS vector ``data``, decrypted under
    ``secret_context`` (the enterprise's, with its secret key).

    Raises :class:`HeError` if ``data`` does not load under the context or the context
    holds no secret key.
    """
    import tenseal as ts

    seal = _sealapi()
    try:
        (ciphertext,) = ts.ckks_vector_from(secret_context, data).data.ciphertext()
        seal_context = secret_context.data.seal_context()
        plain = seal.Plaintext()
        seal.Decryptor(seal_context, secret_context.data.secret_key()).decrypt(ciphertext, plain)
        return np.asarray(seal.CKKSEncoder(seal_context).decode_complex(plain))
    except Exception as exc:
        raise HeError("the ciphertext does not decrypt under this context") from exc
