"""Computation approval: proposals stored with their votes, approved by as many distinct
reviewers as the policy requires, runnable only once approved.

Rules (each has an attack test): the requester cannot review their own proposal; a
reviewer counts once; one rejection rejects; approval needs ``required_reviewers``
distinct approvals (from the policy's ``@review`` obligation; two when the policy says
nothing: the two-person rule is the default, never zero); only the requester may run
it, on the proposal's datasets and purpose, and only while the stored template still
hashes to the approved hash (:func:`indomain.proposals.runnable`). This store records the
votes it is given; who may vote is checked before (:mod:`indomain.approvals`: a review
document signed with the reviewer's registered key, at the console and over HTTP alike).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indomain.proposals import (
    KIND,
    PROPOSAL_ID,
    Proposal,
    ProposalError,
    check_columns,
    check_proposal,
    code_hash,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    id TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    requester TEXT NOT NULL,
    required_reviewers INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS proposal_votes (
    proposal TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (proposal, reviewer)
);
CREATE TABLE IF NOT EXISTS proposal_nonces (
    enterprise TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at TEXT NOT NULL,
    PRIMARY KEY (enterprise, nonce)
);
CREATE TABLE IF NOT EXISTS reviewers (
    name TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    registered_at TEXT NOT NULL
);
"""


class ReviewStore:
    """Proposals and votes in ``state.sqlite``; each vote is one transaction."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(
        self,
        *,
        requester: str,
        name: str,
        template: str,
        parameters: Mapping[str, str],
        purpose: str,
        datasets: tuple[str, ...],
        expected_epsilon: str,
        required_reviewers: int,
    ) -> Proposal:
        """Store a checked proposal; raises :class:`ProposalError`."""
        columns = check_proposal(
            name=name,
            template=template,
            parameters=parameters,
            datasets=datasets,
            purpose=purpose,
            expected_epsilon=expected_epsilon,
        )
        if required_reviewers < 1:
            raise ProposalError("a proposal needs at least one reviewer")
        document = {
            "name": name,
            "template": template,
            "parameters": dict(parameters),
            "purpose": purpose,
            "datasets": sorted(set(datasets)),
            "columns": list(columns),
            "expected_epsilon": str(expected_epsilon),
        }
        digest = code_hash(name, template, parameters)
        return self._insert(document, digest, requester, required_reviewers)

    def add_module(
        self,
        *,
        requester: str,
        kind: str,
        name: str,
        source: str,
        code_hash: str,
        purpose: str,
        datasets: tuple[str, ...],
        columns: tuple[str, ...],
        expected_epsilon: str,
        required_reviewers: int,
    ) -> Proposal:
        """Store a checked computation-module proposal (see :mod:`indomain.modules`)
        under ``code_hash``, the hash of its exact bytes; raises :class:`ProposalError`."""
        check_proposal(
            name=name,
            template="SELECT 1",
            parameters={},
            datasets=datasets,
            purpose=purpose,
            expected_epsilon=expected_epsilon,
        )
        check_columns(columns)
        if required_reviewers < 1:
            raise ProposalError("a proposal needs at least one reviewer")
        document = {
            "kind": kind,
            "name": name,
            "module": source,
            "purpose": purpose,
            "datasets": sorted(set(datasets)),
            "columns": sorted(set(columns)),
            "expected_epsilon": str(expected_epsilon),
        }
        return self._insert(document, code_hash, requester, required_reviewers)

    def _insert(
        self, document: dict[str, Any], digest: str, requester: str, required_reviewers: int
    ) -> Proposal:
        proposal_id = "prop_" + secrets.token_hex(16)
        with self._lock:
            self._db.execute(
                "INSERT INTO proposals VALUES (?,?,?,?,?,?,?)",
                (
                    proposal_id,
                    json.dumps(document, sort_keys=True),
                    digest,
                    requester,
                    required_reviewers,
                    "pending",
                    _now(),
                ),
            )
        return self.get(proposal_id)

    def claim_nonce(self, enterprise: str, nonce: str) -> bool:
        """Record a signed proposal's nonce; ``False`` if the enterprise already used it
        (the proposal is a replay). Kept forever, like job nonces."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO proposal_nonces VALUES (?,?,?)", (enterprise, nonce, _now())
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def add_reviewer(self, name: str, public_key: bytes) -> None:
        """Register a reviewer's raw Ed25519 public key (for reviews over HTTP)."""
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > 200 or len(public_key) != 32:
            raise ProposalError("a reviewer needs a name and a 32-byte Ed25519 public key")
        with self._lock:
            try:
                self._db.execute("INSERT INTO reviewers VALUES (?,?,?)", (name, public_key, _now()))
            except sqlite3.IntegrityError:
                raise ProposalError(f"reviewer {name!r} is already registered") from None

    def reviewer_key(self, name: str) -> bytes | None:
        """The reviewer's raw public key, or ``None`` if no such reviewer is registered."""
        with self._lock:
            row = self._db.execute(
                "SELECT public_key FROM reviewers WHERE name=?", (name,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def get(self, proposal_id: str) -> Proposal:
        """The proposal; raises :class:`ProposalError` if there is none."""
        if not isinstance(proposal_id, str) or not PROPOSAL_ID.fullmatch(proposal_id):
            raise ProposalError(f"no proposal {proposal_id!r}")
        with self._lock:
            row = self._db.execute(
                "SELECT document, code_hash, requester, required_reviewers, status "
                "FROM proposals WHERE id=?",
                (proposal_id,),
            ).fetchone()
            votes = self._db.execute(
                "SELECT reviewer, verdict FROM proposal_votes WHERE proposal=? ORDER BY at",
                (proposal_id,),
            ).fetchall()
        if row is None:
            raise ProposalError(f"no proposal {proposal_id!r}")
        doc = json.loads(row[0])
        return Proposal(
            id=proposal_id,
            name=doc["name"],
            template=doc.get("template", ""),
            parameters=doc.get("parameters", {}),
            kind=doc.get("kind", KIND),
            module=doc.get("module", ""),
            requester=row[2],
            purpose=doc["purpose"],
            datasets=tuple(doc["datasets"]),
            columns=tuple(doc["columns"]),
            expected_epsilon=doc["expected_epsilon"],
            code_hash=row[1],
            required_reviewers=int(row[3]),
            status=row[4],
            approvals=tuple(r for r, v in votes if v == "approve"),
            rejections=tuple(r for r, v in votes if v == "reject"),
        )

    def list(self, *, status: str | None = None, requester: str | None = None) -> list[Proposal]:
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM proposals WHERE (?1 IS NULL OR status=?1) "
                    "AND (?2 IS NULL OR requester=?2) ORDER BY created_at, id",
                    (status, requester),
                )
            ]
        return [self.get(i) for i in ids]

    def vote(self, proposal_id: str, *, reviewer: str, verdict: str, reason: str = "") -> Proposal:
        """Record one reviewer's approval or rejection; returns the proposal after it.

        Raises :class:`ProposalError` if the reviewer is the requester, has already
        voted, or the proposal is no longer pending.
        """
        if verdict not in ("approve", "reject"):
            raise ProposalError("verdict must be approve or reject")
        reviewer = reviewer.strip() if isinstance(reviewer, str) else ""
        if not reviewer:
            raise ProposalError("a review needs the reviewer's name")
        proposal = self.get(proposal_id)
        if reviewer.casefold() == proposal.requester.casefold():
            raise ProposalError("the requester cannot review their own proposal")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                status = self._db.execute(
                    "SELECT status FROM proposals WHERE id=?", (proposal_id,)
                ).fetchone()[0]
                if status != "pending":
                    raise ProposalError(f"proposal {proposal_id} is already {status}")
                seen = {
                    r[0].casefold()
                    for r in self._db.execute(
                        "SELECT reviewer FROM proposal_votes WHERE proposal=?", (proposal_id,)
                    )
                }
                if reviewer.casefold() in seen:
                    raise ProposalError(f"{reviewer} has already reviewed {proposal_id}")
                self._db.execute(
                    "INSERT INTO proposal_votes VALUES (?,?,?,?,?)",
                    (proposal_id, reviewer, verdict, reason, _now()),
                )
                approvals = self._db.execute(
                    "SELECT COUNT(*) FROM proposal_votes WHERE proposal=? AND verdict='approve'",
                    (proposal_id,),
                ).fetchone()[0]
                new_status = (
                    "rejected"
                    if verdict == "reject"
                    else "approved"
                    if approvals >= proposal.required_reviewers
                    else "pending"
                )
                self._db.execute(
                    "UPDATE proposals SET status=? WHERE id=?", (new_status, proposal_id)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get(proposal_id)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
