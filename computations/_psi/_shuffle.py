"""A zero-knowledge proof that a PSI reply list is a shuffle of ``a ·`` its offer list.

**What is proved.** Public: the base point ``G``, independent generators ``H, H_1 … H_N``
(:func:`~computations._psi._arith.generators`), the enterprise's key commitment
``A = a·G``, an offered list ``L_1 … L_N`` and a reply list ``R_1 … R_N`` (additive
notation). The prover knows ``a`` and a permutation ``π`` with ``R_i = a·L_π(i)`` for
every ``i``, and shows it without revealing either. One proof per group, all under the
same ``A``: so every reply list is a permutation of its own offer list raised to one key.

This is the proof of a shuffle of Terelius and Wikström ("Proofs of restricted shuffles",
AFRICACRYPT 2010) in the form of Haenni, Locher, Koenig and Dubuis ("Pseudo-code
algorithms for verifiable re-encryption mix-nets", FC 2017 workshops, GenShuffleProof /
CheckShuffleProof), with re-encryption replaced by exponentiation: their ``t4`` relation
``Π e'_i^{u'_i} = Enc(Π e_i^{u_i}; r')`` becomes ``Σ u'_i·R_i = a·X̃`` with
``X̃ = Σ u_j·L_j``, and a fifth commitment ties that ``a`` to ``A``.

**Transcript** (compact Fiat–Shamir: the proof carries the challenge, the verifier
recomputes every commitment and the challenge from them)::

    prover: r_j, r̂_i, ω1..ω4, ω̂_i, ω'_i random (libsodium); π random (secrets)
    c_π(i) = r_π(i)·G + H_i                        permutation commitment, per input j
    seed   = SHA-512(tag, session, group label, N, A, L_1..N, R_1..N, c_1..N)
    u_j    = SHA-512(seed, "u", j) mod ℓ;  u'_i = u_π(i)
    ĉ_0 = H;  ĉ_i = r̂_i·G + u'_i·ĉ_{i−1}           commitment chain to Π u'_i
    t1 = ω1·G    t2 = ω2·G    t3 = ω3·G + Σ ω'_i·H_i
    t4 = Σ ω'_i·R_i − ω4·X̃    t5 = ω4·G            t̂_i = ω̂_i·G + ω'_i·ĉ_{i−1}
    e  = SHA-512(seed, "c", ĉ_1..N, t1..t5, t̂_1..N) mod ℓ
    s1 = ω1 + e·Σ r_j        s2 = ω2 + e·Σ_i r̂_i·Π_{k>i} u'_k     s3 = ω3 + e·Σ r_j·u_j
    s4 = ω4 + e·a            ŝ_i = ω̂_i + e·r̂_i     s'_i = ω'_i + e·u'_i
    proof = (c_1..N, ĉ_1..N, e, s1..s4, ŝ_1..N, s'_1..N)

The verifier sets ``c̄ = Σ c_j − Σ H_i``, ``ĉ = ĉ_N − (Π u_j)·H``, ``c̃ = Σ u_j·c_j``,
``X̃ = Σ u_j·L_j``, recomputes ``t1 = s1·G − e·c̄``, ``t2 = s2·G − e·ĉ``,
``t3 = s3·G + Σ s'_i·H_i − e·c̃``, ``t4 = Σ s'_i·R_i − s4·X̃``, ``t5 = s4·G − e·A``,
``t̂_i = ŝ_i·G + s'_i·ĉ_{i−1} − e·ĉ_i``, and accepts iff hashing them gives ``e``. Every
point must be a canonical non-identity encoding and every scalar below ``ℓ``.

**Soundness.** From two accepting transcripts with one seed and different challenges
``e ≠ e*`` (rewinding the random oracle), the differences of responses divided by
``e − e*`` give openings: ``c̄ = r̄·G`` and ``c̃ = r̃·G + Σ u'_i·H_i``, so the commitments
``c_j`` open to the columns of a matrix ``M`` with ``M·1 = 1`` and ``M·u = u'`` (unless the
prover knows a discrete-log relation among ``G, H, H_i``, all hashed to the group); the
chain ``ĉ_i`` opens with the same ``u'_i`` and gives ``Π u'_i = Π u_j``; and
``Σ u'_i·R_i = a·X̃`` with ``A = a·G``. ``M``, ``A``, ``L`` and ``R`` are fixed in the seed
before the ``u_j`` are drawn, so by Terelius–Wikström (``M`` is a permutation matrix iff
``M·1 = 1`` and ``Π (M·u)_i = Π u_j`` as polynomials; Schwartz–Zippel) a matrix that is
not a permutation passes with probability at most ``N/ℓ``.

With ``M`` the permutation ``π``, the last relation reads ``Σ_j u_j·(R_π⁻¹(j) − a·L_j) = 0``
for the random ``u``. In a group of prime order, if any term ``D_j = R_π⁻¹(j) − a·L_j`` is
not the identity, for each choice of the other ``u`` exactly one value of ``u_j`` makes the
sum vanish: probability ``1/ℓ``. So, up to ``(N + 1)/ℓ`` per hash query (about
``2^-232`` at a million points), an accepted proof means ``R_i = a·L_π(i)`` for every
``i``, with the ``a`` of ``A``. Zero knowledge: the commitments are perfectly hiding
Pedersen commitments and the responses are uniformly masked by fresh ``ω``; this is an
honest-verifier zero-knowledge Σ-protocol made non-interactive in the random oracle
model. ``A = a·G`` itself reveals nothing about the blinded identifiers under DDH.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from computations._psi import _arith as ar
from computations._psi._group import POINT_BYTES, PsiError, blind, check_point

#: Fiat–Shamir protocol tag; a new proof format needs a new tag.
TRANSCRIPT_TAG: Final = b"indomain/psi/v1/shuffle-proof/TW10-HLKD17"
SCALAR_BYTES: Final = 32
#: Bytes of a proof for lists of ``n``: ``2n`` points, ``2n + 5`` scalars.
FIXED_SCALARS: Final = 5


def proof_size(n: int) -> int:
    """The exact size of a serialised proof over lists of ``n`` points."""
    return 2 * n * POINT_BYTES + (2 * n + FIXED_SCALARS) * SCALAR_BYTES


@dataclass(frozen=True)
class ShuffleProof:
    """One group's proof; see the module docstring for the fields' names."""

    commitments: tuple[bytes, ...]  # c_1..c_N
    chain: tuple[bytes, ...]  # ĉ_1..ĉ_N
    challenge: bytes  # e
    responses: tuple[bytes, bytes, bytes, bytes]  # s1..s4
    chain_responses: tuple[bytes, ...]  # ŝ_1..ŝ_N
    permuted_responses: tuple[bytes, ...]  # s'_1..s'_N

    def to_bytes(self) -> bytes:
        """``c ‖ ĉ ‖ e ‖ s1..s4 ‖ ŝ ‖ s'``, fixed widths, no length fields."""
        return b"".join(
            (
                *self.commitments,
                *self.chain,
                self.challenge,
                *self.responses,
                *self.chain_responses,
                *self.permuted_responses,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes, n: int) -> ShuffleProof:
        """Parse a proof over lists of ``n``; raises :class:`PsiError` for a wrong size, a
        non-canonical or identity point, or a scalar not below ``ℓ``."""
        if n < 1:
            raise PsiError("a shuffle proof covers at least one point")
        if not isinstance(data, bytes) or len(data) != proof_size(n):
            raise PsiError(f"a shuffle proof over {n} points must be {proof_size(n)} bytes")
        words = [data[k : k + 32] for k in range(0, len(data), 32)]
        points, scalars = words[: 2 * n], words[2 * n :]
        for point in points:
            check_point(point)
        for scalar in scalars:
            ar.check_scalar(scalar)
        return cls(
            commitments=tuple(points[:n]),
            chain=tuple(points[n:]),
            challenge=scalars[0],
            responses=(scalars[1], scalars[2], scalars[3], scalars[4]),
            chain_responses=tuple(scalars[5 : 5 + n]),
            permuted_responses=tuple(scalars[5 + n :]),
        )


def key_commitment(key: bytes) -> bytes:
    """``A = a·G``, published with the proofs."""
    return ar.base(key)


def _seed(
    session: bytes,
    label: str,
    key: bytes,
    offered: Sequence[bytes],
    reply: Sequence[bytes],
    commitments: Sequence[bytes],
) -> bytes:
    n = len(offered)
    return ar.hash_to_scalar(
        b"".join(
            (
                ar.frame(TRANSCRIPT_TAG),
                ar.frame(session),
                ar.frame(label.encode()),
                n.to_bytes(8, "big"),
                key,
                *offered,
                *reply,
                *commitments,
            )
        )
    )


def _challenges(seed: bytes, n: int) -> list[bytes]:
    return [ar.hash_to_scalar(seed + b"u" + j.to_bytes(8, "big")) for j in range(n)]


def _challenge(seed: bytes, chain: Sequence[bytes], ts: Sequence[bytes]) -> bytes:
    return ar.hash_to_scalar(b"".join((seed, b"c", *chain, *ts)))


def _check_lists(offered: Sequence[bytes], reply: Sequence[bytes] | None) -> int:
    n = len(offered)
    if n < 1:
        raise PsiError("a shuffle proof covers at least one point; the list is empty")
    if reply is not None and len(reply) != n:
        raise PsiError("the reply list and the offered list differ in length")
    for point in (*offered, *(reply or ())):
        check_point(point)
    return n


def prove_shuffle(
    key: bytes,
    offered: Sequence[bytes],
    *,
    session: bytes,
    label: str,
    permutation: Sequence[int] | None = None,
) -> tuple[tuple[bytes, ...], ShuffleProof]:
    """The reply list ``R_i = key·offered[π(i)]`` for a fresh uniform ``π`` (from
    ``secrets``; ``permutation`` only for tests) and its proof, bound to ``session`` and
    ``label``. Raises :class:`PsiError` for an empty list, an invalid point or a
    ``permutation`` that is not one."""
    n = _check_lists(offered, None)
    if permutation is None:
        order = list(range(n))
        secrets.SystemRandom().shuffle(order)
        permutation = order
    if sorted(permutation) != list(range(n)):
        raise PsiError("the shuffle is not a permutation of the list")
    perm = list(permutation)
    reply = tuple(blind(key, offered[perm[i]]) for i in range(n))
    h, hs, _ = ar.generators(n)
    r = [ar.s_random() for _ in range(n)]  # r_j, by input position j
    commitments = [ar.IDENTITY] * n
    for i, j in enumerate(perm):
        commitments[j] = ar.add(ar.base(r[j]), hs[i])
    seed = _seed(session, label, key_commitment(key), offered, reply, commitments)
    u = _challenges(seed, n)
    u_out = [u[j] for j in perm]  # u'_i
    r_hat = [ar.s_random() for _ in range(n)]
    chain, previous = [], h
    for i in range(n):
        previous = ar.add(ar.base(r_hat[i]), ar.mul(u_out[i], previous))
        chain.append(previous)
    # r̄ = Σ r_j, r̂ = Σ r̂_i·v_i with v_i = Π_{k>i} u'_k, r̃ = Σ r_j·u_j.
    r_bar, r_tilde, r_chain, v = ar.ZERO, ar.ZERO, ar.ZERO, ar.ONE
    for j in range(n):
        r_bar = ar.s_add(r_bar, r[j])
        r_tilde = ar.s_add(r_tilde, ar.s_mul(r[j], u[j]))
    for i in reversed(range(n)):
        r_chain = ar.s_add(r_chain, ar.s_mul(r_hat[i], v))
        v = ar.s_mul(v, u_out[i])
    omega = [ar.s_random() for _ in range(4)]
    omega_hat = [ar.s_random() for _ in range(n)]
    omega_out = [ar.s_random() for _ in range(n)]
    x_tilde = ar.combination(u, offered)
    ts = [
        ar.base(omega[0]),
        ar.base(omega[1]),
        ar.add(ar.base(omega[2]), ar.combination(omega_out, hs)),
        ar.sub(ar.combination(omega_out, reply), ar.mul(omega[3], x_tilde)),
        ar.base(omega[3]),
        *(
            ar.add(ar.base(omega_hat[i]), ar.mul(omega_out[i], h if i == 0 else chain[i - 1]))
            for i in range(n)
        ),
    ]
    e = _challenge(seed, chain, ts)
    witnesses = (r_bar, r_chain, r_tilde, key)
    responses = tuple(ar.s_add(w, ar.s_mul(e, x)) for w, x in zip(omega, witnesses, strict=True))
    proof = ShuffleProof(
        commitments=tuple(commitments),
        chain=tuple(chain),
        challenge=e,
        responses=(responses[0], responses[1], responses[2], responses[3]),
        chain_responses=tuple(ar.s_add(omega_hat[i], ar.s_mul(e, r_hat[i])) for i in range(n)),
        permuted_responses=tuple(ar.s_add(omega_out[i], ar.s_mul(e, u_out[i])) for i in range(n)),
    )
    return reply, proof


def verify_shuffle(
    key: bytes,
    offered: Sequence[bytes],
    reply: Sequence[bytes],
    proof: ShuffleProof,
    *,
    session: bytes,
    label: str,
) -> None:
    """Check that ``reply`` is a permutation of ``offered`` raised to the ``a`` of
    ``key = a·G``, for this ``session`` and group ``label``.

    Raises :class:`PsiError` if it is not proved (or anything is malformed).
    """
    n = _check_lists(offered, reply)
    check_point(key)
    fields = (proof.commitments, proof.chain, proof.chain_responses, proof.permuted_responses)
    if any(len(field) != n for field in fields) or len(proof.responses) != 4:
        raise PsiError("the shuffle proof does not have the shape of its lists")
    for point in (*proof.commitments, *proof.chain):
        check_point(point)
    for scalar in (proof.challenge, *proof.responses, *fields[2], *fields[3]):
        ar.check_scalar(scalar)
    h, hs, h_sum = ar.generators(n)
    seed = _seed(session, label, key, offered, reply, proof.commitments)
    u = _challenges(seed, n)
    u_product = ar.ONE
    for value in u:
        u_product = ar.s_mul(u_product, value)
    e, (s1, s2, s3, s4) = proof.challenge, proof.responses
    s_out = proof.permuted_responses
    c_bar = ar.sub(ar.point_sum(proof.commitments), h_sum)
    c_hat = ar.sub(proof.chain[-1], ar.mul(u_product, h))
    c_tilde = ar.combination(u, proof.commitments)
    x_tilde = ar.combination(u, offered)
    ts = [
        ar.sub(ar.base(s1), ar.mul(e, c_bar)),
        ar.sub(ar.base(s2), ar.mul(e, c_hat)),
        ar.sub(ar.add(ar.base(s3), ar.combination(s_out, hs)), ar.mul(e, c_tilde)),
        ar.sub(ar.combination(s_out, reply), ar.mul(s4, x_tilde)),
        ar.sub(ar.base(s4), ar.mul(e, key)),
        *(
            ar.sub(
                ar.add(
                    ar.base(proof.chain_responses[i]),
                    ar.mul(s_out[i], h if i == 0 else proof.chain[i - 1]),
                ),
                ar.mul(e, proof.chain[i]),
            )
            for i in range(n)
        ),
    ]
    if _challenge(seed, proof.chain, ts) != e:
        raise PsiError(
            f"the shuffle proof for group {label!r} does not verify: the reply list is not "
            "proved to be a permutation of the offered list under the key A"
        )
