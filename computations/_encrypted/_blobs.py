"""The byte formats an enterprise uploads for an encrypted job, and reading them back.

Job parameters go on the public ledger and stay small, so an encrypted job names its
inputs by SHA-256 digest; the bytes are uploaded beforehand and the sandbox hands the
enclave their paths. Every read checks the digest, so a plan runs exactly the bytes the
signed job named.

Formats (all lengths big-endian, nothing implicit):

- *points*: concatenated 32-byte ristretto255 encodings (PSI request; the reply is the
  offer's groups in order, each ``length`` points);
- *vectors*: ``u32 count``, then per vector ``u32 length`` and TenSEAL's own
  ``serialize()`` bytes (TenSEAL objects do not pickle, and must not);
- *context*: TenSEAL's serialised public context, as is;
- *proof*: ``u32 groups``, ``u32 length``, then ``A = a·G`` (32 bytes), the offered
  lists as received (``groups · length`` points, the statement the proofs are about,
  checked against the session's ``offer_digest``), then per group one shuffle proof of
  ``proof_size(length)`` bytes (``computations/_psi/_shuffle.py``). Nothing else.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from computations._errors import ComputationError
from computations._psi._shuffle import proof_size

POINT_BYTES: Final = 32
DIGEST_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Most vectors one upload may frame (100k items at 4096 slots is 25).
MAX_VECTORS: Final = 4096


def digest_of(data: bytes) -> str:
    """``"sha256:" + hex`` of ``data``: the name an upload goes by."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_blob(ref: Mapping[str, Any], *, max_bytes: int) -> bytes:
    """The bytes at ``ref["path"]``, refused unless their digest is ``ref["digest"]``.

    Raises :class:`ComputationError` for a missing or oversize file or a digest mismatch.
    """
    path, digest = ref.get("path"), ref.get("digest")
    if not isinstance(path, str) or not isinstance(digest, str):
        raise ComputationError("an encrypted job input is not named by path and digest")
    try:
        with Path(path).open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError:
        raise ComputationError("an uploaded input of this job is missing") from None
    if len(data) > max_bytes:
        raise ComputationError(f"an uploaded input is larger than {max_bytes} bytes")
    if digest_of(data) != digest:
        raise ComputationError("an uploaded input does not match the digest the job named")
    return data


def split_points(data: bytes) -> tuple[bytes, ...]:
    """The 32-byte points in ``data``; raises :class:`ComputationError` if it is empty or
    not a whole number of points."""
    if not data or len(data) % POINT_BYTES:
        raise ComputationError(f"a list of points must be a non-empty multiple of {POINT_BYTES}")
    return tuple(data[i : i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES))


def join_points(points: Sequence[bytes]) -> bytes:
    """The *points* format of ``points``."""
    return b"".join(points)


def frame_vectors(vectors: Sequence[bytes]) -> bytes:
    """The *vectors* format of serialised TenSEAL vectors."""
    if not vectors or len(vectors) > MAX_VECTORS:
        raise ComputationError(f"frame between 1 and {MAX_VECTORS} vectors")
    parts = [struct.pack(">I", len(vectors))]
    for vector in vectors:
        parts.append(struct.pack(">I", len(vector)))
        parts.append(bytes(vector))
    return b"".join(parts)


def unframe_vectors(data: bytes) -> tuple[bytes, ...]:
    """The serialised vectors in *vectors* bytes; raises :class:`ComputationError` for a
    count or length that does not fit, or bytes left over."""
    if len(data) < 4:
        raise ComputationError("the vectors upload is too short to hold a count")
    (count,) = struct.unpack_from(">I", data, 0)
    if not 1 <= count <= MAX_VECTORS:
        raise ComputationError(f"the vectors upload must frame between 1 and {MAX_VECTORS}")
    offset, out = 4, []
    for _ in range(count):
        if offset + 4 > len(data):
            raise ComputationError("the vectors upload ends inside a length")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if length == 0 or offset + length > len(data):
            raise ComputationError("a framed vector is empty or runs past the end")
        out.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise ComputationError("the vectors upload has bytes after its last vector")
    return tuple(out)


def frame_proofs(key: bytes, offered: Sequence[Sequence[bytes]], proofs: Sequence[bytes]) -> bytes:
    """The *proof* format: ``key`` (``A``), the offered lists and one proof per list."""
    if not offered or len(proofs) != len(offered) or len({len(g) for g in offered}) != 1:
        raise ComputationError("frame one proof per offered list, all lists of one length")
    head = struct.pack(">II", len(offered), len(offered[0]))
    return b"".join((head, key, *(p for group in offered for p in group), *proofs))


def unframe_proofs(
    data: bytes,
) -> tuple[bytes, tuple[tuple[bytes, ...], ...], tuple[bytes, ...]]:
    """``(A, offered lists, proofs)`` from *proof* bytes, each proof still serialised;
    raises :class:`ComputationError` unless the sizes add up exactly."""
    if len(data) < 8:
        raise ComputationError("the proof upload is too short to hold its shape")
    groups, length = struct.unpack_from(">II", data, 0)
    if groups < 1 or length < 1:
        raise ComputationError("the proof upload must cover at least one list of one point")
    size = proof_size(length)
    if len(data) != 8 + POINT_BYTES * (1 + groups * length) + groups * size:
        raise ComputationError(
            f"the proof upload for {groups} lists of {length} points has the wrong size"
        )
    key, offset = data[8 : 8 + POINT_BYTES], 8 + POINT_BYTES
    offered = []
    for _ in range(groups):
        offered.append(split_points(data[offset : offset + POINT_BYTES * length]))
        offset += POINT_BYTES * length
    proofs = tuple(data[offset + g * size : offset + (g + 1) * size] for g in range(groups))
    return key, tuple(offered), proofs
