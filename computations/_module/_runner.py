"""Running an approved module's ``run(data, params)`` inside the enclave worker.

The module is compiled from its exact approved bytes (re-hashed here, right before) and
executed with a minimal builtins dict, under a CPU-time limit, with the facade as its only
way to the data. What it returns becomes the result table; the privacy statement in the
table's metadata is the facade's account of the releases, not anything the module said.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any, Final

import pyarrow as pa

from computations._aggregate._execute import PRIVACY_METADATA
from computations._errors import ComputationError, QueryRefused, shorten
from computations._module._facade import Ledger, Source, Stop, make_facade
from computations._module._source import check_source
from computations._plan import thaw

ENTRY_POINT: Final = "run"
#: The builtins a module sees: pure functions over plain data, and exceptions to catch.
SAFE_BUILTINS: Final = (
    "len", "range", "min", "max", "sum", "abs", "round", "sorted", "enumerate", "zip",
    "dict", "list", "tuple", "set", "str", "int", "float", "bool", "isinstance",
    "Exception", "ArithmeticError", "ZeroDivisionError", "ValueError", "TypeError",
    "KeyError", "IndexError",
)  # fmt: skip
MAX_RESULT_ROWS: Final = 100_000
#: CPU seconds between repeated limit signals once the limit is reached.
_REPEAT: Final = 0.05


class CpuTimeExceeded(BaseException):
    """The module used more CPU time than it is allowed."""


def run_module(
    source_text: str,
    *,
    code_hash: str,
    values: Mapping[str, Any],
    source: Source,
    spent: Ledger,
    cpu_seconds: float,
) -> pa.Table:
    """Run the module and return its result as a table with the privacy statement.

    Raises :class:`QueryRefused` if the bytes do not hash to ``code_hash``, the source
    breaks a rule, a release was refused (budget, checker) or the module raised or returned
    something unusable; :class:`ComputationError` if a release failed on data (one withheld
    message) or the CPU limit was reached.
    """
    data = source_text.encode("utf-8")
    if "sha256:" + hashlib.sha256(data).hexdigest() != code_hash:
        raise QueryRefused(
            "module-hash", f"the module's bytes no longer hash to its approved hash {code_hash}"
        )
    tree = check_source(source_text, filename=f"<module {code_hash}>")
    code = compile(tree, f"<module {code_hash}>", "exec", dont_inherit=True)
    namespace: dict[str, Any] = {"__builtins__": {n: getattr(builtins, n) for n in SAFE_BUILTINS}}
    params = json.loads(json.dumps(thaw(values)))  # plain data, a copy the module may keep
    returned: Any = None
    module_error: Exception | None = None
    limit = _CpuLimit(cpu_seconds)
    try:
        with limit:
            exec(code, namespace)  # noqa: S102 - approved, checked bytes; see module docstring
            entry = namespace.get(ENTRY_POINT)
            if not callable(entry):
                raise QueryRefused("module-source", f"the module defines no {ENTRY_POINT}()")
            returned = entry(make_facade(source, spent), params)
    except Stop:
        pass  # the failure is in spent.failure
    except CpuTimeExceeded:
        pass  # limit.expired says so
    except QueryRefused:
        raise
    except Exception as exc:  # the module's own error, reported only if nothing failed
        module_error = exc
    # A failed release or the CPU limit wins over anything the module raised or returned:
    # a ``finally`` block runs while Stop unwinds and could otherwise replace it with an
    # exception whose text says which releases failed (a failure can depend on a row).
    if limit.expired:  # even if the module swallowed the signal
        raise ComputationError(
            f"the module used more than {cpu_seconds:g} s of CPU time; the job's budget stays spent"
        )
    if spent.failure is not None:  # even if the module swallowed or replaced the stop
        raise spent.failure
    if module_error is not None:  # it only ever saw noisy releases: its text may pass
        raise QueryRefused(
            "module-error",
            f"the module raised {type(module_error).__name__}: {shorten(str(module_error))}",
        ) from None
    return _result_table(returned, code_hash=code_hash, spent=spent)


class _CpuLimit:
    """Raise :class:`CpuTimeExceeded` in the module after ``seconds`` of process CPU time
    (``ITIMER_PROF``), and again every :data:`_REPEAT` s of CPU after that, so a module
    that swallows the first signal (in a ``finally`` block) is interrupted again. The
    worker's ``RLIMIT_CPU`` still ends the process if C code never returns to Python (e.g.
    a huge ``10 ** 10 ** 10``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.previous: Any = None
        self.expired = False  # stays set: a module that swallows the signal still fails

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise ComputationError("modules run only in the enclave worker's main thread")
        self.previous = signal.signal(signal.SIGPROF, self._expired)
        signal.setitimer(signal.ITIMER_PROF, self.seconds, _REPEAT)

    def _expired(self, _signum: int, _frame: FrameType | None) -> None:
        self.expired = True
        raise CpuTimeExceeded

    def __exit__(self, *_exc: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, self.previous)


def _result_table(value: Any, *, code_hash: str, spent: Ledger) -> pa.Table:
    """The module's return value as a table: a list of row dicts, one dict of values (one
    row), or a single value (column ``value``). Values: str, int, float, bool or None."""
    if isinstance(value, list):
        rows = value
    elif isinstance(value, dict):
        rows = [value]
    else:
        rows = [{"value": value}]
    if len(rows) > MAX_RESULT_ROWS:
        raise QueryRefused("module-result", f"at most {MAX_RESULT_ROWS} rows")
    names: list[str] = []
    for row in rows:
        if not isinstance(row, dict) or not all(isinstance(k, str) for k in row):
            raise QueryRefused(
                "module-result",
                "run() returns a list of dicts with string keys, one dict, or one value",
            )
        for key, item in row.items():
            if item is not None and not isinstance(item, str | int | float | bool):
                raise QueryRefused(
                    "module-result", f"{key}: values are strings, numbers, booleans or None"
                )
            if isinstance(item, float) and not math.isfinite(item):
                raise QueryRefused("module-result", f"{key}: values are finite")
            if key not in names:
                names.append(key)
    statement = {
        "mode": "dp",
        "computation": "module",
        "code_hash": code_hash,
        "epsilon": spent.epsilon,
        "delta": spent.delta,
        "epsilon_budget": spent.epsilon_budget,
        "releases": spent.releases,
    }
    try:
        table = pa.Table.from_pylist([{n: row.get(n) for n in names} for row in rows])
    except (pa.ArrowException, OverflowError):
        raise QueryRefused(
            "module-result", "each column of the result must hold values of one kind"
        ) from None
    return table.replace_schema_metadata(
        {PRIVACY_METADATA: json.dumps(statement, sort_keys=True).encode()}
    )
