"""One gateway per sandbox home.

Two gateways on one home would both resume the same unfinished jobs and run them twice:
two independently noised releases of one query for one budget charge. A gateway holds
an exclusive ``flock`` on ``<home>/gateway.lock`` while it serves; the kernel releases it
when the process dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indomain.errors import ConfigError

LOCK_NAME = "gateway.lock"


@contextmanager
def gateway_lock(root: Path) -> Iterator[None]:
    """Hold the home's gateway lock; raises :class:`ConfigError` if another gateway has it."""
    path = Path(root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                f"another gateway (pid {holder}) is already serving the home {root}: "
                "stop it first; two gateways on one home would run jobs twice"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
