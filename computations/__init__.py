"""The approved computations: describe, check, then execute.

A request names a computation and its parameters. The computation's ``check`` turns them
into a :class:`Plan` (or a :class:`QueryRefused` naming the rule broken) without touching
data; only the enclave calls ``execute``, on a locked-down DuckDB connection. Results
travel as Arrow IPC streams, their privacy statement (epsilon, delta, noise scales) in the
schema metadata. :func:`plan_cost` and :func:`release_key` are what the budget accountant
needs: what a plan spends, and which earlier release answers it at no cost.

Other parts import only from here.
"""

from computations._aggregate import PlanCharge, join_partner, release_key
from computations._aggregate._clamp import stored_clamps
from computations._aggregate._codes import StoredCode, stored_codes
from computations._aggregate._execute import privacy_statement
from computations._aggregate._noise import zcdp_epsilon
from computations._arrow import table_from_ipc, table_to_ipc, table_to_rows
from computations._computation import Computation
from computations._dataset import ColumnClass, ColumnSpec, DatasetSpec, PrivacyRules, parse_budget
from computations._encrypted import (
    PreparedGroupSum,
    debias_scores,
    digest_of,
    frame_vectors,
    prepare_group_sum,
    read_group_sums,
    session_of,
    set_enclave_secret,
    split_points,
)
from computations._errors import ComputationError, QueryRefused
from computations._he import HeError, PublicContext, load_ckks_vector, load_public_context
from computations._module import MODULE as MODULE_RUNNER
from computations._module import check_source as check_module_source
from computations._plan import ComputationResult, Plan, params_digest
from computations._psi import (
    PsiClient,
    PsiError,
    PsiLimits,
    PsiMembership,
    PsiOffer,
    PsiReblinded,
    PsiRequest,
    PsiServer,
    PsiSize,
)
from computations._registry import (
    available_computations,
    code_hash_of,
    get_computation,
    plan_charge,
    plan_cost,
    runner_for,
    warm_up,
)

__all__ = [
    "MODULE_RUNNER",
    "ColumnClass",
    "ColumnSpec",
    "Computation",
    "ComputationError",
    "ComputationResult",
    "DatasetSpec",
    "HeError",
    "Plan",
    "PlanCharge",
    "PreparedGroupSum",
    "PrivacyRules",
    "PsiClient",
    "PsiError",
    "PsiLimits",
    "PsiMembership",
    "PsiOffer",
    "PsiReblinded",
    "PsiRequest",
    "PsiServer",
    "PsiSize",
    "PublicContext",
    "QueryRefused",
    "StoredCode",
    "available_computations",
    "check_module_source",
    "code_hash_of",
    "debias_scores",
    "digest_of",
    "frame_vectors",
    "get_computation",
    "join_partner",
    "load_ckks_vector",
    "load_public_context",
    "params_digest",
    "parse_budget",
    "plan_charge",
    "plan_cost",
    "prepare_group_sum",
    "privacy_statement",
    "read_group_sums",
    "release_key",
    "runner_for",
    "session_of",
    "set_enclave_secret",
    "split_points",
    "stored_clamps",
    "stored_codes",
    "table_from_ipc",
    "table_to_ipc",
    "table_to_rows",
    "warm_up",
    "zcdp_epsilon",
]
