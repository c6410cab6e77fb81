"""Embedded signatures: an operator holding the ledger key still cannot forge what others signed.

Each attack below is carried out by someone who can write and sign the whole ledger (the
operator): the tree and the checkpoints verify, so only the signatures embedded in the
entries (the enterprise's request signature, the enclave's run attestation) can catch it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import Ledger, LedgerVerificationError, verify_ledger
from tests.ledger.conftest import ORIGIN

ENCLAVE = Ed25519PrivateKey.from_private_bytes(bytes(range(40, 72)))
pytestmark = pytest.mark.usefixtures("verify_mode")

ACME = Ed25519PrivateKey.from_private_bytes(bytes(range(80, 112)))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _pub(key: Ed25519PrivateKey) -> str:
    return _b64(key.public_key().public_bytes_raw())


def _request(**changes: Any) -> dict[str, Any]:
    request = {
        "enterprise": "Acme",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "credit_risk",
        "params": {"sql": "SELECT district, COUNT(*) FROM residents GROUP BY district"},
        "nonce": "n" * 22,
        "issued_at": "2026-11-22T10:00:00Z",
    }
    request.update(changes)
    return request


def job_fields(request: dict[str, Any], *, signer: Ed25519PrivateKey = ACME) -> dict[str, Any]:
    canonical = rfc8785.dumps(request)
    return {
        "job_id": "job_1",
        "enterprise": request["enterprise"],
        "computation": request["computation"],
        "dataset": request["dataset"],
        "purpose": request["purpose"],
        "request": request,
        "request_signature": _b64(signer.sign(canonical)),
        "request_digest": "sha256:" + hashlib.sha256(canonical).hexdigest(),
        "decision": {"allowed": True, "policies": ["p"], "reason": "ok", "policy_version": "v"},
        "code_hash": "sha256:code",
        "params_digest": "pd",
    }


def run_fields(
    accepted_at: int, *, signer: Ed25519PrivateKey = ENCLAVE, **changes: Any
) -> dict[str, Any]:
    attestation = {
        "format": "indomain-run-attestation/v1",
        "enclave_kind": "software-process",
        "network_isolated": True,
        "job_id": "job_1",
        "computation": "aggregate",
        "code_hash": "sha256:code",
        "dataset": "residents",
        "dataset_content_hash": "sha256:data",
        "policy_version": "v",
        "params_digest": "pd",
        "result_digest": "sha256:result",
        "time": "2026-11-22T10:00:01Z",
    }
    attestation.update(changes)
    return {
        "job_id": "job_1",
        "enterprise": "Acme",
        "dataset": "residents",
        "accepted_at_index": accepted_at,
        "attestation": attestation,
        "attestation_signature": _b64(signer.sign(rfc8785.dumps(attestation))),
        "suppressed_groups": 0,
    }


GENESIS = ("sandbox.created", {"origin": ORIGIN, "enclave_public_key": _pub(ENCLAVE)})
REGISTERED = ("enterprise.registered", {"enterprise": "Acme", "public_key": _pub(ACME)})


@pytest.fixture
def write(tmp_path: Path, signing_key: Ed25519PrivateKey) -> Callable[..., Path]:
    """Write a ledger of (type, fields) events with the ledger key; return its folder."""

    def make(*events: tuple[str, dict[str, Any]]) -> Path:
        directory = tmp_path / "ledger"
        with Ledger.create(directory, origin=ORIGIN, signing_key=signing_key) as log:
            for kind, fields in events:
                log.append(kind, fields)
        return directory

    return make


def _key(signing_key: Ed25519PrivateKey) -> str:
    from ledger import verifier_key

    return verifier_key(ORIGIN, signing_key.public_key())


def _fails_at(directory: Path, key: str, index: int, words: str) -> None:
    with pytest.raises(LedgerVerificationError) as caught:
        verify_ledger(directory, key)
    assert caught.value.index == index
    assert words in caught.value.reason


def test_a_true_history_verifies(write: Callable[..., Path], signing_key: Ed25519PrivateKey):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        ("run.completed", run_fields(2)),
    )
    assert verify_ledger(directory, _key(signing_key)).size == 4


def test_the_operator_cannot_change_what_an_enterprise_asked_for(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    fields = job_fields(_request())
    fields["request"] = _request(purpose="marketing")  # edited after signing
    fields["purpose"] = "marketing"
    directory = write(GENESIS, REGISTERED, ("job.accepted", fields))
    _fails_at(directory, _key(signing_key), 2, "request signature does not verify")


def test_a_job_signed_by_a_key_other_than_the_registered_one_fails(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    forged = job_fields(_request(), signer=Ed25519PrivateKey.generate())
    directory = write(GENESIS, REGISTERED, ("job.denied", forged))
    _fails_at(directory, _key(signing_key), 2, "registered key")


def test_a_job_from_an_enterprise_never_registered_fails(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(GENESIS, ("job.refused", job_fields(_request())))
    _fails_at(directory, _key(signing_key), 1, "no earlier enterprise.registered")


def test_a_registration_after_the_job_does_not_count(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(GENESIS, ("job.accepted", job_fields(_request())), REGISTERED)
    _fails_at(directory, _key(signing_key), 1, "no earlier enterprise.registered")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("request_digest", "sha256:" + "0" * 64, "request_digest"),
        ("purpose", "marketing", "purpose differs"),
        ("dataset", "taxes", "dataset differs"),
        ("enterprise", "Beta", "another enterprise"),
    ],
)
def test_entry_fields_must_agree_with_the_signed_request(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey, field: str, value: str, words: str
):
    fields = job_fields(_request())
    fields[field] = value
    directory = write(GENESIS, REGISTERED, ("job.accepted", fields))
    _fails_at(directory, _key(signing_key), 2, words)


def test_a_run_attestation_not_signed_by_the_enclave_fails(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        ("run.completed", run_fields(2, signer=Ed25519PrivateKey.generate())),
    )
    _fails_at(directory, _key(signing_key), 3, "enclave key")


def test_a_changed_result_digest_breaks_the_attestation(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    fields = run_fields(2)
    fields["attestation"] = {**fields["attestation"], "result_digest": "sha256:other"}
    directory = write(
        GENESIS, REGISTERED, ("job.accepted", job_fields(_request())), ("run.completed", fields)
    )
    _fails_at(directory, _key(signing_key), 3, "enclave key")


def test_an_attestation_for_another_job_fails(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        ("run.completed", run_fields(2, job_id="job_2")),
    )
    _fails_at(directory, _key(signing_key), 3, "another job")


@pytest.mark.parametrize(
    ("accepted_at", "changes", "words"),
    [
        (1, {}, "accepted_at_index"),
        (2, {"code_hash": "sha256:other"}, "code_hash"),
        (2, {"params_digest": "other"}, "params_digest"),
    ],
)
def test_a_run_must_be_the_one_that_was_accepted(
    write: Callable[..., Path],
    signing_key: Ed25519PrivateKey,
    accepted_at: int,
    changes: dict[str, Any],
    words: str,
):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        ("run.completed", run_fields(accepted_at, **changes)),
    )
    _fails_at(directory, _key(signing_key), 3, words)


def test_a_run_without_a_recorded_enclave_key_fails_closed(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(
        REGISTERED, ("job.accepted", job_fields(_request())), ("run.completed", run_fields(1))
    )
    _fails_at(directory, _key(signing_key), 2, "no enclave key")


def test_the_enclave_key_cannot_be_swapped_later(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    other = ("sandbox.created", {"origin": ORIGIN, "enclave_public_key": _pub(ACME)})
    directory = write(GENESIS, other)
    _fails_at(directory, _key(signing_key), 1, "only be entry 0")


@pytest.mark.parametrize("bad", ["", "AAAA", 7, _b64(b"x" * 31)])
def test_malformed_keys_on_the_ledger_are_refused(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey, bad: Any
):
    directory = write(("enterprise.registered", {"enterprise": "Acme", "public_key": bad}))
    _fails_at(directory, _key(signing_key), 0, "raw Ed25519 key")


def _reused(accepted_at: int, *, reuse_of: str = "job_1", digest: str = "sha256:result"):
    return (
        "run.reused",
        {
            "job_id": "job_2",
            "enterprise": "Acme",
            "dataset": "residents",
            "accepted_at_index": accepted_at,
            "reuse_of": reuse_of,
            "result_digest": digest,
        },
    )


def _second_job() -> tuple[str, dict[str, Any]]:
    fields = job_fields(_request(nonce="m" * 22))
    fields["job_id"] = "job_2"
    return ("job.accepted", fields)


def test_a_reused_release_verifies_against_the_attested_run(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        ("run.completed", run_fields(2)),
        _second_job(),
        _reused(4),
    )
    assert verify_ledger(directory, _key(signing_key)).size == 6


@pytest.mark.parametrize(
    ("reuse", "words"),
    [
        ({"reuse_of": "job_9"}, "no earlier attested run"),
        ({"digest": "sha256:other"}, "digest differs"),
    ],
)
def test_a_reuse_cannot_hand_out_a_result_no_enclave_attested(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey, reuse: dict[str, str], words: str
):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        ("run.completed", run_fields(2)),
        _second_job(),
        _reused(4, **reuse),
    )
    _fails_at(directory, _key(signing_key), 5, words)


def test_a_reuse_of_a_run_recorded_later_does_not_count(
    write: Callable[..., Path], signing_key: Ed25519PrivateKey
):
    directory = write(
        GENESIS,
        REGISTERED,
        ("job.accepted", job_fields(_request())),
        _second_job(),
        _reused(3),
        ("run.completed", run_fields(2)),
    )
    _fails_at(directory, _key(signing_key), 4, "no earlier attested run")
