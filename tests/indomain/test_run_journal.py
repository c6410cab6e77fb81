"""The run journal: the first output journalled for a job wins, across connections; dropping
ended jobs' outputs is not fsynced, and leaves every later put fsynced."""

from __future__ import annotations

from pathlib import Path

from enclave import RunAttestation, RunOutput
from indomain.run_journal import RunJournal


def _output(job_id: str, result: bytes) -> RunOutput:
    attestation = RunAttestation(
        enclave_kind="software-process",
        network_isolated=True,
        job_id=job_id,
        computation="aggregate",
        code_hash="sha256:" + "0" * 64,
        dataset="residents",
        dataset_content_hash="sha256:" + "1" * 64,
        policy_version="v1",
        params_digest="sha256:" + "2" * 64,
        result_digest="sha256:" + "3" * 64,
        time="2026-11-22T10:00:00.000000Z",
    )
    return RunOutput(
        result_ipc=result, attestation=attestation, signature="sig", suppressed_groups=0, notes=()
    )


def test_the_first_output_journalled_wins_across_connections(tmp_path: Path) -> None:
    one, two = RunJournal(tmp_path / "state.sqlite"), RunJournal(tmp_path / "state.sqlite")
    assert one.put("job_a", _output("job_a", b"first")).result_ipc == b"first"
    assert two.put("job_a", _output("job_a", b"second")).result_ipc == b"first"
    assert two.get("job_a") == one.get("job_a")


def test_a_discard_leaves_later_puts_fsynced_and_a_lost_one_is_redone(tmp_path: Path) -> None:
    journal = RunJournal(tmp_path / "state.sqlite")
    journal.put("job_a", _output("job_a", b"a"))
    journal.put("job_b", _output("job_b", b"b"))
    journal.discard(["job_a"])
    with journal._connect() as con:
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert RunJournal(tmp_path / "state.sqlite").job_ids() == ["job_b"]
    # A delete lost in a crash brings the ended job's output back: discarding it again works.
    journal.put("job_a", _output("job_a", b"a"))
    journal.discard(["job_a", "job_b"])
    assert journal.job_ids() == []
