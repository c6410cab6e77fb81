"""A join plan in the enclave: both encrypted datasets are opened, each with its own key,
and checked against their records before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from computations import DatasetSpec, Plan, get_computation, table_from_ipc, table_to_rows
from enclave import Enclave, EnclaveError

PEOPLE = {
    "privacy_unit": "person_id",
    "min_group_size": 3,
    "columns": {
        "person_id": {"class": "identifier"},
        "town": {"class": "quasi_identifier", "dimension": True, "keys": ["North", "South"]},
    },
    "privacy": {"mode": "threshold_only", "rounding_base": 1, "dominance": 1.0},
    "joins": [{"dataset": "visits", "key": "person_id", "other_key": "patient"}],
}
VISITS = {
    "privacy_unit": "patient",
    "min_group_size": 3,
    "columns": {
        "patient": {"class": "identifier"},
        "ward": {"class": "quasi_identifier", "dimension": True},
    },
    "privacy": {"mode": "threshold_only", "rounding_base": 1, "dominance": 1.0},
}
SQL = (
    "SELECT p.town, v.ward, COUNT(*) AS n FROM people p JOIN visits v "
    "ON p.person_id = v.patient GROUP BY p.town, v.ward"
)


@pytest.fixture()
def enclave(tmp_path: Path) -> Enclave:
    enclave = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    people = tmp_path / "people.csv"
    people.write_text(
        "person_id,town\n" + "".join(f"{i},{'North' if i % 2 else 'South'}\n" for i in range(40))
    )
    visits = tmp_path / "visits.csv"
    rows = [f"{i},{'A' if i < 20 else 'B'}\n" for i in range(40)] + ["3,B\n", "3,A\n"]
    visits.write_text("patient,ward\n" + "".join(rows))
    enclave.import_dataset(people, DatasetSpec.from_manifest(PEOPLE, name="people"))
    enclave.import_dataset(visits, DatasetSpec.from_manifest(VISITS, name="visits"))
    return enclave


def _plan(enclave: Enclave) -> Plan:
    people, visits = enclave.dataset("people"), enclave.dataset("visits")
    return get_computation("aggregate").check(
        {"sql": SQL}, people.spec, partners={"visits": visits.spec}
    )


def test_a_join_decrypts_both_datasets_and_attests_both(enclave: Enclave) -> None:
    output = enclave.run(_plan(enclave), job_id="job_1", policy_version="v")
    rows = {
        (r["town"], r["ward"]): r["n"] for r in table_to_rows(table_from_ipc(output.result_ipc))
    }
    # Person 3 (North, ward A) has three visit rows: left out, never counted three times.
    assert rows == {("North", "A"): 9, ("South", "A"): 10, ("North", "B"): 10, ("South", "B"): 10}
    assert any("occurring more than once in visits are left out" in n for n in output.notes)
    assert output.attestation.dataset == "people"
    assert output.attestation.partner_dataset == "visits"
    assert output.attestation.partner_content_hash == enclave.dataset("visits").content_hash


def test_a_partner_that_does_not_match_its_record_stops_the_run(enclave: Enclave) -> None:
    plan = _plan(enclave)
    record = enclave.datasets_dir / "visits.json"
    stored = enclave.dataset("visits").content_hash
    record.write_text(record.read_text().replace(stored, "sha256:" + "0" * 64))
    with pytest.raises(EnclaveError, match="visits"):
        enclave.run(plan, job_id="job_2", policy_version="v")


def test_a_partner_key_swapped_for_another_datasets_does_not_open(enclave: Enclave) -> None:
    plan = _plan(enclave)
    people, visits = enclave.dataset("people"), enclave.dataset("visits")
    record = enclave.datasets_dir / "visits.json"
    record.write_text(record.read_text().replace(visits.wrapped_key, people.wrapped_key))
    with pytest.raises(EnclaveError, match="does not open"):
        enclave.run(plan, job_id="job_3", policy_version="v")
