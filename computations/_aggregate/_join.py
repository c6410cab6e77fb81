"""The declared 1:1 key join: one dataset's rows joined to a partner's on the same person.

A join is only allowed where the job's manifest declares it (``joins:`` in
``docs/manifest.md``), on its privacy unit and the partner's. The checker and the enclave
both see the pair as one *joined spec*: every column named ``<dataset>.<column>`` (outside
the manifest column pattern, so it never collides with a real column), classified by its
own manifest, the privacy unit the job dataset's, and privacy rules the stricter of the
two manifests'. The rest of the aggregate machinery then runs unchanged on it.

Why the join cannot multiply a person's rows: the enclave's SQL joins to the partner's
rows whose key occurs exactly once (:func:`join_source`); a key found twice or more is
dropped whole (the result says so, without the exact count, which is not DP). So each
row of the job's dataset meets at most one partner row, and contribution bounding per
privacy unit holds as without a join (including the one-row-per-unit fast path, which a
multiplied row would break).
"""

from __future__ import annotations

from sqlglot import exp

from computations._aggregate._nodes import ident as _ident
from computations._aggregate._sql import _source as _table
from computations._dataset import DatasetSpec, JoinSpec, PrivacyRules
from computations._errors import QueryRefused

#: The two sides' aliases in the SQL we generate.
_LEFT, _RIGHT = "l", "r"


def qualified(dataset: str, column: str) -> str:
    """The joined spec's name of ``column`` of ``dataset``."""
    return f"{dataset}.{column}"


def bare(name: str) -> str:
    """The column part of a joined spec's name (the name itself without a join)."""
    return name.rsplit(".", 1)[-1]


def declared_join(left: DatasetSpec, partner: str) -> JoinSpec:
    """The join ``left``'s manifest declares to ``partner``; refuses (``join-partner``)."""
    if partner == left.name:
        raise QueryRefused("join-partner", "a dataset cannot be joined to itself", partner)
    join = left.join(partner)
    if join is None:
        declared = ", ".join(j.dataset for j in left.joins) or "none"
        raise QueryRefused(
            "join-partner",
            f"the manifest of {left.name} declares no join to {partner} (declared: {declared})",
            partner,
        )
    return join


def joined_spec(left: DatasetSpec, right: DatasetSpec) -> DatasetSpec:
    """The spec of ``left`` joined to ``right`` on their declared key (module docstring).

    Raises :class:`QueryRefused`: ``join-partner`` if the join is not declared or the
    partner's key is not its privacy unit, ``join-privacy`` if the two manifests protect
    their releases in ways that cannot be combined (mode, mechanism, gaussian delta).
    """
    join = declared_join(left, right.name)
    if join.other_key != right.privacy_unit or right.column(join.other_key) is None:
        raise QueryRefused(
            "join-partner",
            f"the declared key {join.other_key} of {right.name} is not its privacy unit "
            f"({right.privacy_unit}); a 1:1 join must match the same persons",
            right.name,
        )
    a, b = left.privacy, right.privacy
    if a.mode != b.mode or a.mechanism != b.mechanism:
        raise QueryRefused(
            "join-privacy",
            f"{left.name} ({a.mode}, {a.mechanism}) and {right.name} ({b.mode}, "
            f"{b.mechanism}) are released differently and cannot be joined",
            right.name,
        )
    if a.mechanism == "gaussian" and a.delta != b.delta:
        raise QueryRefused(
            "join-privacy",
            "gaussian datasets can only be joined when their manifests state the same delta",
            right.name,
        )
    rules = PrivacyRules(
        mode=a.mode,
        epsilon_per_job=min(a.epsilon_per_job, b.epsilon_per_job),
        delta=min(a.delta, b.delta),
        mechanism=a.mechanism,
        rho_per_job=min(a.rho_per_job, b.rho_per_job),
        budget=a.budget,  # each dataset's own budget is charged (indomain/budgets.py)
        max_groups_per_unit=min(a.max_groups_per_unit, b.max_groups_per_unit),
        max_rows_per_unit=min(a.max_rows_per_unit, b.max_rows_per_unit),
        rounding_base=max(a.rounding_base, b.rounding_base),
        dominance=min(a.dominance, b.dominance),
    )
    columns = tuple(
        column.model_copy(update={"name": qualified(spec.name, column.name)})
        for spec in (left, right)
        for column in spec.columns
    )
    # Built without validation on purpose: the qualified names are outside the manifest
    # column pattern. Every part was validated in its own manifest above.
    return DatasetSpec.model_construct(
        name=left.name,
        description=f"{left.name} joined to {right.name} on {join.key} = {join.other_key}",
        privacy_unit=qualified(left.name, left.privacy_unit),
        min_group_size=max(left.min_group_size, right.min_group_size),
        columns=columns,
        privacy=rules,
        joins=(),
    )


def join_source(
    left: DatasetSpec, right: DatasetSpec, *, left_table: str, right_table: str
) -> exp.Expr:
    """The joined rows as a subquery: each column aliased ``<dataset>.<column>``.

    The partner side keeps only rows whose key is not NULL and occurs exactly once, so the
    join is 1:1 at run time whatever the data holds (module docstring).
    """
    join = declared_join(left, right.name)
    key = exp.Column(this=_ident(join.other_key))
    once = exp.EQ(
        this=exp.Window(this=exp.Count(this=exp.Star()), partition_by=[key.copy()]),
        expression=exp.Literal.number(1),
    )
    partner = (
        exp.Select(expressions=[exp.Star()])
        .from_(_table(right_table))
        .where(exp.Not(this=exp.Is(this=key.copy(), expression=exp.Null())))
        .qualify(once)
    )
    projections: list[exp.Expr] = []
    for alias, spec in ((_LEFT, left), (_RIGHT, right)):
        for column in spec.columns:
            source = exp.Column(this=_ident(column.name), table=_ident(alias))
            projections.append(exp.alias_(source, qualified(spec.name, column.name), quoted=True))
    on = exp.EQ(
        this=exp.Column(this=_ident(join.key), table=_ident(_LEFT)),
        expression=exp.Column(this=_ident(join.other_key), table=_ident(_RIGHT)),
    )
    joined = (
        exp.Select(expressions=projections)
        .from_(exp.alias_(_table(left_table), _LEFT, table=True))
        .join(exp.alias_(exp.Subquery(this=partner), _RIGHT, table=True), on=on, join_type="inner")
    )
    return exp.Subquery(this=joined, alias=exp.TableAlias(this=_ident("j")))
