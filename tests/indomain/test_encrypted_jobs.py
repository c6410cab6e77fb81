"""Encrypted views over the real HTTP gateway: a PSI session, checked uploads, an
encrypted group sum charged to the budget, and every hygiene refusal (4xx, nothing
charged, nothing run).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import tenseal as ts
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from computations import digest_of, prepare_group_sum
from gateway import Client, Refused
from indomain.demo_data import write_residents
from indomain.sandbox import Sandbox
from indomain.server import serve_in_thread

ACME = "Acme Credit"
BETA = "Beta Analytics"
GAMMA = "Gamma Lending"
DEMO_SCHEMA = Path(__file__).resolve().parents[2] / "indomain/demo/policies/schema.cedarschema"
POLICY = """\
@id("acme-encrypted")
permit (
  principal == Enterprise::"Acme Credit",
  action in [Action::"psi", Action::"encrypted_group_sum", Action::"encrypted_linear_score"],
  resource == Dataset::"residents"
)
when { context.purpose == "credit_risk_model" };

@id("beta-encrypted")
permit (
  principal == Enterprise::"Beta Analytics",
  action == Action::"encrypted_group_sum",
  resource == Dataset::"residents"
)
when { context.purpose == "credit_risk_model" };

@id("gamma-psi")
@psi_max_set_size("120")
permit (principal == Enterprise::"Gamma Lending", action == Action::"psi",
        resource == Dataset::"residents")
when { context.purpose == "credit_risk_model" };

@id("gamma-group-sum")
@psi_max_set_size("100")
permit (principal == Enterprise::"Gamma Lending", action == Action::"encrypted_group_sum",
        resource == Dataset::"residents")
when { context.purpose == "credit_risk_model" };
"""


#: Districts in the demo manifest: the groups of a session on ``district``.
GROUPS = 11


class Encrypted:
    gamma: Client

    def __init__(self, sandbox: Any, url: str, acme: Any, beta: Any, source: Path) -> None:
        self.sandbox, self.url, self.source = sandbox, url, source
        self.acme = Client(url, enterprise=ACME, private_key=acme)
        self.beta = Client(url, enterprise=BETA, private_key=beta)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Encrypted]:
    base = tmp_path_factory.mktemp("encrypted")
    data, manifest = write_residents(base / "source", 3000)
    # Room for the jobs below (each charged epsilon: one report per person, proved).
    manifest.write_text(manifest.read_text().replace("budget: 20/month", "budget: 100/month"))
    sandbox = Sandbox.init(base / "home", origin="test.indomain.example/ledger")
    sandbox.import_dataset(data, name="residents", manifest=manifest)
    acme, beta = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    gamma = Ed25519PrivateKey.generate()
    for name, key in ((ACME, acme), (BETA, beta), (GAMMA, gamma)):
        pem = base / f"{name}.pub"
        pem.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        sandbox.register_enterprise(name, pem)
    policies = base / "policies"
    policies.mkdir()
    shutil.copy(DEMO_SCHEMA, policies / "schema.cedarschema")
    (policies / "encrypted.cedar").write_text(POLICY)
    sandbox.apply_policies(policies)
    with serve_in_thread(sandbox.app()) as url:
        world = Encrypted(sandbox, url, acme, beta, base / "source")
        world.gamma = Client(url, enterprise=GAMMA, private_key=gamma)
        yield world
        world.acme.close()
        world.beta.close()
        world.gamma.close()
    sandbox.close()


@pytest.fixture(scope="module")
def secret_context() -> Any:
    context = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[35, 34, 40])
    context.global_scale = 2**26
    context.generate_galois_keys()
    return context


@pytest.fixture(scope="module")
def session(world: Encrypted) -> tuple[str, Any]:
    return world.acme.open_psi_session(
        dataset="residents", purpose="credit_risk_model", dimension="district"
    )


def _residents(world: Encrypted) -> dict[Any, str]:
    (parquet,) = world.source.glob("*.parquet")
    table = pq.read_table(parquet, columns=["resident_id", "district"])
    ids, districts = table.column("resident_id").to_pylist(), table.column("district").to_pylist()
    return dict(zip(ids, districts, strict=True))


def _spent(world: Encrypted) -> float:
    (view,) = [v for v in world.sandbox.budgets(ACME) if v["dataset"] == "residents"]
    return float(view["epsilon_spent"])


def _entries(world: Encrypted, kind: str) -> list[Any]:
    log = world.sandbox.ledger
    return [e for e in log.entries(0, log.size) if e.type == kind]


def test_an_encrypted_group_sum_end_to_end_is_debiased_and_charged(
    world: Encrypted, session: tuple[str, Any], secret_context: Any
) -> None:
    session_id, offer = session
    residents = _residents(world)
    # Most of the list matched: the minimum is judged 3 standard deviations below the
    # estimate, and the randomisation's deviation grows with the list (about 360 here).
    identifiers = [*list(residents)[:2900], *(f"unknown-{i}" for i in range(100))]
    values = [float(i % 50) for i in range(len(identifiers))]
    before = _spent(world)
    answers = world.acme.encrypted_group_sum(
        dataset="residents",
        purpose="credit_risk_model",
        session=session_id,
        offer=offer,
        identifiers=identifiers,
        values=values,
        context=secret_context,
    )
    # The manifest's epsilon per report, once: the shuffle proofs verified, so each
    # person got at most one report whatever the 11 districts (docs/threat-model.md).
    assert _spent(world) == pytest.approx(before + 1.0)
    by_group = {a["group"]: a for a in answers}
    for district in {d for d in residents.values()}:
        truth = sum(
            v for i, v in zip(identifiers, values, strict=True) if residents.get(i) == district
        )
        answer = by_group[district]
        assert abs(answer["sum_estimate"] - truth) <= 6 * answer["sum_variance_bound"] ** 0.5
    # The ledger holds kinds and digests of the uploads, never their bytes or sizes.
    stored = _entries(world, "upload.stored")
    assert {e.fields["kind"] for e in stored} >= {"request", "reply", "proof", "context", "values"}
    assert all(set(e.fields) == {"enterprise", "kind", "digest"} for e in stored)


def test_another_enterprise_cannot_use_the_session(
    world: Encrypted, session: tuple[str, Any]
) -> None:
    session_id, _ = session
    params = {"session": session_id, **{k: "sha256:" + "0" * 64 for k in _KINDS}}
    with pytest.raises(Refused) as refused:
        world.beta.submit(
            computation="encrypted_group_sum",
            dataset="residents",
            purpose="credit_risk_model",
            params=params,
        )
    assert refused.value.status == 422 and refused.value.extra["rule"] == "psi-session"


_KINDS = ("request", "reply", "proof", "context", "values")


def _public(context: Any, *, galois: bool = True) -> bytes:
    copy = context.copy()
    copy.make_context_public()
    return bytes(copy.serialize(save_galois_keys=galois))


def _refused_upload(world: Encrypted, kind: str, data: bytes, **kw: Any) -> str:
    before, size = _spent(world), world.sandbox.ledger.size
    with pytest.raises(Refused) as refused:
        world.acme.upload(kind, data, **kw)
    assert refused.value.status == 422 and refused.value.code == "upload_refused"
    assert _spent(world) == before and world.sandbox.ledger.size == size
    return refused.value.message


def test_a_context_with_its_secret_key_is_refused(world: Encrypted, secret_context: Any) -> None:
    message = _refused_upload(
        world, "context", bytes(secret_context.serialize(save_secret_key=True))
    )
    assert "secret key" in message


def test_oversize_parameters_and_bytes_are_refused(
    world: Encrypted, secret_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parameters beyond the 128-bit table cannot even be built (SEAL refuses, see
    # test_he_context.py, which checks the table itself); a ring above the cap can.
    big = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 40, 60])
    message = _refused_upload(world, "context", _public(big, galois=False))
    assert "above this policy's cap" in message
    from indomain import encrypted_jobs

    monkeypatch.setitem(encrypted_jobs.MAX_UPLOAD_BYTES, "context", 1000)
    assert "at most 1000 bytes" in _refused_upload(world, "context", _public(secret_context))


def test_malformed_bytes_are_refused(world: Encrypted, secret_context: Any) -> None:
    assert "malformed" in _refused_upload(world, "context", b"\x00not a context" * 10)
    context = _public(secret_context)
    world.acme.upload("context", context)
    digest = digest_of(context)
    assert "refused" in _refused_upload(world, "values", b"\x00\x00\x00\x01junk", context=digest)
    assert "refused" in _refused_upload(world, "request", b"\x01" * 64)


def test_a_malformed_shuffle_proof_is_refused_at_upload(world: Encrypted) -> None:
    from computations._encrypted._blobs import frame_proofs
    from computations._psi._group import random_point, random_scalar
    from computations._psi._shuffle import key_commitment, prove_shuffle

    key, offered = random_scalar(), [random_point() for _ in range(3)]
    _, proof = prove_shuffle(key, offered, session=b"s", label="north")
    good = frame_proofs(key_commitment(key), [offered], [proof.to_bytes()])
    assert "wrong size" in _refused_upload(world, "proof", good[:-1])
    assert "not canonical" in _refused_upload(world, "proof", good[:-32] + b"\xff" * 32)
    assert "canonical" in _refused_upload(
        world, "proof", good[:8] + bytes([0] * 31 + [0x80]) + good[40:]
    )
    assert world.acme.upload("proof", good)["groups"] == 1  # well formed: kept


def test_a_request_with_top_bit_twins_is_refused_at_upload(world: Encrypted) -> None:
    # HIGH 1 of the review: bit 255 set is a second encoding libsodium 1.0.18 accepts.
    from computations._psi import hash_to_group

    points = [hash_to_group(f"twin-{i}".encode()) for i in range(4)]
    twins = [p[:31] + bytes([p[31] | 0x80]) for p in points]
    assert "canonical" in _refused_upload(world, "request", b"".join(points + twins))


def test_a_ciphertext_under_another_context_is_refused(
    world: Encrypted, secret_context: Any
) -> None:
    from computations._encrypted import frame_vectors

    context = _public(secret_context)  # serialising again gives other bytes
    world.acme.upload("context", context)
    other = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    other.global_scale = 2**40
    vector = bytes(ts.ckks_vector(other, [1.0] * 4096).serialize())
    message = _refused_upload(world, "values", frame_vectors([vector]), context=digest_of(context))
    assert "not under this context" in message or "malformed" in message


def test_a_body_that_is_not_its_digest_is_refused(world: Encrypted) -> None:
    from gateway import sign_request

    path = "/v1/uploads/request/sha256:" + "0" * 64
    headers = sign_request(
        enterprise=ACME, key=world.acme._key, method="PUT", path=path, audience=world.acme.audience
    )
    response = world.acme._http.put(path, content=b"\x01" * 32, headers=headers)
    assert response.status_code == 422
    assert "digest" in response.json()["error"]["message"]


def test_an_unsigned_upload_is_refused_before_its_body_is_read(world: Encrypted) -> None:
    response = world.acme._http.put("/v1/uploads/request/sha256:" + "0" * 64, content=b"x")
    assert response.status_code == 401


def test_a_job_naming_a_refused_upload_is_refused_and_charges_nothing(
    world: Encrypted, session: tuple[str, Any]
) -> None:
    session_id, _ = session
    before = _spent(world)
    params = {"session": session_id, **{k: "sha256:" + "1" * 64 for k in _KINDS}}
    with pytest.raises(Refused) as refused:
        world.acme.submit(
            computation="encrypted_group_sum",
            dataset="residents",
            purpose="credit_risk_model",
            params=params,
        )
    assert refused.value.code == "query_refused"
    assert "upload" in refused.value.message
    assert _spent(world) == before
    job_id = refused.value.extra["job_id"]
    assert not [e for e in _entries(world, "run.completed") if e.fields["job_id"] == job_id]


def test_a_list_over_the_policys_set_size_cap_is_refused_and_charges_nothing(
    world: Encrypted, secret_context: Any
) -> None:
    """Gamma's psi grant caps a request at 120 identifiers, its group-sum grant at 100."""
    session_id, offer = world.gamma.open_psi_session(
        dataset="residents", purpose="credit_risk_model", dimension="district"
    )
    residents = list(_residents(world))

    def spent() -> float:
        (view,) = [v for v in world.sandbox.budgets(GAMMA) if v["dataset"] == "residents"]
        return float(view["epsilon_spent"])

    # Over the session's cap: the client refuses before a byte is uploaded.
    size = world.sandbox.ledger.size
    with pytest.raises(Refused) as refused:
        world.gamma.encrypted_group_sum(
            dataset="residents",
            purpose="credit_risk_model",
            session=session_id,
            offer=offer,
            identifiers=residents[:121],
            values=[1.0] * 121,
            context=secret_context,
        )
    assert refused.value.code == "set_too_large" and "at most 120" in refused.value.message
    assert world.sandbox.ledger.size == size
    # Under the session's cap but over the group sum's: a client that skips its check
    # uploads, and the job is refused at admission, before any budget is charged.
    prepared = prepare_group_sum(offer, residents[:101], [1.0] * 101, secret_context)
    params = prepared.params(session_id)
    for kind in ("request", "reply", "proof", "context"):
        world.gamma.upload(kind, prepared.uploads[kind])
    world.gamma.upload("values", prepared.uploads["values"], context=params["context"])
    before = spent()
    with pytest.raises(Refused) as refused:
        world.gamma.submit(
            computation="encrypted_group_sum",
            dataset="residents",
            purpose="credit_risk_model",
            params=params,
        )
    assert refused.value.status == 422 and refused.value.extra["rule"] == "psi-set-size"
    assert "101 identifiers" in refused.value.message and "at most 100" in refused.value.message
    assert spent() == before
    job_id = refused.value.extra["job_id"]
    assert not [e for e in _entries(world, "run.completed") if e.fields["job_id"] == job_id]


def test_the_cli_opens_a_session_and_runs_a_group_sum(world: Encrypted, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from indomain.cli import app
    from indomain.sandbox import write_private_key

    key = tmp_path / "acme.key"
    write_private_key(key, world.acme._key)
    env = {"INDOMAIN_URL": world.url, "INDOMAIN_ENTERPRISE": ACME, "INDOMAIN_KEY": str(key)}
    runner = CliRunner()
    context = tmp_path / "acme.tenseal"
    made = runner.invoke(app, ["encrypted", "context", "--out", str(context), "--degree", "4096"])
    assert made.exit_code == 0, made.output
    assert context.stat().st_mode & 0o077 == 0
    offer = tmp_path / "offer.arrow"
    opened = runner.invoke(
        app,
        [
            "encrypted",
            "open",
            "--dataset",
            "residents",
            "--purpose",
            "credit_risk_model",
            "--dimension",
            "district",
            "--offer",
            str(offer),
        ],
        env=env,
    )
    assert opened.exit_code == 0, opened.output
    session = opened.stdout.strip().splitlines()[0]
    residents = _residents(world)
    # Every resident, so that the minimum intersection (judged 3 sd under the debiased
    # count) is met but for 5.3 sd of randomisation, about 6e-8 of runs (exact binomial);
    # with 2,500 of them it was 4.6 sd, 2e-6 of runs.
    keep = math.exp(0.5) / (1 + math.exp(0.5))  # epsilon 1 over a one-hot vector of bits
    flip = 1 - keep
    spread = math.sqrt(GROUPS * len(residents) * keep * flip) / (keep - flip)
    assert len(residents) - 10 - 3 * spread > 5.3 * spread
    lines = ["identifier,value"] + [f"{i},{n % 9}" for n, i in enumerate(residents)]
    data = tmp_path / "customers.csv"
    data.write_text("\n".join(lines) + "\n")
    summed = runner.invoke(
        app,
        [
            "encrypted",
            "group-sum",
            "--dataset",
            "residents",
            "--purpose",
            "credit_risk_model",
            "--session",
            session,
            "--offer",
            str(offer),
            "--input",
            str(data),
            "--context",
            str(context),
            "--json",
        ],
        env=env,
    )
    assert summed.exit_code == 0, summed.output
    answers = json.loads(summed.stdout)
    # Every declared district key answers, even one no sampled resident lives in.
    assert {a["group"] for a in answers} >= set(residents.values())
    assert len(answers) == 11
    scored = runner.invoke(
        app,
        [
            "encrypted",
            "linear-score",
            "--dataset",
            "residents",
            "--purpose",
            "credit_risk_model",
            "--dimension",
            "district",
            "--features",
            "income",
            "--weights",
            "0.001",
            "--context",
            str(context),
            "--json",
        ],
        env=env,
    )
    assert scored.exit_code == 0, scored.output
    assert len(json.loads(scored.stdout)) == 11


def test_an_encrypted_linear_score_over_http_is_debiased_and_charged(
    world: Encrypted, secret_context: Any
) -> None:
    before = _spent(world)
    answers = world.acme.encrypted_linear_score(
        dataset="residents",
        purpose="credit_risk_model",
        dimension="district",
        features=["income", "insurance_months"],
        weights=[0.00001, 0.01],
        context=secret_context,
    )
    assert _spent(world) == pytest.approx(before + 1.0)
    (parquet,) = world.source.glob("*.parquet")
    table = pq.read_table(parquet).to_pylist()
    for district, (estimate, bound) in answers.items():
        truth = sum(
            0.00001 * min(r["income"], 500_000) + 0.01 * min(r["insurance_months"], 540)
            for r in table
            if r["district"] == district
        )
        assert abs(estimate - truth) <= 6 * bound**0.5


def test_an_intersection_under_the_minimum_is_refused_after_the_charge(
    world: Encrypted, session: tuple[str, Any], secret_context: Any
) -> None:
    """Judged on the randomised reports, so the refusal is covered by the epsilon it
    charged; the enterprise learns only that the intersection looked too small.

    One stranger, so that the refusal is certain and not merely likely (40 strangers pass
    about once in 2,000 runs, as the mechanism allows): even with all its GROUPS bits
    reported as 1, one report's debiased total stays under the minimum plus 3 sd."""
    keep = math.exp(0.5) / (1 + math.exp(0.5))  # epsilon 1 over a one-hot pair of bits
    flip = 1 - keep
    most = GROUPS * (1 - flip) / (keep - flip)
    assert most < 10 + 3 * math.sqrt(GROUPS * keep * flip) / (keep - flip)
    session_id, offer = session
    before = _spent(world)
    with pytest.raises(Refused) as refused:
        world.acme.encrypted_group_sum(
            dataset="residents",
            purpose="credit_risk_model",
            session=session_id,
            offer=offer,
            identifiers=["stranger-0"],
            values=[1.0],
            context=secret_context,
        )
    assert "smaller than 10" in refused.value.message
    assert _spent(world) == pytest.approx(before + 1.0)


# -- uploads cannot exhaust the sandbox (review MEDIUM 4, LOW 7) -------------------------


def _put_asgi(
    world: Encrypted, kind: str, total: int, *, declare: bool, chunk: int = 1 << 20
) -> tuple[int, int, dict[str, Any]]:
    """PUT ``total`` bytes straight into the ASGI app, counting what the app pulls from
    the client; returns the status, the bytes pulled and the JSON answer."""
    import asyncio
    import json

    from gateway import sign_request

    digest = "sha256:" + "2" * 64
    path = f"/v1/uploads/{kind}/{digest}"
    signed = sign_request(
        enterprise=ACME, key=world.acme._key, method="PUT", path=path, audience=world.acme.audience
    )
    headers = [(k.lower().encode(), v.encode()) for k, v in signed.items()]
    if declare:
        headers.append((b"content-length", str(total).encode()))
    pulled = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        size = min(chunk, total - pulled)
        pulled += size
        return {"type": "http.request", "body": b"\x01" * size, "more_body": pulled < total}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    asyncio.run(world.sandbox.app(lock=False)(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], pulled, json.loads(body)


@pytest.mark.parametrize("kind", _KINDS)
def test_an_oversize_upload_is_refused_before_its_body_is_read(
    world: Encrypted, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's 150 MiB request (cap 32 MB) was read, held twice in memory and
    hashed before the cap applied. Now a declared Content-Length over the kind's cap is
    refused before a byte is read, and a chunked body is cut off at the cap."""
    from indomain import encrypted_jobs

    monkeypatch.setitem(encrypted_jobs.MAX_UPLOAD_BYTES, kind, 64 << 10)
    folder = world.sandbox.home.root / "uploads"
    before = sorted(folder.rglob("*")) if folder.exists() else []
    size = world.sandbox.ledger.size
    total = 256 << 20
    status, pulled, answer = _put_asgi(world, kind, total, declare=True)
    assert status == 422 and answer["error"]["code"] == "upload_refused"
    assert f"at most {64 << 10} bytes" in answer["error"]["message"]
    assert pulled == 0
    status, pulled, answer = _put_asgi(world, kind, total, declare=False, chunk=16 << 10)
    assert status == 422 and f"at most {64 << 10} bytes" in answer["error"]["message"]
    assert pulled <= (64 << 10) + (16 << 10)
    # Nothing kept, nothing on the ledger, no temporary file left behind.
    assert (sorted(folder.rglob("*")) if folder.exists() else []) == before
    assert world.sandbox.ledger.size == size


def test_an_unknown_upload_kind_is_refused_before_its_body_is_read(world: Encrypted) -> None:
    status, pulled, answer = _put_asgi(world, "weights", 1 << 20, declare=True)
    assert status == 422 and "unknown upload kind" in answer["error"]["message"]
    assert pulled == 0


def test_points_are_checked_in_a_bounded_number_of_separate_processes(
    world: Encrypted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's 4M-point reply cost ~34 s of the gateway's CPU, and validators were
    unbounded in number. Points go to the checking process now, at most MAX_VALIDATORS
    of them at once."""
    import subprocess
    import threading
    import time

    from computations._psi._group import random_point
    from indomain import encrypted_jobs

    real_run = subprocess.run
    lock, running, peak, kinds = threading.Lock(), [0], [0], []

    def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            kinds.append(kwargs["input"])
        try:
            time.sleep(0.2)  # widen the overlap the bound must prevent
            return real_run(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(subprocess, "run", counted)
    errors: list[BaseException] = []

    def store(n: int) -> None:
        data = b"".join(random_point() for _ in range(8))
        source = tmp_path / f"points-{n}"
        source.write_bytes(data)
        try:
            stored = world.sandbox.store_upload(
                enterprise=ACME, kind="request", digest=digest_of(data), source=source
            )
            assert stored["points"] == 8
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(kinds) == 6 and all(b'"kind": "points"' in k for k in kinds)
    assert peak[0] <= encrypted_jobs.MAX_VALIDATORS


def test_the_ledger_records_an_upload_without_its_size(world: Encrypted) -> None:
    """Review LOW 7: 32 bytes per identifier on the public ledger told the list's size."""
    from computations._psi._group import random_point

    data = b"".join(random_point() for _ in range(5))
    world.acme.upload("request", data)
    (entry,) = [
        e for e in _entries(world, "upload.stored") if e.fields["digest"] == digest_of(data)
    ]
    assert set(entry.fields) == {"enterprise", "kind", "digest"}
