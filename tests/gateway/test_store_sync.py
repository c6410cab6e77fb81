"""A status write may skip its fsync (``update_job(synced=False)``, the "running" mark);
every other write of the store stays fsynced, and the skipped one stays in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway._errors import InvalidJob
from gateway._store import StateStore

FULL = 2


def _store_with_job(path: Path) -> StateStore:
    store = StateStore(path)
    store.insert_job(
        job_id="job_1",
        enterprise="Acme Credit",
        nonce="n" * 22,
        computation="aggregate",
        dataset="residents",
        purpose="credit_risk_model",
        document=b"{}",
        signature="sig",
    )
    return store


def _synchronous(store: StateStore) -> int:
    return int(store._con.execute("PRAGMA synchronous").fetchone()[0])


def test_an_unsynced_status_is_written_and_later_writes_are_fsynced_again(
    tmp_path: Path,
) -> None:
    store = _store_with_job(tmp_path / "state.sqlite")
    assert _synchronous(store) == FULL
    store.update_job("job_1", status="running", synced=False)
    assert _synchronous(store) == FULL  # the next write is fsynced, and this one with it
    other = sqlite3.connect(tmp_path / "state.sqlite")
    assert other.execute("SELECT status FROM jobs WHERE id = 'job_1'").fetchone() == ("running",)
    store.update_job("job_1", status="succeeded", outcome={"ok": True})
    assert store.job("job_1").status == "succeeded"
    other.close()
    store.close()


def test_a_failed_unsynced_write_leaves_the_store_fsyncing(tmp_path: Path) -> None:
    store = _store_with_job(tmp_path / "state.sqlite")
    with pytest.raises(InvalidJob):
        store.update_job("job_missing", status="running", synced=False)
    assert _synchronous(store) == FULL
    assert store.job("job_1").status == "received"
    store.close()
