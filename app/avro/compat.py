"""Avro schema compatibility, by the specification's schema-resolution rules: can a reader
schema read what a writer schema wrote? Modes as in Confluent Schema Registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
NAMED = {"record", "error", "enum", "fixed"}
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
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
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class _Names:
    """Named types of one schema by full name, so references resolve."""

    def __init__(self, schema: Any):
        self.types: dict[str, dict[str, Any]] = {}
        self._collect(schema, None)

    @staticmethod
    def fullname(name: str, namespace: str | None) -> str:
        if "." in name or not namespace:
            return name
        return f"{namespace}.{name}"

    def _collect(self, schema: Any, namespace: str | None) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if kind in NAMED:
            full = self.fullname(schema["name"], schema.get("namespace", namespace))
            if full in self.types:
                return
            self.types[full] = schema
            inner_ns = full.rpartition(".")[0] or None
            for field in schema.get("fields", []):
                self._collect(field["type"], inner_ns)
        elif kind == "array":
            self._collect(schema["items"], namespace)
        elif kind == "map":
            self._collect(schema["values"], namespace)
        elif isinstance(kind, (dict, list)):
            self._collect(kind, namespace)

    def resolve(self, schema: Any, namespace: str | None) -> tuple[Any, str | None]:
        """A schema with references and wrappers replaced by what they stand for (a primitive
        with a logical type is its primitive), and the namespace in force inside it."""
        while True:
            if isinstance(schema, str):
                if schema in PRIMITIVES:
                    return schema, namespace
                schema = self._lookup(schema, namespace)
                continue
            if isinstance(schema, list):
                return schema, namespace
            kind = schema.get("type")
            if not isinstance(kind, str) or kind not in PRIMITIVES | NAMED | {"array", "map"}:
                schema = kind  # {"type": {...}}, {"type": [...]} or {"type": "SomeName"}
                continue
            if kind in PRIMITIVES:
                return kind, namespace
            if kind in NAMED:
                full = self.fullname(schema["name"], schema.get("namespace", namespace))
                return schema, full.rpartition(".")[0] or None
            return schema, namespace

    def _lookup(self, name: str, namespace: str | None) -> dict[str, Any]:
        found = self.types.get(self.fullname(name, namespace)) or self.types.get(name)
        if found is None:
            # an unqualified reference may name a type defined in another namespace
            matches = [v for k, v in self.types.items() if k.rpartition(".")[2] == name]
            if not matches:
                raise ValueError(f"unknown type name {name!r}")
            found = matches[0]
        return found


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return schema["type"] if isinstance(schema["type"], str) else "union"
    return schema


def _short(name: str) -> str:
    return name.rpartition(".")[2]


class _Checker:
    def __init__(self, reader: Any, writer: Any):
        self.reader_names = _Names(reader)
        self.writer_names = _Names(writer)
        self.problems: list[Incompatibility] = []
        self._in_progress: set[tuple[str, str]] = set()

    def check(self, reader: Any, writer: Any, path: str,
              r_ns: str | None = None, w_ns: str | None = None) -> bool:
        reader, r_ns = self.reader_names.resolve(reader, r_ns)
        writer, w_ns = self.writer_names.resolve(writer, w_ns)
        r_kind, w_kind = _type_name(reader), _type_name(writer)

        if w_kind == "union":
            ok = True
            for i, branch in enumerate(writer):
                if not self._readable(reader, branch, f"{path}/{i}", r_ns, w_ns):
                    self._add(path, f"reader cannot read writer union branch "
                                    f"{_type_name(self.writer_names.resolve(branch, w_ns)[0])}")
                    ok = False
            return ok
        if r_kind == "union":
            if any(self._readable(branch, writer, path, r_ns, w_ns) for branch in reader):
                return True
            return self._add(path, f"writer type {w_kind} matches no branch of the reader union")

        if r_kind in PRIMITIVES or w_kind in PRIMITIVES:
            if r_kind == w_kind or r_kind in PROMOTIONS.get(w_kind, set()):
                return True
            return self._add(path, f"reader type {r_kind} cannot read writer type {w_kind}")
        if r_kind != w_kind and not ({r_kind, w_kind} <= {"record", "error"}):
            return self._add(path, f"reader type {r_kind} cannot read writer type {w_kind}")

        if r_kind == "array":
            return self.check(reader["items"], writer["items"], f"{path}/items", r_ns, w_ns)
        if r_kind == "map":
            return self.check(reader["values"], writer["values"], f"{path}/values", r_ns, w_ns)
        if not self._names_match(reader, writer):
            return self._add(path, f"name {writer['name']!r} does not match reader "
                                   f"{reader['name']!r} or its aliases")
        if r_kind == "fixed":
            if reader["size"] != writer["size"]:
                return self._add(path, f"fixed size {writer['size']} differs from reader "
                                       f"size {reader['size']}")
            return True
        if r_kind == "enum":
            return self._check_enum(reader, writer, path)
        return self._check_record(reader, writer, path, r_ns, w_ns)

    def _readable(self, reader: Any, writer: Any, path: str, r_ns: str | None,
                  w_ns: str | None) -> bool:
        """Whether the reader can read the writer, without recording the problems found."""
        saved = list(self.problems)
        ok = self.check(reader, writer, path, r_ns, w_ns)
        self.problems = saved
        return ok

    def _names_match(self, reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        aliases = {_short(a) for a in reader.get("aliases", [])}
        return _short(reader["name"]) == _short(writer["name"]) or \
            _short(writer["name"]) in aliases

    def _check_enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> bool:
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            return self._add(path, f"enum symbols {missing} are unknown to the reader "
                                   "(and it has no default)")
        return True

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str,
                      r_ns: str | None, w_ns: str | None) -> bool:
        key = (_short(reader["name"]), _short(writer["name"]))
        if key in self._in_progress:  # recursive type: assume compatible on the way back
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
                        ok = self._add(field_path, "field is missing in the writer and has no "
                                                   "default in the reader")
                    continue
                ok = self.check(field["type"], match["type"], f"{field_path}/type",
                                r_ns, w_ns) and ok
            return ok
        finally:
            self._in_progress.discard(key)

    def _add(self, path: str, message: str) -> bool:
        self.problems.append(Incompatibility(path or "/", message))
        return False


def can_read(reader: Any, writer: Any) -> list[Incompatibility]:
    """The reasons `reader` cannot read data written with `writer`; empty when it can."""
    checker = _Checker(reader, writer)
    checker.check(reader, writer, "")
    return checker.problems


def check_compatibility(new: Any, previous: Sequence[Any],
                        mode: CompatibilityMode | str) -> list[Incompatibility]:
    """Check a proposed schema against a subject's earlier versions (oldest first)."""
    mode = CompatibilityMode(mode)
    if mode is CompatibilityMode.NONE or not previous:
        return []
    transitive = mode.value.endswith("_TRANSITIVE")
    against = list(enumerate(previous, start=1))
    if not transitive:
        against = against[-1:]
    base = mode.value.removesuffix("_TRANSITIVE")
    problems: list[Incompatibility] = []
    for number, old in against:
        if base in ("BACKWARD", "FULL"):
            problems += [Incompatibility(p.path, f"new schema cannot read version {number}: "
                                                 f"{p.message}") for p in can_read(new, old)]
        if base in ("FORWARD", "FULL"):
            problems += [Incompatibility(p.path, f"version {number} cannot read the new "
                                                 f"schema: {p.message}")
                         for p in can_read(old, new)]
    return problems
