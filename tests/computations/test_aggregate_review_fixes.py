"""Attacks found in review, performed against the aggregate computation.

1. Under a noisy release threshold, "released + withheld" used to be the exact number of
   distinct groups: one person in a village of their own moved it by one, so their secret
   flag leaked on every query, whatever epsilon. The count is now not disclosed there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from computations import DatasetSpec, get_computation

AGGREGATE = get_computation("aggregate")
SQL = "SELECT district, COUNT(*) AS n FROM residents WHERE health_flag = true GROUP BY district"


def _neighbour(base: pa.Table, *, flag: bool) -> pa.Table:
    rows = base.to_pylist()
    rows[5] = {**rows[5], "district": "target-village", "health_flag": flag}
    return pa.Table.from_pylist(rows, schema=base.schema)


def test_a_lone_persons_flag_does_not_move_the_reported_group_total(
    dp_residents: DatasetSpec, residents_table: pa.Table, connect: Callable[..., Any]
) -> None:
    assert dp_residents.column("district").keys is None  # groups pass a noisy threshold
    plan = AGGREGATE.check({"sql": SQL}, dp_residents)
    totals: dict[bool, list[int]] = {True: [], False: []}
    for flag in (True, False):
        con = connect({"residents": _neighbour(residents_table, flag=flag)})
        for _ in range(8):
            result = AGGREGATE.execute(plan, con, table="residents", dataset=dp_residents)
            assert result.suppressed_groups == 0
            assert not any(re.search(r"\d+ groups withheld", n) for n in result.notes)
            totals[flag].append(result.table.num_rows + result.suppressed_groups)
        con.close()
    # Before the fix every True total was exactly one more than every False total.
    assert not (min(totals[True]) == max(totals[True]) == max(totals[False]) + 1)


def test_withheld_counts_are_still_reported_where_keys_are_public(
    dp_residents: DatasetSpec, connect: Callable[..., Any]
) -> None:
    rows = [
        {
            "resident_id": i,
            "district": "north",
            "age_band": "0-17" if i < 3 else "18-39",
            "sex": "f",
            "income": 1000,
            "insurance_months": 1,
            "health_flag": False,
        }
        for i in range(400)
    ]
    table = pa.Table.from_pylist(rows)
    con = connect({"residents": table})
    # A minimum of 100 (a policy may raise it) keeps the 3-person group withheld whatever
    # the noise (scale 2: it would need +97); at the manifest's 10 it passed ~2% of runs.
    plan = AGGREGATE.check(
        {"sql": "SELECT age_band, COUNT(*) AS n FROM residents GROUP BY age_band"},
        dp_residents,
        obligations={"min_group_size": "100"},
    )
    result = AGGREGATE.execute(plan, con, table="residents", dataset=dp_residents)
    con.close()
    # four public age bands; only 18-39 holds enough people: the other three are withheld,
    # which follows from the noisy counts and the public key set alone.
    assert result.table.column("age_band").to_pylist() == ["18-39"]
    assert result.suppressed_groups == 3
