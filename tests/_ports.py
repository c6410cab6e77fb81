"""A loopback port for a server a test starts in another process."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. A port from that range
    (a bind to port 0) can be handed to another socket's connect() in the seconds before
    the server binds it; one below it is taken only by an explicit bind."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    for port in random.Random().sample(range(max(1024, low - 10_000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # all taken: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
