"""Computation proposals: pure rules for what reviewers approve and who may run it.

A proposal is an SQL template with ``:name`` placeholders and declared parameter types
(``int``, ``number``, ``string``). Its code hash is SHA-256 over the RFC 8785 canonical
JSON of its kind, name, template and parameter types: change one character and it is a
new computation needing approval again. A job runs an approved template with
``params = {"proposal": "<id>", "values": {...}}``; each value is substituted into the
parsed SQL as a *literal* (sqlglot), so a value can never change the query's structure,
and the result is checked by the aggregate computation like any other query.

No I/O here: :mod:`indomain.reviews` stores proposals and votes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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
PROPOSAL_ID = re.compile(r"prop_[0-9a-f]{32}")
_MAX_TEMPLATE = 10_000


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
