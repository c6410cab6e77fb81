"""``psi``: open a private-set-intersection session, i.e. make the sandbox's offer.

The order follows Google's Private Join and Compute: the sandbox speaks first. Inside the
enclave it draws a fresh scalar ``b``, hashes each identifier of the dataset's privacy
unit to ristretto255, blinds it (``b·H(s)``), sorts the points into one list per group of
a public dimension (only dimensions with declared keys: the group labels are then public),
pads every list with random points to one common length and shuffles it. The result is
that offer plus ``b`` wrapped under the enclave's key (``_keys.py``); ``b`` never leaves
the enclave in the clear. The enterprise then sends, in an ``encrypted_group_sum`` job,
its blinded identifiers ``a·H(c)`` and each offered list raised to ``a`` and re-shuffled.

What the offer reveals: the group labels (already public keys; groups under the minimum
size are pooled, and which were pooled is public), and the common length, the largest
offered group's size rounded *up* to a power of two (not differentially private). It
spends no epsilon. The description carries ``offer_digest``, the SHA-256 of every offered
point in order, so the enterprise's shuffle proofs (``_psi/_shuffle.py``) can be checked
against exactly these lists.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Final

import duckdb
import pyarrow as pa
import rfc8785

from computations._computation import CORE_SOURCES, PACKAGE_ROOT, package_sources, source_digest
from computations._dataset import ColumnClass, DatasetSpec
from computations._encrypted._blobs import digest_of, join_points
from computations._encrypted._keys import wrap_session_key
from computations._errors import ComputationError, QueryRefused
from computations._plan import ComputationResult, Plan, params_digest
from computations._psi._group import random_point, random_scalar
from computations._psi._parallel import hash_and_blind

OFFER_FORMAT: Final = "indomain-psi-offer/v1"
#: Schema metadata of the offer table: the session's public description and wrapped key.
SESSION_METADATA: Final = b"indomain.psi"
PRIVACY_METADATA: Final = b"indomain.privacy"
_NONCE: Final = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
#: The label of the list pooling every group under the minimum group size. Keys are
#: declared in the manifest; one that equals this label is refused at check.
OTHER_GROUP: Final = "(other)"
#: Most rows a dataset may offer in one session (each costs a scalar multiplication).
MAX_OFFER_ROWS: Final = 2_000_000
#: Most identifiers one PSI request may hold when no policy sets fewer
#: (``@psi_max_set_size``). A policy can only lower it: the request upload's size cap and
#: the worker's memory are sized for this many points.
DEFAULT_MAX_SET_SIZE: Final = 1_000_000

_PARAMS_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "dimension": {"type": "string", "description": "a dimension column with keys"},
        "nonce": {"type": "string", "pattern": _NONCE.pattern},
    },
    "required": ["dimension", "nonce"],
    "additionalProperties": False,
}


def identifier_bytes(value: object) -> bytes:
    """How an identifier is hashed: the UTF-8 of its text (``123`` and ``"123"`` agree).
    The enterprise's client uses the same rule."""
    return str(value).encode()


#: The shortest offered list: small groups all look alike.
MIN_PADDED_LENGTH: Final = 16


def padded_length(largest: int) -> int:
    """``largest`` rounded up to the next power of two, at least :data:`MIN_PADDED_LENGTH`.

    Not differentially private, but coarse: every size from ``2^k + 1`` to ``2^(k+1)``
    gives the same length, so one person more or less in the largest group changes it only
    at a power of two (rounding to two significant figures was the identity for 11–99, so
    the length told a small group's exact size). Costs at most twice the scalar
    multiplications of the exact length.
    """
    if largest <= MIN_PADDED_LENGTH:
        return MIN_PADDED_LENGTH
    return 1 << (int(largest) - 1).bit_length()


def offered_groups(
    keys: Sequence[str], group_of: Sequence[int], *, minimum: int
) -> tuple[list[str], list[str], list[int | None]]:
    """Which lists the offer holds, for persons in groups ``group_of`` (indices of ``keys``).

    A group with fewer than ``minimum`` persons is not offered on its own: inside the worker
    its matches would tell the bureau which of its few persons are on the enterprise's list.
    Such groups are pooled into one list labelled :data:`OTHER_GROUP`; if the pool too is
    under ``minimum``, its persons are left out (the list is padding only). Returns the
    labels offered, the keys merged into the pool (public: the enterprise must know what
    the pool holds, and so learns those groups are small, as with suppression), and each
    person's list index or ``None`` when left out.
    """
    sizes = [0] * len(keys)
    for g in group_of:
        sizes[g] += 1
    small = [g for g in range(len(keys)) if sizes[g] < minimum]
    kept = [g for g in range(len(keys)) if sizes[g] >= minimum]
    labels = [keys[g] for g in kept]
    where: dict[int, int | None] = {g: i for i, g in enumerate(kept)}
    if small:
        labels.append(OTHER_GROUP)
        pooled = sum(sizes[g] for g in small)
        for g in small:
            where[g] = len(labels) - 1 if pooled >= minimum else None
    return labels, [keys[g] for g in small], [where[g] for g in group_of]


def max_set_size(obligations: Mapping[str, str] | None, *, default: int) -> int:
    """The set-size cap: ``default``, lowered by the policy's ``psi_max_set_size``
    obligation (merged strictest-first, so the smallest grant's value); raises
    :class:`ComputationError` for a malformed obligation."""
    if not obligations or "psi_max_set_size" not in obligations:
        return default
    raw = str(obligations["psi_max_set_size"]).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ComputationError("policy obligation psi_max_set_size is not a whole number >= 1")
    return min(default, int(raw))


def session_binding(description: Mapping[str, Any]) -> bytes:
    """The bytes a session's wrapped key is bound to: its public description, canonical."""
    return rfc8785.dumps({k: v for k, v in description.items() if k != "wrapped_key"})


def session_of(table: pa.Table) -> dict[str, Any]:
    """The session description an offer table carries (dataset, dimension, groups,
    length, session id, wrapped key); raises :class:`ComputationError` if it has none."""
    raw = (table.schema.metadata or {}).get(SESSION_METADATA)
    try:
        session = json.loads(raw) if raw is not None else None
    except ValueError:
        session = None
    if not isinstance(session, dict) or session.get("format") != OFFER_FORMAT:
        raise ComputationError("this result is not a PSI offer")
    return session


class PsiOffer:
    """The ``psi`` computation: see the module docstring."""

    name: Final = "psi"
    description: Final = (
        "Open a private set intersection session: the dataset's identifiers, blinded by a "
        "fresh enclave key, in shuffled and padded lists per group of a public dimension."
    )

    @cached_property
    def code_hash(self) -> str:
        return source_digest(
            PACKAGE_ROOT,
            (
                *package_sources("_encrypted"),
                *package_sources("_psi"),
                "_aggregate/_noise.py",  # the PSI package imports it
                *CORE_SOURCES,
            ),
        )

    @property
    def params_schema(self) -> dict[str, Any]:
        return copy.deepcopy(_PARAMS_SCHEMA)

    def check(
        self,
        params: Mapping[str, Any],
        dataset: DatasetSpec,
        *,
        obligations: Mapping[str, str] | None = None,
    ) -> Plan:
        """Approve a session on ``params["dimension"]``; raises :class:`QueryRefused`."""
        if not isinstance(params, Mapping) or set(params) != {"dimension", "nonce"}:
            raise QueryRefused("params", "a psi job takes exactly dimension and nonce")
        dimension, nonce = params["dimension"], params["nonce"]
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise QueryRefused("params", "nonce must be 16 to 128 URL-safe characters")
        column = dataset.column(dimension) if isinstance(dimension, str) else None
        if column is None or not column.dimension:
            raise QueryRefused(
                "psi-dimension", "dimension must name a dimension column", str(dimension)
            )
        if column.keys is None:
            raise QueryRefused(
                "psi-dimension-keys",
                "the dimension needs declared keys: its group labels are revealed",
                column.name,
            )
        if OTHER_GROUP in [str(key) for key in column.keys]:
            raise QueryRefused(
                "psi-dimension-keys",
                f"a key may not be {OTHER_GROUP!r}: it labels the pooled small groups",
                column.name,
            )
        unit = dataset.column(dataset.privacy_unit)
        if unit is None or unit.cls is not ColumnClass.identifier:
            raise QueryRefused("psi-identifier", "the privacy unit is not an identifier column")
        minimum = dataset.min_group_size
        if obligations and "min_group_size" in obligations:
            try:
                minimum = max(minimum, int(str(obligations["min_group_size"]).strip()))
            except ValueError:
                raise ComputationError(
                    "policy obligation min_group_size is not an integer"
                ) from None
        return Plan(
            computation=self.name,
            dataset=dataset.name,
            params_digest=params_digest(dict(params)),
            body={
                "dimension": column.name,
                "identifier": unit.name,
                "groups": [str(key) for key in column.keys],
                "keys": list(column.keys),
                "nonce": nonce,
                "min_group_size": minimum,
                "max_set_size": max_set_size(obligations, default=DEFAULT_MAX_SET_SIZE),
                # What the policies read: the columns this plan uses.
                "group_by": [column.name],
                "outputs": [{"column": unit.name}],
            },
        )

    def execute(
        self,
        plan: Plan,
        con: duckdb.DuckDBPyConnection,
        *,
        table: str,
        dataset: DatasetSpec,
        unit_unique: bool = False,
    ) -> ComputationResult:
        """Build the offer inside the enclave; see the module docstring."""
        if plan.computation != self.name or plan.dataset != dataset.name:
            raise ComputationError("plan is for another computation or dataset")
        body = plan.body
        dimension, identifier = str(body["dimension"]), str(body["identifier"])
        keys = list(body["keys"])
        index = {key: i for i, key in enumerate(keys)}
        quoted = ", ".join(_quote(c) for c in (identifier, dimension))
        try:
            rows = con.execute(
                f"SELECT {quoted} FROM {_quote(table)} WHERE {_quote(identifier)} IS NOT NULL"
            ).fetchall()
        except duckdb.Error as exc:
            raise ComputationError(
                f"the dataset could not be read ({type(exc).__name__}); details withheld"
            ) from None
        if len(rows) > MAX_OFFER_ROWS:
            raise ComputationError(f"a PSI offer is limited to {MAX_OFFER_ROWS} rows")
        # One group per person: a unit with rows in several groups keeps the first key.
        group_of: dict[bytes, int] = {}
        for value, key in rows:
            g = index.get(key)
            if g is None:
                continue
            ident = identifier_bytes(value)
            group_of[ident] = min(g, group_of.get(ident, g))
        labels, merged, assigned = offered_groups(
            [str(g) for g in body["groups"]],
            list(group_of.values()),
            minimum=int(body.get("min_group_size", dataset.min_group_size)),
        )
        key = random_scalar()
        offered = [(ident, g) for ident, g in zip(group_of, assigned, strict=True) if g is not None]
        # Hash and blind on every core (``_psi/_parallel.py``), results in order.
        blinded = hash_and_blind(key, [ident for ident, _ in offered])
        members: list[list[bytes]] = [[] for _ in labels]
        for (_, g), point in zip(offered, blinded, strict=True):
            members[g].append(point)
        length = padded_length(max(len(m) for m in members))
        shuffler = secrets.SystemRandom()
        group_col, point_col = [], []
        for g, points in enumerate(members):
            padded = points + [random_point() for _ in range(length - len(points))]
            shuffler.shuffle(padded)
            group_col.extend([labels[g]] * length)
            point_col.extend(padded)
        session: dict[str, Any] = {
            "format": OFFER_FORMAT,
            "session": secrets.token_hex(16),
            "dataset": dataset.name,
            "dimension": dimension,
            "identifier": identifier,
            "groups": labels,
            "merged": merged,
            "length": length,
            # The enterprise's shuffle proofs are over these lists: the worker checks the
            # lists it is given against this digest (bound to the wrapped key below).
            "offer_digest": digest_of(join_points(point_col)),
            # The policy's set-size cap when the session opened: the enterprise's client
            # checks it before uploading; the group sum enforces the stricter of this
            # and its own grant's.
            "max_set_size": int(body.get("max_set_size", DEFAULT_MAX_SET_SIZE)),
        }
        session["wrapped_key"] = base64.b64encode(
            wrap_session_key(key, binding=session_binding(session))
        ).decode()
        privacy = {
            "mode": "psi_offer",
            "epsilon": 0.0,
            "delta": 0.0,
            "reveals": "group labels and the common padded length",
        }
        result = pa.table(
            {"group": pa.array(group_col, pa.string()), "point": pa.array(point_col, pa.binary(32))}
        ).replace_schema_metadata(
            {SESSION_METADATA: json.dumps(session), PRIVACY_METADATA: json.dumps(privacy)}
        )
        return ComputationResult(
            table=result,
            suppressed_groups=0,
            notes=(
                f"PSI offer: {len(labels)} groups of {length} points each",
                *(
                    [f"groups under the minimum size pooled as {OTHER_GROUP!r}: {merged}"]
                    if merged
                    else []
                ),
            ),
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


PSI: Final = PsiOffer()
