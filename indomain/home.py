"""The sandbox home: one folder holding keys, datasets, the ledger, state and policies.

<home>/home.json        format marker and ledger origin
<home>/keys/            0700; ledger.key, master.key, enclave.key are 0600
<home>/datasets/        encrypted DuckDB files and their records
<home>/ledger/          the audit ledger
<home>/state.sqlite     enterprises, nonces, jobs
<home>/policies/        the applied policy version
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from indomain.errors import ConfigError

HOME_FORMAT = "indomain-home/v1"
DEFAULT_HOME = Path(".indomain")


def check_private(path: Path) -> Path:
    """Refuse a key file that group or others may read or write; return ``path``."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"key file {path} is missing") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    return path


def resolve_home(option: Path | None) -> Path:
    """``--home`` wins, then ``$INDOMAIN_HOME``, then ``./.indomain``."""
    if option is not None:
        return option
    env = os.environ.get("INDOMAIN_HOME")
    return Path(env) if env else DEFAULT_HOME


@dataclass(frozen=True)
class Home:
    root: Path
    origin: str

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger"

    @property
    def state(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def policies(self) -> Path:
        return self.root / "policies"

    @property
    def ledger_key(self) -> Path:
        return self.keys / "ledger.key"

    @classmethod
    def create(cls, root: Path, *, origin: str | None = None) -> Home:
        """Make the folder structure; refuses a folder that already has anything in it."""
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ConfigError(
                f"{root} already exists and is not empty; indomain init never overwrites a "
                "home. Choose another --home or remove it yourself."
            )
        origin = origin or f"indomain.sandbox/{secrets.token_hex(6)}"
        if not origin or any(c.isspace() for c in origin) or "+" in origin:
            raise ConfigError("the ledger origin must be non-empty, without spaces or '+'")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("keys", "datasets", "ledger", "policies"):
            (root / sub).mkdir(mode=0o700)
        marker = {
            "format": HOME_FORMAT,
            "origin": origin,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        (root / "home.json").write_text(json.dumps(marker, indent=2) + "\n")
        return cls(root=root, origin=origin)

    @classmethod
    def open(cls, root: Path) -> Home:
        marker_path = root / "home.json"
        if not marker_path.is_file():
            raise ConfigError(
                f"no sandbox home at {root}: run `indomain init --home {root}` first, "
                "or set INDOMAIN_HOME"
            )
        try:
            marker = json.loads(marker_path.read_text())
        except ValueError:
            raise ConfigError(f"{marker_path} is not valid JSON") from None
        if marker.get("format") != HOME_FORMAT:
            raise ConfigError(f"{root} is not an indomain home of format {HOME_FORMAT}")
        return cls(root=root, origin=str(marker["origin"]))
