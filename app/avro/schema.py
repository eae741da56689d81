"""Avro schemas checked against the specification (1.12) and parsed into a graph of types.

`validate` takes a schema as written in an .avsc file (parsed JSON: dict, list or str) and
returns its root `AvroType`, or raises `SchemaError` with one plain line naming what is wrong
and where ("/fields/2/type: ..."). Named types are resolved once, where they are defined, so a
reference is the very object of the definition, with the namespace it was defined in.

Refused, as the specification says (some of these Java's parser lets through, see
docs/schemas.md): undefined names and names used before their definition; a full name defined
twice; primitive names used as type names in any namespace; invalid names, namespaces, aliases
and enum symbols; duplicate field names and enum symbols; unions directly inside unions and
unions with two branches of one unnamed type or one full name; defaults that are not values
of their field's type (a union default may match any branch); enum defaults that are not one
of its symbols; `{"type": {...}}` wrappers. An invalid logical type is not an error: it is
ignored and the underlying type is used, as the specification asks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED_KINDS = {"record": "record", "error": "record", "enum": "enum", "fixed": "fixed"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ORDERS = frozenset({"ascending", "descending", "ignore"})
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})


class SchemaError(ValueError):
    """A schema the specification does not allow; the message is one line with its path."""


@dataclass(frozen=True)
class Decimal:
    precision: int
    scale: int


@dataclass(eq=False)
class Primitive:
    kind: str
    decimal: Decimal | None = None  # a valid decimal logical type on bytes

    def describe(self) -> str:
        return self.kind


@dataclass(eq=False)
class Array:
    items: AvroType
    kind: str = "array"


@dataclass(eq=False)
class Map:
    values: AvroType
    kind: str = "map"


@dataclass(eq=False)
class Union:
    branches: list[AvroType]
    kind: str = "union"


@dataclass(eq=False)
class Field:
    name: str
    type: AvroType
    aliases: tuple[str, ...] = ()
    has_default: bool = False
    default: Any = None


@dataclass(eq=False)
class Named:
    """A record (or error), enum or fixed. `aliases` are full names."""

    kind: str
    fullname: str
    aliases: frozenset[str] = frozenset()
    fields: list[Field] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    default: str | None = None  # an enum's default symbol
    size: int = 0
    decimal: Decimal | None = None  # a valid decimal logical type on fixed

    @property
    def name(self) -> str:
        return self.fullname.rpartition(".")[2]

    @property
    def namespace(self) -> str | None:
        return self.fullname.rpartition(".")[0] or None


AvroType = Primitive | Array | Map | Union | Named


def validate(schema: Any) -> AvroType:
    """The root type of a schema as written (parsed JSON); SchemaError when it is invalid."""
    return _Parser().parse(schema, None, "")


def describe(node: AvroType) -> str:
    """A short description: "int", "record com.a.R", "array of string", "union [null, int]"."""
    return _describe(node, 2)


def _describe(node: AvroType, depth: int) -> str:
    match node:
        case Named():
            return f"{node.kind} {node.fullname}"
        case Array():
            return "array of " + (_describe(node.items, depth - 1) if depth else "...")
        case Map():
            return "map of " + (_describe(node.values, depth - 1) if depth else "...")
        case Union():
            inner = ", ".join(_describe(b, depth - 1) if depth else "..." for b in node.branches)
            return f"union [{inner}]"
    return node.kind


def _fail(path: str, message: str) -> SchemaError:
    return SchemaError(f"{path or '/'}: {message}")


def _check_fullname(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, f"{what} must be a non-empty string, not {value!r}")
    for part in value.split("."):
        if not _NAME.match(part):
            raise _fail(path, f"{what} {value!r} is not a valid Avro name (each dot-separated "
                              "part starts with a letter or _, then letters, digits or _)")
    return value


def _check_simple_name(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(path, f"{what} {value!r} is not a valid Avro name (a letter or _, then "
                          "letters, digits or _)")
    return value


def _decimal(schema: dict[str, Any], fixed_size: int | None) -> Decimal | None:
    """A valid decimal logical type, else None (the spec: invalid ones are ignored)."""
    if schema.get("logicalType") != "decimal":
        return None
    precision, scale = schema.get("precision"), schema.get("scale", 0)
    if not _is_int(precision) or not _is_int(scale) or precision <= 0 or \
            not 0 <= scale <= precision:
        return None
    if fixed_size is not None and \
            precision > math.floor(math.log10(2 ** (8 * fixed_size - 1) - 1)):
        return None
    return Decimal(precision, scale)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Parser:
    def __init__(self) -> None:
        self.names: dict[str, Named] = {}
        self.open: set[str] = set()  # records whose fields are being read

    def parse(self, schema: Any, namespace: str | None, path: str) -> AvroType:
        if isinstance(schema, str):
            return self.reference(schema, namespace, path)
        if isinstance(schema, list):
            return self.union(schema, namespace, path)
        if not isinstance(schema, dict):
            raise _fail(path, f"a schema is a JSON string, object or array, not {schema!r}")
        if "type" not in schema:
            raise _fail(path, "a schema object needs a \"type\"")
        kind = schema["type"]
        if not isinstance(kind, str):
            raise _fail(path, "\"type\" must be a primitive type name or one of record, enum, "
                              f"fixed, array, map (a nested schema goes in a field's type), "
                              f"not {_short_json(kind)}")
        if kind in PRIMITIVES:
            return Primitive(kind, _decimal(schema, None) if kind == "bytes" else None)
        if kind in _NAMED_KINDS:
            return self.named(_NAMED_KINDS[kind], schema, namespace, path)
        if kind == "array":
            if "items" not in schema:
                raise _fail(path, "an array needs \"items\"")
            return Array(self.parse(schema["items"], namespace, f"{path}/items"))
        if kind == "map":
            if "values" not in schema:
                raise _fail(path, "a map needs \"values\"")
            return Map(self.parse(schema["values"], namespace, f"{path}/values"))
        raise _fail(path, f"\"type\": {kind!r} is not a primitive type name nor one of record, "
                          "enum, fixed, array, map (a defined name is referred to by itself, "
                          "as a string, not inside {\"type\": ...})")

    def reference(self, name: str, namespace: str | None, path: str) -> AvroType:
        if name in PRIMITIVES:
            return Primitive(name)
        if name in _NAMED_KINDS or name in ("array", "map"):
            raise _fail(path, f"{name!r} is not a type by itself: write {{\"type\": {name!r}, "
                              "...}")
        # The name in the enclosing namespace (the spec), then as written: a full name, or one
        # of the null namespace whose definition is complete (Java's parser does the same; the
        # spec offers no way to refer to the null namespace from inside another).
        full = name if "." in name or not namespace else f"{namespace}.{name}"
        found = self.names.get(full)
        if found is None and name not in self.open:
            found = self.names.get(name)
        if found is None:
            raise _fail(path, f"unknown type name {name!r} (a name must be defined, earlier in "
                              "the schema, before it is used)")
        return found

    def union(self, branches: list[Any], namespace: str | None, path: str) -> Union:
        parsed: list[AvroType] = []
        seen: dict[str, int] = {}
        for index, branch in enumerate(branches):
            branch_path = f"{path}/{index}"
            if isinstance(branch, list):
                raise _fail(branch_path, "a union may not contain a union directly")
            node = self.parse(branch, namespace, branch_path)
            if isinstance(node, Union):  # e.g. a named reference cannot be a union; defensive
                raise _fail(branch_path, "a union may not contain a union directly")
            key = node.fullname if isinstance(node, Named) else node.kind
            if key in seen:
                raise _fail(branch_path, f"the union has two branches of type {key} "
                                         f"(branches {seen[key]} and {index})")
            seen[key] = index
            parsed.append(node)
        return Union(parsed)

    def named(self, kind: str, schema: dict[str, Any], enclosing: str | None,
              path: str) -> Named:
        raw = schema.get("name")
        _check_fullname(raw, f"{path}/name", "name")
        if "." in raw:
            namespace: str | None = raw.rpartition(".")[0]
            fullname = raw
        else:
            namespace = schema.get("namespace", enclosing)
            if namespace is not None and not isinstance(namespace, str):
                raise _fail(f"{path}/namespace", f"namespace must be a string, not {namespace!r}")
            if namespace:
                _check_fullname(namespace, f"{path}/namespace", "namespace")
            namespace = namespace or None
            fullname = f"{namespace}.{raw}" if namespace else raw
        short = fullname.rpartition(".")[2]
        if short in PRIMITIVES:
            raise _fail(f"{path}/name", f"{short!r} is a primitive type name and cannot name a "
                                        "type, in any namespace")
        if fullname in self.names:
            raise _fail(f"{path}/name", f"{fullname} is defined twice (a full name may be "
                                        "defined once; refer to it by name afterwards)")
        aliases = schema.get("aliases", [])
        if not isinstance(aliases, list):
            raise _fail(f"{path}/aliases", "aliases must be a list of names")
        full_aliases = set()
        for index, alias in enumerate(aliases):
            _check_fullname(alias, f"{path}/aliases/{index}", "alias")
            full_aliases.add(alias if "." in alias or not namespace else f"{namespace}.{alias}")
        node = Named(kind, fullname, frozenset(full_aliases))
        if kind == "fixed":
            size = schema.get("size")
            if not _is_int(size) or size < 0:
                raise _fail(f"{path}/size", f"a fixed size must be a non-negative integer, not "
                                            f"{size!r}")
            node.size = size
            node.decimal = _decimal(schema, size)
            self.names[fullname] = node
        elif kind == "enum":
            self.enum(node, schema, path)
            self.names[fullname] = node
        else:
            # defined before its fields are read, so it may refer to itself
            self.names[fullname] = node
            self.open.add(fullname)
            self.record(node, schema, namespace, path)
            self.open.discard(fullname)
        return node

    def enum(self, node: Named, schema: dict[str, Any], path: str) -> None:
        symbols = schema.get("symbols")
        if not isinstance(symbols, list):
            raise _fail(f"{path}/symbols", "an enum needs \"symbols\", a list of names")
        for index, symbol in enumerate(symbols):
            _check_simple_name(symbol, f"{path}/symbols/{index}", "enum symbol")
            if symbol in symbols[:index]:
                raise _fail(f"{path}/symbols/{index}", f"enum symbol {symbol!r} appears twice")
        node.symbols = list(symbols)
        if "default" in schema:
            default = schema["default"]
            if not isinstance(default, str) or default not in symbols:
                raise _fail(f"{path}/default", f"the enum default {default!r} is not one of its "
                                               f"symbols {symbols}")
            node.default = default

    def record(self, node: Named, schema: dict[str, Any], namespace: str | None,
               path: str) -> None:
        fields = schema.get("fields")
        if not isinstance(fields, list):
            raise _fail(f"{path}/fields", "a record needs \"fields\", a list")
        names: set[str] = set()
        for index, raw in enumerate(fields):
            field_path = f"{path}/fields/{index}"
            if not isinstance(raw, dict):
                raise _fail(field_path, f"a field is a JSON object, not {raw!r}")
            name = _check_simple_name(raw.get("name"), f"{field_path}/name", "field name")
            if name in names:
                raise _fail(f"{field_path}/name", f"field {name!r} appears twice in "
                                                  f"{node.fullname}")
            names.add(name)
            if "type" not in raw:
                raise _fail(field_path, f"field {name!r} needs a \"type\"")
            field_type = self.parse(raw["type"], namespace, f"{field_path}/type")
            aliases = raw.get("aliases", [])
            if not isinstance(aliases, list):
                raise _fail(f"{field_path}/aliases", "aliases must be a list of names")
            for alias_index, alias in enumerate(aliases):
                _check_simple_name(alias, f"{field_path}/aliases/{alias_index}", "field alias")
            if "order" in raw and raw["order"] not in _ORDERS:
                raise _fail(f"{field_path}/order", f"order must be ascending, descending or "
                                                   f"ignore, not {raw['order']!r}")
            has_default = "default" in raw
            if has_default and not _valid_default(field_type, raw["default"]):
                raise _fail(f"{field_path}/default",
                            f"default value {_short_json(raw['default'])} of field {name!r} is "
                            f"not a valid {describe(field_type)}")
            node.fields.append(Field(name, field_type, tuple(aliases), has_default,
                                     raw.get("default")))


def _valid_default(node: AvroType, value: Any) -> bool:
    match node:
        case Primitive(kind="null"):
            return value is None
        case Primitive(kind="boolean"):
            return isinstance(value, bool)
        case Primitive(kind="int"):
            return _is_int(value) and _INT_RANGE[0] <= value <= _INT_RANGE[1]
        case Primitive(kind="long"):
            return _is_int(value) and _LONG_RANGE[0] <= value <= _LONG_RANGE[1]
        case Primitive(kind="float" | "double"):
            return (isinstance(value, int | float) and not isinstance(value, bool)) or \
                (isinstance(value, str) and value in _FLOAT_WORDS)
        case Primitive(kind="bytes"):
            return isinstance(value, str) and all(ord(c) < 256 for c in value)
        case Primitive(kind="string"):
            return isinstance(value, str)
        case Array():
            return isinstance(value, list) and all(_valid_default(node.items, v) for v in value)
        case Map():
            return isinstance(value, dict) and \
                all(_valid_default(node.values, v) for v in value.values())
        case Union():
            # the spec (1.12): a union default matches one of the union's branches
            return any(_valid_default(branch, value) for branch in node.branches)
        case Named(kind="enum"):
            return isinstance(value, str) and value in node.symbols
        case Named(kind="fixed"):
            return isinstance(value, str) and len(value) == node.size and \
                all(ord(c) < 256 for c in value)
        case Named():
            return isinstance(value, dict) and all(
                _valid_default(f.type, value[f.name]) if f.name in value else f.has_default
                for f in node.fields)
    return False


def _short_json(value: Any, limit: int = 60) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
