"""A policy set: the schema and policy files, their version, and how they are stored.

The version is what the ledger and run attestations record, so it is a hash of exactly
the bytes of the files (RFC 8785 canonical JSON of the name → text mapping), not of any
parsed or reformatted form: change one byte, even in a comment, and the version changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import rfc8785

from policies._compile import (
    POLICY_SUFFIX,
    SCHEMA_FILE,
    Compiled,
    compile_files,
    is_policy_file_name,
)
from policies._errors import PolicyError, PolicyInvalid

VERSION_PREFIX = "sha256:"


def policy_version(files: Mapping[str, str]) -> str:
    """``"sha256:" + hex`` of SHA-256 over the RFC 8785 canonical JSON of ``files``.

    Raises :class:`PolicyInvalid` if the mapping cannot be canonicalised (e.g. a lone
    surrogate in a text).
    """
    try:
        canonical = rfc8785.dumps(dict(files))
    except rfc8785.CanonicalizationError as exc:
        raise PolicyInvalid([f"files cannot be canonicalised for hashing: {exc}"]) from exc
    return VERSION_PREFIX + hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, eq=True)
class PolicySet:
    """A validated set of Cedar files: ``schema.cedarschema`` plus ``*.cedar`` policies.

    Construction validates (directly, or through :meth:`load` / :meth:`from_files`), so
    a ``PolicySet`` that exists has a parsing schema, at least one policy, every policy
    schema-valid with a unique ``@id``, and ``version`` / ``policy_ids`` that match the
    files. Raises :class:`PolicyInvalid` otherwise.
    """

    files: Mapping[str, str]
    version: str
    policy_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.files, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.files.items()
        ):
            raise PolicyInvalid(["files must map file names (str) to file texts (str)"])
        items = tuple(sorted(self.files.items()))
        compiled = compile_files(items)
        expected_version = policy_version(self.files)
        problems = []
        if self.version != expected_version:
            problems.append(
                f"version {self.version!r} does not match the files ({expected_version})"
            )
        if tuple(self.policy_ids) != compiled.policy_ids:
            problems.append(
                f"policy_ids {tuple(self.policy_ids)!r} do not match the files "
                f"{compiled.policy_ids!r}"
            )
        if problems:
            raise PolicyInvalid(problems)
        object.__setattr__(self, "files", MappingProxyType(dict(items)))
        object.__setattr__(self, "policy_ids", compiled.policy_ids)
        # Not a dataclass field: parsed Cedar handles are a cache, not part of the value.
        object.__setattr__(self, "_cedar", compiled)

    def _handles(self) -> Compiled:
        """The parsed schema and policies (cached on the instance)."""
        cached = self.__dict__.get("_cedar")
        if isinstance(cached, Compiled):
            return cached
        return compile_files(tuple(self.files.items()))

    def bodies(self) -> Mapping[str, Mapping[str, Any]]:
        """Each policy's Cedar JSON (EST), by ``@id``: for tools that read the policies'
        structure (the catalogue's purposes, ``policy diff``) rather than decide."""
        return self._handles().bodies

    def __hash__(self) -> int:
        return hash(self.version)

    def __reduce__(self) -> tuple[Any, ...]:
        # The mapping proxy and Cedar handles do not pickle; the files rebuild both.
        return (PolicySet, (dict(self.files), self.version, self.policy_ids))

    @classmethod
    def from_files(cls, files: Mapping[str, str]) -> PolicySet:
        """Validate ``files`` (name → text) and return the set.

        Raises :class:`PolicyInvalid` listing every problem, each naming its file.
        """
        if not isinstance(files, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise PolicyInvalid(["files must map file names (str) to file texts (str)"])
        compiled = compile_files(tuple(sorted(files.items())))
        return cls(files=dict(files), version=policy_version(files), policy_ids=compiled.policy_ids)

    @classmethod
    def load(cls, directory: Path) -> PolicySet:
        """Read ``schema.cedarschema`` and every ``*.cedar`` file in ``directory`` and validate.

        Other files are ignored. Texts are read as exact UTF-8 bytes (no newline
        translation) so the version hashes what is on disk. Raises :class:`PolicyInvalid`.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise PolicyInvalid([f"{directory}: not a directory"])
        files: dict[str, str] = {}
        problems: list[str] = []
        try:
            names = sorted(
                entry.name
                for entry in directory.iterdir()
                if entry.name == SCHEMA_FILE or entry.name.endswith(POLICY_SUFFIX)
            )
        except OSError as exc:
            raise PolicyInvalid([f"{directory}: cannot list: {exc.strerror or exc}"]) from exc
        for name in names:
            path = directory / name
            if not path.is_file():
                problems.append(f"{name}: not a regular file")
                continue
            try:
                files[name] = path.read_bytes().decode("utf-8")
            except OSError as exc:
                problems.append(f"{name}: cannot read: {exc.strerror or exc}")
            except UnicodeDecodeError as exc:
                problems.append(f"{name}: not UTF-8 text (byte {exc.start})")
        if problems:
            # Report read problems together with validation problems of the rest.
            try:
                cls.from_files(files)
            except PolicyInvalid as exc:
                problems.extend(exc.problems)
            raise PolicyInvalid(problems)
        return cls.from_files(files)

    def save(self, directory: Path) -> None:
        """Write the files into ``directory`` (created if needed) and drop stale ``*.cedar``.

        Each file is written to a temporary file, synced and renamed over its target, so
        a reader never sees a half-written file; the folder as a whole is not switched
        atomically (a concurrent ``load`` may see old and new files together, and then
        its version names exactly what it saw). Raises :class:`PolicyError`.
        """
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, text in self.files.items():
                _write_atomically(directory, name, text.encode("utf-8"))
            for entry in directory.iterdir():
                if (
                    is_policy_file_name(entry.name)
                    and entry.name not in self.files
                    and (entry.is_file() or entry.is_symlink())
                ):
                    entry.unlink()
            _sync_directory(directory)
        except OSError as exc:
            raise PolicyError(f"cannot save policy set to {directory}: {exc}") from exc


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _sync_directory(directory: Path) -> None:
    """Make the renames durable where the platform allows syncing a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
