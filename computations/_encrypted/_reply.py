"""The enterprise's PSI reply, accepted only once its shuffle proofs verify.

Inside the worker, before anything is matched: the *proof* upload (``_blobs.py``) holds
``A = a·G``, the offered lists the proofs are about and one proof per list. The lists must
be the session's offer (its ``offer_digest``, part of the description the session key is
wrapped under), the labels the session's groups, and every proof must verify
(``computations/_psi/_shuffle.py``). Then every reply list is a permutation of its offered
list raised to one key, which is what lets a job be charged ε (``job_epsilon``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from computations._encrypted._blobs import POINT_BYTES, digest_of, join_points, unframe_proofs
from computations._encrypted._session import session_binding
from computations._errors import ComputationError
from computations._psi import PsiError, PsiReblinded
from computations._psi._parallel import cores
from computations._psi._protocol import verify_reply
from computations._psi._shuffle import ShuffleProof, proof_size

#: Replies of at least this many points have their proofs verified in parallel processes,
#: one per core (about a millisecond of libsodium per point; a fork costs far less).
PARALLEL_FROM: Final = 4096


def proof_bytes(groups: int, length: int) -> int:
    """The size of the *proof* upload for ``groups`` lists of ``length`` points."""
    return 8 + POINT_BYTES * (1 + groups * length) + groups * proof_size(length)


def proved_reply(
    session: Mapping[str, Any], groups: tuple[tuple[bytes, ...], ...], proof: bytes
) -> PsiReblinded:
    """The reply ``groups`` once every shuffle proof in ``proof`` verifies against the
    session's offered lists (checked against its ``offer_digest``) and group labels.

    Raises :class:`PsiError` otherwise: nothing is matched for an unproved reply.
    """
    expected = session.get("offer_digest")
    if not isinstance(expected, str):
        raise PsiError("this PSI session predates shuffle proofs; open a new session")
    try:
        key, offered, proofs = unframe_proofs(proof)
    except ComputationError as exc:
        raise PsiError(str(exc)) from None
    labels = [str(g) for g in session["groups"]]
    if len(offered) != len(labels) or len(offered[0]) != int(session["length"]):
        raise PsiError("the shuffle proofs do not have the shape of the session's offer")
    if digest_of(join_points([p for group in offered for p in group])) != expected:
        raise PsiError("the shuffle proofs are about lists other than this session's offer")
    reply = PsiReblinded(
        groups,
        key,
        tuple(ShuffleProof.from_bytes(data, len(offered[0])) for data in proofs),
    )
    points = len(offered) * len(offered[0])
    workers = min(len(offered), cores()) if points >= PARALLEL_FROM else 1
    verify_reply(reply, offered, session=session_binding(session), labels=labels, workers=workers)
    return reply
