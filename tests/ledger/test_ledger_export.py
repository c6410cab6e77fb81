"""Exports: three flat files an auditor verifies with RFC 9162 and C2SP alone.

The attacks edit the exported files (the operator hands out the export, so it controls
them) and each must be caught and located: an edited, deleted, reordered or added line,
a torn last line, an old checkpoint, a rollback or a fork against a checkpoint the
auditor kept.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Ledger,
    LedgerError,
    LedgerForkError,
    LedgerVerificationError,
    export_ledger,
    verify_entries,
    verify_export,
)
from tests.ledger.conftest import ORIGIN


@pytest.fixture
def exported(make_ledger: Callable[..., Path], tmp_path: Path) -> Callable[[int], Path]:
    def make(count: int) -> Path:
        out = tmp_path / f"export-{count}"
        export_ledger(make_ledger(count, name=f"ledger-{count}"), out)
        return out

    return make


def _key(out: Path) -> str:
    return (out / "ledger.pub").read_text().strip()


def _lines(out: Path) -> list[bytes]:
    return (out / "entries.jsonl").read_bytes().split(b"\n")[:-1]


def _write_lines(out: Path, lines: list[bytes]) -> None:
    (out / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))


def _fails(out: Path, index: int | None, words: str, **kwargs: str) -> LedgerVerificationError:
    with pytest.raises(LedgerVerificationError) as caught:
        verify_export(out, _key(out), **kwargs)
    assert caught.value.index == index, caught.value
    assert words in caught.value.reason
    return caught.value


def test_the_export_holds_the_entries_the_checkpoint_and_the_key(
    make_ledger: Callable[..., Path], tmp_path: Path
):
    directory = make_ledger(5)
    assert export_ledger(directory, tmp_path / "out") == 5
    with Ledger.open(directory) as log:
        assert _lines(tmp_path / "out") == log.raw_entries(0, 5)
        assert (tmp_path / "out" / "checkpoint").read_text() == log.checkpoint()
        assert _key(tmp_path / "out") == log.verifier_key
    report = verify_export(tmp_path / "out", _key(tmp_path / "out"))
    assert report.size == 5


def test_an_independent_verifier_needs_only_sha256_and_the_documented_format(
    exported: Callable[[int], Path],
):
    """RFC 9162 §2.1.1 written out again from the docs, sharing no code with the ledger."""
    out = exported(13)

    def mth(leaves: list[bytes]) -> bytes:
        if not leaves:
            return hashlib.sha256(b"").digest()
        if len(leaves) == 1:
            return hashlib.sha256(b"\x00" + leaves[0]).digest()
        k = 1 << ((len(leaves) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()

    body = (out / "checkpoint").read_text().split("\n\n")[0].split("\n")
    assert body[0] == ORIGIN and int(body[1]) == 13
    assert base64.b64decode(body[2]) == mth(_lines(out))


def test_export_never_overwrites(make_ledger: Callable[..., Path], tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    with pytest.raises(LedgerError, match="not an empty folder"):
        export_ledger(make_ledger(2), tmp_path / "out")
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def test_an_empty_ledger_exports_and_verifies(exported: Callable[[int], Path]):
    out = exported(0)
    assert (out / "entries.jsonl").read_bytes() == b""
    assert verify_export(out, _key(out)).size == 0


def test_every_single_byte_change_in_the_entries_is_caught(exported: Callable[[int], Path]):
    out = exported(3)
    original = (out / "entries.jsonl").read_bytes()
    for position in range(len(original)):
        changed = bytearray(original)
        changed[position] ^= 0x01
        (out / "entries.jsonl").write_bytes(bytes(changed))
        with pytest.raises(LedgerVerificationError):
            verify_export(out, _key(out))


def test_an_edited_line_is_located(exported: Callable[[int], Path]):
    out = exported(6)
    lines = _lines(out)
    lines[4] = lines[4].replace(b"event-4", b"event-X")
    _write_lines(out, lines)
    _fails(out, 5, "chain")  # entry 5 names the true hash of entry 4


def test_an_edited_last_line_is_caught_by_the_root(exported: Callable[[int], Path]):
    out = exported(6)
    lines = _lines(out)
    lines[5] = lines[5].replace(b"event-5", b"event-X")
    _write_lines(out, lines)
    _fails(out, None, "root does not match")


def test_a_deleted_line_is_located(exported: Callable[[int], Path]):
    out = exported(6)
    lines = _lines(out)
    del lines[2]
    _write_lines(out, lines)
    _fails(out, 2, "entry 3")


def test_swapped_lines_are_located(exported: Callable[[int], Path]):
    out = exported(6)
    lines = _lines(out)
    lines[1], lines[2] = lines[2], lines[1]
    _write_lines(out, lines)
    _fails(out, 1, "moved or swapped")


def test_a_truncated_export_is_caught(exported: Callable[[int], Path]):
    out = exported(6)
    _write_lines(out, _lines(out)[:4])
    _fails(out, 4, "truncated")


def test_a_torn_last_line_is_caught(exported: Callable[[int], Path]):
    out = exported(3)
    data = (out / "entries.jsonl").read_bytes()
    (out / "entries.jsonl").write_bytes(data[:-1])
    _fails(out, 2, "torn")


def test_an_entry_the_checkpoint_does_not_cover_is_caught(exported: Callable[[int], Path]):
    small, big = exported(3), exported(4)
    (big / "checkpoint").write_text((small / "checkpoint").read_text())
    _fails(big, 3, "not covered")


def test_a_blank_or_crlf_line_is_not_an_entry(exported: Callable[[int], Path]):
    out = exported(3)
    lines = _lines(out)
    _write_lines(out, [lines[0] + b"\r", *lines[1:]])
    _fails(out, 0, "")


def test_a_rollback_against_a_kept_checkpoint_prints_both_checkpoints(
    make_ledger: Callable[..., Path], tmp_path: Path
):
    directory = make_ledger(8)
    with Ledger.open(directory) as log:
        kept = log.checkpoint()  # the auditor saw size 8
        old = log.checkpoint_at(5)
        entries = log.raw_entries(0, 5)
    # The operator serves the log as it was at size 5: self-consistent, correctly signed.
    with pytest.raises(LedgerForkError) as caught:
        verify_entries(entries, old, _ledger_key(directory), trusted_checkpoint=kept)
    assert caught.value.index == 5
    assert "rolled back" in caught.value.reason
    assert (caught.value.trusted, caught.value.latest) == (kept, old)


def test_a_fork_signed_by_the_same_key_is_caught_with_both_checkpoints(
    make_ledger: Callable[..., Path],
    tmp_path: Path,
    signing_key: Ed25519PrivateKey,
):
    honest = make_ledger(6)
    with Ledger.open(honest) as log:
        kept = log.checkpoint_at(4)
    forked = tmp_path / "forked"
    with Ledger.create(forked, origin=ORIGIN, signing_key=signing_key) as log:
        for i in range(6):
            log.append("test.event", {"seq": i, "note": "rewritten" if i == 2 else f"event-{i}"})
    export_ledger(forked, tmp_path / "out")
    error = _fails(tmp_path / "out", None, "fork", trusted_checkpoint=kept)
    assert isinstance(error, LedgerForkError)
    assert error.trusted == kept
    assert error.latest == (tmp_path / "out" / "checkpoint").read_text()


def test_a_kept_checkpoint_the_ledger_extends_verifies(make_ledger: Callable[..., Path]):
    directory = make_ledger(9)
    with Ledger.open(directory) as log:
        kept = log.checkpoint_at(3)
        entries, latest = log.raw_entries(0, 9), log.checkpoint()
    report = verify_entries(entries, latest, _ledger_key(directory), trusted_checkpoint=kept)
    assert report.size == 9


def test_a_checkpoint_signed_by_another_key_is_refused(exported: Callable[[int], Path]):
    out = exported(3)
    from ledger import verifier_key

    other = verifier_key(ORIGIN, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(LedgerVerificationError, match="latest checkpoint"):
        verify_export(out, other)


def test_progress_is_reported_up_to_the_size(exported: Callable[[int], Path]):
    out = exported(2500)
    seen: list[tuple[int, int]] = []
    verify_export(out, _key(out), progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 2500) and seen[-1] == (2500, 2500)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def _ledger_key(directory: Path) -> str:
    with Ledger.open(directory) as log:
        return log.verifier_key
