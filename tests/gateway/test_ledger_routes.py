"""The public ledger endpoints: exact entry bytes in bounded pages, proofs that verify."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import ledger
from gateway import StateStore, create_app
from gateway._ledger_routes import MAX_PAGE

ORIGIN = "routes.indomain.example/ledger"
SIZE = MAX_PAGE + 37  # more than one page


class _Processor:
    """Only what the ledger routes and the checkpoint route need."""

    def __init__(self, log: ledger.Ledger) -> None:
        self._log = log

    def checkpoint(self) -> str:
        return self._log.checkpoint()


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, ledger.Ledger]]:
    from indomain.server import serve_in_thread

    base = tmp_path_factory.mktemp("routes")
    key = Ed25519PrivateKey.generate()
    log = ledger.Ledger.create(base / "ledger", origin=ORIGIN, signing_key=key)
    for i in range(SIZE):
        log.append("test.event", {"seq": i})
    store = StateStore(base / "state.sqlite")
    app = create_app(store=store, processor=_Processor(log), ledger=log)  # type: ignore[arg-type]
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        yield client, log
    store.close()
    log.close()


def test_entries_are_the_exact_stored_bytes_one_per_line(served: Any):
    client, log = served
    answer = client.get("/v1/ledger/entries", params={"start": 3, "end": 7})
    assert answer.status_code == 200
    assert answer.content == b"".join(e + b"\n" for e in log.raw_entries(3, 7))
    assert answer.headers["x-indomain-ledger-size"] == str(SIZE)


def test_a_page_is_bounded_however_much_is_asked(served: Any):
    client, _ = served
    answer = client.get("/v1/ledger/entries", params={"start": 0, "end": SIZE})
    assert answer.content.count(b"\n") == MAX_PAGE


@pytest.mark.parametrize(
    ("params", "status"),
    [({"start": -1}, 400), ({"start": 5, "end": 4}, 404), ({"end": SIZE + 1}, 404)],
)
def test_bad_ranges_are_refused(served: Any, params: dict[str, int], status: int):
    client, _ = served
    answer = client.get("/v1/ledger/entries", params=params)
    assert answer.status_code == status
    assert "error" in answer.json()


def test_an_inclusion_proof_verifies_against_the_checkpoint_for_that_size(served: Any):
    client, log = served
    answer = client.get("/v1/ledger/proof/inclusion", params={"index": 17, "size": 500})
    receipt = ledger.Receipt.from_json(answer.json())
    checkpoint = ledger.verify_receipt(receipt, log.raw_entry(17), log.verifier_key)
    assert checkpoint.size == 500


def test_an_inclusion_proof_as_tlog_proof(served: Any):
    client, log = served
    answer = client.get(
        "/v1/ledger/proof/inclusion", params={"index": 0, "size": SIZE, "format": "tlog-proof"}
    )
    assert answer.text.startswith("c2sp.org/tlog-proof@v1\nindex 0\n")
    assert ledger.verify_tlog_proof(answer.text, log.raw_entry(0), log.verifier_key).size == SIZE


def test_a_consistency_proof_links_two_signed_checkpoints(served: Any):
    client, log = served
    answer = client.get("/v1/ledger/proof/consistency", params={"old": 100, "new": SIZE})
    proof = [base64.b64decode(h) for h in answer.json()["proof"]]
    old = ledger.open_checkpoint(log.checkpoint_at(100), log.verifier_key)
    new = ledger.open_checkpoint(log.checkpoint_at(SIZE), log.verifier_key)
    ledger.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/ledger/proof/inclusion", {"index": SIZE, "size": SIZE}),
        ("/v1/ledger/proof/inclusion", {"index": 0, "size": SIZE + 1}),
        ("/v1/ledger/proof/consistency", {"old": 0, "new": 5}),
        ("/v1/ledger/proof/consistency", {"old": 5, "new": SIZE + 1}),
    ],
)
def test_impossible_proofs_are_404(served: Any, path: str, params: dict[str, int]):
    client, _ = served
    assert client.get(path, params=params).status_code == 404


def test_the_endpoints_need_no_authentication(served: Any, tmp_path: Path):
    client, _ = served
    for path in ("/v1/ledger/checkpoint", "/v1/ledger/entries"):
        assert client.get(path).status_code == 200


def test_a_cosignature_by_a_witness_the_operator_did_not_accept_is_403(served: Any):
    client, log = served
    stranger = Ed25519PrivateKey.generate()
    checkpoint = ledger.open_checkpoint(log.checkpoint_at(5), log.verifier_key)
    body = {
        "size": 5,
        "witness_key": ledger.witness_key("stranger.example/w", stranger.public_key()),
        "cosignature": ledger.cosign(checkpoint, name="stranger.example/w", private_key=stranger),
    }
    answer = client.post("/v1/ledger/cosignatures", json=body)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "unknown_witness"
    assert "witness add" in answer.json()["error"]["message"]
    ledger.accept_witness(log.directory, body["witness_key"])
    try:
        assert client.post("/v1/ledger/cosignatures", json=body).status_code == 201
    finally:
        ledger.remove_witness(log.directory, body["witness_key"])
