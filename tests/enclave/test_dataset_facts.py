"""Facts the enclave measures at import and trusts at run time (inside the encrypted file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from computations import DatasetSpec
from enclave import Enclave

MANIFEST = {
    "privacy_unit": "person_id",
    "min_group_size": 3,
    "columns": {
        "person_id": {"class": "identifier"},
        "town": {"class": "quasi_identifier", "dimension": True},
    },
}


def _open_encrypted(enclave: Enclave, record: Any) -> tuple[Any, dict[str, str]]:
    """A connection to the dataset's encrypted file (as ``ds``), and its meta table."""
    import base64

    from enclave import _engine
    from enclave._keys import load_master_key, unwrap_dataset_key

    key = unwrap_dataset_key(
        load_master_key(enclave.keys_dir / "master.key"),
        base64.b64decode(record.wrapped_key),
        record.name,
    )
    con = _engine.connect(enclave.datasets_dir / ".extensions")
    _engine.attach_encrypted(
        con, enclave.datasets_dir / record.file, key, alias="ds", read_only=True
    )
    stored = dict(con.execute(f"SELECT key, value FROM ds.{_engine.META_TABLE}").fetchall())
    return con, stored


@pytest.mark.parametrize(
    ("ids", "unique", "complete"),
    [([1, 2, 3, None], True, False), ([1, 2, 2, 3], False, True), ([1, 2, 3], True, True)],
)
def test_import_records_whether_each_unit_has_one_row(
    ids: list[int | None], unique: bool, complete: bool, tmp_path: Path
) -> None:
    enclave = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    source = tmp_path / "people.csv"
    lines = ["person_id,town", *(f"{'' if i is None else i},north" for i in ids)]
    source.write_text("\n".join(lines) + "\n")
    spec = DatasetSpec.from_manifest(MANIFEST, name="people")
    record = enclave.import_dataset(source, spec)
    # Read the meta table back the way the worker does (key unwrapped in a worker).

    con, stored = _open_encrypted(enclave, record)
    con.close()
    assert stored["unit_unique"] == ("true" if unique else "false")
    assert stored["unit_complete"] == ("true" if complete else "false")


@pytest.mark.parametrize("attacker_id", ["999", ""])
def test_one_person_with_many_rows_is_still_bounded_by_the_enclave(
    attacker_id: str, tmp_path: Path
) -> None:
    """The attack the fast path must not open: one person holds 200 rows at the income
    bound. The import measures that units repeat, so the run pre-aggregates per person and
    the group's sum moves by one row's bound, not 200 (the noise, Laplace scale 150,000 at
    epsilon 10 over three measures, cannot hide a 99.5 million difference). With the 200
    rows' unit left empty, the import measures that rows lack a unit and the run drops
    them (they could all be one person's)."""
    from computations import get_computation, table_from_ipc

    manifest = {
        "privacy_unit": "person_id",
        "min_group_size": 3,
        "columns": {
            "person_id": {"class": "identifier"},
            "town": {"class": "quasi_identifier", "dimension": True, "keys": ["north"]},
            "income": {"class": "sensitive", "bounds": [0, 500000]},
        },
        "privacy": {"epsilon_per_job": 10.0, "max_rows_per_unit": 1},
    }
    enclave = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    source = tmp_path / "people.csv"
    honest = [f"{i},north,1000" for i in range(1, 101)]
    attacker = [f"{attacker_id},north,500000"] * 200
    source.write_text("\n".join(["person_id,town,income", *honest, *attacker]) + "\n")
    spec = DatasetSpec.from_manifest(manifest, name="people")
    enclave.import_dataset(source, spec)
    plan = get_computation("aggregate").check(
        {"sql": "SELECT town, COUNT(*) AS n, SUM(income) AS s FROM people GROUP BY town"}, spec
    )
    output = enclave.run(plan, job_id="job_attack", policy_version="v")
    (row,) = table_from_ipc(output.result_ipc).to_pylist()
    persons = 101 if attacker_id else 100  # rows without a unit count for nobody
    bounded = 100 * 1000 + (persons - 100) * 500000  # unbounded: 100.1 million
    assert abs(row["s"] - bounded) < 5_000_000  # over 30 noise scales
    assert abs(row["n"] - persons) < 50
    enclave.close()


def test_an_outlier_is_clamped_although_the_other_values_need_no_clamp(tmp_path: Path) -> None:
    """The import measures each bounded integer column's range; a run clamps only when the
    data can leave the bounds. One person's income of 10**12 (bound 500,000) must still be
    clamped to the bound, however the other 100 rows lie."""

    from computations import get_computation, table_from_ipc

    manifest = {
        "privacy_unit": "person_id",
        "min_group_size": 3,
        "columns": {
            "person_id": {"class": "identifier"},
            "town": {"class": "quasi_identifier", "dimension": True, "keys": ["north"]},
            "income": {"class": "sensitive", "bounds": [0, 500000]},
        },
        "privacy": {"epsilon_per_job": 10.0},
    }
    enclave = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    source = tmp_path / "people.csv"
    rows = [f"{i},north,1000" for i in range(1, 101)] + ["999,north,1000000000000"]
    source.write_text("\n".join(["person_id,town,income", *rows]) + "\n")
    spec = DatasetSpec.from_manifest(manifest, name="people")
    record = enclave.import_dataset(source, spec)
    con, stored = _open_encrypted(enclave, record)
    copy = con.execute(
        'SELECT MIN("indomain:clamped:income"), MAX("indomain:clamped:income") FROM ds.people'
    ).fetchone()
    con.close()
    # The clamped copy the run reads instead of clamping each row; not part of the dataset.
    assert stored["clamped"] == '{"income": [0, 500000]}'
    assert copy == (1000, 500000)
    assert sorted(record.column_types) == ["income", "person_id", "town"]

    plan = get_computation("aggregate").check(
        {"sql": "SELECT town, SUM(income) AS s FROM people GROUP BY town"}, spec
    )
    output = enclave.run(plan, job_id="j", policy_version="v")
    (row,) = table_from_ipc(output.result_ipc).to_pylist()
    bounded = 100 * 1000 + 500000  # unclamped: 10**12
    assert abs(row["s"] - bounded) < 5_000_000  # the noise scale is 100,000
    assert stored["value_ranges"] == '{"income": [1000, 1000000000000]}'
    enclave.close()


def test_import_stores_each_keyed_dimensions_codes_and_a_run_groups_by_them(
    tmp_path: Path,
) -> None:
    """The codes are written inside the encrypted file with the keys they code; the content
    hash and the column types stay the dataset's own. A run releases the keyed groups."""
    import json

    from computations import get_computation, table_from_ipc

    manifest = {
        "privacy_unit": "person_id",
        "min_group_size": 3,
        "columns": {
            "person_id": {"class": "identifier"},
            "town": {"class": "quasi_identifier", "dimension": True, "keys": ["north", "south"]},
            "free": {"class": "quasi_identifier", "dimension": True},
        },
        "privacy": {"epsilon_per_job": 10.0},
    }
    enclave = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    source = tmp_path / "people.csv"
    towns = ["north"] * 300 + ["south"] * 100 + ["North"] * 50 + ["east"] * 50
    rows = [f"{i},{town},x" for i, town in enumerate(towns)]
    source.write_text("\n".join(["person_id,town,free", *rows]) + "\n")
    spec = DatasetSpec.from_manifest(manifest, name="people")
    record = enclave.import_dataset(source, spec)
    con, stored = _open_encrypted(enclave, record)
    codes = con.execute(
        'SELECT "indomain:code:town", COUNT(*) FROM ds.people GROUP BY 1 ORDER BY 1'
    ).fetchall()
    con.close()
    assert json.loads(stored["coded"]) == {"town": {"type": "VARCHAR", "keys": ["north", "south"]}}
    assert codes == [(1, 300), (2, 100), (None, 100)]
    assert sorted(record.column_types) == ["free", "person_id", "town"]

    plan = get_computation("aggregate").check(
        {"sql": "SELECT town, COUNT(*) AS n FROM people GROUP BY town"}, spec
    )
    output = enclave.run(plan, job_id="j", policy_version="v")
    released = table_from_ipc(output.result_ipc)
    assert released.column("town").to_pylist() == ["north", "south"]
    assert released.schema.field("town").type == pa.string()
    counts = dict(
        zip(released.column("town").to_pylist(), released.column("n").to_pylist(), strict=True)
    )
    # At epsilon 10 the noise scale is under 1: a count 60 off is not a chance event.
    assert abs(counts["north"] - 300) < 60 and abs(counts["south"] - 100) < 60
    enclave.close()
