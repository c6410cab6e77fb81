"""The registry, the computation protocol and code hashes (the measurement)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import computations
from computations import Computation, ComputationError, available_computations, get_computation
from computations._computation import CORE_SOURCES, PACKAGE_ROOT, package_sources, source_digest
from indomain.errors import InternalError


def test_available_computations() -> None:
    assert available_computations() == (
        "aggregate",
        "encrypted_group_sum",
        "encrypted_linear_score",
        "psi",
    )


def test_get_computation_returns_a_computation() -> None:
    aggregate = get_computation("aggregate")
    assert isinstance(aggregate, Computation)
    assert aggregate.name == "aggregate"
    assert aggregate.description


@pytest.mark.parametrize("name", ["nope", "", "AGGREGATE", "x" * 500])
def test_unknown_computation_names_the_known_ones(name: str) -> None:
    with pytest.raises(ComputationError, match="known computations: aggregate, ") as info:
        get_computation(name)
    assert len(str(info.value)) < 200


def test_params_schema() -> None:
    schema = get_computation("aggregate").params_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["sql"]
    assert schema["properties"]["sql"]["maxLength"] == 10_000
    schema["required"].append("mutated")  # callers get their own copy
    assert get_computation("aggregate").params_schema["required"] == ["sql"]


def test_code_hash_is_stable_and_prefixed() -> None:
    code_hash = get_computation("aggregate").code_hash
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", code_hash)
    assert get_computation("aggregate").code_hash == code_hash
    sources = (*package_sources("_aggregate"), *CORE_SOURCES)
    assert source_digest(PACKAGE_ROOT, sources) == code_hash


def test_code_hash_covers_the_computation_and_the_core() -> None:
    sources = set(package_sources("_aggregate")) | set(CORE_SOURCES)
    assert "_aggregate/_check.py" in sources
    assert "_aggregate/_execute.py" in sources
    assert "_dataset.py" in sources
    assert "_registry.py" not in sources  # adding a computation does not re-measure others


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "computations"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_changing_a_source_changes_the_hash(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    sources = (*package_sources("_aggregate"), *CORE_SOURCES)
    before = source_digest(root, sources)
    assert before == get_computation("aggregate").code_hash
    checker = root / "_aggregate" / "_check.py"
    checker.write_bytes(checker.read_bytes() + b"\n# changed\n")
    assert source_digest(root, sources) != before


def test_moving_bytes_between_files_changes_the_hash(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_bytes(b"xy")
    (tmp_path / "b.py").write_bytes(b"z")
    before = source_digest(tmp_path, ["a.py", "b.py"])
    (tmp_path / "a.py").write_bytes(b"x")
    (tmp_path / "b.py").write_bytes(b"yz")
    assert source_digest(tmp_path, ["a.py", "b.py"]) != before
    assert source_digest(tmp_path, ["b.py", "a.py"]) == source_digest(tmp_path, ["a.py", "b.py"])


def test_missing_source_is_an_internal_error(tmp_path: Path) -> None:
    with pytest.raises(InternalError):
        source_digest(tmp_path, ["absent.py"])


def test_front_door_exports_exactly_all() -> None:
    public = {
        name
        for name, value in vars(computations).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("computations")
    }
    assert public == set(computations.__all__)
    for name in computations.__all__:
        assert getattr(computations, name).__module__.startswith("computations._")


@pytest.mark.parametrize("name", ["psi", "encrypted_group_sum"])
def test_encrypted_computations_measure_the_psi_and_he_code_they_run(name: str) -> None:
    computation = get_computation(name)
    assert isinstance(computation, Computation)
    sources = {"_psi/_protocol.py", "_psi/_rr.py", "_encrypted/_keys.py", "_aggregate/_noise.py"}
    if name == "encrypted_group_sum":
        sources.add("_he/_context.py")
    expected = set(package_sources("_encrypted")) | set(package_sources("_psi")) | set(CORE_SOURCES)
    expected |= {"_aggregate/_noise.py"} | (
        set(package_sources("_he")) if name == "encrypted_group_sum" else set()
    )
    assert sources <= expected
    assert computation.code_hash == source_digest(PACKAGE_ROOT, expected)
