"""Arrow IPC helpers: exact round trips, and garbage refused as our own error."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from computations import ComputationError, table_from_ipc, table_to_ipc, table_to_rows


def sample() -> pa.Table:
    return pa.table(
        {
            "district": pa.array(["north", None, "south"]),
            "n": pa.array([12, 40, None], pa.int64()),
            "total": pa.array(
                [decimal.Decimal("123456789012345678901234567890"), None, decimal.Decimal("7")],
                pa.decimal128(38, 0),
            ),
            "mean": pa.array([1.5, float("nan"), float("inf")]),
            "flag": pa.array([True, False, None]),
            "day": pa.array([dt.date(2024, 1, 31), None, dt.date(2000, 2, 29)]),
        }
    )


def test_round_trip_is_exact() -> None:
    table = sample()
    data = table_to_ipc(table)
    assert data[:4] == b"\xff\xff\xff\xff"  # IPC stream: an encapsulated message first
    again = table_from_ipc(data)
    assert again.schema == table.schema
    assert again.drop_columns(["mean"]).equals(table.drop_columns(["mean"]))  # NaN != NaN
    assert table_to_ipc(again) == data


def test_empty_table_round_trips() -> None:
    table = sample().slice(0, 0)
    again = table_from_ipc(table_to_ipc(table))
    assert again.num_rows == 0
    assert again.schema == table.schema


@given(
    st.lists(st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))),
    st.lists(st.one_of(st.none(), st.text())),
)
def test_round_trip_property(numbers: list[int | None], words: list[str | None]) -> None:
    table = pa.table({"n": pa.array(numbers, pa.int64())})
    table = table.append_column("w", pa.array((words + [None] * len(numbers))[: len(numbers)]))
    assert table_from_ipc(table_to_ipc(table)).equals(table)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not arrow",
        b"\xff\xff\xff\xff" + b"\x00" * 3,
        b"ARROW1\x00\x00",
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ComputationError):
        table_from_ipc(data)


def test_truncated_stream_is_refused() -> None:
    data = table_to_ipc(sample())
    for cut in (8, len(data) // 2, len(data) - 9):
        with pytest.raises(ComputationError):
            table_from_ipc(data[:cut])


def test_bit_flips_never_escape_as_foreign_errors() -> None:
    data = table_to_ipc(sample())
    for i in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[i] ^= 0x41
        try:
            table_from_ipc(bytes(flipped))
        except ComputationError:
            pass


def test_wrong_types_are_refused() -> None:
    with pytest.raises(ComputationError):
        table_to_ipc([{"a": 1}])  # type: ignore[arg-type]
    with pytest.raises(ComputationError):
        table_from_ipc("text")  # type: ignore[arg-type]
    with pytest.raises(ComputationError):
        table_to_rows({"a": [1]})  # type: ignore[arg-type]


def test_rows_are_json_friendly() -> None:
    rows = table_to_rows(sample())
    assert rows == [
        {
            "district": "north",
            "n": 12,
            "total": "123456789012345678901234567890",
            "mean": 1.5,
            "flag": True,
            "day": "2024-01-31",
        },
        {"district": None, "n": 40, "total": None, "mean": "NaN", "flag": False, "day": None},
        {
            "district": "south",
            "n": None,
            "total": "7",
            "mean": "Infinity",
            "flag": None,
            "day": "2000-02-29",
        },
    ]
    json.dumps(rows, allow_nan=False)


def test_rows_refuse_duplicate_names() -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    with pytest.raises(ComputationError):
        table_to_rows(table)
