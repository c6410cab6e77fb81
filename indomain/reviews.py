"""Computation approval: proposals of named, parameterised aggregate templates, reviewed
by as many distinct reviewers as the policy requires, runnable only once approved.

A proposal is an SQL template with ``:name`` placeholders and declared parameter types
(``int``, ``number``, ``string``). Its code hash is SHA-256 over the RFC 8785 canonical
JSON of its kind, name, template and parameter types: change one character and it is a
new computation needing approval again. A job runs an approved template with
``params = {"proposal": "<id>", "values": {...}}``; each value is substituted into the
parsed SQL as a *literal* (sqlglot), so a value can never change the query's structure,
and the result is checked by the aggregate computation like any other query.

Rules (each has an attack test): the requester cannot review their own proposal; a
reviewer counts once; one rejection rejects; approval needs ``required_reviewers``
distinct approvals (from the policy's ``@review`` obligation; two when the policy says
nothing: the two-person rule is the default, never zero); only the requester may run
it, on the proposal's datasets and purpose, and only while the stored template still
hashes to the approved hash. This store records the votes it is given; who may vote is
checked before (:mod:`indomain.approvals`: a review document signed with the reviewer's
registered key, at the console and over HTTP alike).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import rfc8785
import sqlglot
from sqlglot import exp

from indomain.errors import IndomainError

KIND = "aggregate_template"
PARAM_TYPES = ("int", "number", "string")
DEFAULT_REVIEWERS = 2
REVIEW_COUNTS = {"none": 1, "one-person": 1, "two-person": 2, "three-person": 3}

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_ID = re.compile(r"prop_[0-9a-f]{32}")
_MAX_TEMPLATE = 10_000

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


class ProposalError(IndomainError):
    """A proposal, review or run of a proposal was refused; the message says why."""

    exit_code = 2


@dataclass(frozen=True)
class Proposal:
    """A stored proposal and its review state."""

    id: str
    name: str
    template: str
    parameters: Mapping[str, str]
    requester: str
    purpose: str
    datasets: tuple[str, ...]
    columns: tuple[str, ...]
    expected_epsilon: str
    code_hash: str
    required_reviewers: int
    status: str
    approvals: tuple[str, ...] = ()
    rejections: tuple[str, ...] = ()
    kind: str = KIND
    # for a computation module (see indomain.modules): its source, which reviewers read
    module: str = ""

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = (
            {"module": self.module}
            if self.kind != KIND
            else {"template": self.template, "parameters": dict(self.parameters)}
        )
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            **shape,
            "requester": self.requester,
            "purpose": self.purpose,
            "datasets": list(self.datasets),
            "columns": list(self.columns),
            "expected_epsilon": self.expected_epsilon,
            "code_hash": self.code_hash,
            "required_reviewers": self.required_reviewers,
            "status": self.status,
            "approvals": list(self.approvals),
            "rejections": list(self.rejections),
        }


def code_hash(name: str, template: str, parameters: Mapping[str, str]) -> str:
    """``sha256:`` + hex over the canonical JSON of what reviewers approve."""
    body: dict[str, Any] = {
        "kind": KIND,
        "name": name,
        "template": template,
        "parameters": dict(parameters),
    }
    return "sha256:" + hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def _parse(template: str) -> exp.Expr:
    try:
        tree = sqlglot.parse_one(template, read="duckdb")
    except sqlglot.errors.SqlglotError:
        raise ProposalError("the template is not one SQL statement") from None
    if tree is None:
        raise ProposalError("the template is empty")
    return tree


def check_proposal(
    *,
    name: str,
    template: str,
    parameters: Mapping[str, str],
    datasets: list[str] | tuple[str, ...],
    purpose: str,
    expected_epsilon: str,
) -> tuple[str, ...]:
    """Validate a proposal's fields; returns the columns the template uses.

    Raises :class:`ProposalError`.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProposalError("name: lower case letters, digits and _, starting with a letter")
    if not isinstance(purpose, str) or not _NAME.fullmatch(purpose):
        raise ProposalError("purpose: lower case letters, digits and _")
    if not isinstance(template, str) or not template.strip() or len(template) > _MAX_TEMPLATE:
        raise ProposalError(f"template: non-empty SQL of at most {_MAX_TEMPLATE} characters")
    if not isinstance(datasets, list | tuple) or not datasets:
        raise ProposalError("datasets: name at least one dataset")
    if not all(isinstance(d, str) and _NAME.fullmatch(d) for d in datasets):
        raise ProposalError("datasets: names of datasets")
    if not isinstance(parameters, Mapping):
        raise ProposalError("parameters: a mapping of name to int, number or string")
    for pname, ptype in parameters.items():
        if not isinstance(pname, str) or not _NAME.fullmatch(pname) or ptype not in PARAM_TYPES:
            raise ProposalError(f"parameter {pname!r}: type must be one of {PARAM_TYPES}")
    try:
        epsilon = Decimal(str(expected_epsilon))
    except InvalidOperation:
        raise ProposalError("expected_epsilon: a number") from None
    if not epsilon.is_finite() or epsilon < 0:
        raise ProposalError("expected_epsilon: a finite number, not negative")
    tree = _parse(template)
    used = {p.name for p in tree.find_all(exp.Placeholder)}
    if used != set(parameters):
        raise ProposalError(
            f"the template's placeholders {sorted(used)} must be exactly the declared "
            f"parameters {sorted(parameters)}"
        )
    return tuple(sorted({c.name for c in tree.find_all(exp.Column)}))


def check_columns(columns: Any) -> None:
    """A module proposal's declared columns: a non-empty list of column names."""
    if (
        not isinstance(columns, list | tuple)
        or not columns
        or not all(isinstance(c, str) and _NAME.fullmatch(c) for c in columns)
    ):
        raise ProposalError("columns: name every dataset column the module reads")


def render(proposal: Proposal, values: Any) -> str:
    """The template with each placeholder replaced by its value as a SQL literal.

    Raises :class:`ProposalError` for a missing, unknown or mistyped value.
    """
    if not isinstance(values, Mapping) or set(values) != set(proposal.parameters):
        raise ProposalError(f"values: give exactly the parameters {sorted(proposal.parameters)}")
    literals: dict[str, exp.Expr] = {}
    for pname, ptype in proposal.parameters.items():
        value = values[pname]
        if ptype == "string" and isinstance(value, str):
            literals[pname] = exp.Literal.string(value)
        elif ptype == "int" and isinstance(value, int) and not isinstance(value, bool):
            literals[pname] = exp.Literal.number(value)
        elif (
            ptype == "number"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and Decimal(str(value)).is_finite()
        ):
            literals[pname] = exp.Literal.number(value)
        else:
            raise ProposalError(f"values.{pname}: must be a {ptype}")

    def substitute(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Placeholder):
            return literals[node.name].copy()
        return node

    return _parse(proposal.template).transform(substitute).sql(dialect="duckdb")


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
        if not isinstance(proposal_id, str) or not _ID.fullmatch(proposal_id):
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


def runnable(proposal: Proposal, *, enterprise: str, dataset: str, purpose: str) -> None:
    """Raise :class:`ProposalError` unless ``enterprise`` may run ``proposal`` now."""
    if proposal.status != "approved":
        raise ProposalError(f"proposal {proposal.id} is {proposal.status}, not approved")
    # A module's stored bytes are checked against its hash where it is loaded
    # (indomain.modules.ModuleStore.verified); a template is re-hashed here.
    if proposal.kind == KIND and proposal.code_hash != code_hash(
        proposal.name, proposal.template, proposal.parameters
    ):
        raise ProposalError(f"proposal {proposal.id} no longer matches its approved code hash")
    if enterprise != proposal.requester:
        raise ProposalError(f"proposal {proposal.id} was not approved for this enterprise")
    if dataset not in proposal.datasets:
        raise ProposalError(f"proposal {proposal.id} was not approved for dataset {dataset}")
    if purpose != proposal.purpose:
        raise ProposalError(f"proposal {proposal.id} was approved for purpose {proposal.purpose}")


def required_reviewers(obligations: Mapping[str, str]) -> int:
    """Distinct reviewers needed: the policy's ``@review``, else the two-person rule."""
    level = obligations.get("review")
    return DEFAULT_REVIEWERS if level is None else REVIEW_COUNTS[level]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
