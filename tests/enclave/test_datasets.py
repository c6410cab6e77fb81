"""Datasets at rest: encrypted DuckDB files whose keys only the worker unwraps."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import duckdb
import pytest

from computations import DatasetSpec, get_computation, table_to_rows
from enclave import DatasetError, Enclave, EnclaveError

SENTINEL = "ZEBRA-7731-SENTINEL"
MANIFEST = {
    "description": "people",
    "privacy_unit": "person_id",
    "min_group_size": 3,
    "columns": {
        "person_id": {"class": "identifier"},
        "town": {"class": "quasi_identifier", "dimension": True},
        "note": {"class": "sensitive"},
        "income": {"class": "sensitive", "bounds": [0, 5000]},
    },
}


def _csv(path: Path, rows: int = 400) -> Path:
    lines = ["person_id,town,note,income"]
    for i in range(rows):
        town = "Smallville" if i < 2 else ("North" if i % 2 else "South")
        lines.append(f"{i},{town},{SENTINEL}-{i},{1000 + i}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def enclave(tmp_path: Path) -> Enclave:
    return Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")


def _spec(name: str = "people") -> DatasetSpec:
    return DatasetSpec.from_manifest(MANIFEST, name=name)


def test_imported_file_holds_no_plaintext_of_a_known_value(
    enclave: Enclave, tmp_path: Path
) -> None:
    record = enclave.import_dataset(_csv(tmp_path / "people.csv"), _spec())
    raw = (enclave.datasets_dir / record.file).read_bytes()
    assert record.row_count == 400
    assert SENTINEL.encode() not in raw
    assert b"Smallville" not in raw
    assert record.content_hash.startswith("sha256:")
    # the record on disk holds the key only wrapped
    assert record.wrapped_key not in raw.decode("latin-1")


def test_encrypted_file_cannot_be_opened_without_or_with_a_wrong_key(
    enclave: Enclave, tmp_path: Path
) -> None:
    record = enclave.import_dataset(_csv(tmp_path / "people.csv"), _spec())
    path = enclave.datasets_dir / record.file
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        con.execute(f"ATTACH '{path}' AS d (READ_ONLY)")
    with pytest.raises(duckdb.Error, match=r"(?i)encryption key"):
        con.execute(f"ATTACH '{path}' AS d (ENCRYPTION_KEY '{secrets.token_hex(32)}', READ_ONLY)")


def test_content_hash_is_independent_of_row_order(enclave: Enclave, tmp_path: Path) -> None:
    source = _csv(tmp_path / "a.csv")
    lines = source.read_text().splitlines()
    shuffled = tmp_path / "b.csv"
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    a = enclave.import_dataset(source, _spec("a"))
    b = enclave.import_dataset(shuffled, _spec("b"))
    assert a.content_hash == b.content_hash


def test_every_column_must_be_classified(enclave: Enclave, tmp_path: Path) -> None:
    manifest = {**MANIFEST, "columns": dict(list(MANIFEST["columns"].items())[:-1])}
    with pytest.raises(DatasetError, match=r"not classified.*income|income.*not classified"):
        enclave.import_dataset(
            _csv(tmp_path / "p.csv"), DatasetSpec.from_manifest(manifest, name="people")
        )
    assert enclave.datasets() == []


def test_manifest_columns_missing_from_the_file_are_refused(
    enclave: Enclave, tmp_path: Path
) -> None:
    manifest = {**MANIFEST, "columns": {**MANIFEST["columns"], "age": {"class": "public"}}}
    with pytest.raises(DatasetError, match="age"):
        enclave.import_dataset(
            _csv(tmp_path / "p.csv"), DatasetSpec.from_manifest(manifest, name="people")
        )


def test_keys_of_another_type_than_their_column_are_refused_at_import(
    enclave: Enclave, tmp_path: Path
) -> None:
    # YAML reads ``keys: [100010, 0100]`` as numbers: on a text column they would never
    # match a row (every group empty), so the import says which keys and how to fix them.
    manifest = {**MANIFEST, "columns": dict(MANIFEST["columns"])}
    manifest["columns"]["town"] = {**MANIFEST["columns"]["town"], "keys": [100010, 64]}
    with pytest.raises(DatasetError, match=r"town is VARCHAR.*100010.*quote them"):
        enclave.import_dataset(
            _csv(tmp_path / "p.csv"), DatasetSpec.from_manifest(manifest, name="people")
        )
    assert enclave.datasets() == []


def test_import_refuses_to_replace_a_dataset(enclave: Enclave, tmp_path: Path) -> None:
    enclave.import_dataset(_csv(tmp_path / "p.csv"), _spec())
    with pytest.raises(DatasetError, match="already exists"):
        enclave.import_dataset(_csv(tmp_path / "p.csv"), _spec())


def test_unknown_file_types_and_missing_files_are_refused(enclave: Enclave, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(DatasetError, match="csv"):
        enclave.import_dataset(tmp_path / "p.json", _spec())
    with pytest.raises(DatasetError, match="no file"):
        enclave.import_dataset(tmp_path / "absent.csv", _spec())


def test_unknown_dataset_names_the_known_ones(enclave: Enclave, tmp_path: Path) -> None:
    enclave.import_dataset(_csv(tmp_path / "p.csv"), _spec())
    with pytest.raises(DatasetError, match="known: people"):
        enclave.dataset("nope")
    with pytest.raises(DatasetError):
        enclave.dataset("../keys/master")


def test_a_run_is_attested_and_small_groups_are_suppressed(
    enclave: Enclave, tmp_path: Path
) -> None:
    record = enclave.import_dataset(_csv(tmp_path / "p.csv"), _spec())
    computation = get_computation("aggregate")
    plan = computation.check(
        {"sql": "SELECT town, COUNT(*) AS n, AVG(income) AS mean FROM people GROUP BY town"},
        record.spec,
    )
    output = enclave.run(plan, job_id="job_1", policy_version="sha256:" + "0" * 64)
    rows = table_to_rows(__import__("computations").table_from_ipc(output.result_ipc))
    assert {r["town"] for r in rows} == {"North", "South"}  # Smallville (2 people) suppressed
    # Towns are not a public key set, so how many groups fell under the noisy threshold
    # would be an exact count: it is not disclosed.
    assert output.suppressed_groups == 0
    assert any("not disclosed" in note for note in output.notes)
    att = output.attestation
    assert att.code_hash == computation.code_hash
    assert att.dataset_content_hash == record.content_hash
    assert att.params_digest == plan.params_digest
    assert att.result_digest.startswith("sha256:")
    att.verify(output.signature, enclave.public_key)


def test_a_tampered_attestation_does_not_verify(enclave: Enclave, tmp_path: Path) -> None:
    record = enclave.import_dataset(_csv(tmp_path / "p.csv"), _spec())
    plan = get_computation("aggregate").check(
        {"sql": "SELECT COUNT(*) AS n FROM people"}, record.spec
    )
    output = enclave.run(plan, job_id="job_1", policy_version="v")
    forged = output.attestation.model_copy(update={"result_digest": "sha256:" + "0" * 64})
    with pytest.raises(EnclaveError, match="does not verify"):
        forged.verify(output.signature, enclave.public_key)


def test_a_swapped_wrapped_key_stops_the_run(enclave: Enclave, tmp_path: Path) -> None:
    a = enclave.import_dataset(_csv(tmp_path / "a.csv"), _spec("a"))
    b = enclave.import_dataset(_csv(tmp_path / "b.csv"), _spec("b"))
    record_path = enclave.datasets_dir / "a.json"
    record_path.write_text(record_path.read_text().replace(a.wrapped_key, b.wrapped_key))
    plan = get_computation("aggregate").check({"sql": "SELECT COUNT(*) AS n FROM a"}, a.spec)
    with pytest.raises(EnclaveError, match="does not open"):
        enclave.run(plan, job_id="job_1", policy_version="v")


@pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux-only")
def test_the_worker_cannot_reach_a_server_on_loopback(enclave: Enclave) -> None:
    import os
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        probe = enclave.probe(connect_to=("127.0.0.1", port))
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the same server is reachable from outside the worker
    assert probe["pid"] != os.getpid()
    if os.geteuid() == 0:
        assert probe["network_isolated"] is True
    if probe["network_isolated"]:
        assert probe["reached"] is False
