"""Facts the enclave measures at import and trusts at run time (inside the encrypted file)."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize(("ids", "unique"), [([1, 2, 3, None], True), ([1, 2, 2, 3], False)])
def test_import_records_whether_each_unit_has_one_row(
    ids: list[int | None], unique: bool, tmp_path: Path
) -> None:
    enclave = Enclave.initialise(keys_dir=tmp_path / "keys", datasets_dir=tmp_path / "datasets")
    source = tmp_path / "people.csv"
    lines = ["person_id,town", *(f"{'' if i is None else i},north" for i in ids)]
    source.write_text("\n".join(lines) + "\n")
    spec = DatasetSpec.from_manifest(MANIFEST, name="people")
    record = enclave.import_dataset(source, spec)
    # Read the meta table back the way the worker does (key unwrapped in a worker).
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
    con.close()
    assert stored["unit_unique"] == ("true" if unique else "false")
