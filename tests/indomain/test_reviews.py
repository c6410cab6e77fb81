"""The approval workflow: two-person rule, code hashes, and runs of approved templates."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import indomain
from gateway import JobDocument
from indomain.approvals import propose, review
from indomain.cli import app
from indomain.proposals import Proposal, ProposalError, code_hash, render
from indomain.reviews import ReviewStore
from indomain.sandbox import Sandbox

BUREAU = Path(indomain.__file__).parent / "demo" / "bureau"
TEMPLATE = "SELECT district, COUNT(*) AS n FROM residents WHERE age_band = :band GROUP BY district"

#: The ledger origin of homes built by tests.conftest.build_home.
ORIGIN = "test.indomain.example/ledger"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import build_home

    base = tmp_path_factory.mktemp("reviews")
    sandbox: Any
    sandbox, _, _ = build_home(base / "home", base / "source", rows=500)
    sandbox.apply_policies(BUREAU)
    sandbox.close()
    return base / "home"


def proposal_in(sandbox: Sandbox, **changes: Any) -> Proposal:
    fields: dict[str, Any] = {
        "requester": "Acme Credit",
        "name": "district_counts",
        "template": TEMPLATE,
        "parameters": {"band": "string"},
        "purpose": "credit_risk_model",
        "datasets": ["residents"],
        "expected_epsilon": "0.5",
    }
    fields.update(changes)
    return propose(sandbox, **fields)


def job(proposal: str, **changes: Any) -> JobDocument:
    fields: dict[str, Any] = {
        "enterprise": "Acme Credit",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "credit_risk_model",
        "params": {"proposal": proposal, "values": {"band": "30-39"}},
        "nonce": secrets.token_urlsafe(24),
        "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    fields.update(changes)
    return JobDocument(**fields)


# --- pure rules ------------------------------------------------------------------------


def test_one_changed_character_is_a_new_code_hash() -> None:
    base = code_hash("t", TEMPLATE, {"band": "string"})
    assert base != code_hash("t", TEMPLATE.replace("COUNT", "count"), {"band": "string"})
    assert base != code_hash("t", TEMPLATE, {"band": "int"})
    assert base != code_hash("u", TEMPLATE, {"band": "string"})


def _approved(template: str = TEMPLATE, parameters: dict[str, str] | None = None) -> Proposal:
    parameters = parameters or {"band": "string"}
    return Proposal(
        id="prop_" + "0" * 32,
        name="t",
        template=template,
        parameters=parameters,
        requester="A",
        purpose="p",
        datasets=("residents",),
        columns=(),
        expected_epsilon="0",
        code_hash=code_hash("t", template, parameters),
        required_reviewers=2,
        status="approved",
    )


def test_a_value_is_substituted_as_a_literal_and_cannot_change_the_query() -> None:
    import sqlglot
    from sqlglot import exp

    hostile = "x' OR 1=1 --"
    tree = sqlglot.parse_one(render(_approved(), {"band": hostile}), read="duckdb")
    where = tree.args["where"].this
    assert isinstance(where, exp.EQ) and not list(tree.find_all(exp.Or))
    assert isinstance(where.expression, exp.Literal) and where.expression.this == hostile


@pytest.mark.parametrize(
    "values",
    [{}, {"band": 3}, {"band": "a", "extra": 1}, {"band": None}, {"band": ["a"]}, "band"],
)
def test_missing_unknown_or_mistyped_values_are_refused(values: Any) -> None:
    with pytest.raises(ProposalError):
        render(_approved(), values)


def test_numbers_must_be_finite_and_ints_not_bools() -> None:
    p = _approved(TEMPLATE.replace("age_band = :band", "income > :n"), {"n": "int"})
    assert "income > 5" in render(p, {"n": 5})
    for bad in (True, 1.5, "5"):
        with pytest.raises(ProposalError):
            render(p, {"n": bad})


# --- the store -------------------------------------------------------------------------


def store_proposal(tmp_path: Path, required: int = 2) -> tuple[ReviewStore, Proposal]:
    store = ReviewStore(tmp_path / "state.sqlite")
    p = store.add(
        requester="Acme Credit",
        name="t",
        template=TEMPLATE,
        parameters={"band": "string"},
        purpose="credit_risk_model",
        datasets=("residents",),
        expected_epsilon="0.5",
        required_reviewers=required,
    )
    return store, p


def test_two_distinct_reviewers_approve(tmp_path: Path) -> None:
    store, p = store_proposal(tmp_path)
    assert store.vote(p.id, reviewer="wang", verdict="approve").status == "pending"
    assert store.vote(p.id, reviewer="zhao", verdict="approve").status == "approved"


@pytest.mark.parametrize("second", ["wang", "WANG", " wang "])
def test_one_reviewer_counts_once(tmp_path: Path, second: str) -> None:
    store, p = store_proposal(tmp_path)
    store.vote(p.id, reviewer="wang", verdict="approve")
    with pytest.raises(ProposalError, match="already reviewed"):
        store.vote(p.id, reviewer=second, verdict="approve")
    assert store.get(p.id).status == "pending"


@pytest.mark.parametrize("who", ["Acme Credit", "acme credit"])
def test_the_requester_cannot_approve_their_own_proposal(tmp_path: Path, who: str) -> None:
    store, p = store_proposal(tmp_path)
    with pytest.raises(ProposalError, match="own proposal"):
        store.vote(p.id, reviewer=who, verdict="approve")


def test_one_rejection_is_final(tmp_path: Path) -> None:
    store, p = store_proposal(tmp_path)
    store.vote(p.id, reviewer="wang", verdict="approve")
    assert store.vote(p.id, reviewer="li", verdict="reject").status == "rejected"
    with pytest.raises(ProposalError, match="already rejected"):
        store.vote(p.id, reviewer="zhao", verdict="approve")


@pytest.mark.parametrize(
    "changes",
    [
        {"template": TEMPLATE.replace(":band", "'x'")},  # declared parameter never used
        {"parameters": {"band": "sql"}},
        {"datasets": ()},
        {"name": "Bad Name"},
        {"expected_epsilon": "-1"},
        {"template": "SELECT 1; DROP TABLE residents"},
    ],
)
def test_malformed_proposals_are_refused(tmp_path: Path, changes: dict[str, Any]) -> None:
    store = ReviewStore(tmp_path / "state.sqlite")
    fields: dict[str, Any] = {
        "requester": "A",
        "name": "t",
        "template": TEMPLATE,
        "parameters": {"band": "string"},
        "purpose": "p",
        "datasets": ("residents",),
        "expected_epsilon": "0",
        "required_reviewers": 2,
    }
    fields.update(changes)
    with pytest.raises(ProposalError):
        store.add(**fields)


# --- in the sandbox ----------------------------------------------------------------------


def test_a_proposal_runs_only_after_two_reviewers_and_only_for_its_requester(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        p = proposal_in(sandbox)
        assert p.required_reviewers == 2  # the bureau's grant has no @review: default rule
        before = sandbox.admit(job(p.id), job_id="r1", signature="s")
        assert before.code == "proposal_not_approved"
        review(sandbox, p.id, reviewer="wang", verdict="approve")
        half = sandbox.admit(job(p.id), job_id="r2", signature="s")
        assert half.code == "proposal_not_approved"
        review(sandbox, p.id, reviewer="zhao", verdict="approve")
        after = sandbox.admit(job(p.id), job_id="r3", signature="s")
        assert after.code not in ("proposal_not_approved", "policy_denied"), after.reason

        for attack in (
            job(p.id, enterprise="Beta Analytics"),
            job(p.id, purpose="fiscal_research"),
            job(p.id, dataset="tax_records"),
        ):
            refused = sandbox.admit(attack, job_id="r4", signature="s")
            assert refused.outcome in ("refused", "denied")
            assert refused.code != "accepted"
        both = job(p.id, params={"proposal": p.id, "values": {"band": "a"}, "sql": "SELECT 1"})
        assert sandbox.admit(both, job_id="r5", signature="s").code == "proposal_not_approved"

        entries = sandbox.ledger.entries(0, sandbox.ledger.size)
        approved = [e for e in entries if e.type == "proposal.approved"]
        assert approved and approved[-1].fields["code_hash"] == p.code_hash
        assert sorted(approved[-1].fields["approvals"]) == ["wang", "zhao"]


def test_a_template_changed_after_approval_no_longer_runs(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        p = proposal_in(sandbox, name="tampered")
        review(sandbox, p.id, reviewer="wang", verdict="approve")
        review(sandbox, p.id, reviewer="zhao", verdict="approve")
    db = sqlite3.connect(home / "state.sqlite")
    row = db.execute("SELECT document FROM proposals WHERE id=?", (p.id,)).fetchone()
    db.execute(
        "UPDATE proposals SET document=? WHERE id=?",
        (row[0].replace("COUNT(*)", "SUM(income)"), p.id),
    )
    db.commit()
    db.close()
    with Sandbox.open(home) as sandbox:
        refused = sandbox.admit(job(p.id), job_id="t1", signature="s")
        assert refused.code == "proposal_not_approved"
        assert "code hash" in refused.reason


def test_a_proposal_no_grant_covers_is_refused(home: Path) -> None:
    with Sandbox.open(home) as sandbox, pytest.raises(ProposalError, match="no grant"):
        proposal_in(sandbox, purpose="direct_marketing")


def test_review_cli_lists_and_shows(home: Path) -> None:
    # Signed approvals and rejections at the console: tests/indomain/test_console_reviews.py
    runner = CliRunner()
    with Sandbox.open(home) as sandbox:
        p = proposal_in(sandbox, name="cli_counts")
    args = ["review", "list", "--status", "pending", "--home", str(home)]
    assert runner.invoke(app, args).exit_code == 0
    listed = runner.invoke(app, [*args, "--json"])
    assert listed.exit_code == 0 and p.id in listed.output
    shown = runner.invoke(app, ["review", "show", p.id, "--home", str(home)])
    assert shown.exit_code == 0 and p.code_hash in shown.output


# --- over HTTP ---------------------------------------------------------------------------


def test_enterprises_propose_over_http_with_a_signed_document(tmp_path: Path) -> None:
    import base64

    import httpx
    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway import sign_request
    from indomain.server import serve_in_thread
    from tests.conftest import build_home

    sandbox: Any
    sandbox, acme, beta = build_home(tmp_path / "home", tmp_path / "src", rows=300)
    sandbox.apply_policies(BUREAU)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    proposal = {
        "enterprise": "Acme Credit",
        "name": "http_counts",
        "template": TEMPLATE,
        "parameters": {"band": "string"},
        "purpose": "credit_risk_model",
        "datasets": ["residents"],
        "expected_epsilon": "0.5",
        "issued_at": now,
        "nonce": secrets.token_urlsafe(24),
        "audience": ORIGIN,
    }

    def signed(doc: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
        doc = {**doc, "nonce": secrets.token_urlsafe(24)} if doc is not proposal else doc
        return {
            "proposal": doc,
            "signature": base64.b64encode(key.sign(rfc8785.dumps(doc))).decode(),
        }

    try:
        with serve_in_thread(sandbox.app()) as url, httpx.Client(base_url=url) as client:
            made = client.post("/v1/proposals", json=signed(proposal, acme))
            assert made.status_code == 201, made.text
            pid = made.json()["proposal"]["id"]
            assert made.json()["proposal"]["status"] == "pending"
            # The same signed proposal sent again, inside its 5-minute window: a replay.
            replayed = client.post("/v1/proposals", json=signed(proposal, acme))
            assert replayed.status_code == 409, replayed.text
            assert replayed.json()["error"]["code"] == "replayed_nonce"
            # A proposal without a nonce, or with a short one, is malformed.
            for bad in ({k: v for k, v in proposal.items() if k != "nonce"}, {**proposal}):
                if "nonce" in bad:
                    bad["nonce"] = "short"
                body = {"proposal": bad, "signature": signed(proposal, acme)["signature"]}
                assert client.post("/v1/proposals", json=body).status_code == 400

            # Signed by another enterprise's key: refused, nothing stored.
            forged = client.post("/v1/proposals", json=signed({**proposal, "name": "x"}, beta))
            assert forged.status_code == 401
            # The signature covers the template: changing it after signing fails.
            body = signed(proposal, acme)
            body["proposal"] = {**proposal, "template": TEMPLATE.replace("COUNT(*)", "SUM(income)")}
            assert client.post("/v1/proposals", json=body).status_code == 401
            # Signed for another sandbox (captured there and replayed here): refused,
            # and so is a proposal that names no sandbox at all.
            elsewhere = signed({**proposal, "audience": "other.example/ledger"}, acme)
            refused = client.post("/v1/proposals", json=elsewhere)
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "wrong_audience"
            unnamed = {k: v for k, v in proposal.items() if k != "audience"}
            assert client.post("/v1/proposals", json=signed(unnamed, acme)).status_code == 400
            # Unknown fields are refused, not ignored.
            extra = client.post("/v1/proposals", json=signed({**proposal, "approved": True}, acme))
            assert extra.status_code == 400
            # A purpose no grant covers is refused with the reason.
            marketing = signed({**proposal, "purpose": "direct_marketing"}, acme)
            assert client.post("/v1/proposals", json=marketing).status_code == 422

            path = "/v1/proposals"
            mine = client.get(
                path,
                headers=sign_request(
                    enterprise="Acme Credit", key=acme, method="GET", path=path, audience=ORIGIN
                ),
            )
            assert [p["id"] for p in mine.json()["proposals"]] == [pid]
            theirs = client.get(
                path,
                headers=sign_request(
                    enterprise=BETA_NAME, key=beta, method="GET", path=path, audience=ORIGIN
                ),
            )
            assert theirs.json()["proposals"] == []
            one = f"/v1/proposals/{pid}"
            hidden = client.get(
                one,
                headers=sign_request(
                    enterprise=BETA_NAME, key=beta, method="GET", path=one, audience=ORIGIN
                ),
            )
            assert hidden.status_code == 404
    finally:
        sandbox.close()


BETA_NAME = "Beta Analytics"


def test_registered_reviewers_review_over_http_bound_to_the_code_hash(tmp_path: Path) -> None:
    import base64

    import httpx
    import rfc8785
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway import format_time
    from gateway._jobs import request_message
    from indomain.server import serve_in_thread
    from tests.conftest import build_home

    sandbox: Any
    sandbox, _, _ = build_home(tmp_path / "home", tmp_path / "src", rows=300)
    sandbox.apply_policies(BUREAU)
    keys = {name: Ed25519PrivateKey.generate() for name in ("wang", "zhao")}
    runner = CliRunner()
    for name, key in keys.items():
        pem = tmp_path / f"{name}.pub"
        pem.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        args = ["review", "register-reviewer", name, "--public-key", str(pem)]
        result = runner.invoke(app, [*args, "--home", str(tmp_path / "home")])
        assert result.exit_code == 0, result.output
    p = proposal_in(sandbox, name="http_review")

    def vote(reviewer: str, key: Ed25519PrivateKey, **changes: str) -> dict[str, Any]:
        doc = {
            "kind": "indomain.review",
            "proposal": p.id,
            "code_hash": p.code_hash,
            "reviewer": reviewer,
            "verdict": "approve",
            "reason": "counts only",
            "issued_at": format_time(datetime.now(UTC)),
        }
        doc.update(changes)
        return {"review": doc, "signature": base64.b64encode(key.sign(rfc8785.dumps(doc))).decode()}

    def reviewer_headers(name: str, key: Ed25519PrivateKey, path: str) -> dict[str, str]:
        stamp = format_time(datetime.now(UTC))
        message = request_message(
            enterprise=f"reviewer:{name}",
            method="GET",
            path=path,
            timestamp=stamp,
            audience=ORIGIN,
        )
        return {
            "x-indomain-reviewer": base64.b64encode(name.encode()).decode(),
            "x-indomain-timestamp": stamp,
            "x-indomain-signature": base64.b64encode(key.sign(message)).decode(),
        }

    try:
        with serve_in_thread(sandbox.app()) as url, httpx.Client(base_url=url) as client:
            listed = client.get(
                "/v1/reviews", headers=reviewer_headers("wang", keys["wang"], "/v1/reviews")
            )
            assert listed.status_code == 200
            assert [x["id"] for x in listed.json()["proposals"]] == [p.id]
            # Someone else's key cannot read or vote as wang.
            stolen = reviewer_headers("wang", keys["zhao"], "/v1/reviews")
            assert client.get("/v1/reviews", headers=stolen).status_code == 401
            assert client.post("/v1/reviews", json=vote("wang", keys["zhao"])).status_code == 401
            # A vote for another code hash than the proposal's is refused.
            other = vote("wang", keys["wang"], code_hash="sha256:" + "0" * 64)
            assert client.post("/v1/reviews", json=other).status_code == 409
            # An unregistered reviewer, and a document of another kind, are refused.
            assert client.post("/v1/reviews", json=vote("li", keys["wang"])).status_code == 401
            wrong_kind = vote("wang", keys["wang"], kind="indomain.job")
            assert client.post("/v1/reviews", json=wrong_kind).status_code == 400

            first = vote("wang", keys["wang"])
            ok = client.post("/v1/reviews", json=first)
            assert ok.status_code == 200 and ok.json()["proposal"]["status"] == "pending"
            assert client.post("/v1/reviews", json=first).status_code == 409  # replay
            done = client.post("/v1/reviews", json=vote("zhao", keys["zhao"]))
            assert done.json()["proposal"]["status"] == "approved"
        # Each vote is on the ledger with the document and signature it came in.
        reviewed = [
            sandbox.ledger.entry(i).fields
            for i in range(sandbox.ledger.size)
            if sandbox.ledger.entry(i).type == "proposal.reviewed"
        ]
        assert [r["signed"]["review"]["reviewer"] for r in reviewed] == ["wang", "zhao"]
        assert reviewed[0]["signed"]["signature"] == first["signature"]
    finally:
        sandbox.close()


def test_enterprises_propose_templates_from_the_cli(tmp_path: Path) -> None:
    from indomain.sandbox import write_private_key
    from indomain.server import serve_in_thread
    from tests.conftest import build_home

    sandbox: Any
    sandbox, acme, _ = build_home(tmp_path / "home", tmp_path / "src", rows=300)
    sandbox.apply_policies(BUREAU)
    write_private_key(tmp_path / "acme.key", acme)
    (tmp_path / "counts.sql").write_text(TEMPLATE, encoding="utf-8")
    common = ["--name", "cli_counts", "--purpose", "credit_risk_model", "--dataset", "residents"]
    sql = ["--template", str(tmp_path / "counts.sql"), "--param", "band:string"]
    try:
        with serve_in_thread(sandbox.app()) as url:
            env = {
                "INDOMAIN_URL": url,
                "INDOMAIN_ENTERPRISE": "Acme Credit",
                "INDOMAIN_KEY": str(tmp_path / "acme.key"),
            }
            runner = CliRunner()
            made = runner.invoke(
                app,
                ["client", "propose", *common, *sql, "--epsilon", "0.5"],
                env=env,
            )
            assert made.exit_code == 0, made.output
            pid = made.stdout.strip().splitlines()[-1]
            stored = sandbox.reviews.get(pid)
            assert (stored.requester, stored.template, stored.status) == (
                "Acme Credit",
                TEMPLATE,
                "pending",
            )
            # Neither or both of --template and --module: a usage error, nothing sent.
            neither = runner.invoke(app, ["client", "propose", *common], env=env)
            assert neither.exit_code == 2 and "exactly one of" in neither.output
            # A purpose no grant covers: refused with the sandbox's reason, exit 1.
            marketing = [*common[:2], "--purpose", "direct_marketing", *common[4:]]
            refused = runner.invoke(
                app,
                ["client", "propose", *marketing, *sql],
                env=env,
            )
            assert refused.exit_code == 1, refused.output
            assert "no grant covers this proposal" in refused.output
            assert [p.id for p in sandbox.reviews.list(requester="Acme Credit")] == [pid]
    finally:
        sandbox.close()
