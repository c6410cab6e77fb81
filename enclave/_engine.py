"""DuckDB connections for the worker: encrypted storage through httpfs's OpenSSL, locked down.

DuckDB encrypts database files with AES-GCM; with the httpfs extension loaded it uses
OpenSSL rather than its bundled fallback. The extension comes from the
``duckdb-extension-httpfs`` wheel through ``duckdb_extensions`` and is never fetched from
the network: automatic install and load are off.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from duckdb_extensions import import_extension

META_TABLE = "_indomain_meta"
_HASH_CHUNK_ROWS = 65536


def connect(extension_dir: Path, *, memory_limit: str = "2GB", threads: int = 2) -> Any:
    """An in-memory DuckDB connection with httpfs loaded from the local wheel."""
    extension_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={
            "extension_directory": str(extension_dir),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "memory_limit": memory_limit,
            "threads": threads,
        }
    )
    con.execute("SET enable_progress_bar = false")
    import_extension("httpfs", con=con)
    con.execute("LOAD httpfs")
    return con


def extension_dir(con: Any) -> str:
    """The extension folder ``con`` was made with (:func:`connect`)."""
    (value,) = con.execute("SELECT current_setting('extension_directory')").fetchone()
    return str(value)


def attach_encrypted(con: Any, path: Path, key: bytes, *, alias: str, read_only: bool) -> None:
    mode = ", READ_ONLY" if read_only else ""
    # DuckDB takes the key as a string literal: hex keeps it free of quoting concerns.
    con.execute(
        f"ATTACH '{_quote_path(path)}' AS {alias} "
        f"(ENCRYPTION_KEY '{key.hex()}', ENCRYPTION_CIPHER 'GCM'{mode})"
    )


def lock_down(con: Any) -> None:
    """No file, network or extension access from here on, and no way to undo that."""
    con.execute("SET temp_file_encryption = true")
    con.execute("SET enable_external_access = false")
    con.execute("SET allow_community_extensions = false")
    con.execute("SET lock_configuration = true")


def content_hash(con: Any, table: str) -> str:
    """SHA-256 over the Arrow IPC stream of the table sorted by all columns.

    Sorting makes the hash independent of insertion order; fixed-size chunks make the IPC
    bytes independent of how DuckDB happened to batch the rows.
    """
    result = con.execute(f"SELECT * FROM {table} ORDER BY ALL").to_arrow_table()
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), result.schema) as writer:
        for batch in result.combine_chunks().to_batches(max_chunksize=_HASH_CHUNK_ROWS):
            writer.write_batch(batch)
    return "sha256:" + sink.digest.hexdigest()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_path(path: Path) -> str:
    return str(path).replace("'", "''")


class _HashSink:
    """A write-only file object that hashes what is written to it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False
