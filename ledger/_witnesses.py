"""Which witnesses' cosignatures a ledger accepts: the operator's configuration.

C2SP tlog-cosignature lets anyone who holds a witness key cosign; a ledger that stored
every valid cosignature could be made to fill its slots (:data:`~ledger._store.MAX_WITNESSES`
per checkpoint) with cosignatures from keys nobody trusts, crowding out the witnesses its
auditors rely on. So the operator names the witness keys it accepts
(``indomain ledger witness add KEY``), and :meth:`~ledger.Ledger.add_cosignature` refuses
the others. The list lives in the ledger's database, so a running gateway sees changes at
once; it is local configuration, not part of the signed log.
"""

from __future__ import annotations

from pathlib import Path

from ledger import _store
from ledger._cosign import parse_witness_key


def accepted_witnesses(directory: Path) -> list[str]:
    """Return the witness keys the ledger in ``directory`` accepts cosignatures from."""
    connection = _store.connect(Path(directory), read_only=True)
    try:
        with _store.transaction(connection, write=False):
            return _store.accepted_witnesses(connection)
    finally:
        connection.close()


def accept_witness(directory: Path, witness_key: str) -> bool:
    """Accept cosignatures by ``witness_key`` (``name+keyid+base64(0x04||key)``).

    Returns ``False`` when it was already accepted. Raises :class:`~ledger.LedgerError`
    for a malformed key or when there is no ledger in ``directory``.
    """
    parse_witness_key(witness_key)
    return _configure(directory, witness_key, accepted=True)


def remove_witness(directory: Path, witness_key: str) -> bool:
    """Stop accepting new cosignatures by ``witness_key``; return ``False`` if it was not accepted.

    Cosignatures it made earlier stay stored: they remain true statements.
    """
    return _configure(directory, witness_key, accepted=False)


def _configure(directory: Path, witness_key: str, *, accepted: bool) -> bool:
    connection = _store.connect(Path(directory), read_only=False)
    try:
        with _store.transaction(connection, write=True):
            _store.read_meta(connection)  # a ledger of our format, not any SQLite file
            return _store.set_witness(connection, witness_key, accepted=accepted)
    finally:
        connection.close()
