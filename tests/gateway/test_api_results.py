"""Results: Arrow by default, JSON on request, and a receipt that catches a changed result."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import ledger
from computations import table_to_ipc
from gateway import Client, NotReady, TransportError, verify_result
from gateway._jobs import RECEIPT_HEADER

SQL = "SELECT age_band, COUNT(*) AS n, AVG(income) AS mean_income FROM residents GROUP BY age_band"


@pytest.fixture(scope="module")
def finished(world: Any) -> Iterator[tuple[Client, str]]:
    client = Client(world.url, enterprise="Acme Credit", private_key=world.acme_key)
    job_id = client.submit(
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL},
    )["job_id"]
    assert client.wait(job_id)["status"] == "succeeded"
    yield client, job_id
    client.close()


def test_arrow_and_json_views_hold_the_same_rows(finished: tuple[Client, str], world: Any) -> None:
    client, job_id = finished
    arrow = client.result(job_id, ledger_key=world.ledger_key)
    view = client.result_json(job_id)
    assert view["columns"] == ["age_band", "n", "mean_income"]
    assert [r["n"] for r in view["rows"]] == arrow.table.column("n").to_pylist()
    assert view["receipt"] == arrow.receipt


def test_status_names_the_run_and_its_ledger_entries(finished: tuple[Client, str]) -> None:
    client, job_id = finished
    status = client.status(job_id)
    assert status["status"] == "succeeded"
    assert status["policies"] == ["acme-credit-aggregate"]
    assert status["run_ledger_index"] > status["ledger_index"]
    assert status["result_digest"].startswith("sha256:")


def test_a_changed_result_fails_receipt_verification(
    finished: tuple[Client, str], world: Any
) -> None:
    client, job_id = finished
    result = client.result(job_id)
    forged = result.table.set_column(
        1, "n", [[v + 1 for v in result.table.column("n").to_pylist()]]
    )
    with pytest.raises(ledger.LedgerVerificationError):
        verify_result(table_to_ipc(forged), result.receipt, world.ledger_key)
    verify_result(result.ipc, result.receipt, world.ledger_key)


def test_a_receipt_under_another_ledger_key_fails(finished: tuple[Client, str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    client, job_id = finished
    result = client.result(job_id)
    other = ledger.verifier_key(
        "test.indomain.example/ledger", Ed25519PrivateKey.generate().public_key()
    )
    with pytest.raises(ledger.LedgerVerificationError):
        verify_result(result.ipc, result.receipt, other)


def test_a_denied_job_has_no_result(world: Any) -> None:
    from gateway import PolicyDenied

    with (
        Client(world.url, enterprise="Acme Credit", private_key=world.acme_key) as client,
        pytest.raises(PolicyDenied) as denied,
    ):
        client.submit(
            computation="aggregate", dataset="residents", purpose="marketing", params={"sql": SQL}
        )
    job_id = denied.value.extra["job_id"]
    with Client(world.url, enterprise="Acme Credit", private_key=world.acme_key) as client:
        assert client.status(job_id)["status"] == "denied"
        with pytest.raises(NotReady):
            client.result(job_id)


def test_one_status_request_can_wait_for_its_job_to_end(world: Any) -> None:
    """A long poll (``?wait=``) answers when the job has ended, so a client needs no
    polling; another enterprise's job still answers 404 at once, as a missing one does."""
    from gateway import InvalidJob, NotFound
    from tests.conftest import BETA

    client = Client(world.url, enterprise="Acme Credit", private_key=world.acme_key)
    other = Client(world.url, enterprise=BETA, private_key=world.beta_key)
    job_id = client.submit(
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        params={"sql": SQL.replace("AS n,", "AS n_waited,")},  # not a stored release
    )["job_id"]
    started = time.monotonic()
    with pytest.raises(NotFound):
        other._get(f"/v1/jobs/{job_id}?wait=20")
    assert time.monotonic() - started < 5  # it did not wait for a job that is not its own
    state = client._get(f"/v1/jobs/{job_id}?wait=30")  # the run takes a worker: not done yet
    assert state["status"] == "succeeded"
    for bad in ("-1", "31", "nan"):
        with pytest.raises(InvalidJob, match="wait must be between"):
            client._get(f"/v1/jobs/{job_id}?wait={bad}")
    client.close()
    other.close()


class _Rewriting(httpx.HTTPTransport):
    """A transport between client and gateway that changes the result's receipt header
    (drops it with ``None``) and counts the requests, as a meddling proxy would."""

    def __init__(self, receipt: Callable[[str], str | None]) -> None:
        super().__init__()
        self.receipt = receipt
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v1/jobs/"):  # not the audience lookup
            self.paths.append(request.url.path)
        response = super().handle_request(request)
        carried = response.headers.get(RECEIPT_HEADER)
        if carried is not None:
            del response.headers[RECEIPT_HEADER]
            changed = self.receipt(carried)
            if changed is not None:
                response.headers[RECEIPT_HEADER] = changed
        return response


def _client(world: Any, transport: httpx.BaseTransport) -> Client:
    return Client(
        world.url, enterprise="Acme Credit", private_key=world.acme_key, transport=transport
    )


def test_the_result_carries_its_receipt_in_one_request(
    finished: tuple[Client, str], world: Any
) -> None:
    client, job_id = finished
    counting = _Rewriting(lambda carried: carried)
    with _client(world, counting) as one:
        result = one.result(job_id, ledger_key=world.ledger_key)
    assert counting.paths == [f"/v1/jobs/{job_id}/result"]
    assert result.receipt == client.result_json(job_id)["receipt"]


def test_a_changed_receipt_header_fails_verification(
    finished: tuple[Client, str], world: Any
) -> None:
    _, job_id = finished

    def forge(carried: str) -> str:
        receipt = json.loads(base64.b64decode(carried))
        # The recorded digest made to match a result of the proxy's choosing.
        receipt["entry"], changed = re.subn(
            r'"result_digest":"sha256:[0-9a-f]{64}"',
            '"result_digest":"sha256:' + "0" * 64 + '"',
            receipt["entry"],
        )
        assert changed == 1
        return base64.b64encode(json.dumps(receipt).encode()).decode()

    with (
        _client(world, _Rewriting(forge)) as meddled,
        pytest.raises(ledger.LedgerVerificationError),
    ):
        meddled.result(job_id, ledger_key=world.ledger_key)
    with _client(world, _Rewriting(lambda _: "not base64!")) as garbled:
        with pytest.raises(TransportError, match="receipt header"):
            garbled.result(job_id, ledger_key=world.ledger_key)


def test_without_the_header_the_client_fetches_the_receipt(
    finished: tuple[Client, str], world: Any
) -> None:
    _, job_id = finished
    stripping = _Rewriting(lambda _: None)  # a gateway from before the header
    with _client(world, stripping) as older:
        result = older.result(job_id, ledger_key=world.ledger_key)
    assert stripping.paths == [f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/receipt"]
    assert result.table.num_rows > 0
