"""encrypted_linear_score: encrypted weights over randomised rows, per group; the model
stays encrypted, and chosen weights read out no more than the local epsilon allows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import tenseal as ts

from computations import DatasetSpec, QueryRefused, digest_of, get_computation
from computations._encrypted import debias_scores, frame_vectors

SLOTS = 2048


@pytest.fixture(scope="module")
def secret() -> Any:
    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[35, 34, 40])
    context.global_scale = 2**26
    context.generate_galois_keys()
    return context


@pytest.fixture(scope="module")
def spec(dp_residents: DatasetSpec) -> DatasetSpec:
    columns = [
        c.model_copy(update={"keys": ("north", "south", "east", "west", "harbour")})
        if c.name == "district"
        else c
        for c in dp_residents.columns
    ]
    return dp_residents.model_copy(update={"columns": tuple(columns)})


def _with_epsilon(spec: DatasetSpec, epsilon: float) -> DatasetSpec:
    return spec.model_copy(
        update={"privacy": spec.privacy.model_copy(update={"epsilon_per_job": epsilon})}
    )


def _uploads(secret: Any, weights: list[float], tmp_path: Path) -> dict[str, Any]:
    public = secret.copy()
    public.make_context_public()
    context = bytes(public.serialize(save_galois_keys=True))
    values = frame_vectors(
        [bytes(ts.ckks_vector(secret, weights + [0.0] * (SLOTS - len(weights))).serialize())]
    )
    paths = {}
    for name, data in (("context", context), ("values", values)):
        path = tmp_path / f"{name}-{digest_of(data)[7:]}"
        path.write_bytes(data)
        paths[name] = str(path)
    return {
        "context": digest_of(context),
        "values": digest_of(values),
        "resolved_blobs": paths,
    }


def _run(
    spec: DatasetSpec, con: duckdb.DuckDBPyConnection, uploads: dict[str, Any], features: list[str]
) -> pa.Table:
    score = get_computation("encrypted_linear_score")
    plan = score.check({"dimension": "district", "features": features, **uploads}, spec)
    return score.execute(plan, con, table="residents", dataset=spec).table


def _decrypt(secret: Any, table: pa.Table) -> dict[str, float]:
    return {
        row["group"]: float(ts.ckks_vector_from(secret, row["encrypted_score"]).decrypt()[0])
        for row in table.to_pylist()
    }


def test_debiased_scores_centre_on_the_plaintext_scores(
    spec: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
    residents_table: pa.Table,
    secret: Any,
    tmp_path: Path,
) -> None:
    weights = [0.001, 2.0]
    uploads = _uploads(secret, weights, tmp_path)
    strict = _with_epsilon(spec, 10.0)
    table = _run(strict, con, uploads, ["income", "insurance_months"])
    privacy = json.loads(table.schema.metadata[b"indomain.privacy"])
    assert privacy["epsilon"] == pytest.approx(10.0)
    answers = debias_scores(_decrypt(secret, table), privacy, weights)
    rows = residents_table.to_pylist()
    for district, (estimate, bound) in answers.items():
        truth = sum(
            weights[0] * min(max(r["income"] or 0, 0), 200_000) + weights[1] * r["insurance_months"]
            for r in rows
            if r["district"] == district
        )
        assert abs(estimate - truth) <= 6 * math.sqrt(bound)


def test_the_person_count_is_published_only_as_a_coarse_upper_bound(
    spec: DatasetSpec,
    connect: Any,
    residents_table: pa.Table,
    secret: Any,
    tmp_path: Path,
) -> None:
    """Review LOW 6: the exact number of persons was in the privacy statement, so two
    jobs before and after one person joined told that person's arrival."""
    uploads = _uploads(secret, [0.001], tmp_path)
    stated = []
    everyone = sorted(set(residents_table.column("resident_id").to_pylist()))
    for gone in (everyone[-3:], everyone[-4:]):  # one person fewer the second time
        keep = pc.invert(pc.is_in(residents_table["resident_id"], pa.array(gone)))
        table = residents_table.filter(keep)
        with connect({"residents": table}) as con:
            result = _run(spec, con, uploads, ["income"])
        privacy = json.loads(result.schema.metadata[b"indomain.privacy"])
        assert "rows" not in privacy
        persons = len(set(table.column("resident_id").to_pylist()))
        assert privacy["rows_at_most"] >= persons == len(everyone) - len(gone)
        stated.append(privacy["rows_at_most"])
    assert stated[0] == stated[1]


def test_features_need_bounds_and_dimensions_need_keys(
    spec: DatasetSpec, dp_residents: DatasetSpec
) -> None:
    score = get_computation("encrypted_linear_score")
    digests = {"context": "sha256:" + "0" * 64, "values": "sha256:" + "1" * 64}
    with pytest.raises(QueryRefused) as refused:
        score.check({"dimension": "district", "features": ["age_band"], **digests}, spec)
    assert refused.value.rule == "score-feature"
    with pytest.raises(QueryRefused) as refused:
        score.check({"dimension": "district", "features": ["income"], **digests}, dp_residents)
    assert refused.value.rule == "score-dimension"
    with pytest.raises(QueryRefused) as refused:
        score.check({"dimension": "district", "features": ["income"], **digests}, spec)
    assert refused.value.rule == "upload-missing"


@pytest.mark.slow
def test_one_hot_weights_on_lone_rows_recover_no_more_than_epsilon_allows(
    spec: DatasetSpec, connect: Any, secret: Any, tmp_path: Path
) -> None:
    """Four groups holding one person each: one-hot weights on a feature read that
    person's value out of the group's score. The value is an extreme (0 or 12) of its
    bounds, so a guess of which is a test of one bit; it is right no more often than
    epsilon allows (without the randomisation it is always right)."""
    epsilon = 1.0
    strict = _with_epsilon(spec, epsilon)
    uploads = _uploads(secret, [0.0, 1.0], tmp_path)
    rng = np.random.default_rng(29)
    fixed = {"income": 1000, "age_band": "18-39", "sex": "f", "health_flag": False}
    crowd = [
        {"resident_id": i, "district": "north", "insurance_months": 6, **fixed} for i in range(30)
    ]
    lonely = ["south", "east", "west", "harbour"]
    right = samples = 0
    for _ in range(60):
        bits = rng.integers(0, 2, len(lonely))
        targets = [
            {"resident_id": 900 + k, "district": d, "insurance_months": 12 * int(b), **fixed}
            for k, (d, b) in enumerate(zip(lonely, bits, strict=True))
        ]
        con = connect({"residents": pa.Table.from_pylist(crowd + targets)})
        result = _run(strict, con, uploads, ["income", "insurance_months"])
        con.close()
        privacy = json.loads(result.schema.metadata[b"indomain.privacy"])
        answers = debias_scores(_decrypt(secret, result), privacy, [0.0, 1.0])
        for district, bit in zip(lonely, bits, strict=True):
            right += int((answers[district][0] > 6) == bool(bit))
            samples += 1
    margin = math.sqrt(math.log(1e6) / (2 * samples))
    assert right / samples <= math.exp(epsilon) / (1 + math.exp(epsilon)) + margin
