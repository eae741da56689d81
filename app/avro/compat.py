"""Avro schema compatibility, by the specification's schema-resolution rules: can a reader
schema read what a writer schema wrote? Modes as in Confluent Schema Registry.

Schemas are parsed JSON as in .avsc files (dict, list or str), not fastavro-parsed objects.
Named types may be defined once and referenced later by name; names resolve by the spec's
namespace rules, and recursive types are checked without looping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})
_COMPLEX = NAMED | {"array", "map"}
# writer type -> reader types that can read it
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class CompatibilityMode(StrEnum):
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


@dataclass(frozen=True)
class Incompatibility:
    """One reason a reader cannot read a writer's data.

    `path` points into the reader schema ("/fields/amount/type"; "/" is the whole schema;
    a number after a union's path is the branch index). `reader` and `writer` briefly describe
    the two types met there. `version` is the 1-based position in `previous` of the schema
    this is against (set by `check_compatibility`, None from `can_read`)."""

    path: str
    message: str
    reader: str | None = None
    writer: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _namespace_of(fullname: str) -> str | None:
    return fullname.rpartition(".")[0] or None


class _Names:
    """The named types of one schema by full name, so references resolve."""

    def __init__(self, schema: Any):
        self.types: dict[str, dict[str, Any]] = {}
        self._collect(schema, None)

    def _collect(self, schema: Any, namespace: str | None) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            self._collect(kind, namespace)
        elif kind in NAMED:
            full = _fullname(_name_of(schema), schema.get("namespace", namespace))
            if full in self.types:
                return
            self.types[full] = schema
            for field in schema.get("fields", []):
                self._collect(field.get("type"), _namespace_of(full))
        elif kind == "array":
            self._collect(schema.get("items"), namespace)
        elif kind == "map":
            self._collect(schema.get("values"), namespace)

    def resolve(self, schema: Any, namespace: str | None) -> tuple[Any, str | None]:
        """The schema a reference or wrapper stands for, and the namespace in force inside it.

        Name references are looked up; `{"type": X}` wrappers are unwrapped; a primitive with a
        logical type (or other attributes) becomes the bare primitive name. Named types come
        back as their defining dict, with their own namespace."""
        while True:
            if isinstance(schema, str):
                if schema in PRIMITIVES:
                    return schema, namespace
                schema = self._lookup(schema, namespace)
                continue
            if isinstance(schema, list):
                return schema, namespace
            if not isinstance(schema, dict) or "type" not in schema:
                raise ValueError(f"not an Avro schema: {schema!r}")
            kind = schema["type"]
            if not isinstance(kind, str) or kind not in PRIMITIVES | _COMPLEX:
                schema = kind  # {"type": {...}}, {"type": [...]} or {"type": "SomeName"}
                continue
            if kind in PRIMITIVES:
                return kind, namespace
            if kind in NAMED:
                full = _fullname(_name_of(schema), schema.get("namespace", namespace))
                return schema, _namespace_of(full)
            return schema, namespace

    def _lookup(self, name: str, namespace: str | None) -> dict[str, Any]:
        # as in the spec (and Avro's Java parser): the name in the enclosing namespace, then
        # the name as written (a full name, or one in the null namespace)
        found = self.types.get(_fullname(name, namespace)) or self.types.get(name)
        if found is None:
            raise ValueError(f"unknown type name {name!r}")
        return found


def _name_of(schema: dict[str, Any]) -> str:
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"a named type without a name: {schema!r}")
    return name


def _kind(schema: Any) -> str:
    """The kind of a resolved schema: a primitive name, "union", "record", "enum", ..."""
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return "record" if schema["type"] == "error" else schema["type"]
    return schema


class _Checker:
    def __init__(self, reader: Any, writer: Any):
        self.reader_names = _Names(reader)
        self.writer_names = _Names(writer)
        self.problems: list[Incompatibility] = []
        # (reader fullname, writer fullname) of records being compared further up the stack
        self._in_progress: set[tuple[str, str]] = set()

    def describe(self, schema: Any, names: _Names, namespace: str | None) -> str:
        schema, namespace = names.resolve(schema, namespace)
        kind = _kind(schema)
        if kind == "union":
            return "union [" + ", ".join(self.describe(b, names, namespace) for b in schema) + "]"
        if kind in NAMED:
            return f"{kind} {_fullname(_short(schema['name']), namespace)}"
        if kind == "array":
            return "array of " + self.describe(schema["items"], names, namespace)
        if kind == "map":
            return "map of " + self.describe(schema["values"], names, namespace)
        return kind

    def check(self, reader: Any, writer: Any, path: str,
              r_ns: str | None = None, w_ns: str | None = None) -> bool:
        """Whether the reader reads the writer; each reason it cannot goes into `problems`."""
        reader, r_ns = self.reader_names.resolve(reader, r_ns)
        writer, w_ns = self.writer_names.resolve(writer, w_ns)
        r_kind, w_kind = _kind(reader), _kind(writer)

        def mismatch(message: str) -> bool:
            return self._add(path, message, self.describe(reader, self.reader_names, r_ns),
                             self.describe(writer, self.writer_names, w_ns))

        if w_kind == "union":
            # whichever branch the writer used, the reader must be able to read it
            ok = True
            for branch in writer:
                ok = self.check(reader, branch, path, r_ns, w_ns) and ok
            return ok
        if r_kind == "union":
            return self._check_reader_union(reader, writer, path, r_ns, w_ns, mismatch)

        if r_kind in PRIMITIVES or w_kind in PRIMITIVES:
            if r_kind == w_kind or r_kind in PROMOTIONS.get(w_kind, ()):
                return True
            return mismatch(f"reader type {r_kind} cannot read writer type {w_kind}")
        if r_kind != w_kind:
            return mismatch(f"reader type {r_kind} cannot read writer type {w_kind}")

        if r_kind == "array":
            return self.check(reader["items"], writer["items"], f"{path}/items", r_ns, w_ns)
        if r_kind == "map":
            return self.check(reader["values"], writer["values"], f"{path}/values", r_ns, w_ns)
        if not _names_match(reader, writer):
            return mismatch(f"writer {w_kind} name {_short(writer['name'])!r} matches neither "
                            f"the reader name {_short(reader['name'])!r} nor its aliases")
        if r_kind == "fixed":
            if reader["size"] != writer["size"]:
                return mismatch(f"fixed size {writer['size']} of the writer differs from the "
                                f"reader size {reader['size']}")
            return True
        if r_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return mismatch(f"writer enum symbols {missing} are unknown to the reader, "
                                "which has no default symbol")
            return True
        return self._check_record(reader, writer, path, r_ns, w_ns)

    def _check_reader_union(self, reader: list[Any], writer: Any, path: str,
                            r_ns: str | None, w_ns: str | None,
                            mismatch: Callable[[str], bool]) -> bool:
        if any(self._readable(branch, writer, path, r_ns, w_ns) for branch in reader):
            return True
        # explain through the branch the writer was evidently meant to go to, if there is one
        w_resolved, _ = self.writer_names.resolve(writer, w_ns)
        for index, branch in enumerate(reader):
            r_resolved, _ = self.reader_names.resolve(branch, r_ns)
            if _kind(r_resolved) != _kind(w_resolved):
                continue
            if _kind(r_resolved) in NAMED and not _names_match(r_resolved, w_resolved):
                continue
            return self.check(branch, writer, f"{path}/{index}", r_ns, w_ns)
        return mismatch(f"writer type {_kind(w_resolved)} matches no branch of the reader union")

    def _readable(self, reader: Any, writer: Any, path: str, r_ns: str | None,
                  w_ns: str | None) -> bool:
        """Whether the reader can read the writer, without recording the problems found."""
        saved = self.problems
        self.problems = []
        try:
            return self.check(reader, writer, path, r_ns, w_ns)
        finally:
            self.problems = saved

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str,
                      r_ns: str | None, w_ns: str | None) -> bool:
        key = (_fullname(_short(reader["name"]), r_ns), _fullname(_short(writer["name"]), w_ns))
        if key in self._in_progress:
            # a recursive type met again: whatever could differ is being checked further up
            return True
        self._in_progress.add(key)
        try:
            ok = True
            writer_fields = {f["name"]: f for f in writer.get("fields", [])}
            for field in reader.get("fields", []):
                names = [field["name"], *field.get("aliases", [])]
                match = next((writer_fields[n] for n in names if n in writer_fields), None)
                field_path = f"{path}/fields/{field['name']}"
                if match is None:
                    if "default" not in field:
                        ok = self._add(
                            field_path,
                            f"reader field {field['name']!r} is missing in the writer and has "
                            "no default",
                            self.describe(field["type"], self.reader_names, r_ns), None)
                    continue
                ok = self.check(field["type"], match["type"], f"{field_path}/type",
                                r_ns, w_ns) and ok
            return ok
        finally:
            self._in_progress.discard(key)

    def _add(self, path: str, message: str, reader: str | None, writer: str | None) -> bool:
        self.problems.append(Incompatibility(path or "/", message, reader, writer))
        return False


def _names_match(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Named types match by unqualified name, or by the writer's name among reader aliases."""
    writer_name = _short(writer["name"])
    return writer_name == _short(reader["name"]) or \
        writer_name in {_short(a) for a in reader.get("aliases", [])}


def can_read(reader: Any, writer: Any) -> list[Incompatibility]:
    """The reasons `reader` cannot read data written with `writer`; empty when it can.

    Raises ValueError for a reference to an undefined name or a malformed schema."""
    checker = _Checker(reader, writer)
    checker.check(reader, writer, "")
    return checker.problems


def check_compatibility(new: Any, previous: Sequence[Any],
                        mode: CompatibilityMode | str) -> list[Incompatibility]:
    """Check a proposed schema against a subject's earlier versions (`previous`, oldest first).

    BACKWARD: the new schema reads the latest version's data; FORWARD: the latest version reads
    the new schema's data; FULL: both. The *_TRANSITIVE modes check every version, not only
    the latest. NONE never finds a problem. Each problem names its version (1-based position in
    `previous`) in its message and `version`. An unknown mode raises ValueError."""
    mode = CompatibilityMode(mode.upper() if isinstance(mode, str) else mode)
    if mode is CompatibilityMode.NONE or not previous:
        return []
    against = list(enumerate(previous, start=1))
    if not mode.value.endswith("_TRANSITIVE"):
        against = against[-1:]
    base = mode.value.removesuffix("_TRANSITIVE")
    problems: list[Incompatibility] = []
    for number, old in against:
        if base in ("BACKWARD", "FULL"):
            problems += [_against(p, number, f"new schema cannot read version {number}")
                         for p in can_read(new, old)]
        if base in ("FORWARD", "FULL"):
            problems += [_against(p, number, f"version {number} cannot read the new schema")
                         for p in can_read(old, new)]
    return problems


def _against(problem: Incompatibility, version: int, prefix: str) -> Incompatibility:
    return Incompatibility(problem.path, f"{prefix}: {problem.message}", problem.reader,
                           problem.writer, version)
