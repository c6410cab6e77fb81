"""Export a ledger to three flat files an auditor can verify with nothing but RFC 9162 and C2SP.

``OUT/entries.jsonl``  one canonical entry per line, in order; the leaf data is the
                       line's bytes without the newline (0x0A). RFC 8785 escapes control
                       characters inside strings, so an entry never contains 0x0A itself.
``OUT/checkpoint``     the signed note covering exactly those entries
``OUT/ledger.pub``     the verifier key (``name+keyid+base64(0x01||pub)``), for
                       convenience: check it against the key the bureau published.
``OUT/cosigned-checkpoint``  the largest checkpoint witnesses cosigned, with their
                       cosignatures (C2SP tlog-cosignature), when there is one.
``OUT/rotation-checkpoints.jsonl``  after a key rotation: per ``ledger.key_added`` entry,
                       ``{"checkpoint": note}``, the signed checkpoint of the commit that
                       wrote it, so a verifier holding only the old key can follow.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Generator
from pathlib import Path

from ledger import _store
from ledger._errors import LedgerError, LedgerVerificationError
from ledger._note import VerifierKeys
from ledger._scan import Progress, Trusted, VerificationReport, verify_entries

ENTRIES_FILE = "entries.jsonl"
CHECKPOINT_FILE = "checkpoint"
KEY_FILE = "ledger.pub"
COSIGNED_FILE = "cosigned-checkpoint"  # only when witnesses have cosigned
# only after key rotations: the checkpoints that cover each ledger.key_added entry
ROTATION_FILE = "rotation-checkpoints.jsonl"
_KEY_ADDED = b',"type":"ledger.key_added"}'  # the type is the last key of canonical JSON
_CHUNK = 1000


def export_ledger(directory: Path, out: Path) -> int:
    """Write the ledger in ``directory`` to the new or empty folder ``out``; return its size.

    Reads one consistent snapshot: the checkpoint written covers exactly the entries
    written. Raises :class:`LedgerError` when there is no ledger, ``out`` is not empty,
    or a file cannot be written.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LedgerError(f"{out} exists and is not an empty folder; export never overwrites")
    connection = _store.connect(Path(directory), read_only=True)
    try:
        with _store.transaction(connection, write=False), _store.sql_errors("exporting"):
            meta = _store.read_meta(connection)
            latest = _store.latest_checkpoint(connection)
            if latest is None:
                raise LedgerError("ledger storage is corrupt: no signed checkpoint")
            size, note = latest
            announced: list[int] = []  # indexes of ledger.key_added entries
            try:
                out.mkdir(parents=True, exist_ok=True)
                with open(out / ENTRIES_FILE, "wb") as f:
                    for start in range(0, size, _CHUNK):
                        rows = _store.raw_entries(connection, start, min(start + _CHUNK, size))
                        if [i for i, _ in rows] != list(range(start, start + len(rows))):
                            raise LedgerError("ledger storage is corrupt: entries are missing")
                        f.writelines(data + b"\n" for _, data in rows)
                        announced += [i for i, data in rows if data.endswith(_KEY_ADDED)]
                    f.flush()
                    os.fsync(f.fileno())
                (out / CHECKPOINT_FILE).write_text(note, encoding="utf-8", newline="")
                (out / KEY_FILE).write_text(meta["verifier_key"] + "\n", encoding="utf-8")
                rotation = [_store.covering_checkpoint(connection, i, size) for i in announced]
                if rotation:
                    (out / ROTATION_FILE).write_text(
                        "".join(json.dumps({"checkpoint": n}) + "\n" for n in rotation if n),
                        encoding="utf-8",
                    )
                cosigned = _store.latest_cosigned(connection)
                if cosigned is not None and cosigned[0] <= size:
                    base = _store.checkpoint_note(connection, cosigned[0]) or ""
                    (out / COSIGNED_FILE).write_text(
                        base + "".join(cosigned[1]), encoding="utf-8", newline=""
                    )
            except OSError as exc:
                raise LedgerError(f"cannot write the export to {out}: {exc}") from exc
    finally:
        connection.close()
    return size


def _rotation_checkpoints(out: Path) -> list[str]:
    path = out / ROTATION_FILE
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        notes = [json.loads(line)["checkpoint"] for line in lines if line]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise LedgerVerificationError(f"{ROTATION_FILE} is malformed: {exc}") from None
    if not all(isinstance(n, str) for n in notes):
        raise LedgerVerificationError(f"{ROTATION_FILE} is malformed: a checkpoint is not text")
    return notes


def _lines(path: Path) -> Generator[bytes, None, None]:
    with open(path, "rb") as f:
        for index, line in enumerate(f):  # binary files split on b"\n" only
            if not line.endswith(b"\n"):
                raise LedgerVerificationError(
                    f"{ENTRIES_FILE} ends in a torn line (no final newline)", index
                )
            yield line[:-1]


def verify_export(
    out: Path,
    verifier_key: VerifierKeys,
    *,
    trusted_checkpoint: Trusted = None,
    progress: Progress | None = None,
) -> VerificationReport:
    """Verify an export folder (see the module docstring) against ``verifier_key``.

    Returns a :class:`~ledger.VerificationReport`; raises :class:`LedgerVerificationError`
    naming the first bad entry, :class:`LedgerError` when a file is missing.
    """
    out = Path(out)
    try:
        note = (out / CHECKPOINT_FILE).read_bytes().decode("utf-8")
    except OSError as exc:
        raise LedgerError(f"cannot read {CHECKPOINT_FILE} in {out}: {exc}") from exc
    except UnicodeDecodeError:
        raise LedgerVerificationError(f"{CHECKPOINT_FILE} is not UTF-8") from None
    if not (out / ENTRIES_FILE).is_file():
        raise LedgerError(f"no {ENTRIES_FILE} in {out}")
    with contextlib.closing(_lines(out / ENTRIES_FILE)) as lines:
        return verify_entries(
            lines,
            note,
            verifier_key,
            trusted_checkpoint=trusted_checkpoint,
            progress=progress,
            checkpoints=_rotation_checkpoints(out),
        )
