"""Small sqlglot node builders shared by the aggregate's SQL (quoted names, literals)."""

from __future__ import annotations

from sqlglot import exp


# DuckDB's own GREATEST/LEAST, which skip NULL operands. sqlglot spells exp.Greatest as a
# CASE over NULL checks for DuckDB: much slower, and callers here handle NULL themselves.
def greatest(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this="greatest", expressions=[a, b])


def least_of(a: exp.Expr, b: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this="least", expressions=[a, b])


def number(value: float) -> exp.Expr:
    if value < 0:
        return exp.Neg(this=exp.Literal.number(-value))
    return exp.Literal.number(value)


def qualified(table: str, name: str) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table))


def column(name: str) -> exp.Column:
    return exp.Column(this=ident(name))


def ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def scaled_bounds(bounds: tuple[float, float], decimals: int) -> tuple[int, int]:
    """Declared bounds in units of ``10**-decimals``, as the scaled values are compared."""
    return round(bounds[0] * 10**decimals), round(bounds[1] * 10**decimals)
