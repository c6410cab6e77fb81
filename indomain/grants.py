"""Grants the bureau issues to licensed enterprises, recorded on the ledger.

A grant binds one enterprise to a purpose, a validity window, datasets or dataset groups
and obligations; policies reference it as ``Grant::"<id>"`` (see
``docs/policies.md``). It is read from the registry at every decision, so a revocation
or the end of its window takes effect on the very next job, with no restart. Every
issue and every status change is a ledger entry carrying the whole grant, so
``policy diff`` can rebuild the registry as it was at any past decision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import policies
from indomain.errors import ConfigError
from indomain.registry import Grant


def issue_grant(sandbox: Any, grant: Grant) -> Grant:
    """Check, store and record a new grant; raises :class:`ConfigError`.

    The holder must be a registered enterprise; the obligations must be the known
    obligations with valid values (the same rules as policy annotations).
    """
    if grant.holder not in {e.name for e in sandbox.store.enterprises()}:
        raise ConfigError(f"no registered enterprise named {grant.holder!r}")
    try:  # the policies part checks a grant exactly as it will read it at decision time
        policies.AccessRequest(
            enterprise=grant.holder,
            computation="aggregate",
            dataset="-",
            purpose=grant.purpose,
            time=datetime.now(UTC),
            grants={grant.id: grant.attrs()},
        )
    except policies.PolicyError as exc:
        raise ConfigError(str(exc)) from None
    stored: Grant = sandbox.registry.issue_grant(grant)
    sandbox.ledger.append("grant.issued", {"grant": stored.to_json()})
    return stored


def set_grant_status(sandbox: Any, grant_id: str, status: str) -> Grant:
    """Revoke (``"revoked"``) or reinstate (``"active"``) a grant; recorded on the ledger.

    Raises :class:`ConfigError` for an unknown grant or status.
    """
    grant: Grant = sandbox.registry.set_grant_status(grant_id, status)
    sandbox.ledger.append("grant.status", {"grant": grant.to_json()})
    return grant
