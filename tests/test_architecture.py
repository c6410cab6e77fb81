"""The parts talk only through their front doors, and the front doors say what they export."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("enclave", "ledger", "computations", "gateway", "policies", "indomain")


@pytest.mark.parametrize("part", PARTS)
def test_all_lists_exactly_the_public_names_of_the_front_door(part: str) -> None:
    module = importlib.import_module(part)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{part}.__all__ names things it does not have: {missing}"
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, type(importlib))  # submodules are not API
        and name != "annotations"
    }
    assert public <= exported | {"__version__"}, f"public but not in __all__: {public - exported}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("part", PARTS)
def test_no_part_imports_another_parts_private_modules(part: str) -> None:
    offences = []
    for path in sorted((ROOT / part).rglob("*.py")):
        for name in _imports(path):
            head, _, rest = name.partition(".")
            if head in PARTS and head != part and rest.startswith("_"):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)


def test_parts_import_from_indomain_only_the_error_root() -> None:
    for part in PARTS[:-1]:
        for path in sorted((ROOT / part).rglob("*.py")):
            for name in _imports(path):
                if name.startswith("indomain"):
                    assert name.startswith("indomain.errors") or name == "indomain", (
                        f"{path.relative_to(ROOT)} imports {name}: parts may depend on "
                        "indomain.errors only (the wiring depends on the parts, not back)"
                    )
