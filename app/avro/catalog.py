"""The schemas/ folder: subjects, their versions, compatibility modes and locked schema ids."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from app.avro.schema import SchemaError, validate

LOCK_FILE = "schemas.lock.json"
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


class CatalogError(Exception):
    """The schemas/ folder and its lock file disagree, or a schema file is invalid."""


def fingerprint(schema: Any) -> str:
    canonical = to_parsing_canonical_form(parse_schema(schema, _write_hint=False))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class SchemaVersion:
    subject: str
    version: int
    schema_id: int
    schema: Any  # the .avsc JSON as written
    parsed: Any = field(compare=False, repr=False)


@dataclass
class Subject:
    name: str
    compatibility: str
    versions: list[SchemaVersion]
    # Logical topics (topics/) whose record values use this subject: the first names the
    # registry subject under the "topic" naming strategy (app/avro/codec.py).
    topics: list[str] = field(default_factory=list)

    @property
    def latest(self) -> SchemaVersion:
        return self.versions[-1]


def read_schema_file(path: Path) -> Any:
    """The schema in an .avsc file, checked against the specification (app.avro.schema) and
    by fastavro, which encodes with it; CatalogError, one line naming the place, if invalid."""
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CatalogError(f"{path}: not a valid Avro schema: {exc}") from exc
    try:
        validate(schema)
    except SchemaError as exc:
        raise CatalogError(f"{path}: not a valid Avro schema: {exc}") from None
    try:
        parse_schema(schema, _write_hint=False)
    except Exception as exc:  # fastavro's parse errors share no base class with ValueError
        raise CatalogError(f"{path}: not a valid Avro schema: {exc}") from exc
    return schema


def _config(schemas_dir: Path) -> dict[str, Any]:
    config_path = schemas_dir / "subjects.toml"
    return tomllib.loads(config_path.read_text()) if config_path.exists() else {}


def _scan(schemas_dir: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, Any]]]]:
    config = _config(schemas_dir)
    modes = {name: str(entry.get("compatibility", "BACKWARD")) for name, entry in config.items()}
    found: dict[str, list[tuple[int, Any]]] = {}
    for subject in sorted(modes):
        versions = []
        for path in (schemas_dir / subject).glob("v*.avsc"):
            match = _VERSION_FILE.match(path.name)
            if match:
                versions.append((int(match.group(1)), read_schema_file(path)))
        versions.sort(key=lambda v: v[0])
        numbers = [n for n, _ in versions]
        if numbers != list(range(1, len(numbers) + 1)):
            raise CatalogError(f"subject {subject}: versions must be v1..vN, found {numbers}")
        found[subject] = versions
    return modes, found


def compute_lock(schemas_dir: Path) -> dict[str, Any]:
    """The lock file's content after adding ids for new versions. Ids already given never
    change: they are written into records, so reusing one would misdecode old data."""
    lock_path = schemas_dir / LOCK_FILE
    lock = json.loads(lock_path.read_text()) if lock_path.exists() else {"schemas": []}
    entries = {(e["subject"], e["version"]): e for e in lock["schemas"]}
    next_id = max((e["id"] for e in lock["schemas"]), default=0) + 1
    _, found = _scan(schemas_dir)
    for subject, versions in found.items():
        for number, schema in versions:
            fp = fingerprint(schema)
            entry = entries.get((subject, number))
            if entry is None:
                entries[(subject, number)] = {
                    "subject": subject, "version": number, "id": next_id, "fingerprint": fp
                }
                next_id += 1
            elif entry["fingerprint"] != fp:
                raise CatalogError(
                    f"{subject} v{number} changed after its id {entry['id']} was locked; "
                    "add a new version instead of editing a released one"
                )
    return {"schemas": sorted(entries.values(), key=lambda e: e["id"])}


def write_lock(schemas_dir: Path) -> dict[str, Any]:
    lock = compute_lock(schemas_dir)
    (schemas_dir / LOCK_FILE).write_text(json.dumps(lock, indent=2) + "\n")
    return lock


class SchemaCatalog:
    def __init__(self, subjects: dict[str, Subject]):
        self.subjects = subjects
        self._by_id = {v.schema_id: v for s in subjects.values() for v in s.versions}

    @classmethod
    def load(cls, schemas_dir: Path) -> SchemaCatalog:
        modes, found = _scan(schemas_dir)
        topics = {name: [str(t) for t in entry.get("topics", [])]
                  for name, entry in _config(schemas_dir).items()}
        lock_path = schemas_dir / LOCK_FILE
        if not lock_path.exists():
            raise CatalogError(f"{lock_path} is missing; run `recovery schemas lock`")
        lock = json.loads(lock_path.read_text())
        locked = {(e["subject"], e["version"]): e for e in lock["schemas"]}
        subjects: dict[str, Subject] = {}
        for name, versions in found.items():
            loaded = []
            for number, schema in versions:
                entry = locked.get((name, number))
                if entry is None:
                    raise CatalogError(
                        f"{name} v{number} has no locked id; run `recovery schemas lock`"
                    )
                if entry["fingerprint"] != fingerprint(schema):
                    raise CatalogError(f"{name} v{number} differs from its locked fingerprint")
                parsed = parse_schema(schema)
                loaded.append(SchemaVersion(name, number, entry["id"], schema, parsed))
            subjects[name] = Subject(name, modes[name], loaded, topics.get(name, []))
        return cls(subjects)

    def subject(self, name: str) -> Subject:
        try:
            return self.subjects[name]
        except KeyError:
            raise CatalogError(f"unknown subject {name!r}") from None

    def by_id(self, schema_id: int) -> SchemaVersion | None:
        return self._by_id.get(schema_id)
