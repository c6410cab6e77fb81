"""Encrypted views: PSI sessions and computations on the enterprise's CKKS ciphertexts.

``psi`` makes the sandbox's offer (a fresh enclave key per session); ``encrypted_group_sum``
matches the enterprise's reply, randomises each membership (local DP) and only then lets
the enterprise's ciphertexts meet it. See docs/threat-model.md.
"""

from computations._encrypted._blobs import (
    digest_of,
    frame_vectors,
    join_points,
    split_points,
    unframe_vectors,
)
from computations._encrypted._enterprise import (
    PreparedGroupSum,
    prepare_group_sum,
    read_group_sums,
)
from computations._encrypted._group_sum import (
    Randomised,
    count_estimates,
    debias_sum,
    packed_group_sums,
    randomise,
)
from computations._encrypted._group_sum_job import (
    ENCRYPTED_GROUP_SUM,
    PARAM_KEYS,
    RESOLVED_KEYS,
    EncryptedGroupSum,
    plan_cost,
)
from computations._encrypted._keys import set_enclave_secret
from computations._encrypted._linear_score import (
    ENCRYPTED_LINEAR_SCORE,
    EncryptedLinearScore,
    debias_scores,
)
from computations._encrypted._linear_score import plan_cost as linear_score_cost
from computations._encrypted._session import PSI, identifier_bytes, padded_length, session_of

__all__ = [
    "ENCRYPTED_GROUP_SUM",
    "ENCRYPTED_LINEAR_SCORE",
    "PARAM_KEYS",
    "PSI",
    "RESOLVED_KEYS",
    "EncryptedGroupSum",
    "EncryptedLinearScore",
    "PreparedGroupSum",
    "Randomised",
    "count_estimates",
    "debias_scores",
    "debias_sum",
    "digest_of",
    "frame_vectors",
    "identifier_bytes",
    "join_points",
    "linear_score_cost",
    "packed_group_sums",
    "padded_length",
    "plan_cost",
    "prepare_group_sum",
    "randomise",
    "read_group_sums",
    "session_of",
    "set_enclave_secret",
    "split_points",
    "unframe_vectors",
]
