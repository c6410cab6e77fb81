"""The README's tour, run exactly as written (only the port is swapped for a free one)."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _tour_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A short tour", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README tour has no bash block"
    return match.group(1)


def _free_port() -> int:
    """A free loopback port below the kernel's ephemeral range. A port from that range
    (a bind to port 0) can be handed to another socket's connect() in the seconds before
    the gateway binds it; one below it is taken only by an explicit bind."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    for port in random.Random().sample(range(max(1024, low - 10_000), low), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # all taken: any free port, as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script = _tour_script().replace("8765", str(_free_port()))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "indomain").symlink_to(ROOT / "indomain")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INDOMAIN_")}
    env["COLUMNS"] = "160"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "denied: exit 3" in done.stdout
    assert "ledger verified" in done.stdout
    assert "receipt verified" in done.stderr
    assert "Dongcheng" in done.stdout
