import json
import shutil
from pathlib import Path

import pytest

from app.avro.catalog import LOCK_FILE, CatalogError, SchemaCatalog, compute_lock, write_lock
from app.avro.compat import check_compatibility

REPO = Path(__file__).resolve().parents[3]


def test_lock_file_in_repo_matches_schema_folder() -> None:
    committed = json.loads((REPO / "schemas" / LOCK_FILE).read_text())
    assert compute_lock(REPO / "schemas") == committed


@pytest.mark.parametrize("subject", sorted(SchemaCatalog.load(REPO / "schemas").subjects))
def test_every_subject_honours_its_compatibility_mode(subject: str) -> None:
    found = SchemaCatalog.load(REPO / "schemas").subject(subject)
    schemas = [v.schema for v in found.versions]
    for i in range(1, len(schemas)):
        assert check_compatibility(schemas[i], schemas[:i], found.compatibility) == []


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", target)
    return target


def test_new_version_gets_next_id_and_old_ids_stay(schemas_copy: Path) -> None:
    before = SchemaCatalog.load(schemas_copy)
    v1 = json.loads((schemas_copy / "lifecycle-event" / "v1.avsc").read_text())
    v1["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    (schemas_copy / "lifecycle-event" / "v2.avsc").write_text(json.dumps(v1))
    with pytest.raises(CatalogError, match="no locked id"):
        SchemaCatalog.load(schemas_copy)
    write_lock(schemas_copy)
    after = SchemaCatalog.load(schemas_copy)
    max_before = max(v.schema_id for s in before.subjects.values() for v in s.versions)
    assert after.subject("lifecycle-event").latest.schema_id == max_before + 1
    for name, subject in before.subjects.items():
        for version in subject.versions:
            assert after.subject(name).versions[version.version - 1].schema_id == version.schema_id


def test_editing_a_locked_version_is_refused(schemas_copy: Path) -> None:
    path = schemas_copy / "lifecycle-event" / "v1.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "sneaky", "type": "string", "default": ""})
    path.write_text(json.dumps(schema))
    with pytest.raises(CatalogError, match="changed after its id"):
        compute_lock(schemas_copy)
