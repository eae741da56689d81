"""Avro schema compatibility, by the specification's schema-resolution rules: can a reader
schema read what a writer schema wrote? Modes as in Confluent Schema Registry.

Schemas are parsed JSON as in .avsc files (dict, list or str), not fastavro-parsed objects.
Each is first validated by app.avro.schema (an invalid schema raises SchemaError and is never
judged), which resolves names where they are defined; recursive types are checked without
looping. Where the specification and Apache Avro's Java decoder differ, the stricter verdict
is given (docs/schemas.md lists the differences measured against Java).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.avro.schema import (
    Array,
    AvroType,
    Map,
    Named,
    Primitive,
    SchemaError,
    Union,
    describe,
    validate,
)

__all__ = ["CompatibilityMode", "Incompatibility", "SchemaError", "can_read",
           "check_compatibility"]

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


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Incompatibility] = []
        # (reader, writer) records being compared further up the stack
        self._in_progress: set[tuple[int, int]] = set()

    def check(self, reader: AvroType, writer: AvroType, path: str) -> bool:
        """Whether the reader reads the writer; each reason it cannot goes into `problems`."""

        def mismatch(message: str) -> bool:
            return self._add(path, message, describe(reader), describe(writer))

        if isinstance(writer, Union):
            # whichever branch the writer used, the reader must be able to read it
            ok = True
            if isinstance(reader, Union) and _union_equiv(writer, reader, {}):
                # the same union but for namespaces (Java's decoder then reads branch i as
                # branch i, matching named types by unqualified name as the spec does)
                for index, (r_branch, w_branch) in enumerate(
                        zip(reader.branches, writer.branches, strict=True)):
                    ok = self.check(r_branch, w_branch, f"{path}/{index}") and ok
                return ok
            for branch in writer.branches:
                ok = self.check(reader, branch, path) and ok
            return ok
        if isinstance(reader, Union):
            return self._check_reader_union(reader, writer, path, mismatch)
        r_kind, w_kind = reader.kind, writer.kind
        if isinstance(reader, Primitive) or isinstance(writer, Primitive):
            if r_kind == w_kind or r_kind in PROMOTIONS.get(w_kind, ()):
                return self._check_decimals(reader, writer, mismatch)
            return mismatch(f"reader type {r_kind} cannot read writer type {w_kind}")
        if r_kind != w_kind:
            return mismatch(f"reader type {r_kind} cannot read writer type {w_kind}")
        if isinstance(reader, Array):
            assert isinstance(writer, Array)
            return self.check(reader.items, writer.items, f"{path}/items")
        if isinstance(reader, Map):
            assert isinstance(writer, Map)
            return self.check(reader.values, writer.values, f"{path}/values")
        assert isinstance(reader, Named) and isinstance(writer, Named)
        if not _names_match(reader, writer):
            return mismatch(f"writer {w_kind} name {writer.fullname!r} matches neither the "
                            f"reader name {reader.fullname!r} nor its aliases")
        if r_kind == "fixed":
            if reader.size != writer.size:
                return mismatch(f"fixed size {writer.size} of the writer differs from the "
                                f"reader size {reader.size}")
            return self._check_decimals(reader, writer, mismatch)
        if r_kind == "enum":
            missing = [s for s in writer.symbols if s not in reader.symbols]
            if missing and reader.default is None:
                return mismatch(f"writer enum symbols {missing} are unknown to the reader, "
                                "which has no default symbol")
            return True
        return self._check_record(reader, writer, path)

    def _check_decimals(self, reader: Primitive | Named, writer: Primitive | Named,
                        mismatch: Callable[[str], bool]) -> bool:
        # The spec: two decimals match if their scales and precisions match. (Java's checker
        # and decoder ignore both: a changed scale then reads every value scaled wrongly.)
        r, w = reader.decimal, writer.decimal
        if r is not None and w is not None and r != w:
            return mismatch(f"decimal({w.precision},{w.scale}) of the writer differs from the "
                            f"reader's decimal({r.precision},{r.scale})")
        return True

    def _check_reader_union(self, reader: Union, writer: AvroType, path: str,
                            mismatch: Callable[[str], bool]) -> bool:
        """The branch a decoder resolves the writer's type to, judged as the stricter of the
        specification and Java's decoder do (docs/schemas.md):
        - an unnamed type: the branch of its kind, else the first it promotes to;
        - a named type: the branch of its full name (or with it among its aliases); else, for
          a record, the first record of its unqualified name that reads it (the spec's
          match; Java's decoder would also take a record of another name that fits, the spec
          does not); an enum or fixed must match by full name (Java's decoder does not match
          those by unqualified name, though the spec would)."""
        branches = reader.branches
        if isinstance(writer, Named):
            for index, branch in enumerate(branches):
                if isinstance(branch, Named) and branch.kind == writer.kind and (
                        branch.fullname == writer.fullname or writer.fullname in branch.aliases):
                    return self.check(branch, writer, f"{path}/{index}")
            if writer.kind == "record":
                same_name = [(i, b) for i, b in enumerate(branches)
                             if isinstance(b, Named) and b.kind == "record" and
                             b.name == writer.name]
                if any(self._readable(b, writer, f"{path}/{i}") for i, b in same_name):
                    return True
                if same_name:
                    index, branch = same_name[0]
                    return self.check(branch, writer, f"{path}/{index}")
            return mismatch(f"writer type {describe(writer)} matches no branch of the reader "
                            "union (named types match by full name or alias)")
        for index, branch in enumerate(branches):
            if branch.kind == writer.kind:
                return self.check(branch, writer, f"{path}/{index}")
        for index, branch in enumerate(branches):
            if branch.kind in PROMOTIONS.get(writer.kind, ()):
                return self.check(branch, writer, f"{path}/{index}")
        return mismatch(f"writer type {writer.kind} matches no branch of the reader union")

    def _readable(self, reader: AvroType, writer: AvroType, path: str) -> bool:
        """Whether the reader can read the writer, without recording the problems found."""
        saved = self.problems
        self.problems = []
        try:
            return self.check(reader, writer, path)
        finally:
            self.problems = saved

    def _check_record(self, reader: Named, writer: Named, path: str) -> bool:
        key = (id(reader), id(writer))
        if key in self._in_progress:
            # a recursive type met again: whatever could differ is being checked further up
            return True
        self._in_progress.add(key)
        try:
            ok = True
            writer_fields = {f.name: f for f in writer.fields}
            # Field aliases apply between records of one full name (or by a record alias), as
            # in Java's decoder; records matched by unqualified name alone match fields by name.
            aliased = writer.fullname == reader.fullname or writer.fullname in reader.aliases
            for field in reader.fields:
                field_path = f"{path}/fields/{field.name}"
                names = (field.name, *field.aliases) if aliased else (field.name,)
                matches = [writer_fields[n] for n in dict.fromkeys(names) if n in writer_fields]
                if len(matches) > 1:
                    ok = self._add(field_path,
                                   f"reader field {field.name!r} matches several writer fields "
                                   f"by its name and aliases: {[m.name for m in matches]}",
                                   describe(field.type), None)
                    continue
                if not matches:
                    if not field.has_default:
                        ok = self._add(
                            field_path,
                            f"reader field {field.name!r} is missing in the writer and has "
                            "no default", describe(field.type), None)
                    continue
                ok = self.check(field.type, matches[0].type, f"{field_path}/type") and ok
            return ok
        finally:
            self._in_progress.discard(key)

    def _add(self, path: str, message: str, reader: str | None, writer: str | None) -> bool:
        self.problems.append(Incompatibility(path or "/", message, reader, writer))
        return False


def _union_equiv(writer: AvroType, reader: AvroType,
                 seen: dict[tuple[int, int], bool]) -> bool:
    """Two types alike but for namespaces: same kinds, unqualified names, enum symbols, fixed
    sizes, field names in order, union branches in order (Java's decoder's "union
    equivalence")."""
    if writer.kind != reader.kind:
        return False
    match writer:
        case Primitive():
            return True
        case Array():
            return _union_equiv(writer.items, reader.items, seen)  # type: ignore[union-attr]
        case Map():
            return _union_equiv(writer.values, reader.values, seen)  # type: ignore[union-attr]
        case Union():
            assert isinstance(reader, Union)
            return len(writer.branches) == len(reader.branches) and all(
                _union_equiv(w, r, seen) for w, r in zip(writer.branches, reader.branches,
                                                         strict=True))
    assert isinstance(writer, Named) and isinstance(reader, Named)
    if writer.name != reader.name:
        return False
    if writer.kind == "fixed":
        return writer.size == reader.size
    if writer.kind == "enum":
        return writer.symbols == reader.symbols
    key = (id(writer), id(reader))
    if key not in seen:
        seen[key] = True  # optimistic for recursion, corrected below
        seen[key] = len(writer.fields) == len(reader.fields) and all(
            w.name == r.name and _union_equiv(w.type, r.type, seen)
            for w, r in zip(writer.fields, reader.fields, strict=True))
    return seen[key]


def _names_match(reader: Named, writer: Named) -> bool:
    """The spec: named types match by unqualified name. Reader aliases are full names (an
    alias without a dot is in the namespace of the type it belongs to), so a rename into
    another namespace needs an alias naming the old namespace too."""
    return writer.name == reader.name or writer.fullname in reader.aliases


def _as_type(schema: Any) -> AvroType:
    if isinstance(schema, Primitive | Array | Map | Union | Named):
        return schema
    return validate(schema)


def can_read(reader: Any, writer: Any) -> list[Incompatibility]:
    """The reasons `reader` cannot read data written with `writer`; empty when it can.

    Schemas are parsed JSON as in .avsc files (or types from `app.avro.schema.validate`).
    Raises SchemaError (a ValueError) for a schema the specification does not allow: invalid
    schemas are refused, never judged."""
    reader_type = _as_type(reader)
    writer_type = _as_type(writer)
    checker = _Checker()
    checker.check(reader_type, writer_type, "")
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
