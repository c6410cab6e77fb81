"""The enterprise's side of an encrypted group sum: pure functions over its own secrets.

From the session's offer (the ``psi`` job's result), its identifiers, its values and its
secret TenSEAL context, :func:`prepare_group_sum` builds the four uploads and remembers
what decryption needs; :func:`read_group_sums` decrypts the result and debiases it. The
secret key and the PSI key ``a`` never leave this side: only the public context, blinded
points, ciphertexts and the shuffle proofs (with ``A = a·G``) are uploaded.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from computations._encrypted._blobs import digest_of, frame_proofs, frame_vectors, join_points
from computations._encrypted._group_sum import debias_sum
from computations._encrypted._layout import rotation_steps
from computations._encrypted._session import (
    PRIVACY_METADATA,
    identifier_bytes,
    session_binding,
    session_of,
)
from computations._errors import ComputationError
from computations._he._seal import decrypt_slots, encrypt_chunks, public_context_bytes
from computations._psi import PsiClient, PsiOffer


@dataclass(frozen=True)
class PreparedGroupSum:
    """The uploads of one encrypted group sum, by name, and the totals to debias with."""

    uploads: dict[str, bytes] = field(repr=False)
    total: float
    total_of_squares: float
    items: int

    def params(self, session: str) -> dict[str, str]:
        """The job parameters: the session's job id and each upload's digest."""
        return {
            "session": session,
            **{name: digest_of(data) for name, data in self.uploads.items()},
        }


def prepare_group_sum(
    offer: pa.Table, identifiers: Sequence[object], values: Sequence[float], context: Any
) -> PreparedGroupSum:
    """Shuffle ``identifiers`` with their ``values``, blind them under a fresh key, re-blind
    and re-shuffle the offer with a shuffle proof per list, and encrypt the values packed
    under ``context``, which must hold the secret key (it is not uploaded; its public copy
    is, with Galois keys for left rotations by powers of two only, and the values are
    encrypted with the secret key: half the bytes, ``_he/_seal.py``). Proving costs about
    seven scalar multiplications per offered point (docs/threat-model.md).

    Raises :class:`ComputationError` for unequal lengths, repeated identifiers or an
    offer that is not one.
    """
    if len(identifiers) != len(values) or not identifiers:
        raise ComputationError("give one value per identifier, and at least one")
    # The sandbox sees each blinded item's outcome in its worker, by position: in the
    # caller's order (often sorted) that position would say which of the caller's rows
    # matched. A uniform shuffle from the OS's CSPRNG, values permuted alike, hides it.
    order = list(range(len(identifiers)))
    secrets.SystemRandom().shuffle(order)
    identifiers = [identifiers[i] for i in order]
    values = [values[i] for i in order]
    session = session_of(offer)
    groups = [str(g) for g in session["groups"]]
    length = int(session["length"])
    points = offer.column("point").to_pylist()
    labels = offer.column("group").to_pylist()
    if len(points) != length * len(groups) or labels != [g for g in groups for _ in range(length)]:
        raise ComputationError("the offer's lists do not match its description")
    if "offer_digest" not in session:
        raise ComputationError(
            "this PSI session predates shuffle proofs; open a new session (psi job)"
        )
    client = PsiClient([identifier_bytes(i) for i in identifiers])
    offered = tuple(tuple(points[g * length : (g + 1) * length]) for g in range(len(groups)))
    reply = client.reblind(PsiOffer(offered, session_binding(session)), labels=groups)
    if reply.key is None:  # reblind always proves; this keeps the type checker honest
        raise ComputationError("the PSI reply was not proved")
    slots = context.data.seal_context().key_context_data().parms().poly_modulus_degree() // 2
    vectors = encrypt_chunks(context, [float(v) for v in values])
    return PreparedGroupSum(
        uploads={
            "request": join_points(client.request().items),
            "reply": join_points([p for group in reply.groups for p in group]),
            "proof": frame_proofs(reply.key, offered, [p.to_bytes() for p in reply.proofs]),
            "context": public_context_bytes(context, rotations=rotation_steps(slots)),
            "values": frame_vectors(vectors),
        },
        total=math.fsum(float(v) for v in values),
        total_of_squares=math.fsum(float(v) ** 2 for v in values),
        items=len(values),
    )


def read_group_sums(
    result: pa.Table, prepared: PreparedGroupSum, context: Any
) -> list[dict[str, Any]]:
    """Per group: the decrypted (randomised) sum, the debiased estimate of the true sum and
    a bound on its variance, and the sandbox's debiased count with its variance bound.

    Each reply ciphertext is decrypted once; a group's sum is the ``part`` (real or
    imaginary) of slot ``slot`` of its row's ciphertext. Raises :class:`ComputationError`
    if ``result`` is not an encrypted_group_sum result.
    """
    raw = (result.schema.metadata or {}).get(PRIVACY_METADATA)
    privacy = json.loads(raw) if raw is not None else {}
    if privacy.get("mechanism") != "randomized_response_bitvec":
        raise ComputationError("this result is not an encrypted group sum")
    if not {"encrypted_sums", "slot", "part"} <= set(result.column_names):
        raise ComputationError(
            "this result has no encrypted_sums, slot and part columns: it is not an "
            "encrypted group sum of this version"
        )
    keep, other = float(privacy["keep_probability"]), float(privacy["other_probability"])
    decrypted_slots: dict[bytes, Any] = {}
    out = []
    for row in result.to_pylist():
        ciphertext = row["encrypted_sums"]
        if ciphertext not in decrypted_slots:
            decrypted_slots[ciphertext] = decrypt_slots(context, ciphertext)
        slots = decrypted_slots[ciphertext]
        if not 0 <= row["slot"] < len(slots) or row["part"] not in ("real", "imag"):
            raise ComputationError("a group's slot or part is not in its ciphertext")
        slot = slots[row["slot"]]
        decrypted = float(slot.imag if row["part"] == "imag" else slot.real)
        estimate, variance = debias_sum(
            decrypted,
            total=prepared.total,
            total_of_squares=prepared.total_of_squares,
            keep=keep,
            other=other,
        )
        out.append(
            {
                "group": row["group"],
                "randomised_sum": decrypted,
                "sum_estimate": estimate,
                "sum_variance_bound": variance,
                "count_estimate": row["count_estimate"],
                "count_variance_bound": row["count_variance"],
            }
        )
    return out
