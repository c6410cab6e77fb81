"""Computation-module proposals: stored by the hash of their exact bytes, reviewed, and
pinned to that hash; source that breaks the module rules is refused before any reviewer
sees it. Running approved modules: tests/indomain/test_module_runs.py."""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import indomain
from gateway import JobDocument
from indomain.approvals import module_store, propose_module, review
from indomain.cli import app
from indomain.modules import MAX_MODULE_BYTES, check_module
from indomain.proposals import ProposalError
from indomain.sandbox import Sandbox

BUREAU = Path(indomain.__file__).parent / "demo" / "bureau"
MODULE = '''"""Mean income per district, for Acme's credit model."""


def run(data, params):
    return data.mean("income", by=["district"])
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import build_home

    base = tmp_path_factory.mktemp("modules")
    sandbox: Any
    sandbox, _, _ = build_home(base / "home", base / "source", rows=300)
    sandbox.apply_policies(BUREAU)
    sandbox.close()
    return base / "home"


def _propose(sandbox: Sandbox, source: str = MODULE, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "requester": "Acme Credit",
        "name": "district_income",
        "source": source,
        "purpose": "credit_risk_model",
        "datasets": ["residents"],
        "columns": ["district", "income"],
        "expected_epsilon": "0.5",
    }
    fields.update(changes)
    return propose_module(sandbox, **fields)


def _job(proposal: str, **changes: Any) -> JobDocument:
    fields: dict[str, Any] = {
        "enterprise": "Acme Credit",
        "computation": "aggregate",
        "dataset": "residents",
        "purpose": "credit_risk_model",
        "params": {"proposal": proposal, "values": {}},
        "nonce": secrets.token_urlsafe(24),
        "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    fields.update(changes)
    return JobDocument.model_validate(fields)


def _approve(sandbox: Sandbox, proposal: str) -> Any:
    review(sandbox, proposal, reviewer="wang", verdict="approve")
    return review(sandbox, proposal, reviewer="zhao", verdict="approve")


def test_a_module_is_stored_by_the_hash_of_its_exact_bytes(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        p = _propose(sandbox)
        digest = "sha256:" + hashlib.sha256(MODULE.encode()).hexdigest()
        assert p.kind == "computation_module" and p.code_hash == digest
        stored = module_store(sandbox).path(digest)
        assert stored.read_bytes() == MODULE.encode()
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        entry = sandbox.ledger.entry(sandbox.ledger.size - 1)
        assert entry.type == "proposal.submitted"
        assert entry.fields["kind"] == "computation_module"
        assert entry.fields["code_hash"] == digest
        assert list(entry.fields["columns"]) == ["district", "income"]


def test_reviewers_see_the_source_requester_purpose_datasets_columns_and_cost(
    home: Path,
) -> None:
    with Sandbox.open(home) as sandbox:
        p = _propose(sandbox, name="shown_module")
    shown = CliRunner().invoke(app, ["review", "show", p.id, "--home", str(home)])
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.output)
    assert body["module"] == MODULE and "template" not in body
    assert body["requester"] == "Acme Credit" and body["purpose"] == "credit_risk_model"
    assert body["datasets"] == ["residents"] and body["columns"] == ["district", "income"]
    assert body["expected_epsilon"] == "0.5" and body["code_hash"] == p.code_hash


def test_a_job_naming_a_pending_module_is_refused(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        p = _propose(sandbox, name="pending_module")
        refused = sandbox.admit(_job(p.id), job_id="m1", signature="s")
        assert refused.code == "proposal_not_approved" and "pending" in refused.reason


def test_an_approved_intact_module_is_verified_then_admitted(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        p = _propose(sandbox, name="approved_module")
        approved = _approve(sandbox, p.id)
        assert approved.status == "approved"
        last = sandbox.ledger.entry(sandbox.ledger.size - 1)
        assert last.type == "proposal.approved" and last.fields["code_hash"] == p.code_hash
        admitted = sandbox.admit(_job(p.id), job_id="m2", signature="s")
        assert admitted.outcome == "accepted", admitted.reason
        accepted = sandbox.ledger.entry(admitted.ledger_index)
        assert accepted.fields["code_hash"] == p.code_hash
        # Only the requester, on its datasets and purpose.
        other = sandbox.admit(_job(p.id, enterprise="Beta Analytics"), job_id="m3", signature="s")
        assert other.code == "proposal_not_approved"
        elsewhere = sandbox.admit(_job(p.id, dataset="tax_records"), job_id="m4", signature="s")
        assert elsewhere.code in ("proposal_not_approved", "unknown_dataset")
        # A job running a module passes it values, nothing else (no sql beside it).
        extra = _job(p.id, params={"proposal": p.id, "values": {}, "epsilon": 9})
        assert sandbox.admit(extra, job_id="m4b", signature="s").code == "proposal_not_approved"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import os\ndef run(data, params):\n    return os.getcwd()\n", "imports"),
        ("def run(data, params):\n    return str(().__class__.__bases__)\n", "underscore"),
        ("def run(data, params):\n    return str(open('/etc/passwd'))\n", "open is not"),
        ("def run(data, params):\n    return str(data._release)\n", "underscore"),
        ("def run(data, params):\n    return getattr(data, 'x')\n", "getattr is not"),
        ("def run(data, params):\n    return str(data.count.__closure__)\n", "underscore"),
    ],
    ids=["import-os", "dunder-bases", "open", "facade-private", "getattr", "closure"],
)
def test_a_module_breaking_the_module_rules_is_refused_at_proposal(
    home: Path, source: str, message: str
) -> None:
    with Sandbox.open(home) as sandbox:
        size = sandbox.ledger.size
        with pytest.raises(ProposalError, match=message):
            _propose(sandbox, source, name="attack_module")
        assert sandbox.ledger.size == size
        assert (
            not module_store(sandbox)
            .path("sha256:" + hashlib.sha256(source.encode()).hexdigest())
            .exists()
        )


def test_a_module_changed_after_approval_is_refused(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        source = MODULE + "# v1\n"
        p = _propose(sandbox, source, name="tampered_module")
        _approve(sandbox, p.id)
        stored = module_store(sandbox).path(p.code_hash)
        stored.write_bytes(source.replace("income", "health_flag").encode())
        refused = sandbox.admit(_job(p.id), job_id="m5", signature="s")
        assert refused.code == "proposal_not_approved"
        assert "no longer hashes to its approved hash" in refused.reason
        stored.unlink()
        missing = sandbox.admit(_job(p.id), job_id="m6", signature="s")
        assert missing.code == "proposal_not_approved" and "missing" in missing.reason


def test_a_changed_module_is_a_new_computation_needing_its_own_approval(home: Path) -> None:
    with Sandbox.open(home) as sandbox:
        first = _propose(sandbox, MODULE + "# a\n", name="evolving")
        _approve(sandbox, first.id)
        second = _propose(sandbox, MODULE + "# b\n", name="evolving")
        assert second.code_hash != first.code_hash and second.status == "pending"
        refused = sandbox.admit(_job(second.id), job_id="m7", signature="s")
        assert refused.code == "proposal_not_approved"
        # The first module's file is untouched by the second proposal.
        assert module_store(sandbox).verified(first.code_hash) == (MODULE + "# a\n").encode()


@pytest.mark.parametrize(
    ("source", "changes", "message"),
    [
        ("def run(:\n", {}, "not valid Python"),
        ("x = 1\n", {}, "function run"),
        ("   \n", {}, "not empty"),
        ("def run(d, p):\n    pass\n" + "#" * MAX_MODULE_BYTES, {}, "at most"),
        (MODULE + "# no columns\n", {"columns": []}, "columns"),
        (MODULE + "# no grant\n", {"purpose": "direct_marketing"}, "no grant"),
        (MODULE + "# bad name\n", {"name": "Bad-Name"}, "name:"),
        (MODULE + "# bad epsilon\n", {"expected_epsilon": "lots"}, "epsilon"),
    ],
)
def test_bad_module_proposals_are_refused_and_leave_nothing(
    home: Path, source: str, changes: dict[str, Any], message: str
) -> None:
    with Sandbox.open(home) as sandbox:
        size = sandbox.ledger.size
        count = len(sandbox.reviews.list())
        with pytest.raises(ProposalError, match=message):
            _propose(sandbox, source, **{"name": "bad_module", **changes})
        assert sandbox.ledger.size == size and len(sandbox.reviews.list()) == count
        modules = Path(sandbox.home.root) / "modules"
        stored = {p.name for p in modules.iterdir()} if modules.exists() else set()
        assert hashlib.sha256(source.encode()).hexdigest() + ".py" not in stored


def test_propose_module_cli(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "module.py"
    path.write_bytes(MODULE.encode())
    args = ["review", "propose-module", "--requester", "Acme Credit", "--name", "cli_module"]
    args += ["--module", str(path), "--purpose", "credit_risk_model", "--dataset", "residents"]
    args += ["--column", "district", "--column", "income", "--home", str(home)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(MODULE.encode()).hexdigest() in result.output
    path.write_bytes(b"\xff\xfe not utf-8")
    assert CliRunner().invoke(app, args).exit_code == 2


def test_enterprises_propose_modules_over_http(tmp_path: Path) -> None:
    import base64

    import httpx
    import rfc8785

    from gateway import Client, Refused
    from indomain.server import serve_in_thread
    from tests.conftest import build_home

    sandbox: Any
    sandbox, acme, _ = build_home(tmp_path / "home", tmp_path / "src", rows=300)
    sandbox.apply_policies(BUREAU)
    fields: dict[str, Any] = {
        "name": "http_module",
        "module": MODULE,
        "columns": ["district", "income"],
        "purpose": "credit_risk_model",
        "datasets": ["residents"],
        "expected_epsilon": "0.5",
    }

    def signed(doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "proposal": doc,
            "signature": base64.b64encode(acme.sign(rfc8785.dumps(doc))).decode(),
        }

    try:
        with serve_in_thread(sandbox.app()) as url:
            with Client(url, enterprise="Acme Credit", private_key=acme) as client:
                body = client.propose_module(**fields)
                assert body["kind"] == "computation_module" and body["module"] == MODULE
                digest = hashlib.sha256(MODULE.encode()).hexdigest()
                assert body["code_hash"] == "sha256:" + digest
                assert [p["id"] for p in client.proposals()] == [body["id"]]
                # A purpose no grant covers: the sandbox's reason reaches the caller.
                with pytest.raises(Refused, match="no grant covers this proposal"):
                    client.propose_module(**{**fields, "purpose": "direct_marketing"})
            proposal = {
                **fields,
                "kind": "computation_module",
                "enterprise": "Acme Credit",
                "issued_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "audience": "test.indomain.example/ledger",
            }
            with httpx.Client(base_url=url) as raw:
                # A template's fields on a module proposal are refused, not ignored.
                mixed = {**proposal, "template": "SELECT 1", "nonce": secrets.token_urlsafe(24)}
                assert raw.post("/v1/proposals", json=signed(mixed)).status_code == 400
                other_kind = {**proposal, "kind": "shell", "nonce": secrets.token_urlsafe(24)}
                assert raw.post("/v1/proposals", json=signed(other_kind)).status_code == 400
            # Reviewers read the source with everything else.
            assert sandbox.reviews.get(body["id"]).module == MODULE
    finally:
        sandbox.close()


@pytest.mark.parametrize(
    "source",
    [
        # PEP 263: Python decodes this as UTF-7, where "+AAo-" is a newline, so the
        # comment reviewers read hides a line that returns one person's row.
        "# coding: utf-7\ndef run(data, params):\n"
        "    # mean income per district+AAo-    return data.head(1)\n"
        "    return data.mean('income', by=['district'])\n",
        "# -*- coding: latin-1 -*-\ndef run(data, params):\n    return data\n",
        # Trojan Source: a right-to-left override makes the line read in another order.
        "def run(data, params):\n    access = 'user\u202e \u2066# admin\u2069 \u2066'\n"
        "    return data\n",
        "\ufeffdef run(data, params):\n    return data\n",
        "def run(data, params):\n    return data\u200b.head(1)\n",
    ],
    ids=["utf7-cookie", "latin1-cookie", "bidi-override", "bom", "zero-width-space"],
)
def test_a_module_that_would_run_other_code_than_reviewers_read_is_refused(
    source: str,
) -> None:
    with pytest.raises(ProposalError, match=r"coding declaration|control character"):
        check_module(source)


def test_utf8_modules_with_chinese_text_and_a_utf8_declaration_are_reviewable() -> None:
    assert check_module("# coding: utf-8\ndef run(data, params):\n    return '区县'\n")
