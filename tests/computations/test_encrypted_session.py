"""PSI session and encrypted_group_sum, end to end inside one process: the offer, the
enterprise's uploads, the checked plan, the run, decryption and debiasing.

The enclave's secret is installed by hand here (the worker does it from the master key);
the enclave path itself is tested in tests/indomain/test_encrypted_jobs.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import tenseal as ts

import computations._encrypted._keys as keys
from computations import (
    ComputationError,
    DatasetSpec,
    PsiError,
    QueryRefused,
    digest_of,
    get_computation,
    prepare_group_sum,
    read_group_sums,
    session_of,
    set_enclave_secret,
)
from computations._encrypted import padded_length

MANIFEST_KEYS = ["north", "south", "east", "west", "harbour"]


@pytest.fixture()
def enclave_secret() -> Iterator[None]:
    set_enclave_secret(secrets.token_bytes(32))
    yield
    keys._wrapping_key = None


@pytest.fixture(scope="module")
def spec(dp_residents: DatasetSpec) -> DatasetSpec:
    columns = [
        c.model_copy(update={"keys": tuple(MANIFEST_KEYS)}) if c.name == "district" else c
        for c in dp_residents.columns
    ]
    privacy = dp_residents.privacy.model_copy(update={"epsilon_per_job": 10.0})
    return dp_residents.model_copy(update={"columns": tuple(columns), "privacy": privacy})


@pytest.fixture(scope="module")
def secret_context() -> Any:
    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[35, 34, 40])
    context.global_scale = 2**26
    context.generate_galois_keys()
    return context


def _offer(spec: DatasetSpec, con: duckdb.DuckDBPyConnection) -> pa.Table:
    psi = get_computation("psi")
    plan = psi.check({"dimension": "district", "nonce": "n" * 22}, spec)
    return psi.execute(plan, con, table="residents", dataset=spec).table


def _write(tmp_path: Path, uploads: dict[str, bytes]) -> dict[str, str]:
    paths = {}
    for name, data in uploads.items():
        path = tmp_path / digest_of(data).removeprefix("sha256:")
        path.write_bytes(data)
        paths[name] = str(path)
    return paths


def test_padded_length_rounds_up_to_two_significant_figures() -> None:
    assert [padded_length(n) for n in (1, 10, 11, 99, 100, 101, 1234, 99_001)] == [
        10,
        10,
        11,
        99,
        100,
        110,
        1300,
        100_000,
    ]


def test_the_offer_is_padded_shuffled_and_carries_only_a_wrapped_key(
    enclave_secret: None, spec: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    offer = _offer(spec, con)
    session = session_of(offer)
    assert session["groups"] == MANIFEST_KEYS
    counts = offer.group_by("group").aggregate([("point", "count")]).to_pylist()
    assert {row["point_count"] for row in counts} == {session["length"]}
    assert len(set(offer.column("point").to_pylist())) == offer.num_rows
    # A second session has a fresh key: no point repeats across the two offers.
    again = _offer(spec, con)
    assert not set(offer.column("point").to_pylist()) & set(again.column("point").to_pylist())


def test_an_offer_outside_the_enclave_is_refused(
    spec: DatasetSpec, con: duckdb.DuckDBPyConnection
) -> None:
    with pytest.raises(ComputationError, match="only available inside the enclave"):
        _offer(spec, con)


def test_a_dimension_without_public_keys_is_refused(dp_residents: DatasetSpec) -> None:
    with pytest.raises(QueryRefused) as refused:
        get_computation("psi").check({"dimension": "district", "nonce": "n" * 22}, dp_residents)
    assert refused.value.rule == "psi-dimension-keys"


def _run(
    spec: DatasetSpec,
    offer: pa.Table,
    uploads: dict[str, bytes],
    params: dict[str, str],
    tmp_path: Path,
    con: duckdb.DuckDBPyConnection,
) -> pa.Table:
    job = get_computation("encrypted_group_sum")
    resolved = {
        **params,
        "resolved_session": session_of(offer),
        "resolved_blobs": _write(tmp_path, uploads),
    }
    plan = job.check(resolved, spec)
    return job.execute(plan, con, table="residents", dataset=spec).table


def test_group_sums_over_matched_identifiers_decrypt_and_debias_to_the_truth(
    enclave_secret: None,
    spec: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
    residents_table: pa.Table,
    secret_context: Any,
    tmp_path: Path,
) -> None:
    offer = _offer(spec, con)
    rows = residents_table.to_pylist()
    district = {r["resident_id"]: r["district"] for r in reversed(rows)}
    # 150 residents and 60 identifiers the dataset does not hold.
    identifiers = [*sorted(district)[:150], *range(10_000, 10_060)]
    values = [float(i % 7 + 1) for i in range(len(identifiers))]
    prepared = prepare_group_sum(offer, identifiers, values, secret_context)
    result = _run(spec, offer, prepared.uploads, prepared.params("job_" + "0" * 32), tmp_path, con)
    answers = {a["group"]: a for a in read_group_sums(result, prepared, secret_context)}
    for name in MANIFEST_KEYS:
        truth = sum(v for i, v in zip(identifiers, values, strict=True) if district.get(i) == name)
        count = sum(1 for i in identifiers if district.get(i) == name)
        answer = answers[name]
        # epsilon 10: reports keep the truth with probability > 0.9997, so up to a few
        # flips; 6 standard deviations of the stated bound.
        assert abs(answer["sum_estimate"] - truth) <= 6 * answer["sum_variance_bound"] ** 0.5 + 1
        assert (
            abs(answer["count_estimate"] - count) <= 6 * answer["count_variance_bound"] ** 0.5 + 1
        )


def test_a_wrapped_key_does_not_open_for_another_session(
    enclave_secret: None,
    spec: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
    secret_context: Any,
    tmp_path: Path,
) -> None:
    offer = _offer(spec, con)
    prepared = prepare_group_sum(offer, [1, 2, 3], [1.0, 2.0, 3.0], secret_context)
    session = session_of(offer)
    moved = {**session, "length": session["length"] + 1}
    job = get_computation("encrypted_group_sum")
    params = {
        **prepared.params("job_" + "0" * 32),
        "resolved_session": moved,
        "resolved_blobs": _write(tmp_path, prepared.uploads),
    }
    with pytest.raises(ComputationError, match="does not open"):
        job.execute(job.check(params, spec), con, table="residents", dataset=spec)


def test_a_reply_that_does_not_fit_the_offer_is_refused(
    enclave_secret: None,
    spec: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
    secret_context: Any,
    tmp_path: Path,
) -> None:
    offer = _offer(spec, con)
    prepared = prepare_group_sum(offer, [1, 2, 3], [1.0, 2.0, 3.0], secret_context)
    uploads = {**prepared.uploads, "reply": prepared.uploads["reply"][:-32]}
    with pytest.raises(PsiError, match="shape of the offer"):
        _run(
            spec,
            offer,
            uploads,
            _params(prepared.params("job_" + "0" * 32), uploads),
            tmp_path,
            con,
        )


def _params(params: dict[str, str], uploads: dict[str, bytes]) -> dict[str, str]:
    return {**params, **{name: digest_of(data) for name, data in uploads.items()}}


def test_an_upload_that_changed_after_the_job_named_it_is_refused(
    enclave_secret: None,
    spec: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
    secret_context: Any,
    tmp_path: Path,
) -> None:
    offer = _offer(spec, con)
    prepared = prepare_group_sum(offer, [1, 2, 3], [1.0, 2.0, 3.0], secret_context)
    job = get_computation("encrypted_group_sum")
    paths = _write(tmp_path, prepared.uploads)
    plan = job.check(
        {
            **prepared.params("job_" + "0" * 32),
            "resolved_session": session_of(offer),
            "resolved_blobs": paths,
        },
        spec,
    )
    Path(paths["request"]).write_bytes(prepared.uploads["request"][::-1])
    with pytest.raises(ComputationError, match="does not match the digest"):
        job.execute(plan, con, table="residents", dataset=spec)


def test_a_job_without_its_session_or_uploads_is_refused_before_anything_runs(
    spec: DatasetSpec,
) -> None:
    job = get_computation("encrypted_group_sum")
    params = {
        "session": "job_" + "0" * 32,
        **{n: "sha256:" + "0" * 64 for n in ("request", "reply", "context", "values")},
    }
    with pytest.raises(QueryRefused) as refused:
        job.check(params, spec)
    assert refused.value.rule == "psi-session"
    session = {"dataset": spec.name, "dimension": "district", "identifier": "resident_id"}
    with pytest.raises(QueryRefused) as refused:
        job.check({**params, "resolved_session": session}, spec)
    assert refused.value.rule == "upload-missing"
    with pytest.raises(QueryRefused) as refused:
        job.check({**params, "sql": "SELECT 1"}, spec)
    assert refused.value.rule == "params"


def test_a_request_over_the_set_size_cap_is_refused(
    enclave_secret: None,
    spec: DatasetSpec,
    con: duckdb.DuckDBPyConnection,
    secret_context: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import computations._encrypted._group_sum_job as job_module

    monkeypatch.setattr(job_module, "DEFAULT_MAX_SET_SIZE", 2)
    offer = _offer(spec, con)
    prepared = prepare_group_sum(offer, [1, 2, 3], [1.0, 2.0, 3.0], secret_context)
    with pytest.raises(ComputationError, match="larger than 64 bytes"):
        _run(spec, offer, prepared.uploads, prepared.params("job_" + "0" * 32), tmp_path, con)
