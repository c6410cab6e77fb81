"""What a computation module's source may contain: an allow-list checked on its syntax tree.

This is defence in depth, not a Python sandbox. The privacy boundary is the facade
(``_facade.py``): the module never holds the connection or a row, only noisy releases.
These rules make the usual ways out of a restricted namespace unwritable:

- no ``import``, ``global``/``nonlocal``, classes, ``async``, generators, ``with``,
  ``match``, bare ``except:`` (which would catch the facade's stop signal) or a
  ``return``/``break``/``continue`` in ``finally`` (which would swallow it);
- no identifier or keyword starting with ``_`` (so no ``__class__``, ``__globals__``,
  ``__builtins__``, and none of the facade's private attributes);
- attributes only from a short list of container and string methods plus the facade's
  own (so no frame or code objects: ``gi_frame``, ``f_back``, ``f_globals``, ``co_code``;
  no ``str.format``, which reads attributes named in a string);
- none of the builtins that reach objects by name or run text as code (``getattr``,
  ``eval``, ``open``...), even as a name to assign.

It runs at proposal time (reviewers never see a module it refuses) and again in the
enclave worker right before the module is compiled.
"""

from __future__ import annotations

import ast
from typing import Final

from computations._errors import QueryRefused

#: Methods the facade offers (see ``_facade.Data``).
FACADE_METHODS: Final = frozenset({"count", "sum", "mean"})

#: Methods of dict, list, set and str a module may call: plain data, no object graph.
DATA_METHODS: Final = frozenset(
    {
        "append", "extend", "insert", "pop", "remove", "index", "sort", "reverse", "copy",
        "items", "keys", "values", "get", "setdefault", "update",
        "add", "discard", "union", "intersection", "difference",
        "join", "split", "strip", "lower", "upper", "startswith", "endswith", "replace",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: Final = FACADE_METHODS | DATA_METHODS

#: Names a module may not use at all: they reach objects by name, run text as code, or
#: touch files. Most are also absent from the builtins it runs with (``_runner.py``).
FORBIDDEN_NAMES: Final = frozenset(
    {
        "getattr", "setattr", "delattr", "hasattr", "eval", "exec", "compile", "open",
        "globals", "locals", "vars", "dir", "type", "object", "super", "breakpoint",
        "input", "help", "memoryview", "classmethod", "staticmethod", "property",
    }
)  # fmt: skip

_FORBIDDEN_NODES: Final[dict[type[ast.AST], str]] = {
    ast.Import: "imports are not allowed",
    ast.ImportFrom: "imports are not allowed",
    ast.Global: "global is not allowed",
    ast.Nonlocal: "nonlocal is not allowed",
    ast.ClassDef: "classes are not allowed",
    ast.AsyncFunctionDef: "async functions are not allowed",
    ast.AsyncFor: "async loops are not allowed",
    ast.AsyncWith: "async with is not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "generators are not allowed",
    ast.YieldFrom: "generators are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed; use a list comprehension",
    ast.With: "with is not allowed",
    ast.Match: "match is not allowed",
    ast.TryStar: "except* is not allowed",
}


def check_source(source: str, *, filename: str = "<module>") -> ast.Module:
    """The parsed module if every rule above holds; raises :class:`QueryRefused`
    (rule ``module-source``) naming the line and what is not allowed."""
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        raise QueryRefused(
            "module-source", f"not valid Python{f' at line {line}' if line else ''}"
        ) from None
    for node in ast.walk(tree):
        problem = _problem(node)
        if problem is not None:
            line = getattr(node, "lineno", 0)
            raise QueryRefused("module-source", f"line {line}: {problem}")
    return tree


def _problem(node: ast.AST) -> str | None:
    for kind, reason in _FORBIDDEN_NODES.items():
        if isinstance(node, kind):
            return reason
    if isinstance(node, ast.ExceptHandler) and node.type is None:
        return "a bare except: is not allowed; name the exception, e.g. except ValueError:"
    if isinstance(node, ast.Try) and any(
        isinstance(inner, ast.Return | ast.Break | ast.Continue)
        for statement in node.finalbody
        for inner in ast.walk(statement)
    ):
        return "return, break or continue in finally is not allowed (it swallows errors)"
    name = _identifier(node)
    if name is not None:
        if name.startswith("_"):
            return f"names starting with an underscore are not allowed ({name})"
        if name in FORBIDDEN_NAMES:
            return f"{name} is not allowed"
    if isinstance(node, ast.Attribute) and node.attr not in ALLOWED_ATTRIBUTES:
        allowed = ", ".join(sorted(ALLOWED_ATTRIBUTES))
        return f"attribute .{node.attr} is not allowed (allowed: {allowed})"
    return None


def _identifier(node: ast.AST) -> str | None:
    """The name a node binds or reads, if it is one."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.FunctionDef | ast.Lambda):
        return getattr(node, "name", None)
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.keyword):
        return node.arg  # None for **kwargs
    if isinstance(node, ast.ExceptHandler):
        return node.name
    if isinstance(node, ast.alias):
        return node.asname or node.name
    return None
