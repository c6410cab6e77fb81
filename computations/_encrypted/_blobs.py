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
- *context*: TenSEAL's serialised public context, as is.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from computations._errors import ComputationError

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
