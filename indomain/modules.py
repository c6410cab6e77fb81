"""Proposed computation modules: Python source reviewed and approved by its exact bytes.

A module proposal carries the source text of a new computation. Its code hash is
``"sha256:" + hex`` of SHA-256 over the exact UTF-8 bytes: one changed byte, even in a
comment, is a new computation that needs its own approval. The bytes are stored in the
home, content-addressed (``modules/<hex>.py``, mode 0600, never overwritten), and a job
that names an approved module is refused unless the stored bytes still hash to the
approved hash.

An approved, intact module runs (``computations/_module``): in the enclave worker, its
``run(data, params)`` gets a facade whose ``count``, ``sum`` and ``mean`` are DP
``aggregate`` releases (same checker, same noise), spending the proposal's
``expected_epsilon``, reserved before it starts. At proposal time the source must also
keep the module rules (no imports, no dunder or private names, no ``getattr``/``eval``/
``open``..., attributes only from an allow-list): defence in depth, checked again in the
worker right before the re-hashed bytes are compiled. See docs/policies.md, "Computation
modules", for what this does and does not guarantee.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from computations import QueryRefused, check_module_source
from indomain.proposals import ProposalError

MODULE_KIND = "computation_module"
MAX_MODULE_BYTES = 64 * 1024
ENTRY_POINT = "run"
_HASH = re.compile(r"sha256:([0-9a-f]{64})")


def module_hash(data: bytes) -> str:
    """``"sha256:" + hex`` of SHA-256 over ``data``, the exact bytes reviewers approve."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_module(source: str) -> bytes:
    """The module's exact bytes, after checking it is reviewable Python; raises
    :class:`ProposalError`.

    It must be UTF-8 text of at most 64 KiB that parses as Python and defines a
    top-level ``def run(...)`` (the entry point the enclave calls), and keep the module
    rules (``computations/_module/_source.py``). Parsing never executes anything.
    """
    if not isinstance(source, str) or not source.strip():
        raise ProposalError("module: the Python source of the computation, not empty")
    try:
        data = source.encode("utf-8")
    except UnicodeEncodeError:
        raise ProposalError("module: not encodable as UTF-8 (a lone surrogate?)") from None
    if len(data) > MAX_MODULE_BYTES:
        raise ProposalError(f"module: at most {MAX_MODULE_BYTES} bytes of source")
    _check_reviewable(source)
    try:
        tree = ast.parse(data, filename="<proposed module>")
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        raise ProposalError(f"module: not valid Python{where}") from None
    if not any(
        isinstance(node, ast.FunctionDef) and node.name == ENTRY_POINT for node in tree.body
    ):
        raise ProposalError(f"module: define a top-level function {ENTRY_POINT}(...)")
    try:
        check_module_source(source)
    except QueryRefused as exc:
        raise ProposalError(f"module: {exc.reason}") from None
    return data


# PEP 263: a coding declaration in line 1 or 2 makes Python decode the bytes otherwise.
_CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)
# Characters that make text read differently from how it compiles ("Trojan Source",
# CVE-2021-42574): bidirectional overrides and isolates, and invisible format characters.
_DECEPTIVE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _check_reviewable(source: str) -> None:
    """Refuse source that compiles to something other than what reviewers read.

    Reviewers see the text as UTF-8; Python honours a coding declaration (``# coding:
    utf-7`` turns a comment into code) and renders bidi controls invisibly. So any
    declaration but UTF-8, a BOM, and bidi or invisible format characters are refused.
    """
    for line in source.splitlines()[:2]:
        match = _CODING.match(line)
        if match and match.group(1).lower().replace("_", "-") not in {"utf-8", "utf8"}:
            raise ProposalError(
                f"module: coding declaration {match.group(1)!r}: modules must be UTF-8, "
                "since reviewers read them as UTF-8"
            )
    found = _DECEPTIVE.search(source)
    if found:
        lineno = source.count("\n", 0, found.start()) + 1
        raise ProposalError(
            f"module: invisible or bidirectional control character U+{ord(found.group()):04X} "
            f"at line {lineno}: it would make the code read differently from how it runs"
        )


class ModuleStore:
    """Approved and proposed module sources in ``<home>/modules``, by their hash."""

    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)

    def path(self, code_hash: str) -> Path:
        match = _HASH.fullmatch(code_hash)
        if match is None:
            raise ProposalError(f"not a module code hash: {code_hash!r}")
        return self._dir / f"{match.group(1)}.py"

    def save(self, data: bytes) -> str:
        """Store ``data`` under its hash (once; an existing file is kept) and return it."""
        digest = module_hash(data)
        target = self.path(digest)
        try:
            self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if target.exists():
                return digest
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".module.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise ProposalError(f"cannot store the module: {exc.strerror or exc}") from None
        return digest

    def verified(self, code_hash: str) -> bytes:
        """The stored bytes of the module approved as ``code_hash``; raises
        :class:`ProposalError` if they are missing or no longer hash to it."""
        try:
            data = self.path(code_hash).read_bytes()
        except OSError:
            raise ProposalError(
                f"the approved module {code_hash} is missing from the home: propose it again"
            ) from None
        if module_hash(data) != code_hash:
            raise ProposalError(
                f"the stored module no longer hashes to its approved hash {code_hash}: "
                "it was changed after approval; a changed module is a new computation"
            )
        return data
