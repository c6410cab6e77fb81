"""The checker parses each distinct SQL text once (``_check._parsed_select``): a job is
checked four times in the gateway. These show the cache changes no answer: every caller
gets a tree of its own, refusals are not remembered, and each text gets its own parse."""

from __future__ import annotations

import pytest
from sqlglot import exp

from computations import DatasetSpec, QueryRefused, get_computation
from computations._aggregate import _check

SQL = "SELECT district, COUNT(*) AS n, SUM(income) AS total FROM residents GROUP BY district"


def test_a_changed_tree_does_not_change_the_next_check(residents: DatasetSpec) -> None:
    aggregate = get_computation("aggregate")
    before = aggregate.check({"sql": SQL}, residents)
    handed_out = _check._single_select(SQL)
    handed_out.set("expressions", [exp.Star()])  # what a careless caller might do
    handed_out.set("group", None)
    assert aggregate.check({"sql": SQL}, residents) == before
    assert _check._single_select(SQL) is not _check._single_select(SQL)


def test_a_refused_query_is_refused_every_time(residents: DatasetSpec) -> None:
    aggregate = get_computation("aggregate")
    for _ in range(3):
        with pytest.raises(QueryRefused) as refused:
            aggregate.check({"sql": "SELECT * FROM residents"}, residents)
        assert refused.value.rule == "select-star"
        with pytest.raises(QueryRefused) as unparsable:
            aggregate.check({"sql": "SELECT COUNT(* FROM residents"}, residents)
        assert unparsable.value.rule == "parse"


def test_each_text_gets_its_own_plan(residents: DatasetSpec) -> None:
    aggregate = get_computation("aggregate")
    by_district = aggregate.check({"sql": SQL}, residents)
    by_sex = aggregate.check({"sql": SQL.replace("district", "sex")}, residents)
    assert by_district.body != by_sex.body
    assert aggregate.check({"sql": SQL}, residents) == by_district


def test_the_cache_is_bounded(residents: DatasetSpec) -> None:
    aggregate = get_computation("aggregate")
    for i in range(_check.PARSED_CACHE_SIZE + 10):
        aggregate.check({"sql": f"SELECT COUNT(*) AS n{i} FROM residents"}, residents)
    assert _check._parsed_select.cache_info().currsize <= _check.PARSED_CACHE_SIZE


def test_long_texts_are_parsed_every_time_and_never_held() -> None:
    """The cache's memory stays bounded by its size times a short text's tree."""
    long_sql = "SELECT COUNT(*) AS n FROM residents WHERE " + " AND ".join(["sex = 'f'"] * 120)
    assert len(long_sql) > _check.PARSED_CACHE_MAX_LENGTH
    _check._parsed_select.cache_clear()
    first, second = _check._single_select(long_sql), _check._single_select(long_sql)
    assert first == second and first is not second
    assert _check._parsed_select.cache_info().currsize == 0
