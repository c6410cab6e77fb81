"""The bureau's registry of licences and dataset classes, read at every decision.

It lives in ``state.sqlite`` beside the gateway's tables, in its own tables, so a
suspension or an expiry written by ``indomain enterprise suspend`` in one process is
seen by the very next decision of a running gateway: nothing is cached.

Fail closed: an enterprise with no licence row has status ``"unlicensed"`` (denied by the
licence guard); a dataset nobody classified has sensitivity 4 (restricted), no group.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indomain.errors import ConfigError

STATUSES = ("active", "suspended")
GRANT_STATUSES = ("active", "revoked")
UNLICENSED = "unlicensed"
RESTRICTED = 4
SENSITIVITY_LEVELS = {1: "public", 2: "internal", 3: "confidential", 4: "restricted"}

_GROUP = re.compile(r"[a-z][a-z0-9_]{0,62}")
_GRANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS licences (
    enterprise TEXT PRIMARY KEY,
    licence_number TEXT NOT NULL,
    licence_expires TEXT,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    document TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_classes (
    dataset TEXT PRIMARY KEY,
    sensitivity INTEGER NOT NULL,
    groups TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Licence:
    """An enterprise's licence as policies see it (``Enterprise`` entity attributes)."""

    enterprise: str
    licence_number: str
    licence_expires: datetime | None
    status: str

    def attrs(self) -> dict[str, Any]:
        return {
            "licence_number": self.licence_number,
            "licence_expires": self.licence_expires,
            "status": self.status,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "enterprise": self.enterprise,
            "licence_number": self.licence_number,
            "licence_expires": _iso(self.licence_expires),
            "status": self.status,
        }


@dataclass(frozen=True)
class Grant:
    """A grant the bureau issued to one enterprise (a ``Grant`` entity for policies).

    It binds one ``purpose``, a validity window ``[valid_from, valid_until)``, the
    ``datasets`` and dataset ``groups`` it covers, and ``obligations`` (the same names
    and values as policy annotations, e.g. ``{"epsilon_per_job": "0.5"}``).
    """

    id: str
    holder: str
    purpose: str
    valid_from: datetime
    valid_until: datetime
    datasets: tuple[str, ...]
    groups: tuple[str, ...]
    obligations: dict[str, str]
    status: str

    def attrs(self) -> dict[str, Any]:
        """The grant as :class:`policies.AccessRequest` takes it (``grants[id]``)."""
        return {
            "purpose": self.purpose,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "status": self.status,
            "datasets": list(self.datasets),
            "groups": list(self.groups),
            "obligations": dict(self.obligations),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "holder": self.holder,
            "purpose": self.purpose,
            "valid_from": _iso(self.valid_from),
            "valid_until": _iso(self.valid_until),
            "datasets": list(self.datasets),
            "groups": list(self.groups),
            "obligations": dict(self.obligations),
            "status": self.status,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grant:
        """The inverse of :meth:`to_json` (as the ledger records it)."""
        return cls(
            id=str(data["id"]),
            holder=str(data["holder"]),
            purpose=str(data["purpose"]),
            valid_from=parse_expiry(str(data["valid_from"])),
            valid_until=parse_expiry(str(data["valid_until"])),
            datasets=tuple(data.get("datasets", ())),
            groups=tuple(data.get("groups", ())),
            obligations=dict(data.get("obligations", {})),
            status=str(data["status"]),
        )


@dataclass(frozen=True)
class DatasetClass:
    """A dataset's sensitivity and groups (``Dataset`` / ``DatasetGroup`` entities)."""

    dataset: str
    sensitivity: int
    groups: tuple[str, ...]

    def attrs(self) -> dict[str, Any]:
        return {"sensitivity": self.sensitivity}

    def group_attrs(self) -> dict[str, dict[str, Any]]:
        # A group is as sensitive as its most sensitive member the bureau classified.
        return {g: {"sensitivity": self.sensitivity} for g in self.groups}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(text: str) -> datetime:
    """``2027-06-30`` (midnight UTC, start of that day) or a full RFC 3339 time.

    Raises :class:`ConfigError`.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not a date (YYYY-MM-DD) or RFC 3339 time") from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@contextlib.contextmanager
def _licence_taken(number: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError:
        raise ConfigError(
            f"licence number {number!r} is already held by another enterprise"
        ) from None


class Registry:
    """Licences and dataset classes in ``state.sqlite``; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)
        # One holder per licence number, enforced by SQLite itself so that two concurrent
        # registrations cannot both pass check_licence_number. A home that already holds a
        # duplicate keeps opening (the check still refuses new ones) until it is fixed.
        with contextlib.suppress(sqlite3.IntegrityError):
            self._db.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS licences_by_number ON licences"
                "(licence_number) WHERE licence_number != ''"
            )

    def close(self) -> None:
        self._db.close()

    # licences ---------------------------------------------------------------------------

    def licence(self, enterprise: str) -> Licence:
        """The enterprise's licence, or an ``"unlicensed"`` one if none is registered."""
        with self._lock:
            row = self._db.execute(
                "SELECT licence_number, licence_expires, status FROM licences WHERE enterprise=?",
                (enterprise,),
            ).fetchone()
        if row is None:
            return Licence(enterprise, "", None, UNLICENSED)
        expires = parse_expiry(row[1]) if row[1] else None
        return Licence(enterprise, row[0], expires, row[2])

    def licences(self) -> list[Licence]:
        with self._lock:
            names = [r[0] for r in self._db.execute("SELECT enterprise FROM licences ORDER BY 1")]
        return [self.licence(n) for n in names]

    def check_licence_number(self, enterprise: str, licence_number: str | None) -> None:
        """Raise :class:`ConfigError` if another enterprise holds ``licence_number``.

        Policies may name a licence (``principal in Licence::"L-1"``): one holder only.
        """
        if not licence_number:
            return
        with self._lock:
            holder = self._db.execute(
                "SELECT enterprise FROM licences WHERE licence_number=? AND enterprise!=?",
                (licence_number, enterprise),
            ).fetchone()
        if holder is not None:
            raise ConfigError(f"licence number {licence_number!r} is already held by {holder[0]!r}")

    def set_licence(
        self,
        enterprise: str,
        *,
        licence_number: str | None = None,
        expires: datetime | None = None,
        status: str | None = None,
    ) -> Licence:
        """Create or update a licence; unspecified fields keep their value (new: active)."""
        if status is not None and status not in STATUSES:
            raise ConfigError(f"licence status must be one of {', '.join(STATUSES)}")
        if expires is not None and expires.utcoffset() is None:
            raise ConfigError("licence expiry must be timezone-aware")
        self.check_licence_number(enterprise, licence_number)
        current = self.licence(enterprise)
        new = Licence(
            enterprise=enterprise,
            licence_number=licence_number if licence_number is not None else current.licence_number,
            licence_expires=expires if expires is not None else current.licence_expires,
            status=status or (current.status if current.status != UNLICENSED else "active"),
        )
        with self._lock, _licence_taken(new.licence_number):
            self._db.execute(
                "INSERT INTO licences VALUES (?,?,?,?,?) ON CONFLICT(enterprise) DO UPDATE SET "
                "licence_number=excluded.licence_number, licence_expires=excluded.licence_expires,"
                " status=excluded.status, updated_at=excluded.updated_at",
                (
                    enterprise,
                    new.licence_number,
                    _iso(new.licence_expires),
                    new.status,
                    _iso(datetime.now(UTC)),
                ),
            )
        return new

    # grants -----------------------------------------------------------------------------

    def issue_grant(self, grant: Grant) -> Grant:
        """Store a new grant; raises :class:`ConfigError` for a bad or reused id."""
        if not _GRANT_ID.fullmatch(grant.id):
            raise ConfigError(
                f"grant id {grant.id!r}: letters, digits, '.', '_' and '-', e.g. G-2026-014"
            )
        if grant.status not in GRANT_STATUSES:
            raise ConfigError(f"grant status must be one of {', '.join(GRANT_STATUSES)}")
        if not grant.datasets and not grant.groups:
            raise ConfigError("a grant covers at least one dataset or dataset group")
        for group in grant.groups:
            if not _GROUP.fullmatch(group):
                raise ConfigError(f"group {group!r}: lower case letters, digits and _ only")
        document = json.dumps(grant.to_json(), sort_keys=True)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO grants VALUES (?,?,?,?,?)",
                    (grant.id, grant.holder, document, grant.status, _iso(datetime.now(UTC))),
                )
            except sqlite3.IntegrityError:
                raise ConfigError(f"grant {grant.id!r} already exists; issue a new id") from None
        return grant

    def set_grant_status(self, grant_id: str, status: str) -> Grant:
        """Revoke or reinstate a grant; raises :class:`ConfigError` if there is none."""
        if status not in GRANT_STATUSES:
            raise ConfigError(f"grant status must be one of {', '.join(GRANT_STATUSES)}")
        grant = self.grant(grant_id)
        updated = Grant(**{**grant.__dict__, "status": status})
        with self._lock:
            self._db.execute(
                "UPDATE grants SET document=?, status=?, updated_at=? WHERE id=?",
                (
                    json.dumps(updated.to_json(), sort_keys=True),
                    status,
                    _iso(datetime.now(UTC)),
                    grant_id,
                ),
            )
        return updated

    def grant(self, grant_id: str) -> Grant:
        """The grant; raises :class:`ConfigError` if there is none."""
        with self._lock:
            row = self._db.execute("SELECT document FROM grants WHERE id=?", (grant_id,)).fetchone()
        if row is None:
            raise ConfigError(f"no grant {grant_id!r}")
        return Grant.from_json(json.loads(row[0]))

    def grants(self, holder: str | None = None) -> list[Grant]:
        """Every grant (or every grant of ``holder``), by id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT document FROM grants WHERE (?1 IS NULL OR holder=?1) ORDER BY id",
                (holder,),
            ).fetchall()
        return [Grant.from_json(json.loads(r[0])) for r in rows]

    # datasets ---------------------------------------------------------------------------

    def dataset_class(self, dataset: str) -> DatasetClass:
        """The dataset's class, or restricted with no group if the bureau set none."""
        with self._lock:
            row = self._db.execute(
                "SELECT sensitivity, groups FROM dataset_classes WHERE dataset=?", (dataset,)
            ).fetchone()
        if row is None:
            return DatasetClass(dataset, RESTRICTED, ())
        return DatasetClass(dataset, int(row[0]), tuple(json.loads(row[1])))

    def classify(self, dataset: str, *, sensitivity: int, groups: tuple[str, ...]) -> DatasetClass:
        if sensitivity not in SENSITIVITY_LEVELS:
            raise ConfigError("sensitivity must be 1 (public) to 4 (restricted)")
        for group in groups:
            if not _GROUP.fullmatch(group):
                raise ConfigError(f"group {group!r}: lower case letters, digits and _ only")
        value = DatasetClass(dataset, sensitivity, tuple(sorted(set(groups))))
        with self._lock:
            self._db.execute(
                "INSERT INTO dataset_classes VALUES (?,?,?,?) ON CONFLICT(dataset) DO UPDATE SET "
                "sensitivity=excluded.sensitivity, groups=excluded.groups, "
                "updated_at=excluded.updated_at",
                (dataset, sensitivity, json.dumps(list(value.groups)), _iso(datetime.now(UTC))),
            )
        return value
