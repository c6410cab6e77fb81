"""``encrypted_group_sum``: per group, the encrypted sum of the enterprise's values over
its identifiers found in the dataset, matched by PSI and locally randomised.

Parameters (all the enterprise signs; the bytes are uploads named by digest)::

    {"session": "<job id of a psi job>", "request": "sha256:…", "reply": "sha256:…",
     "proof": "sha256:…", "context": "sha256:…", "values": "sha256:…"}

- ``request``: its identifiers blinded, ``a·H(c)``, in its own order (*points* format);
- ``reply``: each list of the session's offer raised to ``a`` and re-shuffled, groups in
  the offer's order, each of the offer's length;
- ``proof``: ``A = a·G``, the offered lists and per group a zero-knowledge proof that the
  reply list is a permutation of the offered list raised to that ``a`` (``_psi/_shuffle.py``);
- ``context``: a public TenSEAL CKKS context with Galois keys (no secret key);
- ``values``: CKKS vectors, value of request item ``i`` in slot ``i mod S`` of vector
  ``i div S``, every vector exactly ``S`` slots.

Inside the enclave: unwrap the session's ``b``; check the offered lists against the
session's ``offer_digest`` and verify every shuffle proof, before anything is matched
(a failure refuses the job with :class:`PsiError`); item ``i`` matched group ``g`` when
``b·(a·H(c_i))`` is in reply list ``g``. The enterprise shuffled the lists, so the
sandbox learns per *blinded item* its outcome, never which of its rows matched. Each
outcome then goes through randomised response at the policy's epsilon (charged to the
budget before the run), and only the reports meet the ciphertexts (``_group_sum.py``).
The minimum intersection is checked on the debiased count of matches (post-processing):
its lower confidence bound, ``estimate − 3·sd``, must reach the minimum, so an
intersection too small to tell from zero through the randomisation is refused (fail
closed; the estimate alone exceeds any small minimum half the time when nothing matched).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Final

import duckdb
import pyarrow as pa

from computations._dataset import DatasetSpec
from computations._encrypted._blobs import (
    DIGEST_PATTERN,
    read_blob,
    split_points,
    unframe_vectors,
)
from computations._encrypted._group_sum import (
    MAX_EPSILON,
    PackedSums,
    Randomised,
    count_estimates,
    packed_group_sums,
    randomise,
    warm_up,
)
from computations._encrypted._keys import unwrap_session_key
from computations._encrypted._reply import proof_bytes, proved_reply
from computations._encrypted._session import (
    DEFAULT_MAX_SET_SIZE,
    PRIVACY_METADATA,
    max_set_size,
    session_binding,
)
from computations._encrypted._sources import he_code_hash
from computations._errors import ComputationError, QueryRefused
from computations._he import HeError, PublicContext, load_ckks_vector, load_public_context
from computations._he._context import (
    DEFAULT_MAX_CONTEXT_BYTES,
    DEFAULT_MAX_POLY_MODULUS_DEGREE,
    DEFAULT_MAX_VECTOR_BYTES,
)
from computations._plan import ComputationResult, Plan, params_digest
from computations._psi import PsiError, PsiReblinded, PsiRequest
from computations._psi._protocol import blind_distinct, reply_positions

#: The enterprise-signed parameters.
PARAM_KEYS: Final = frozenset({"session", "request", "reply", "proof", "context", "values"})
#: What the sandbox adds when it resolves the parameters (never taken from a job).
RESOLVED_KEYS: Final = frozenset({"resolved_session", "resolved_blobs"})
#: Standard deviations below the estimate the minimum intersection is judged at.
CONFIDENCE_SDS: Final = 3.0
_JOB_ID_LENGTH: Final = 36

_PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "session": {"type": "string", "description": "job id of the psi job"},
        **{
            name: {"type": "string", "pattern": DIGEST_PATTERN.pattern}
            for name in ("request", "reply", "proof", "context", "values")
        },
    },
    "required": sorted(PARAM_KEYS),
    "additionalProperties": False,
}


def local_epsilon(dataset: DatasetSpec, obligations: Mapping[str, str]) -> float:
    """The randomised-response epsilon: the manifest's ``epsilon_per_job``, lowered by a
    policy obligation; raises :class:`ComputationError` for a malformed obligation."""
    epsilon = float(dataset.privacy.epsilon_per_job)
    if "epsilon_per_job" in obligations:
        try:
            obliged = float(str(obligations["epsilon_per_job"]).strip())
        except ValueError:
            raise ComputationError("policy obligation epsilon_per_job is not a number") from None
        if not (math.isfinite(obliged) and obliged > 0):
            raise ComputationError("policy obligation epsilon_per_job must be positive")
        epsilon = min(epsilon, obliged)
    return min(epsilon, MAX_EPSILON)


class EncryptedGroupSum:
    """The ``encrypted_group_sum`` computation: see the module docstring."""

    name: Final = "encrypted_group_sum"
    description: Final = (
        "Per group of a public dimension, the sum of the enterprise's CKKS-encrypted values "
        "over its identifiers found in the dataset by PSI; memberships are randomised per "
        "row (local DP) before they meet a ciphertext; debiased counts in the clear."
    )

    @cached_property
    def code_hash(self) -> str:
        return he_code_hash()

    def warm_up(self) -> None:
        """Import TenSEAL and OpenDP before a job arrives (the enclave's workers call it)."""
        warm_up()

    @property
    def params_schema(self) -> dict[str, Any]:
        return copy.deepcopy(_PARAMS_SCHEMA)

    def check(
        self,
        params: Mapping[str, Any],
        dataset: DatasetSpec,
        *,
        obligations: Mapping[str, str] | None = None,
    ) -> Plan:
        """Approve the job as a plan.

        ``params`` are the job's, plus the sandbox's ``resolved_session`` (the session's
        description from its stored offer) and ``resolved_blobs`` (paths of the uploads);
        a missing session or upload is refused here, after the policy decided and before
        any budget is charged. Raises :class:`QueryRefused` naming the rule broken.
        """
        if not isinstance(params, Mapping):
            raise QueryRefused("params", "parameters must be an object")
        own = {k: v for k, v in params.items() if k not in RESOLVED_KEYS}
        if set(own) != PARAM_KEYS:
            extra = sorted(set(own) - PARAM_KEYS)
            missing = sorted(PARAM_KEYS - set(own))
            raise QueryRefused(
                "params", f"unknown parameters {extra}, missing parameters {missing}"
            )
        if not isinstance(own["session"], str) or len(own["session"]) != _JOB_ID_LENGTH:
            raise QueryRefused("params", "session must be the job id of a psi job")
        for name in sorted(PARAM_KEYS - {"session"}):
            if not isinstance(own[name], str) or not DIGEST_PATTERN.fullmatch(own[name]):
                raise QueryRefused("params", f"{name} must be an upload digest sha256:<hex>")
        session = params.get("resolved_session")
        if not isinstance(session, Mapping) or session.get("dataset") != dataset.name:
            raise QueryRefused(
                "psi-session",
                "no finished psi session of yours on this dataset has that id",
                str(own["session"]),
            )
        blobs = params.get("resolved_blobs")
        if not isinstance(blobs, Mapping):
            blobs = {}
        for name in sorted(PARAM_KEYS - {"session"}):
            if not isinstance(blobs.get(name), str):
                raise QueryRefused(
                    "upload-missing",
                    f"upload {name} first (PUT /v1/uploads/{name}/<digest>); "
                    "it is not among your checked uploads",
                    str(own[name]),
                )
        obligations = obligations or {}
        max_set = min(
            max_set_size(obligations, default=DEFAULT_MAX_SET_SIZE),
            int(session.get("max_set_size", DEFAULT_MAX_SET_SIZE)),
        )
        _check_set_size(str(blobs["request"]), max_set)
        minimum = dataset.min_group_size
        if "min_group_size" in obligations:
            minimum = max(minimum, int(str(obligations["min_group_size"])))
        return Plan(
            computation=self.name,
            dataset=dataset.name,
            params_digest=params_digest(own),
            body={
                "session": dict(session),
                "blobs": {
                    name: {"path": blobs[name], "digest": own[name]}
                    for name in sorted(PARAM_KEYS - {"session"})
                },
                "epsilon": local_epsilon(dataset, obligations),
                "min_intersection": minimum,
                "max_set_size": max_set,
                "max_poly_modulus_degree": DEFAULT_MAX_POLY_MODULUS_DEGREE,
                "group_by": [str(session.get("dimension", ""))],
                "outputs": [{"column": str(session.get("identifier", ""))}],
            },
        )

    def execute(
        self,
        plan: Plan,
        con: duckdb.DuckDBPyConnection,
        *,
        table: str,
        dataset: DatasetSpec,
        unit_unique: bool = False,
    ) -> ComputationResult:
        """Match, randomise, compute on ciphertexts; see the module docstring.

        Raises :class:`QueryRefused` (``psi-min-intersection``) when the debiased count of
        matches is under the minimum, :class:`computations.HeError` or
        :class:`computations.PsiError` for inputs that do not hold up.
        """
        if plan.computation != self.name or plan.dataset != dataset.name:
            raise ComputationError("plan is for another computation or dataset")
        body = plan.body
        session = dict(body["session"])
        groups = [str(g) for g in session["groups"]]
        length = int(session["length"])
        key = unwrap_session_key(
            base64.b64decode(session["wrapped_key"]), binding=session_binding(session)
        )
        blobs = body["blobs"]
        max_set = int(body["max_set_size"])
        request = PsiRequest(
            split_points(read_blob(blobs["request"], max_bytes=32 * max_set))
        ).items
        if len(request) > max_set:
            raise PsiError(f"a PSI request may hold at most {max_set} identifiers")
        reply_points = split_points(read_blob(blobs["reply"], max_bytes=32 * length * len(groups)))
        if len(reply_points) != length * len(groups):
            raise PsiError("the PSI reply does not have the shape of the offer")
        reply = proved_reply(
            session,
            tuple(reply_points[g * length : (g + 1) * length] for g in range(len(groups))),
            read_blob(blobs["proof"], max_bytes=proof_bytes(len(groups), length)),
        )
        outcomes = _outcomes(key, request, reply)
        context = load_public_context(
            read_blob(blobs["context"], max_bytes=DEFAULT_MAX_CONTEXT_BYTES),
            max_poly_modulus_degree=int(body["max_poly_modulus_degree"]),
        )
        framed = unframe_vectors(
            read_blob(blobs["values"], max_bytes=DEFAULT_MAX_VECTOR_BYTES * 64)
        )
        randomised, counts, sums = answer(
            outcomes,
            groups=len(groups),
            epsilon=float(body["epsilon"]),
            minimum=int(body["min_intersection"]),
            context=context,
            vectors=framed,
        )
        privacy = {
            "mode": "local_dp",
            "mechanism": "randomized_response_bitvec",
            "epsilon": job_epsilon(randomised.epsilon, len(groups)),
            "delta": 0.0,
            "epsilon_per_report": randomised.epsilon,
            "charge": (
                "epsilon per job: the reply is proved a shuffle of the offer under one key, "
                "so each person is matched by at most one request item, one report per job"
            ),
            "guarantee": (
                "each person's data enters one epsilon-LDP report per job, against a "
                "malicious enterprise (shuffle proofs verified) and a semi-honest one"
            ),
            "keep_probability": randomised.keep,
            "other_probability": randomised.other,
            "items": len(outcomes),
            "debias": "T = (S - q*V) / (p - q); Var <= p*q * sum(v^2) / (p-q)^2",
            "layout": (
                "S for a group is the real or imaginary part (column part) of slot `slot` "
                "of its row's encrypted_sums ciphertext (scale: the values' squared); "
                "every slot of a reply ciphertext is a copy of one slot's pair of group "
                "sums, or zero"
            ),
        }
        result = result_table(groups, counts, sums).replace_schema_metadata(
            {PRIVACY_METADATA: json.dumps(privacy)}
        )
        return ComputationResult(
            table=result,
            suppressed_groups=0,
            notes=(
                f"memberships randomised per item at epsilon {randomised.epsilon:g} "
                "before any ciphertext met them; sums are encrypted under your key",
                f"charged {job_epsilon(randomised.epsilon, len(groups)):g}: at most one "
                "report per person (the reply's shuffle proofs verified)",
            ),
        )


def answer(
    outcomes: Sequence[int],
    *,
    groups: int,
    epsilon: float,
    minimum: int,
    context: PublicContext,
    vectors: Sequence[bytes],
) -> tuple[Randomised, list[tuple[float, float]], PackedSums]:
    """The release for true ``outcomes`` (0, or ``g + 1``): randomise each, check the
    minimum on the debiased count, then compute on the enterprise's ``vectors`` (checked
    against ``context``) with the reports as masks. Nothing but the reports reaches a
    ciphertext: this is the defence against chosen plaintexts (module docstring).

    Returns the reports, the debiased counts with variance bounds, and the packed sums
    (the reply ciphertexts and where each group's sum is in them). Raises
    :class:`QueryRefused` under the minimum and :class:`computations.HeError` for vectors
    that do not hold up.
    """
    randomised = randomise(outcomes, groups=groups, epsilon=epsilon)
    counts = count_estimates(randomised)
    # Bits flip independently, so the groups' variances add up.
    matched = sum(estimate for estimate, _ in counts)
    spread = math.sqrt(sum(variance for _, variance in counts))
    if matched - CONFIDENCE_SDS * spread < minimum:
        raise QueryRefused(
            "psi-min-intersection",
            f"the intersection is smaller than {minimum}, or too small to tell apart from "
            f"it through the randomisation (judged on the randomised reports: the estimate "
            f"less {CONFIDENCE_SDS:g} standard deviations must reach it)",
        )
    if context.scheme != "CKKS":
        raise HeError("encrypted_group_sum needs a CKKS context")
    chunks = [load_ckks_vector(context, data) for data in vectors]
    sums = packed_group_sums(context, chunks, randomised.bits)
    return randomised, counts, sums


def result_table(
    groups: Sequence[str], counts: Sequence[tuple[float, float]], sums: PackedSums
) -> pa.Table:
    """One row per group: its debiased count and variance bound, and where its encrypted
    sum is: ``encrypted_sums`` (dictionary-encoded, so each reply ciphertext is stored
    once however many groups it holds), ``slot`` and ``part`` (``real`` or ``imag``)."""
    places = sums.places
    return pa.table(
        {
            "group": pa.array(groups, pa.string()),
            "encrypted_sums": pa.DictionaryArray.from_arrays(
                pa.array([p.block for p in places], pa.int32()),
                pa.array(sums.ciphertexts, pa.binary()),
            ),
            "slot": pa.array([p.slot for p in places], pa.int32()),
            "part": pa.array([p.part for p in places], pa.string()),
            "count_estimate": pa.array([c for c, _ in counts], pa.float64()),
            "count_variance": pa.array([v for _, v in counts], pa.float64()),
        }
    )


def _outcomes(key: bytes, request: tuple[bytes, ...], reply: PsiReblinded) -> list[int]:
    """Per request item: 0 if unmatched, else 1 + the index of the reply list holding it."""
    where = reply_positions(reply)
    # Compare blinded values, not bytes: two encodings of one point would otherwise each
    # be matched, and the row reported twice (the reviewer's bit-255 twins).
    return [where.get(point, 0) for point in blind_distinct(key, request)]


def _check_set_size(request_path: str, max_set: int) -> None:
    """Refuse, before any budget is charged, a request upload of more than ``max_set``
    points (32 bytes each); the worker counts the points again."""
    try:
        items = os.path.getsize(request_path) // 32
    except OSError:
        raise QueryRefused(
            "upload-missing", "upload request first; it is not among your checked uploads"
        ) from None
    if items > max_set:
        raise QueryRefused(
            "psi-set-size",
            f"the PSI request holds {items} identifiers; the policy allows at most {max_set} "
            "in one job (@psi_max_set_size): split your list or ask the bureau",
        )


def job_epsilon(epsilon: float, groups: int) -> float:
    """What one job is charged: ``epsilon``, each report's, whatever the number of groups.

    Why one report per person (the argument in full is in docs/threat-model.md): the job
    runs only if every shuffle proof verifies, so reply list ``g`` is ``a·L_g`` permuted,
    one ``a`` for all lists. A person ``s`` offered in list ``g`` (one list per person)
    then has exactly one reply point, ``a·b·H(s)``, and a request item ``P`` matches it
    iff ``b·P = a·b·H(s)``, i.e. ``P = a·H(s)``: one value. Request items must blind to
    distinct values, so at most one item matches ``s``, and ``s``'s presence or group
    changes that one item's outcome only. One ε-LDP report; the rest is post-processing.
    Until the proofs this was ``groups · epsilon`` (the multi-copy attack gave ``G``
    reports per person); ``groups`` is kept in the signature for the statement's callers.
    """
    del groups  # one report per person, however many lists (docstring)
    return float(epsilon)


def plan_cost(plan: Plan) -> tuple[float, float]:
    """``(epsilon, 0)``: what a run spends (:func:`job_epsilon`)."""
    epsilon = plan.body.get("epsilon")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0:
        raise ComputationError("an encrypted_group_sum plan has no valid epsilon")
    session = plan.body.get("session")
    groups = session.get("groups") if isinstance(session, Mapping) else None
    if not isinstance(groups, list | tuple) or not groups:
        raise ComputationError("an encrypted_group_sum plan has no session groups")
    return job_epsilon(float(epsilon), len(groups)), 0.0


ENCRYPTED_GROUP_SUM: Final = EncryptedGroupSum()
