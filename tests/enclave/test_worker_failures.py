"""What the parent hears of a failed worker: a run's failures all read the same."""

from __future__ import annotations

import duckdb
import pytest

from computations import ComputationError, QueryRefused
from enclave import DatasetError
from enclave._worker import RUN_FAILED, failure


def _engine_errors() -> list[Exception]:
    """Real DuckDB exceptions of different kinds, one quoting a value."""
    con = duckdb.connect(":memory:")
    found: list[Exception] = []
    for sql in (
        "SELECT CAST('secret-42' AS INTEGER)",
        "SELECT 9223372036854775807::BIGINT + 1",
        "SELECT error('hidden value 42')",
    ):
        with pytest.raises(duckdb.Error) as info:
            con.execute(sql).fetchall()
        found.append(info.value)
    return found


def test_every_failure_of_a_run_reads_the_same_whatever_its_kind() -> None:
    errors = [*_engine_errors(), ComputationError("sum too large"), MemoryError(), OSError(5)]
    answers = [failure(exc, op="run") for exc in errors]
    assert all(answer == answers[0] for answer in answers)
    assert answers[0] == {"kind": "ComputationError", "message": RUN_FAILED}
    assert "42" not in str(answers)


def test_refusals_and_operator_errors_keep_their_words() -> None:
    refused = failure(QueryRefused("no-join", "joins are refused", "JOIN x"), op="run")
    assert refused["kind"] == "QueryRefused" and refused["rule"] == "no-join"
    broken = failure(DatasetError("the encrypted file does not match its record"), op="run")
    assert broken == {
        "kind": "DatasetError",
        "message": "the encrypted file does not match its record",
    }


def test_an_import_failure_says_what_was_wrong() -> None:
    (conversion, *_) = _engine_errors()
    answer = failure(conversion, op="import")
    assert answer["kind"] == "EngineError" and "secret-42" in answer["message"]
