"""The gateway against a hostile or careless client, through the real server on loopback.

Each test performs the attack and asserts both the answer and that nothing was stored.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway import Client, new_job, sign_job, sign_request

SQL = "SELECT district, COUNT(*) AS n FROM residents GROUP BY district"
ACME = "Acme Credit"
#: The ledger origin of the `world` fixture's sandbox (tests/conftest.py).
ORIGIN = "test.indomain.example/ledger"


def _body(key: Ed25519PrivateKey, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL},
        audience=ORIGIN,
    )
    now = overrides.pop("now", None)
    fields.update(overrides)
    job = new_job(**fields, now=now)
    return {"job": job.model_dump(), "signature": sign_job(job, key)}


def _counts(world: Any) -> tuple[int, int]:
    """Jobs stored and ledger size, once earlier accepted jobs have finished running."""
    deadline = time.monotonic() + 60
    while world.sandbox.store.jobs_with_status("received", "accepted", "running"):
        assert time.monotonic() < deadline, "earlier jobs did not finish"
        time.sleep(0.05)
    return world.sandbox.store.count_jobs(), world.sandbox.ledger.size


def _post(world: Any, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{world.url}/v1/jobs", content=content, timeout=30, **kwargs)


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_well_signed_job_is_accepted(world: Any) -> None:
    response = _post(world, _body(world.acme_key))
    assert response.status_code == 202, response.text
    assert response.json()["job_id"].startswith("job_")


def test_a_signature_by_another_key_is_refused_and_nothing_is_stored(world: Any) -> None:
    before = _counts(world)
    response = _post(world, _body(Ed25519PrivateKey.generate()))
    assert response.status_code == 401
    assert _error(response)["code"] == "bad_signature"
    assert _counts(world) == before


def test_a_job_changed_after_signing_is_refused(world: Any) -> None:
    body = _body(world.acme_key)
    body["job"]["params"]["sql"] = "SELECT sex, COUNT(*) FROM residents GROUP BY sex"
    before = _counts(world)
    response = _post(world, body)
    assert response.status_code == 401
    assert _counts(world) == before


def test_another_enterprise_cannot_sign_in_acmes_name(world: Any) -> None:
    before = _counts(world)
    response = _post(world, _body(world.beta_key))  # Beta's key, Acme's name
    assert _error(response)["code"] == "bad_signature"
    assert _counts(world) == before


def test_a_replayed_job_is_refused_and_stored_once(world: Any) -> None:
    body = _body(world.acme_key)
    assert _post(world, body).status_code == 202
    before = _counts(world)
    replay = _post(world, body)
    assert replay.status_code == 409
    assert _error(replay)["code"] == "replayed_nonce"
    assert _counts(world) == before


def test_a_job_signed_for_another_sandbox_is_refused_and_stores_nothing(world: Any) -> None:
    # Nonces are remembered per gateway: a job signed for sandbox B, where the enterprise
    # uses the same key, replayed here would spend its budget here. It names B.
    before = _counts(world)
    elsewhere = _post(world, _body(world.acme_key, audience="bureau-b.example/ledger"))
    assert elsewhere.status_code == 401
    assert _error(elsewhere)["code"] == "wrong_audience"
    assert "bureau-b.example/ledger" in _error(elsewhere)["message"]
    job = new_job(
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL},
        audience=ORIGIN,
    )
    unnamed = job.model_dump(exclude={"audience"})
    signed_without = sign_job(job.model_copy(update={"audience": None}), world.acme_key)
    response = _post(world, {"job": unnamed, "signature": signed_without})
    assert response.status_code == 401
    assert _error(response)["code"] == "wrong_audience"
    assert _counts(world) == before


def test_the_client_reports_a_wrong_audience_as_an_authentication_error(world: Any) -> None:
    from gateway import AuthenticationError

    before = _counts(world)
    with Client(
        world.url, enterprise=ACME, private_key=world.acme_key, audience="bureau-b.example/ledger"
    ) as client:
        with pytest.raises(AuthenticationError) as refused:
            client.submit(
                computation="aggregate",
                dataset="residents",
                purpose="credit_risk_model",
                params={"sql": SQL},
            )
    assert refused.value.code == "wrong_audience"
    assert _counts(world) == before


def test_a_read_signed_for_another_sandbox_is_refused(world: Any) -> None:
    path = "/v1/budgets"
    mine = sign_request(
        audience=ORIGIN, enterprise=ACME, key=world.acme_key, method="GET", path=path
    )
    assert httpx.get(world.url + path, headers=mine).status_code == 200
    theirs = sign_request(
        audience="bureau-b.example/ledger",
        enterprise=ACME,
        key=world.acme_key,
        method="GET",
        path=path,
    )
    assert httpx.get(world.url + path, headers=theirs).status_code == 401


@pytest.mark.parametrize("skew", [timedelta(minutes=-10), timedelta(minutes=10)])
def test_a_stale_or_future_timestamp_is_refused(world: Any, skew: timedelta) -> None:
    before = _counts(world)
    response = _post(world, _body(world.acme_key, now=datetime.now(UTC) + skew))
    assert response.status_code == 401
    assert _error(response)["code"] == "stale_timestamp"
    assert _counts(world) == before


def test_an_unknown_enterprise_is_refused(world: Any) -> None:
    before = _counts(world)
    response = _post(world, _body(world.acme_key, enterprise="Nobody Ltd"))
    assert response.status_code == 401
    assert _error(response)["code"] == "unknown_enterprise"
    assert _counts(world) == before


def test_unknown_fields_are_refused_even_when_signed(world: Any) -> None:
    body = _body(world.acme_key)
    body["job"]["priority"] = "high"
    before = _counts(world)
    response = _post(world, body)
    assert response.status_code == 422
    assert "priority" in _error(response)["message"]
    assert _counts(world) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("params", "SELECT 1"),
        ("nonce", 12345678901234567890123),
        ("dataset", ["residents"]),
        ("issued_at", "yesterday"),
        ("purpose", "Credit Risk!"),
    ],
)
def test_wrong_types_are_refused_without_echoing_values(world: Any, field: str, value: Any) -> None:
    body = _body(world.acme_key)
    body["job"][field] = value
    response = _post(world, body)
    assert response.status_code == 422
    assert field in _error(response)["message"]
    assert str(value) not in _error(response)["message"]


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"[]", b'{"job": {}}', b"\xff\xfe", b'{"job": {}, "signature": 7}']
)
def test_malformed_bodies_get_a_json_error(world: Any, raw: bytes) -> None:
    before = _counts(world)
    response = _post(world, raw)
    assert response.status_code in (400, 422)
    assert "message" in _error(response)
    assert _counts(world) == before


@pytest.mark.parametrize("raw", [b'{"n": 9007199254740993}', b'{"n": NaN}', b'{"n": Infinity}'])
def test_numbers_outside_canonical_json_are_refused_not_a_500(world: Any, raw: bytes) -> None:
    job = new_job(
        enterprise=ACME,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"n": 1},
        audience=ORIGIN,
    )
    text = json.dumps({"job": job.model_dump(), "signature": sign_job(job, world.acme_key)})
    body = text.replace('{"n": 1}', raw.decode()).encode()
    before = _counts(world)
    response = _post(world, body)
    assert response.status_code in (400, 422)
    assert _counts(world) == before


def test_deeply_nested_json_is_malformed_not_a_server_error(world: Any) -> None:
    before = _counts(world)
    for depth in (40, 5000):
        raw = b'{"job": ' + b"[" * depth + b"]" * depth + b', "signature": "x"}'
        response = _post(world, raw)
        assert response.status_code == 400, (depth, response.text)
        assert _error(response)["code"] == "malformed_json"
    assert _counts(world) == before


def _raw_signed(key: Ed25519PrivateKey, params: dict[str, Any]) -> dict[str, Any]:
    """A signed body built by hand, for params the client library itself refuses."""
    import rfc8785

    job = _body(key)["job"]
    job["params"] = params
    return {"job": job, "signature": base64.b64encode(key.sign(rfc8785.dumps(job))).decode()}


def test_params_larger_than_16_kib_are_refused_before_the_ledger(world: Any) -> None:
    before = _counts(world)
    response = _post(world, _raw_signed(world.acme_key, {"sql": SQL, "pad": "x" * 17_000}))
    assert response.status_code == 422
    assert "params" in _error(response)["message"]
    assert _counts(world) == before


@pytest.mark.parametrize("path", ["/v1/proposals", "/v1/reviews", "/v1/ledger/cosignatures"])
def test_every_body_taking_route_stops_reading_at_its_cap(world: Any, path: str) -> None:
    import tracemalloc

    def chunks() -> Any:
        for _ in range(512):  # 32 MiB offered without a Content-Length
            yield b" " * 65536

    tracemalloc.start()  # the world's gateway runs in this process: its allocations count
    try:
        response = httpx.post(world.url + path, content=chunks(), timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"
    assert peak < 8 * 1024 * 1024, f"the gateway held {peak} bytes of a refused body"


def test_an_oversized_body_is_refused_with_or_without_a_length(world: Any) -> None:
    big = _raw_signed(world.acme_key, {"sql": SQL, "pad": "x" * (2 << 20)})
    data = json.dumps(big).encode()
    assert _post(world, data).status_code == 413

    def chunks() -> Any:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    response = httpx.post(f"{world.url}/v1/jobs", content=chunks(), timeout=30)
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


def test_a_job_denied_by_policy_is_403_with_the_reason_and_on_the_ledger(world: Any) -> None:
    before_ledger = world.sandbox.ledger.size
    response = _post(world, _body(world.acme_key, purpose="direct_marketing"))
    assert response.status_code == 403
    error = _error(response)
    assert error["code"] == "policy_denied"
    assert "no policy permits" in error["message"]
    entry = world.sandbox.ledger.entry(error["ledger_index"])
    assert entry.index >= before_ledger
    assert entry.type == "job.denied"
    assert entry.fields["decision"]["allowed"] is False
    assert entry.fields["purpose"] == "direct_marketing"


def test_an_unlicensed_enterprise_is_denied(world: Any) -> None:
    response = _post(world, _body(world.beta_key, enterprise="Beta Analytics"))
    assert response.status_code == 403


def test_an_unknown_dataset_is_refused_and_recorded(world: Any) -> None:
    response = _post(world, _body(world.acme_key, dataset="tax_returns"))
    assert response.status_code == 404
    error = _error(response)
    assert error["code"] == "unknown_dataset"
    assert world.sandbox.ledger.entry(error["ledger_index"]).type == "job.refused"


@pytest.mark.parametrize(
    ("sql", "rule_hint"),
    [
        ("SELECT * FROM residents", None),
        ("SELECT resident_id, income FROM residents", None),
        ("SELECT COUNT(*) FROM read_csv('/etc/passwd')", None),
        ("SELECT COUNT(*) FROM '/etc/passwd'", None),
        ("COPY residents TO '/tmp/leak.csv'", None),
        ("ATTACH '/tmp/other.db' AS o", None),
        ("SELECT error(CAST(income AS VARCHAR)) FROM residents", None),
        ("SELECT COUNT(*) FROM residents; DROP TABLE residents", None),
    ],
)
def test_hostile_sql_is_refused_with_a_rule(world: Any, sql: str, rule_hint: str | None) -> None:
    response = _post(world, _body(world.acme_key, params={"sql": sql}))
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["code"] == "query_refused"
    assert error["rule"]
    entry = world.sandbox.ledger.entry(error["ledger_index"])
    assert entry.type == "job.refused"


def _acme(world: Any) -> Client:
    return Client(world.url, enterprise=ACME, private_key=world.acme_key)


def test_another_enterprise_cannot_see_a_job_or_its_result(world: Any) -> None:
    with _acme(world) as acme:
        job_id = acme.submit(
            computation="aggregate",
            dataset="residents",
            purpose="credit_risk_model",
            params={"sql": SQL},
        )["job_id"]
        assert acme.wait(job_id)["status"] == "succeeded"
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/receipt"):
        headers = sign_request(
            audience=ORIGIN,
            enterprise="Beta Analytics",
            key=world.beta_key,
            method="GET",
            path=path,
        )
        response = httpx.get(world.url + path, headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"no job {job_id!r} for this enterprise"


def test_reads_need_a_fresh_signature_for_that_exact_path(world: Any) -> None:
    path = "/v1/catalogue"
    assert httpx.get(world.url + path).status_code == 401
    old = sign_request(
        audience=ORIGIN,
        enterprise=ACME,
        key=world.acme_key,
        method="GET",
        path=path,
        now=datetime.now(UTC) - timedelta(minutes=30),
    )
    assert httpx.get(world.url + path, headers=old).status_code == 401
    other_path = sign_request(
        audience=ORIGIN, enterprise=ACME, key=world.acme_key, method="GET", path="/v1/x"
    )
    assert httpx.get(world.url + path, headers=other_path).status_code == 401
    forged = sign_request(
        audience=ORIGIN, enterprise=ACME, key=Ed25519PrivateKey.generate(), method="GET", path=path
    )
    assert httpx.get(world.url + path, headers=forged).status_code == 401
    good = sign_request(
        audience=ORIGIN, enterprise=ACME, key=world.acme_key, method="GET", path=path
    )
    assert httpx.get(world.url + path, headers=good).status_code == 200
    garbage = {**good, "X-Indomain-Enterprise": "%%%"}
    assert httpx.get(world.url + path, headers=garbage).status_code == 401


def test_the_catalogue_shows_schema_and_classes_but_no_values(world: Any) -> None:
    from indomain.demo_data import residents

    with _acme(world) as acme:
        catalogue = acme.catalogue()
    text = json.dumps(catalogue)
    (dataset,) = catalogue
    assert {c["name"] for c in dataset["columns"]} == {
        "resident_id",
        "district",
        "age_band",
        "sex",
        "income",
        "insurance_months",
        "health_flag",
    }
    assert dataset["rows_rounded"] % 100 == 0
    source = residents(3000)  # the rows imported into this world
    for column in ("resident_id", "income"):
        for value in source.column(column).to_pylist():
            assert str(value) not in text


def test_the_checkpoint_is_public_and_signed(world: Any) -> None:
    import ledger

    note = httpx.get(f"{world.url}/v1/ledger/checkpoint").text
    checkpoint = ledger.open_checkpoint(note, world.ledger_key)
    assert checkpoint.size >= 1


def test_signature_header_must_be_base64(world: Any) -> None:
    good = sign_request(
        audience=ORIGIN, enterprise=ACME, key=world.acme_key, method="GET", path="/v1/catalogue"
    )
    good["X-Indomain-Signature"] = base64.b64encode(b"x" * 64).decode()
    assert httpx.get(world.url + "/v1/catalogue", headers=good).status_code == 401
