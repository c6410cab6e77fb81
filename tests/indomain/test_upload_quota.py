"""Stored uploads over the real HTTP gateway: one enterprise cannot fill the sandbox's disk
(a per-enterprise quota, refused before the body is read), and uploads nothing needs any
more are removed without breaking results, receipts or the ledger.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyarrow.parquet as pq
import pytest
import tenseal as ts
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import ledger
from computations import PsiClient, digest_of
from gateway import Client, Refused, UploadQuotaExceeded, sign_request
from indomain.cli import app as cli
from indomain.demo_data import write_residents
from indomain.encrypted_jobs import upload_folder
from indomain.sandbox import Sandbox
from indomain.server import serve_in_thread
from indomain.uploads import DEFAULT_UPLOAD_QUOTA, UploadJanitor

ACME = "Acme Credit"
DEMO_SCHEMA = Path(__file__).resolve().parents[2] / "indomain/demo/policies/schema.cedarschema"
POLICY = """\
@id("acme-encrypted")
permit (
  principal == Enterprise::"Acme Credit",
  action in [Action::"psi", Action::"encrypted_group_sum"],
  resource == Dataset::"residents"
)
when { context.purpose == "credit_risk_model" };
"""
PURPOSE = "credit_risk_model"


class World:
    def __init__(self, sandbox: Sandbox, url: str, key: Ed25519PrivateKey, source: Path) -> None:
        self.sandbox, self.url, self.key, self.source = sandbox, url, key, source
        self.client = Client(url, enterprise=ACME, private_key=key)

    @property
    def folder(self) -> Path:
        return upload_folder(self.sandbox, ACME)

    def kept(self) -> set[str]:
        return {p.name for p in self.folder.iterdir()} if self.folder.is_dir() else set()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("uploads")
    data, manifest = write_residents(base / "source", 3000)
    manifest.write_text(manifest.read_text().replace("budget: 20/month", "budget: 100/month"))
    sandbox = Sandbox.init(base / "home", origin="test.indomain.example/uploads")
    sandbox.import_dataset(data, name="residents", manifest=manifest)
    key = Ed25519PrivateKey.generate()
    pem = base / "acme.pub"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    sandbox.register_enterprise(ACME, pem)
    policies = base / "policies"
    policies.mkdir()
    shutil.copy(DEMO_SCHEMA, policies / "schema.cedarschema")
    (policies / "encrypted.cedar").write_text(POLICY)
    sandbox.apply_policies(policies)
    with serve_in_thread(sandbox.app()) as url:
        world = World(sandbox, url, key, base / "source")
        yield world
        world.client.close()
    sandbox.close()


@pytest.fixture()
def quota(world: World) -> Iterator[None]:
    yield
    world.sandbox.upload_quota = DEFAULT_UPLOAD_QUOTA


def _points(n: int, tag: str) -> bytes:
    """``n`` valid, distinct blinded points: a well-formed request upload of ``32·n``
    bytes (under a fresh key: other bytes at every call)."""
    return b"".join(PsiClient([f"{tag}-{i}".encode() for i in range(n)]).request().items)


def _raw_put(world: World, declared: int) -> tuple[bytes, float]:
    """Send a signed PUT's headers declaring ``declared`` bytes and no body at all; returns
    the gateway's answer and how long it took. A gateway that waited for the body would
    not answer before the timeout."""
    digest = "sha256:" + "3" * 64
    path = f"/v1/uploads/request/{digest}"
    headers = sign_request(
        enterprise=ACME,
        key=world.key,
        method="PUT",
        path=path,
        audience="test.indomain.example/uploads",
    )
    where = urlsplit(world.url)
    lines = [f"PUT {path} HTTP/1.1", f"Host: {where.netloc}", f"Content-Length: {declared}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    start = time.monotonic()
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer, time.monotonic() - start


def test_filling_the_quota_then_one_more_upload_is_refused(world: World, quota: None) -> None:
    """The abuse: upload until the quota is full, then once more. The last one is refused
    (507 ``upload_quota_exceeded``) and nothing is kept or recorded."""
    shutil.rmtree(world.folder, ignore_errors=True)
    world.sandbox.upload_quota = 3 * 64 * 32  # three requests of 64 points
    for n in range(3):
        world.client.upload("request", _points(64, f"fill{n}"))
    assert sum(p.stat().st_size for p in world.folder.iterdir()) == world.sandbox.upload_quota
    kept, size = world.kept(), world.sandbox.ledger.size
    with pytest.raises(UploadQuotaExceeded) as refused:
        world.client.upload("request", _points(1, "one-more"))
    assert refused.value.status == 507 and refused.value.code == "upload_quota_exceeded"
    assert refused.value.extra["room"] == 0
    assert "ask the operator for a larger quota" in refused.value.message
    # A chunked body (no declared length) is cut off at the room left.
    digest = digest_of(_points(2, "chunked"))

    def body() -> Iterator[bytes]:
        yield _points(2, "chunked")

    path = f"/v1/uploads/request/{digest}"
    headers = sign_request(
        enterprise=ACME,
        key=world.key,
        method="PUT",
        path=path,
        audience="test.indomain.example/uploads",
    )
    answer = httpx.put(world.url + path, content=body(), headers=headers)
    assert answer.status_code == 507
    assert answer.json()["error"]["code"] == "upload_quota_exceeded"
    # Two uploads at once could both pass the gateway's early check: keeping one checks
    # the quota again, under the lock that moves it into place.
    late = _points(1, "late")
    source = world.folder.parent / "late.bin"
    source.write_bytes(late)
    with pytest.raises(UploadQuotaExceeded):
        world.sandbox.store_upload(
            enterprise=ACME, kind="request", digest=digest_of(late), source=source
        )
    source.unlink(missing_ok=True)  # moved away by the sandbox, or left to us
    assert world.kept() == kept and world.sandbox.ledger.size == size


def test_an_upload_over_the_room_left_is_refused_before_its_body_is_read(
    world: World, quota: None
) -> None:
    shutil.rmtree(world.folder, ignore_errors=True)
    world.sandbox.upload_quota = 10 * 32
    world.client.upload("request", _points(8, "before-body"))  # 64 bytes of room left
    answer, took = _raw_put(world, declared=65)
    head = answer.split(b"\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 507"), answer[:200]
    assert b"upload_quota_exceeded" in answer and b'"room":64' in answer
    assert took < 5
    # Exactly the room left fits.
    world.client.upload("request", _points(2, "exactly"))
    assert world.sandbox.upload_room(ACME) == 0


def test_a_repeated_upload_takes_no_more_room(world: World, quota: None) -> None:
    shutil.rmtree(world.folder, ignore_errors=True)
    data = _points(10, "again")
    world.sandbox.upload_quota = len(data)
    world.client.upload("request", data)
    world.client.upload("request", data)  # already kept: refreshed, not stored twice
    assert world.sandbox.upload_room(ACME) == 0


def _identifiers(world: World) -> list[Any]:
    (parquet,) = world.source.glob("*.parquet")
    return pq.read_table(parquet, columns=["resident_id"]).column("resident_id").to_pylist()


def test_inputs_of_a_finished_job_are_removed_and_its_result_still_verifies(
    world: World,
) -> None:
    shutil.rmtree(world.folder, ignore_errors=True)
    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[35, 34, 40])
    context.global_scale = 2**26
    context.generate_galois_keys()
    session, offer = world.client.open_psi_session(
        dataset="residents", purpose=PURPOSE, dimension="district"
    )
    identifiers = _identifiers(world)[:2900]
    answers = world.client.encrypted_group_sum(
        dataset="residents",
        purpose=PURPOSE,
        session=session,
        offer=offer,
        identifiers=identifiers,
        values=[1.0] * len(identifiers),
        context=context,
    )
    assert len(answers) == 11
    job_id = world.sandbox.store.jobs_of("encrypted_group_sum")[-1].id
    assert len(world.kept()) == 5  # request, reply, proof, context, values
    report = world.sandbox.prune_uploads()
    assert (report.used, report.expired, report.kept) == (5, 0, 0)
    assert world.kept() == set()
    # Nothing later needed them: the result and its receipt verify, and so does the ledger.
    result = world.client.result(job_id, ledger_key=world.sandbox.verifier_key)
    assert result.table.num_rows == 11
    verified = ledger.verify_ledger(world.sandbox.home.ledger, world.sandbox.verifier_key)
    assert verified.size == world.sandbox.ledger.size
    # A job naming a removed upload is refused at admission, and charges nothing.
    before = world.sandbox.budgets(ACME)
    params = {"session": session, **result_params(world, job_id)}
    with pytest.raises(Refused) as refused:
        world.client.submit(
            computation="encrypted_group_sum", dataset="residents", purpose=PURPOSE, params=params
        )
    assert refused.value.extra["rule"] == "upload-missing"
    assert world.sandbox.budgets(ACME) == before


def result_params(world: World, job_id: str) -> dict[str, str]:
    import json

    params: dict[str, str] = json.loads(world.sandbox.store.job(job_id).document)["params"]
    return {k: v for k, v in params.items() if k != "session"}


def _age(path: Path, hours: float) -> None:
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_old_unused_uploads_go_and_uploads_of_unfinished_jobs_stay(world: World) -> None:
    shutil.rmtree(world.folder, ignore_errors=True)
    old = world.client.upload("request", _points(3, "old"))["digest"]
    fresh = world.client.upload("request", _points(3, "fresh"))["digest"]
    waiting = world.client.upload("request", _points(3, "waiting"))["digest"]
    again = _points(3, "refreshed")  # blinded under a fresh key: keep the bytes to resend
    refreshed = world.client.upload("request", again)["digest"]
    for digest in (old, waiting, refreshed):
        _age(world.folder / f"request-{digest.removeprefix('sha256:')}", hours=48)
    world.client.upload("request", again)  # sent again: young again
    # A job received but not yet decided (a gateway that crashed is resumed at start)
    # names ``waiting``: its upload must stay, however old.
    import json

    from gateway import new_job, sign_job

    job = new_job(
        enterprise=ACME,
        computation="encrypted_group_sum",
        dataset="residents",
        purpose=PURPOSE,
        params={"session": "x" * 36, "request": waiting},
        audience=world.sandbox.home.origin,
    )
    world.sandbox.store.insert_job(
        job_id="job_" + "7" * 32,
        enterprise=ACME,
        nonce=job.nonce,
        computation=job.computation,
        dataset=job.dataset,
        purpose=job.purpose,
        document=json.dumps(job.model_dump()).encode(),
        signature=sign_job(job, world.key),
    )
    try:
        report = world.sandbox.prune_uploads(max_age=timedelta(hours=24))
    finally:
        world.sandbox.store.update_job("job_" + "7" * 32, status="failed")
    assert report.expired == 1
    names = world.kept()
    assert f"request-{old.removeprefix('sha256:')}" not in names
    for digest in (fresh, waiting, refreshed):
        assert f"request-{digest.removeprefix('sha256:')}" in names


def test_the_janitor_prunes_again_and_again(world: World) -> None:
    shutil.rmtree(world.folder, ignore_errors=True)
    janitor = UploadJanitor(
        world.sandbox, every=timedelta(seconds=0.05), max_age=timedelta(hours=1)
    ).start()
    try:
        digest = world.client.upload("request", _points(2, "janitor"))["digest"]
        path = world.folder / f"request-{digest.removeprefix('sha256:')}"
        _age(path, hours=2)
        # Both awaited: a run deletes the file before it counts itself, so a poll between
        # the two saw the file gone and one run counted, and failed.
        deadline = time.monotonic() + 60
        while (path.exists() or janitor.runs < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not path.exists()
        assert janitor.runs >= 2
    finally:
        janitor.stop()


def test_the_prune_command_removes_old_uploads(tmp_path: Path) -> None:
    root = tmp_path / "home"
    with Sandbox.init(root, origin="test.indomain.example/prune") as sandbox:
        folder = upload_folder(sandbox, ACME)
    folder.mkdir(parents=True)
    stale, young = folder / ("request-" + "a" * 64), folder / ("context-" + "b" * 64)
    stale.write_bytes(b"x" * 100)
    young.write_bytes(b"y" * 10)
    _age(stale, hours=30)
    result = CliRunner().invoke(
        cli, ["uploads", "prune", "--home", str(root), "--max-age-hours", "24"]
    )
    assert result.exit_code == 0, result.output
    assert "1 unused uploads older than 24 h" in result.output and "(100 bytes)" in result.output
    assert not stale.exists() and young.exists()
