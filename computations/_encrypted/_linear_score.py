"""``encrypted_linear_score``: the enterprise's encrypted model weights applied to the
dataset's features, summed per group of a public dimension; the model stays secret.

Parameters (the bytes are uploads named by digest, like ``encrypted_group_sum``)::

    {"dimension": "district", "features": ["income", "insurance_months"],
     "context": "sha256:…", "values": "sha256:…"}

``values`` is one CKKS vector of ``S`` slots holding the weights ``w_j`` in slots
``0 … d − 1`` (zeros after). Inside the enclave, per row ``r``:

- each feature is clamped to its declared bounds and gets OpenDP Laplace noise of scale
  ``range_j · d / ε_f`` (``make_laplace`` over the column, one call; a row's change moves
  feature ``j`` by at most ``range_j``, so OpenDP's map at ``range_j`` states its ε, and
  the ``d`` features compose to ``ε_f``);
- (one row per privacy unit, the first in a fixed order, so a person is randomised once)
- its group goes through the bit-vector randomised response of ``_group_sum.py`` at
  ``ε_g``; ``ε_f = ε_g = ε / 2``, so each row is ε-LDP (basic composition).

Then, per group ``g``, ``X_g = Σ_r bit_rg · x̃_r`` (plaintext, from randomised data only)
and the result is ``Enc(w · X_g)`` (one plaintext multiplication and one slot sum), plus
``Enc(w · Σ_r x̃_r)`` as the row ``*`` that debiasing needs:
``T̂_g = (S_g − q·S_*) / (p − q)``. Whatever weights the enterprise encrypts (one-hot,
powers of two), it decrypts linear combinations of sums of randomised rows.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Final

import duckdb
import numpy as np
import pyarrow as pa

from computations._dataset import ColumnClass, DatasetSpec
from computations._encrypted._blobs import DIGEST_PATTERN, read_blob, unframe_vectors
from computations._encrypted._flip import _opendp
from computations._encrypted._group_sum import _zero_like, randomise
from computations._encrypted._group_sum_job import RESOLVED_KEYS, local_epsilon
from computations._encrypted._session import PRIVACY_METADATA, padded_length
from computations._encrypted._sources import he_code_hash
from computations._errors import ComputationError, QueryRefused
from computations._he import HeError, load_ckks_vector, load_public_context
from computations._he._context import (
    DEFAULT_MAX_CONTEXT_BYTES,
    DEFAULT_MAX_POLY_MODULUS_DEGREE,
    DEFAULT_MAX_VECTOR_BYTES,
)
from computations._plan import ComputationResult, Plan, params_digest
from indomain.errors import InternalError

PARAM_KEYS: Final = frozenset({"dimension", "features", "context", "values"})
ALL_GROUPS: Final = "*"
MAX_FEATURES: Final = 64

_PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "dimension": {"type": "string"},
        "features": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_FEATURES},
        "context": {"type": "string", "pattern": DIGEST_PATTERN.pattern},
        "values": {"type": "string", "pattern": DIGEST_PATTERN.pattern},
    },
    "required": sorted(PARAM_KEYS),
    "additionalProperties": False,
}


def laplace_rows(values: np.ndarray, *, bounds: tuple[float, float], epsilon: float) -> np.ndarray:
    """``values`` clamped to ``bounds``, each with OpenDP Laplace noise for ``epsilon`` per
    row (scale ``(high − low) / ε``); raises :class:`InternalError` if OpenDP's map does
    not meet ``epsilon``."""
    low, high = float(bounds[0]), float(bounds[1])
    span = high - low
    clamped = np.clip(values.astype(np.float64), low, high)
    if span == 0 or len(clamped) == 0:
        return clamped
    dp = _opendp()
    measurement = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.l1_distance(T=float),
        scale=span / epsilon,
    )
    if measurement.map(span) > epsilon * (1 + 1e-9):
        raise InternalError("Laplace scale does not meet the epsilon it was chosen for")
    return np.asarray(measurement(clamped.tolist()), dtype=np.float64)


class EncryptedLinearScore:
    """The ``encrypted_linear_score`` computation: see the module docstring."""

    name: Final = "encrypted_linear_score"
    description: Final = (
        "Per group of a public dimension, the enterprise's encrypted linear model applied to "
        "the dataset's clamped features; features and groups are randomised per row first."
    )

    @cached_property
    def code_hash(self) -> str:
        return he_code_hash()

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
        """Approve the job; raises :class:`QueryRefused` naming the rule broken."""
        if not isinstance(params, Mapping):
            raise QueryRefused("params", "parameters must be an object")
        own = {k: v for k, v in params.items() if k not in RESOLVED_KEYS}
        if set(own) != PARAM_KEYS:
            raise QueryRefused("params", f"the parameters are exactly {sorted(PARAM_KEYS)}")
        dimension = dataset.column(own["dimension"]) if isinstance(own["dimension"], str) else None
        if dimension is None or not dimension.dimension or dimension.keys is None:
            raise QueryRefused(
                "score-dimension", "dimension must be a dimension column with declared keys"
            )
        features = own["features"]
        if not isinstance(features, list) or not 0 < len(features) <= MAX_FEATURES:
            raise QueryRefused("params", f"features must list 1 to {MAX_FEATURES} columns")
        chosen = []
        for name in features:
            column = dataset.column(name) if isinstance(name, str) else None
            if column is None or column.cls is ColumnClass.identifier or column.bounds is None:
                raise QueryRefused(
                    "score-feature",
                    "a feature must be a non-identifier column with declared bounds",
                    str(name),
                )
            chosen.append({"column": column.name, "bounds": list(column.bounds)})
        if len({c["column"] for c in chosen}) != len(chosen):
            raise QueryRefused("params", "features repeat a column")
        blobs = params.get("resolved_blobs")
        blobs = blobs if isinstance(blobs, Mapping) else {}
        for name in ("context", "values"):
            if not isinstance(own[name], str) or not DIGEST_PATTERN.fullmatch(own[name]):
                raise QueryRefused("params", f"{name} must be an upload digest sha256:<hex>")
            if not isinstance(blobs.get(name), str):
                raise QueryRefused(
                    "upload-missing", f"upload {name} first; it is not among your checked uploads"
                )
        return Plan(
            computation=self.name,
            dataset=dataset.name,
            params_digest=params_digest(own),
            body={
                "dimension": dimension.name,
                "keys": list(dimension.keys),
                "groups": [str(k) for k in dimension.keys],
                "features": chosen,
                "blobs": {n: {"path": blobs[n], "digest": own[n]} for n in ("context", "values")},
                "epsilon": local_epsilon(dataset, obligations or {}),
                "max_poly_modulus_degree": DEFAULT_MAX_POLY_MODULUS_DEGREE,
                "group_by": [dimension.name],
                "outputs": [{"column": c["column"]} for c in chosen],
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
        """Randomise each row, then apply the encrypted weights; see the module docstring."""
        if plan.computation != self.name or plan.dataset != dataset.name:
            raise ComputationError("plan is for another computation or dataset")
        body = plan.body
        features = [dict(f) for f in body["features"]]
        context = load_public_context(
            read_blob(body["blobs"]["context"], max_bytes=DEFAULT_MAX_CONTEXT_BYTES),
            max_poly_modulus_degree=int(body["max_poly_modulus_degree"]),
        )
        (weights_bytes,) = unframe_vectors(
            read_blob(body["blobs"]["values"], max_bytes=DEFAULT_MAX_VECTOR_BYTES)
        )
        weights = load_ckks_vector(context, weights_bytes)
        slots = context.poly_modulus_degree // 2
        if int(weights.size()) != slots or len(features) > slots:
            raise HeError(f"the weights must be one CKKS vector of exactly {slots} slots")
        if not context.context.has_galois_keys():
            raise HeError("the HE context has no Galois keys; the slot sum needs them")
        try:
            rows = con.execute(score_rows_sql(table, dataset.privacy_unit, body)).fetchnumpy()
        except duckdb.Error as exc:
            raise ComputationError(
                f"the dataset could not be read ({type(exc).__name__}); details withheld"
            ) from None
        epsilon = float(body["epsilon"])
        keys = list(body["keys"])
        index = {key: i + 1 for i, key in enumerate(keys)}
        outcomes = [index.get(v, 0) for v in np.ma.asarray(rows[body["dimension"]]).tolist()]
        randomised = randomise(outcomes, groups=len(keys), epsilon=epsilon / 2)
        noisy = np.zeros((len(outcomes), len(features)))
        for j, feature in enumerate(features):
            low, high = (float(b) for b in feature["bounds"])
            raw = np.ma.filled(np.ma.asarray(rows[feature["column"]]).astype(np.float64), low)
            raw = np.nan_to_num(raw, nan=low)  # nulls count as the lower bound
            noisy[:, j] = laplace_rows(raw, bounds=(low, high), epsilon=epsilon / 2 / len(features))
        per_group = randomised.bits.T.astype(np.float64) @ noisy  # G × d, randomised only
        totals = noisy.sum(axis=0)
        ts_context = context.context
        ts_context.auto_rescale = False
        results = []
        try:
            for vector in [*per_group, totals]:
                padded = np.zeros(slots)
                padded[: len(features)] = vector
                if padded.any():
                    score = (weights * padded.tolist()).sum()
                else:  # a zero plaintext would make a transparent ciphertext
                    score = _zero_like(context, weights)
                results.append(bytes(score.serialize()))
        except Exception as exc:
            raise HeError("the weights do not combine under this context") from exc
        scales = [
            (f["bounds"][1] - f["bounds"][0]) * len(features) / (epsilon / 2) for f in features
        ]
        privacy = {
            "mode": "local_dp",
            "mechanism": "randomized_response_bitvec+laplace",
            "epsilon": randomised.epsilon + epsilon / 2,
            "delta": 0.0,
            "keep_probability": randomised.keep,
            "other_probability": randomised.other,
            # An upper bound, not the exact count of persons (review LOW 6): the variance
            # bound below only needs n <= rows_at_most.
            "rows_at_most": padded_length(len(outcomes)),
            "laplace_scales": scales,
            "bounds": [f["bounds"] for f in features],
            "debias": "T = (S_g - q*S_*) / (p - q)",
        }
        result = pa.table(
            {
                "group": pa.array([*body["groups"], ALL_GROUPS], pa.string()),
                "encrypted_score": pa.array(results, pa.binary()),
            }
        ).replace_schema_metadata({PRIVACY_METADATA: json.dumps(privacy)})
        return ComputationResult(
            table=result,
            suppressed_groups=0,
            notes=(f"rows randomised at epsilon {epsilon:g} before meeting your weights",),
        )


def debias_scores(
    decrypted: Mapping[str, float], privacy: Mapping[str, Any], weights: list[float]
) -> dict[str, tuple[float, float]]:
    """The enterprise's side: per group, the debiased sum of scores and a bound on its
    variance, ``n·((Σ|w_j|B_j)² + 2Σ w_j² b_j²) / (p − q)²`` (``n`` the published upper
    bound on the rows, ``B_j`` the largest bound in magnitude, ``b_j`` the Laplace scale)."""
    p, q = float(privacy["keep_probability"]), float(privacy["other_probability"])
    spread = p - q
    bounds = privacy["bounds"]
    big = sum(abs(w) * max(abs(lo), abs(hi)) for w, (lo, hi) in zip(weights, bounds, strict=False))
    noise = sum(2 * w * w * b * b for w, b in zip(weights, privacy["laplace_scales"], strict=False))
    bound = int(privacy["rows_at_most"]) * (big**2 + noise) / spread**2
    every = decrypted[ALL_GROUPS]
    return {g: ((s - q * every) / spread, bound) for g, s in decrypted.items() if g != ALL_GROUPS}


def score_rows_sql(table: str, unit: str, body: Mapping[str, Any]) -> str:
    """One row per privacy unit (so each person is randomised once): the dimension and the
    features, the first row of each unit in a fixed order."""
    names = [str(body["dimension"]), *(str(f["column"]) for f in body["features"])]
    columns = ", ".join(_quote(c) for c in names)
    return (
        f"SELECT DISTINCT ON ({_quote(unit)}) {columns} FROM {_quote(table)} "
        f"WHERE {_quote(unit)} IS NOT NULL ORDER BY {_quote(unit)}, {columns}"
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def plan_cost(plan: Plan) -> tuple[float, float]:
    """``(epsilon, 0)``: per row, half for the group and half for the features."""
    epsilon = plan.body.get("epsilon")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon > 0:
        raise ComputationError("an encrypted_linear_score plan has no valid epsilon")
    if not math.isfinite(float(epsilon)):
        raise ComputationError("an encrypted_linear_score plan has no valid epsilon")
    return float(epsilon), 0.0


ENCRYPTED_LINEAR_SCORE: Final = EncryptedLinearScore()
