"""Arrow IPC helpers: results leave the enclave as an Arrow IPC stream, not JSON rows.

IPC keeps types exact (decimals stay decimals) and is what the result digest is taken over.
:func:`table_to_rows` is a JSON-friendly view for the CLI and web console only.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from typing import Any

import pyarrow as pa

from computations._errors import ComputationError


def table_to_ipc(table: pa.Table) -> bytes:
    """``table`` as Arrow IPC *stream* bytes (schema, then record batches).

    Raises :class:`ComputationError` if ``table`` is not a pyarrow table.
    """
    if not isinstance(table, pa.Table):
        raise ComputationError("only a pyarrow Table can be written as Arrow IPC")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def table_from_ipc(data: bytes) -> pa.Table:
    """The table in Arrow IPC stream bytes.

    Raises :class:`ComputationError` if ``data`` is not one complete, valid IPC stream.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ComputationError("Arrow IPC data must be bytes")
    try:
        with pa.ipc.open_stream(pa.py_buffer(bytes(data))) as reader:
            table = reader.read_all()
        table.validate(full=True)
    except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
        raise ComputationError("not a valid Arrow IPC stream") from exc
    return table


def table_to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows of ``table`` as JSON-ready dicts.

    Conversions: decimals become **strings** (exact: sums of integers are DECIMAL(38,0) and
    would lose digits as floats); dates and times become ISO 8601 strings; durations become
    seconds as float; bytes become base64 strings; non-finite floats become ``"NaN"``,
    ``"Infinity"`` or ``"-Infinity"``. Duplicate column names raise :class:`ComputationError`.
    """
    if not isinstance(table, pa.Table):
        raise ComputationError("expected a pyarrow Table")
    if len(set(table.column_names)) != len(table.column_names):
        raise ComputationError("the table has duplicate column names")
    return [{key: _json_value(value) for key, value in row.items()} for row in table.to_pylist()]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)
