"""The README's tour, run exactly as written (only the port is swapped for a free one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._ports import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _tour_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A short tour", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "the README tour has no bash block"
    return match.group(1)


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script = _tour_script().replace("8765", str(free_port()))
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
