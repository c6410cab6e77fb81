"""Job documents: strict shape, canonical bytes, detached Ed25519 signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from gateway import AuthenticationError, InvalidJob, new_job, parse_job, sign_job
from gateway._jobs import check_fresh, verify_signature

KEY = Ed25519PrivateKey.generate()


def _job(**params: object) -> object:
    return new_job(
        audience="test.indomain.example/sandbox",
        enterprise="Acme Credit",
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params=dict(params) or {"sql": "SELECT 1"},
    )


def test_the_signature_covers_the_rfc8785_canonical_json_of_the_document() -> None:
    job = _job()
    assert job.canonical() == rfc8785.dumps(json.loads(json.dumps(job.model_dump())))
    verify_signature(job.canonical(), sign_job(job, KEY), KEY.public_key())


SAFE_INTS = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)


@given(st.dictionaries(st.text(max_size=8), SAFE_INTS | st.text(max_size=8), max_size=4))
def test_canonical_bytes_do_not_depend_on_key_order(params: dict[str, object]) -> None:
    job = _job(**params) if params else _job()
    data = job.model_dump()
    reordered = {k: data[k] for k in reversed(list(data))}
    assert parse_job(reordered).canonical() == job.canonical()


def test_any_changed_field_breaks_the_signature() -> None:
    job = _job()
    signature = sign_job(job, KEY)
    for field, value in [
        ("purpose", "marketing"),
        ("dataset", "other"),
        ("params", {"sql": "SELECT 2"}),
        ("enterprise", "Acme Credit "),
    ]:
        changed = parse_job({**job.model_dump(), field: value})
        with pytest.raises(AuthenticationError):
            verify_signature(changed.canonical(), signature, KEY.public_key())


def test_nonces_are_fresh_and_long() -> None:
    nonces = {_job().nonce for _ in range(200)}
    assert len(nonces) == 200
    assert all(len(n) >= 22 for n in nonces)


def test_short_nonces_and_local_times_are_refused() -> None:
    data = _job().model_dump()
    with pytest.raises(InvalidJob, match="nonce"):
        parse_job({**data, "nonce": "abc"})
    with pytest.raises(InvalidJob, match="issued_at"):
        parse_job({**data, "issued_at": "2026-11-22T10:00:00+08:00"})


def test_freshness_window_is_five_minutes_either_way() -> None:
    now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    check_fresh(now - timedelta(minutes=4), now)
    check_fresh(now + timedelta(minutes=4), now)
    for skew in (timedelta(minutes=6), -timedelta(minutes=6)):
        with pytest.raises(AuthenticationError, match="clock"):
            check_fresh(now + skew, now)


@pytest.mark.parametrize("value", [2**53, -(2**60), float("inf"), float("nan")])
def test_numbers_without_a_canonical_form_are_an_invalid_job_not_a_crash(value: object) -> None:
    with pytest.raises(InvalidJob, match="canonical"):
        parse_job({**_job().model_dump(), "params": {"n": value}})


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (422, "budget_exhausted", "BudgetExhausted"),
        (422, "proposal_not_approved", "Refused"),
        (422, "query_refused", "Refused"),
        (403, "policy_denied", "PolicyDenied"),
        (401, "unauthenticated", "AuthenticationError"),
        (500, "something_new", "ServerError"),
    ],
)
def test_the_client_rebuilds_each_server_error_as_its_own_class(
    status: int, code: str, kind: str
) -> None:
    from gateway._errors import error_from_json

    exc = error_from_json(status, {"error": {"code": code, "message": "m", "ledger_index": 7}})
    assert type(exc).__name__ == kind
    assert (exc.code, exc.status, exc.extra) == (code, status, {"ledger_index": 7})
