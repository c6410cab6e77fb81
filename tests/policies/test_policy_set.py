"""Loading, validating, versioning and saving policy folders."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

import indomain
from policies import PolicyError, PolicyInvalid, PolicySet

DEMO = Path(indomain.__file__).parent / "demo" / "policies"

SCHEMA = (DEMO / "schema.cedarschema").read_text(encoding="utf-8")

GOOD = """
@id("ok")
permit (principal == Enterprise::"Acme Credit", action == Action::"aggregate", resource);
"""


def demo_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(DEMO, target)
    return target


def invalid(files: dict[str, str]) -> PolicyInvalid:
    with pytest.raises(PolicyInvalid) as info:
        PolicySet.from_files(files)
    assert type(info.value) is PolicyInvalid
    return info.value


# --- the demo folder -------------------------------------------------------------------


def test_demo_folder_loads_and_validates() -> None:
    policy_set = PolicySet.load(DEMO)
    assert policy_set.policy_ids == ("acme-credit-aggregate",)
    assert set(policy_set.files) == {"schema.cedarschema", "acme_credit.cedar"}
    assert policy_set.version.startswith("sha256:")
    assert len(policy_set.version) == len("sha256:") + 64


def test_version_is_sha256_of_rfc8785_json_of_the_files() -> None:
    policy_set = PolicySet.load(DEMO)
    files = {p.name: p.read_bytes().decode("utf-8") for p in DEMO.iterdir() if p.is_file()}
    expected = hashlib.sha256(rfc8785.dumps(files)).hexdigest()
    assert policy_set.version == "sha256:" + expected


def test_version_is_stable_across_loads() -> None:
    assert PolicySet.load(DEMO).version == PolicySet.load(DEMO).version
    assert PolicySet.load(DEMO) == PolicySet.load(DEMO)


@pytest.mark.parametrize("name", ["acme_credit.cedar", "schema.cedarschema"])
def test_version_changes_when_any_byte_changes(tmp_path: Path, name: str) -> None:
    folder = demo_copy(tmp_path)
    before = PolicySet.load(folder).version
    path = folder / name
    path.write_bytes(path.read_bytes() + b"\n")
    assert PolicySet.load(folder).version != before
    # Newline style counts too: the version hashes the bytes on disk.
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert PolicySet.load(folder).version != before


def test_version_changes_when_a_comment_changes(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    before = PolicySet.load(folder).version
    path = folder / "acme_credit.cedar"
    path.write_text(path.read_text(encoding="utf-8").replace("Acme", "ACME", 1), "utf-8")
    assert PolicySet.load(folder).version != before


def test_other_files_are_ignored(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    (folder / "README.md").write_text("notes", encoding="utf-8")
    assert PolicySet.load(folder).version == PolicySet.load(DEMO).version


def test_policy_files_are_read_in_sorted_order(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    (folder / "b.cedar").write_text('@id("b") forbid (principal, action, resource);\n', "utf-8")
    (folder / "a.cedar").write_text('@id("a") forbid (principal, action, resource);\n', "utf-8")
    assert PolicySet.load(folder).policy_ids == ("a", "acme-credit-aggregate", "b")


def test_save_then_load_round_trips_the_version(tmp_path: Path) -> None:
    original = PolicySet.load(DEMO)
    original.save(tmp_path / "new" / "folder")
    again = PolicySet.load(tmp_path / "new" / "folder")
    assert again.version == original.version
    assert again == original


def test_save_replaces_files_and_removes_stale_policies(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    (folder / "old.cedar").write_text('@id("old") forbid (principal, action, resource);', "utf-8")
    (folder / "notes.txt").write_text("keep me", encoding="utf-8")
    replacement = PolicySet.from_files({"schema.cedarschema": SCHEMA, "grants.cedar": GOOD})
    replacement.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        "grants.cedar",
        "notes.txt",
        "schema.cedarschema",
    ]
    assert PolicySet.load(folder).version == replacement.version


def test_save_keeps_exact_bytes(tmp_path: Path) -> None:
    policy_set = PolicySet.from_files({"schema.cedarschema": SCHEMA, "a.cedar": GOOD + "\r\n"})
    policy_set.save(tmp_path)
    assert (tmp_path / "a.cedar").read_bytes() == (GOOD + "\r\n").encode("utf-8")


def test_save_into_an_unwritable_place_is_a_policy_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        PolicySet.load(DEMO).save(blocker / "sub")
    assert type(info.value) is PolicyError


def test_from_files_equals_load() -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in DEMO.iterdir() if p.is_file()}
    assert PolicySet.from_files(files) == PolicySet.load(DEMO)


def test_files_are_read_only() -> None:
    policy_set = PolicySet.load(DEMO)
    with pytest.raises(TypeError):
        policy_set.files["x.cedar"] = GOOD  # type: ignore[index]


def test_pickles_and_hashes() -> None:
    policy_set = PolicySet.load(DEMO)
    assert pickle.loads(pickle.dumps(policy_set)) == policy_set
    assert len({policy_set, PolicySet.load(DEMO)}) == 1


def test_direct_construction_checks_version_and_ids() -> None:
    good = PolicySet.load(DEMO)
    assert PolicySet(good.files, good.version, good.policy_ids) == good
    with pytest.raises(PolicyInvalid, match="does not match"):
        PolicySet(good.files, "sha256:" + "0" * 64, good.policy_ids)
    with pytest.raises(PolicyInvalid, match="do not match"):
        PolicySet(good.files, good.version, ("someone-else",))


# --- refusals --------------------------------------------------------------------------


def test_undeclared_entity_type_is_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "bad.cedar": '@id("lic") permit (principal is Licensee, action, resource);',
        }
    )
    assert any(
        p.startswith('bad.cedar: policy "lic"') and "Licensee" in p for p in error.problems
    ), error.problems


def test_undeclared_attribute_is_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "bad.cedar": '@id("tier") permit (principal, action, resource)\n'
            'when { principal.tier == "gold" };',
        }
    )
    assert any(p.startswith('bad.cedar: policy "tier"') and "tier" in p for p in error.problems), (
        error.problems
    )


def test_undeclared_context_field_and_wrong_type_are_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "bad.cedar": '@id("region") permit (principal, action, resource)\n'
            'when { context.region == "north" };\n'
            '@id("time-as-text") permit (principal, action, resource)\n'
            'when { context.now == "2027-01-01" };\n',
        }
    )
    assert any('policy "region"' in p for p in error.problems), error.problems
    assert any('policy "time-as-text"' in p for p in error.problems), error.problems


def test_unknown_action_is_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "bad.cedar": '@id("x") permit (principal, action == Action::"export_rows", resource);',
        }
    )
    assert any(p.startswith('bad.cedar: policy "x"') for p in error.problems), error.problems


def test_syntax_error_is_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "good.cedar": GOOD,
            "broken.cedar": '@id("b") permit (principal, action, resource) when {',
        }
    )
    assert len(error.problems) == 1
    assert error.problems[0].startswith("broken.cedar: syntax error")


def test_missing_id_is_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "a.cedar": GOOD + "forbid (principal, action, resource);\n",
        }
    )
    assert len(error.problems) == 1
    assert error.problems[0].startswith("a.cedar: policy #2 (forbid, no @id)")


def test_empty_id_is_refused() -> None:
    error = invalid(
        {"schema.cedarschema": SCHEMA, "a.cedar": '@id("") permit (principal, action, resource);'}
    )
    assert error.problems[0].startswith("a.cedar: policy #1")


def test_duplicate_id_is_refused_naming_both_files() -> None:
    error = invalid({"schema.cedarschema": SCHEMA, "a.cedar": GOOD, "b.cedar": GOOD})
    assert error.problems == ('b.cedar: policy "ok": duplicate @id, already used in a.cedar',)


def test_duplicate_id_in_one_file_is_refused() -> None:
    error = invalid({"schema.cedarschema": SCHEMA, "a.cedar": GOOD + GOOD})
    assert error.problems == ('a.cedar: policy "ok": duplicate @id, already used in a.cedar',)


def test_templates_are_refused() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "a.cedar": '@id("t") permit (principal == ?principal, action, resource);',
        }
    )
    assert error.problems[0].startswith('a.cedar: policy "t": templates')


def test_missing_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.cedar").write_text(GOOD, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as info:
        PolicySet.load(tmp_path)
    assert any(p.startswith("schema.cedarschema: missing") for p in info.value.problems)


def test_bad_schema_is_refused() -> None:
    error = invalid({"schema.cedarschema": "entity ;", "a.cedar": GOOD})
    assert error.problems[0].startswith("schema.cedarschema: schema does not parse")


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid) as info:
        PolicySet.load(tmp_path)
    problems = info.value.problems
    assert any(p.startswith("schema.cedarschema: missing") for p in problems)
    assert any(p.startswith("no policies") for p in problems)


def test_schema_without_policies_is_refused(tmp_path: Path) -> None:
    (tmp_path / "schema.cedarschema").write_text(SCHEMA, encoding="utf-8")
    (tmp_path / "only_comments.cedar").write_text("// nothing yet\n", encoding="utf-8")
    with pytest.raises(PolicyInvalid) as info:
        PolicySet.load(tmp_path)
    assert [p.split(":")[0] for p in info.value.problems] == ["no policies"]


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match="not a directory"):
        PolicySet.load(tmp_path / "nope")


def test_unreadable_text_is_refused_with_the_rest_of_the_problems(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    (folder / "latin1.cedar").write_bytes(b"// caf\xe9\n")
    (folder / "dup.cedar").write_text(GOOD.replace('"ok"', '"acme-credit-aggregate"'), "utf-8")
    with pytest.raises(PolicyInvalid) as info:
        PolicySet.load(folder)
    problems = info.value.problems
    assert any(p.startswith("latin1.cedar: not UTF-8") for p in problems), problems
    assert any(p.startswith("dup.cedar: policy") for p in problems), problems


def test_a_directory_named_like_a_policy_is_refused(tmp_path: Path) -> None:
    folder = demo_copy(tmp_path)
    (folder / "sub.cedar").mkdir()
    with pytest.raises(PolicyInvalid, match=r"sub\.cedar: not a regular file"):
        PolicySet.load(folder)


@pytest.mark.parametrize("name", ["../evil.cedar", "a/b.cedar", "notes.txt", ".cedar"])
def test_file_names_that_are_not_plain_policy_names_are_refused(name: str) -> None:
    error = invalid({"schema.cedarschema": SCHEMA, "a.cedar": GOOD, name: GOOD})
    assert error.problems[0].startswith(f"{name}: not a policy file name")


def test_all_problems_are_listed_at_once() -> None:
    error = invalid(
        {
            "schema.cedarschema": SCHEMA,
            "a.cedar": "permit (principal, action, resource);",
            "b.cedar": "permit (",
            "c.cedar": '@id("c") permit (principal is Nobody, action, resource);',
        }
    )
    files = [p.split(":")[0] for p in error.problems]
    assert "a.cedar" in files and "b.cedar" in files and "c.cedar" in files
    text = str(error)
    assert text.startswith(f"policy set is invalid ({len(error.problems)} problems):")
    assert all(p in text for p in error.problems)


def test_non_text_files_are_refused_without_raw_errors() -> None:
    with pytest.raises(PolicyInvalid):
        PolicySet.from_files({"schema.cedarschema": SCHEMA, "a.cedar": b"x"})  # type: ignore[dict-item]
    with pytest.raises(PolicyInvalid):
        PolicySet.from_files({"schema.cedarschema": SCHEMA, "a.cedar": GOOD + "\ud800"})


@given(st.text(max_size=200))
@settings(max_examples=150)
def test_arbitrary_policy_text_is_either_a_set_or_policy_invalid(text: str) -> None:
    try:
        PolicySet.from_files({"schema.cedarschema": SCHEMA, "fuzz.cedar": text})
    except PolicyInvalid:
        pass


@given(st.text(max_size=200))
@settings(max_examples=100)
def test_arbitrary_schema_text_is_policy_invalid_or_a_set(text: str) -> None:
    try:
        PolicySet.from_files({"schema.cedarschema": text, "a.cedar": GOOD})
    except PolicyInvalid:
        pass
