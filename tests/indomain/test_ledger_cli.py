"""The auditor's commands: export, verify from a home, an export or a gateway, show, proof.

Exit codes are part of the interface: 0 verified, 4 does not verify, 2 bad input.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import ledger
from gateway import Client, GatewayError, LedgerFeed
from indomain.cli import app
from tests.conftest import write_public_key

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"INDOMAIN_LEDGER_KEY": None})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def sandbox_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A fresh home with one enterprise whose signed jobs are refused (unknown dataset)."""
    from indomain.sandbox import Sandbox
    from indomain.server import serve_in_thread

    base = tmp_path_factory.mktemp("ledger-cli")
    root = base / "home"
    acme = Ed25519PrivateKey.generate()
    sandbox = Sandbox.init(root, origin="cli.indomain.example/ledger")
    sandbox.register_enterprise("Acme", write_public_key(base / "acme.pub", acme))
    with serve_in_thread(sandbox.app()) as url:
        with Client(url, enterprise="Acme", private_key=acme) as client:
            for dataset in ("nope", "missing"):
                with pytest.raises(GatewayError):
                    client.submit(
                        computation="aggregate",
                        dataset=dataset,
                        purpose="research",
                        params={"sql": "SELECT 1"},
                    )
        yield {"root": root, "url": url, "key": sandbox.verifier_key, "sandbox": sandbox}
    sandbox.close()


def test_the_first_entries_put_the_enclave_key_and_the_enterprise_on_the_ledger(
    sandbox_home: dict[str, object],
):
    code, out, _ = run("ledger", "show", "--home", str(sandbox_home["root"]), "--json")
    assert code == 0
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == ["sandbox.created", "enterprise.registered", "job.refused", "job.refused"]
    first = json.loads(out.splitlines()[0])["fields"]
    assert first["ledger_verifier_key"] == sandbox_home["key"]


def test_verify_a_home(sandbox_home: dict[str, object]):
    code, out, _ = run("ledger", "verify", "--home", str(sandbox_home["root"]))
    assert code == 0
    assert "ledger verified: 4 entries" in out


def test_export_then_verify_the_export(sandbox_home: dict[str, object], tmp_path: Path):
    out_dir = tmp_path / "export"
    code, out, _ = run("ledger", "export", str(out_dir), "--home", str(sandbox_home["root"]))
    assert code == 0 and "exported 4 entries" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "checkpoint",
        "entries.jsonl",
        "ledger.pub",
    ]
    code, out, _ = run(
        "ledger", "verify", "--export", str(out_dir), "--key", str(sandbox_home["key"])
    )
    assert code == 0, out


def test_a_forged_request_in_an_export_exits_4_naming_the_entry(
    sandbox_home: dict[str, object], tmp_path: Path
):
    out_dir = tmp_path / "export"
    run("ledger", "export", str(out_dir), "--home", str(sandbox_home["root"]))
    lines = (out_dir / "entries.jsonl").read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"purpose":"research"', b'"purpose":"marketin"')
    (out_dir / "entries.jsonl").write_bytes(b"\n".join(lines))
    code, _, err = run("ledger", "verify", "--export", str(out_dir))
    assert code == 4
    # The enterprise's signature catches it at the entry itself, before the chain does.
    assert "entry 2: request signature does not verify" in " ".join(err.split())


def test_verify_a_gateway_over_http(sandbox_home: dict[str, object]):
    url, key = str(sandbox_home["url"]), str(sandbox_home["key"])
    code, out, err = run("ledger", "verify", "--url", url, "--key", key)
    assert code == 0, err
    assert "4 entries" in out


def test_verify_over_http_needs_the_published_key(sandbox_home: dict[str, object]):
    code, _, err = run("ledger", "verify", "--url", str(sandbox_home["url"]))
    assert code == 2
    assert "--key" in err


def test_a_gateway_serving_an_altered_entry_is_caught(sandbox_home: dict[str, object]):
    real = httpx.Client(base_url=str(sandbox_home["url"]))

    def lying(request: httpx.Request) -> httpx.Response:
        answer = real.get(request.url.path, params=request.url.params)
        body = answer.content.replace(b'"dataset":"missing"', b'"dataset":"mislaid"')
        return httpx.Response(answer.status_code, content=body)

    with LedgerFeed("http://gateway", transport=httpx.MockTransport(lying)) as feed:
        note = feed.checkpoint()
        with pytest.raises(ledger.LedgerVerificationError) as caught:
            ledger.verify_entries(feed.entries(0, 4), note, str(sandbox_home["key"]))
    real.close()
    assert caught.value.index == 3


@pytest.mark.parametrize(
    "args",
    [
        ["--home", "H", "--export", "E"],
        ["--home", "/nonexistent/home"],
        ["--export", "/nonexistent/export", "--key", "k+00000000+AA=="],
        ["--url", "http://127.0.0.1:9", "--key", "not a key"],
    ],
)
def test_bad_input_exits_2(args: list[str]):
    code, _, _ = run("ledger", "verify", *args)
    assert code == 2


def test_rollback_against_a_kept_checkpoint_exits_4_and_prints_both_checkpoints(
    sandbox_home: dict[str, object], tmp_path: Path
):
    root = Path(str(sandbox_home["root"]))
    old = tmp_path / "old"
    run("ledger", "export", str(old), "--home", str(root))
    kept = tmp_path / "kept"
    with ledger.Ledger.open(root / "ledger") as log:
        later = log.checkpoint()
    # The auditor kept a checkpoint for one more entry than the operator now shows.
    shutil.copytree(old, tmp_path / "served")
    lines = (old / "entries.jsonl").read_bytes().split(b"\n")[:-1]
    (tmp_path / "served" / "entries.jsonl").write_bytes(b"".join(x + b"\n" for x in lines[:3]))
    with ledger.Ledger.open(root / "ledger") as log:
        (tmp_path / "served" / "checkpoint").write_text(log.checkpoint_at(3))
    kept.write_text(later)
    code, out, err = run(
        "ledger", "verify", "--export", str(tmp_path / "served"), "--trusted", str(kept)
    )
    assert code == 4
    assert "rolled back" in err
    assert later in out and (tmp_path / "served" / "checkpoint").read_text() in out


def test_show_filters_by_type_enterprise_and_time(sandbox_home: dict[str, object]):
    home = str(sandbox_home["root"])
    _, out, _ = run("ledger", "show", "--home", home, "--json", "--type", "job.refused")
    assert len(out.splitlines()) == 2
    _, out, _ = run("ledger", "show", "--home", home, "--json", "--enterprise", "Acme")
    assert len(out.splitlines()) == 3  # registered and its two jobs
    _, out, _ = run("ledger", "show", "--home", home, "--json", "--dataset", "missing")
    assert len(out.splitlines()) == 1
    _, out, _ = run("ledger", "show", "--home", home, "--json", "--until", "2000-01-01")
    assert out == ""
    _, out, _ = run("ledger", "show", "--home", home, "--json", "--since", "2000-01-01")
    assert len(out.splitlines()) == 4
    code, out, _ = run("ledger", "show", "--home", home, "--enterprise", "Acme")
    assert code == 0 and "job.refused" in out


def test_proof_prints_a_tlog_proof_that_verifies_offline(sandbox_home: dict[str, object]):
    root = Path(str(sandbox_home["root"]))
    code, out, _ = run("ledger", "proof", "2", "--home", str(root))
    assert code == 0
    assert out.startswith("c2sp.org/tlog-proof@v1\nindex 2\n")
    with ledger.Ledger.open(root / "ledger") as log:
        entry = log.raw_entry(2)
    checkpoint = ledger.verify_tlog_proof(out, entry, str(sandbox_home["key"]))
    assert checkpoint.size == 4
    with pytest.raises(ledger.LedgerVerificationError):
        ledger.verify_tlog_proof(out, entry.replace(b"nope", b"nopf"), str(sandbox_home["key"]))


def test_a_witness_cosigns_over_http_and_auditors_can_require_it(
    sandbox_home: dict[str, object], tmp_path: Path
):
    from gateway import load_private_key
    from indomain.sandbox import write_private_key

    url, key, root = (
        str(sandbox_home["url"]),
        str(sandbox_home["key"]),
        Path(str(sandbox_home["root"])),
    )
    witness = Ed25519PrivateKey.generate()
    write_private_key(tmp_path / "witness.pem", witness)
    state = tmp_path / "state"
    cosign = ["ledger", "cosign", "--url", url, "--key", key, "--name", "witness.example/w1"]
    cosign += ["--witness-key", str(tmp_path / "witness.pem"), "--state", str(state)]
    vkey = ledger.witness_key("witness.example/w1", witness.public_key())
    code, out, err = run(*cosign)  # the operator has not configured this witness yet
    assert code == 2 and "witness add" in err and "not one this ledger accepts" in err
    assert not state.exists()  # nothing was cosigned
    code, out, _ = run("ledger", "witness", "add", vkey, "--home", str(root))
    assert code == 0 and "accepting cosignatures" in out
    assert run("ledger", "witness", "list", "--home", str(root))[1] == vkey + "\n"
    for _ in range(2):  # the second run checks consistency with the first
        code, out, err = run(*cosign)
        assert code == 0, err
        assert "cosigned the checkpoint for size 4" in out
    code, out, err = run("ledger", "verify", "--url", url, "--key", key, "--witness", vkey)
    assert code == 0, err
    assert "extends the witnessed checkpoint" in out
    code, _, _ = run("ledger", "verify", "--home", str(root), "--witness", vkey)
    assert code == 0
    stranger = ledger.witness_key("witness.example/w1", Ed25519PrivateKey.generate().public_key())
    code, _, err = run("ledger", "verify", "--url", url, "--key", key, "--witness", stranger)
    assert code == 4 and "required" in err

    # The witness remembers a bigger tree than the one now served: a rollback.
    signer = load_private_key(root / "keys" / "ledger.key")
    bigger = ledger.sign_checkpoint(
        ledger.Checkpoint(ledger.open_checkpoint(state.read_text(), key).origin, 99, b"\x07" * 32),
        key_name=key.split("+")[0],
        private_key=signer,
    )
    state.write_text(bigger)
    code, out, err = run(*cosign)
    assert code == 4 and "rolled back" in err
    assert bigger in out
    assert state.read_text() == bigger  # the evidence is kept

    code, out, _ = run("ledger", "witness", "remove", vkey, "--home", str(root))
    assert code == 0 and run("ledger", "witness", "list", "--home", str(root))[1] == ""
    code, _, err = run("ledger", "witness", "remove", vkey, "--home", str(root))
    assert code == 2 and "not accepted" in err
    code, _, err = run("ledger", "witness", "add", "not-a-key", "--home", str(root))
    assert code == 2 and "malformed witness key" in err


def test_verify_accepts_a_configured_key_set_and_nothing_outside_it(
    sandbox_home: dict[str, object], tmp_path: Path
):
    home, key = str(sandbox_home["root"]), str(sandbox_home["key"])
    other = ledger.verifier_key(key.split("+")[0], Ed25519PrivateKey.generate().public_key())
    (tmp_path / "both").write_text(f"{other}\n{key}\n")
    (tmp_path / "other").write_text(f"{other}\n")
    assert run("ledger", "verify", "--home", home, "--key", str(tmp_path / "both"))[0] == 0
    code, _, err = run("ledger", "verify", "--home", home, "--key", str(tmp_path / "other"))
    assert code == 4 and "no signature" in err


def test_the_operator_rotates_the_ledger_key_with_an_overlap(tmp_path: Path):
    from indomain.sandbox import Sandbox

    root = tmp_path / "home"
    Sandbox.init(root, origin="rotate.indomain.example/ledger").close()
    old_key = (root / "keys" / "ledger.pub").read_text().strip()
    assert run("ledger", "rotate-key", "begin", "--home", str(root))[0] == 0
    new_key = (root / "keys" / "ledger.next.pub").read_text().strip()
    assert run("ledger", "rotate-key", "begin", "--home", str(root))[0] == 2  # under way
    with Sandbox.open(root) as sandbox:  # loads both keys: both sign during the overlap
        sandbox.ledger.append("test.overlap", {})
    for key in (old_key, new_key):
        assert run("ledger", "verify", "--home", str(root), "--key", key)[0] == 0

    code, _, err = run("ledger", "rotate-key", "finish", "--home", str(root))
    assert code == 0, err
    assert (root / "keys" / "ledger.pub").read_text().strip() == new_key
    assert not (root / "keys" / "ledger.next.key").exists()
    assert list((root / "keys").glob("ledger.key.retired-*"))
    with Sandbox.open(root) as sandbox:
        sandbox.ledger.append("test.after", {})
    assert run("ledger", "verify", "--home", str(root))[0] == 0
    # An auditor who only has the old key follows the rotation the old key signed for.
    code, out, err = run("ledger", "verify", "--home", str(root), "--key", old_key)
    assert code == 0, err
    assert "ledger verified" in out
    assert run("ledger", "export", str(tmp_path / "out"), "--home", str(root))[0] == 0
    code, out, err = run("ledger", "verify", "--export", str(tmp_path / "out"), "--key", old_key)
    assert code == 0, err
    (tmp_path / "keys").write_text(f"{old_key}\n{new_key}\n")
    assert run("ledger", "verify", "--home", str(root), "--key", str(tmp_path / "keys"))[0] == 0
    _, out, _ = run("ledger", "show", "--home", str(root), "--json")
    types = [json.loads(line)["type"] for line in out.splitlines()]
    assert types == [
        "sandbox.created",
        "ledger.key_added",
        "test.overlap",
        "ledger.key_retired",
        "test.after",
    ]


def test_verify_over_http_follows_a_key_rotation_from_the_old_key(tmp_path: Path):
    """rotate-key begin and finish, then an auditor holding only the old key verifies the
    gateway: it fetches the checkpoint of the commit that announced the new key, which
    the old key signed, and trusts the new key from there (as --home and --export do)."""
    from indomain.sandbox import Sandbox
    from indomain.server import serve_in_thread

    root = tmp_path / "home"
    Sandbox.init(root, origin="rotate-url.indomain.example/ledger").close()
    old_key = (root / "keys" / "ledger.pub").read_text().strip()
    assert run("ledger", "rotate-key", "begin", "--home", str(root))[0] == 0
    with Sandbox.open(root) as sandbox:
        sandbox.ledger.append("test.overlap", {})
    assert run("ledger", "rotate-key", "finish", "--home", str(root))[0] == 0
    new_key = (root / "keys" / "ledger.pub").read_text().strip()
    assert new_key != old_key
    with Sandbox.open(root) as sandbox:
        sandbox.ledger.append("test.after", {})
        with serve_in_thread(sandbox.app()) as url:
            with LedgerFeed(url) as feed:  # the latest checkpoint: the new key's alone
                with pytest.raises(ledger.LedgerVerificationError):
                    ledger.open_checkpoint(feed.checkpoint(), old_key)
            code, out, err = run("ledger", "verify", "--url", url, "--key", old_key)
            assert code == 0, err
            assert "ledger verified: 5 entries" in out
            code, out, err = run("ledger", "verify", "--url", url, "--key", new_key)
            assert code == 0, err
            stranger = ledger.verifier_key(
                "rotate-url.indomain.example/ledger", Ed25519PrivateKey.generate().public_key()
            )
            code, _, err = run("ledger", "verify", "--url", url, "--key", stranger)
            assert code == 4, err
