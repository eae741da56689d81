"""Reader/writer schema pairs for the compatibility checker's differential test against Java
Avro (tests/integration/test_avro_oracle.py): a hand table of edge cases, and pairs generated
from a seed (random writer schemas and mutated copies as readers, valid or not).

Deterministic: the same seed gives the same pairs, so a disagreement can be looked at again.
"""

from __future__ import annotations

import copy
import random
from typing import Any

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
PROMOTABLE = {"int": ["long", "float", "double"], "long": ["float", "double"],
              "float": ["double"], "string": ["bytes"], "bytes": ["string"]}
DEFAULTS = {"null": None, "boolean": True, "int": 7, "long": 7, "float": 1.5, "double": 2.5,
            "bytes": "\u00ff", "string": "s"}
WRONG_DEFAULTS = {"null": 0, "boolean": "yes", "int": 1.5, "long": "7", "float": "x",
                  "double": True, "bytes": "\u0100", "string": 3}
NAMESPACES = ["a", "a.b", "c", "d.e"]


def rec(name: str, *fields: dict, **extra: Any) -> dict:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict:
    return {"name": name, "type": type_, **extra}


def enum(name: str, symbols: list[str], **extra: Any) -> dict:
    return {"type": "enum", "name": name, "symbols": symbols, **extra}


def fixed(name: str, size: int, **extra: Any) -> dict:
    return {"type": "fixed", "name": name, "size": size, **extra}


def dec(precision: int, scale: int, base: str = "bytes") -> dict:
    return {"type": base, "logicalType": "decimal", "precision": precision, "scale": scale}


# (name, reader, writer): edge cases by class; the test checks each against Java and, where
# the two disagree, that the disagreement is one docs/schemas.md lists.
HAND_PAIRS: list[tuple[str, Any, Any]] = [
    # promotions and their reverse
    *[(f"promote {w}->{r}", r, w) for w, rs in PROMOTABLE.items() for r in rs],
    *[(f"narrow {r}->{w}", w, r) for w, rs in PROMOTABLE.items() for r in rs if w != "bytes"],
    ("int to boolean", "boolean", "int"),
    ("null to string", "string", "null"),
    # namespaces and aliases
    ("record same short name other namespace",
     rec("a.R", fld("x", "int")), rec("b.R", fld("x", "int"))),
    ("record renamed without alias", rec("a.New", fld("x", "int")),
     rec("a.Old", fld("x", "int"))),
    ("record renamed with short alias", rec("a.New", fld("x", "int"), aliases=["Old"]),
     rec("a.Old", fld("x", "int"))),
    ("record renamed into another namespace, short alias",
     rec("b.New", fld("x", "int"), aliases=["Old"]), rec("a.Old", fld("x", "int"))),
    ("record renamed into another namespace, full alias",
     rec("b.New", fld("x", "int"), aliases=["a.Old"]), rec("a.Old", fld("x", "int"))),
    ("enum renamed into another namespace, short alias",
     enum("b.New", ["A"], aliases=["Old"]), enum("a.Old", ["A"])),
    ("enum renamed into another namespace, full alias",
     enum("b.New", ["A"], aliases=["a.Old"]), enum("a.Old", ["A"])),
    ("fixed renamed, alias in null namespace",
     fixed("New", 4, aliases=["Old"]), fixed("Old", 4)),
    ("fixed alias with a namespace the writer lacks",
     fixed("New", 4, aliases=["ns.Old"]), fixed("Old", 4)),
    ("reference from another namespace resolves where defined",
     rec("o.Outer", fld("h", rec("x.Holder", fld("k", enum("Kind", ["A", "B"])),
                                  fld("k2", "Kind"))),
         fld("again", "x.Holder")),
     rec("o.Outer", fld("h", rec("x.Holder", fld("k", enum("Kind", ["A"])),
                                  fld("k2", "Kind"))),
         fld("again", "x.Holder"))),
    ("reference from another namespace, narrowed inside",
     rec("o.Outer", fld("h", rec("x.Holder", fld("k", enum("Kind", ["A"])),
                                  fld("k2", "Kind"))),
         fld("again", "x.Holder")),
     rec("o.Outer", fld("h", rec("x.Holder", fld("k", enum("Kind", ["A", "B"])),
                                  fld("k2", "Kind"))),
         fld("again", "x.Holder"))),
    ("null-namespace type referenced from a namespace",
     rec("R", fld("e", enum("E", ["A"])), fld("s", rec("x.S", fld("c", "E")))),
     rec("R", fld("e", enum("E", ["A"])), fld("s", rec("x.S", fld("c", "E"))))),
    # fields: renames, aliases, defaults
    ("field renamed with alias", rec("R", fld("b", "int", aliases=["a"])),
     rec("R", fld("a", "int"))),
    ("field renamed without alias", rec("R", fld("b", "int")), rec("R", fld("a", "int"))),
    ("field name and alias both match",
     rec("R", fld("a", "int", aliases=["b"])), rec("R", fld("a", "int"), fld("b", "int"))),
    ("field alias matches, name does not",
     rec("R", fld("c", "int", aliases=["b"])), rec("R", fld("a", "int"), fld("b", "int"))),
    ("added field with default", rec("R", fld("a", "int"), fld("b", "string", default="")),
     rec("R", fld("a", "int"))),
    ("added field without default", rec("R", fld("a", "int"), fld("b", "string")),
     rec("R", fld("a", "int"))),
    ("removed field", rec("R", fld("a", "int")), rec("R", fld("a", "int"), fld("b", "string"))),
    ("int default 1.5", rec("R", fld("a", "int", default=1.5)), rec("R")),
    ("string default 3", rec("R", fld("a", "string", default=3)), rec("R")),
    ("union default second branch", rec("R", fld("a", ["null", "string"], default="x")), rec("R")),
    ("union default matches no branch", rec("R", fld("a", ["null", "string"], default=1)),
     rec("R")),
    ("bytes default beyond latin-1", rec("R", fld("a", "bytes", default="\u0100")), rec("R")),
    ("fixed default of the wrong length", rec("R", fld("a", fixed("F", 2), default="abc")),
     rec("R")),
    ("record default missing a field",
     rec("R", fld("a", rec("S", fld("x", "int")), default={})), rec("R")),
    # enums
    ("enum symbol added", enum("E", ["A", "B"]), enum("E", ["A"])),
    ("enum symbol removed", enum("E", ["A"]), enum("E", ["A", "B"])),
    ("enum symbol removed, reader default", enum("E", ["A"], default="A"), enum("E", ["A", "B"])),
    ("enum default not a symbol", enum("E", ["A"], default="Z"), enum("E", ["A", "B"])),
    ("enum default not a string", enum("E", ["A"], default=1), enum("E", ["A", "B"])),
    ("enum field default not a symbol", rec("R", fld("e", enum("E", ["A"]), default="B")),
     rec("R")),
    ("enum symbols reordered", enum("E", ["B", "A"]), enum("E", ["A", "B"])),
    # fixed
    ("fixed size changed", fixed("F", 8), fixed("F", 4)),
    ("fixed same", fixed("F", 4), fixed("F", 4)),
    # unions
    ("union widened", ["null", "string", "long"], ["null", "string"]),
    ("union narrowed", ["null", "string"], ["null", "string", "long"]),
    ("union reordered", ["string", "null"], ["null", "string"]),
    ("plain to union", ["null", "string"], "string"),
    ("union to plain", "string", ["null", "string"]),
    ("union promotes", ["null", "double"], "int"),
    ("union to promoted plain", "double", ["int", "long", "float"]),
    ("duplicate union branch", ["int", "int"], "int"),
    ("nested union", ["null", ["int", "string"]], "int"),
    ("union of two arrays",
     [{"type": "array", "items": "int"}, {"type": "array", "items": "string"}],
     {"type": "array", "items": "int"}),
    ("union record other name fits",
     ["null", rec("b.Other", fld("x", "int"))], rec("a.R", fld("x", "int"))),
    ("union record same short name",
     ["null", rec("b.R", fld("x", "int"))], rec("a.R", fld("x", "int"))),
    ("union enum same short name",
     ["null", enum("b.E", ["A"])], enum("a.E", ["A"])),
    ("union fixed same short name",
     ["null", fixed("b.F", 2)], fixed("a.F", 2)),
    ("union enum by alias",
     ["null", enum("b.New", ["A"], aliases=["a.E"])], enum("a.E", ["A"])),
    ("union full-name branch fails, other fits",
     [rec("a.R", fld("x", "int"), fld("y", "int")), rec("b.R", fld("x", "int"))],
     rec("a.R", fld("x", "int"))),
    ("union array items narrowed", ["null", {"type": "array", "items": "int"}],
     {"type": "array", "items": "long"}),
    # recursion
    ("recursive list widened",
     rec("x.Node", fld("v", "long"), fld("next", ["null", "Node"], default=None)),
     rec("x.Node", fld("v", "int"), fld("next", ["null", "Node"], default=None))),
    ("recursive list narrowed",
     rec("x.Node", fld("v", "int"), fld("next", ["null", "Node"], default=None)),
     rec("x.Node", fld("v", "long"), fld("next", ["null", "Node"], default=None))),
    ("mutual recursion",
     rec("T", fld("leaf", "long"), fld("kids", {"type": "array", "items": rec(
         "Edge", fld("w", "int"), fld("to", "T"))})),
     rec("T", fld("leaf", "int"), fld("kids", {"type": "array", "items": rec(
         "Edge", fld("w", "int"), fld("to", "T"))}))),
    # Java's checker memoizes a "compatible" reached while a.Node was in progress under a
    # union branch that then failed, and reuses it for the field i
    ("provisional verdict reused",
     rec("r.Top",
         fld("u", [rec("a.Node", fld("child", rec("a.Inner", fld("back", ["null", "a.Node"]))),
                       fld("x", "int")),
                   rec("b.Node", fld("child", "a.Inner"), fld("x", "string"))]),
         fld("i", "a.Inner")),
     rec("r.Top",
         fld("u", rec("w.Node", fld("child", rec("w.Inner", fld("back", ["null", "w.Node"]))),
                      fld("x", "string"))),
         fld("i", "w.Inner"))),
    # decimals
    ("decimal same", dec(5, 2), dec(5, 2)),
    ("decimal precision widened", dec(9, 2), dec(5, 2)),
    ("decimal scale changed", dec(5, 3), dec(5, 2)),
    ("decimal to bytes", "bytes", dec(5, 2)),
    ("bytes to decimal", dec(5, 2), "bytes"),
    ("decimal invalid scale (ignored)", dec(2, 5), dec(5, 2)),
    ("decimal on fixed", {**fixed("F", 4), "logicalType": "decimal", "precision": 9, "scale": 2},
     {**fixed("F", 4), "logicalType": "decimal", "precision": 9, "scale": 2}),
    ("decimal on fixed scale changed",
     {**fixed("F", 4), "logicalType": "decimal", "precision": 9, "scale": 3},
     {**fixed("F", 4), "logicalType": "decimal", "precision": 9, "scale": 2}),
    # invalid schemas
    ("undefined name", rec("R", fld("a", "Missing")), rec("R", fld("a", "int"))),
    ("forward reference", rec("R", fld("a", ["null", "E"]), fld("b", enum("E", ["A"]))),
     rec("R", fld("a", ["null", "E"]), fld("b", enum("E", ["A"])))),
    ("name defined twice", rec("R", fld("a", enum("E", ["A"])), fld("b", enum("E", ["A"]))),
     rec("R", fld("a", "int"))),
    ("primitive name in a namespace", fixed("a.int", 2), fixed("a.int", 2)),
    ("wrapped type", rec("R", fld("a", {"type": {"type": "array", "items": "int"}})),
     rec("R", fld("a", {"type": "array", "items": "int"}))),
    ("duplicate field", rec("R", fld("a", "int"), fld("a", "int")), rec("R", fld("a", "int"))),
]


class _Generator:
    """Random writer schemas: every kind of type, namespaces, references to types defined
    earlier (short or full), decimals, defaults."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.count = 0
        self.defined: list[str] = []  # full names that may be referred to
        self.open: list[str] = []  # records being defined: only a union with null refers back

    def schema(self) -> dict:
        self.count, self.defined, self.open = 0, [], []
        namespace = self.rng.choice([None, None, *NAMESPACES])
        top = self.named("record", namespace, 3, name="Top")
        return top

    def named(self, kind: str, namespace: str | None, depth: int, name: str | None = None) -> dict:
        rng = self.rng
        name = name or f"T{self.count}"
        self.count += 1
        schema: dict[str, Any] = {"type": kind, "name": name}
        how = rng.choice(["inherit", "inherit", "namespace", "dotted"])
        if how == "namespace":
            namespace = rng.choice(NAMESPACES)
            schema["namespace"] = namespace
        elif how == "dotted":
            namespace = rng.choice(NAMESPACES)
            schema["name"] = f"{namespace}.{name}"
        full = f"{namespace}.{name}" if namespace else name
        if kind == "enum":
            schema["symbols"] = rng.sample("ABCD", rng.randint(1, 4))
            if rng.random() < 0.4:
                schema["default"] = rng.choice(schema["symbols"])
            self.defined.append(full)
        elif kind == "fixed":
            schema["size"] = rng.randint(1, 6)
            if rng.random() < 0.3:
                schema.update(logicalType="decimal", precision=rng.randint(1, 3), scale=0)
            self.defined.append(full)
        else:
            self.open.append(full)
            schema["fields"] = []
            for i in range(rng.randint(1, 4)):
                field: dict[str, Any] = {"name": f"f{i}", "type": self.type(depth - 1, namespace)}
                default = default_for(field["type"])
                if default is not _NONE and rng.random() < 0.5:
                    field["default"] = default
                schema["fields"].append(field)
            self.open.remove(full)
            self.defined.append(full)
        return schema

    def reference(self, namespace: str | None) -> str | None:
        usable = [n for n in self.defined if "." in n or not namespace]
        if not usable:
            return None
        full = self.rng.choice(usable)
        space, _, short = full.rpartition(".")
        return short if space == (namespace or "") and self.rng.random() < 0.5 else full

    def type(self, depth: int, namespace: str | None) -> Any:
        rng = self.rng
        kinds = ["primitive", "primitive", "logical", "reference"]
        if depth > 0:
            kinds += ["array", "map", "union", "union", "record", "enum", "fixed"]
        kind = rng.choice(kinds)
        if kind == "reference":
            ref = self.reference(namespace)
            if ref is not None:
                return ref
            kind = "primitive"
        if kind == "primitive":
            return rng.choice(PRIMITIVES)
        if kind == "logical":
            return rng.choice([{"type": "int", "logicalType": "date"},
                               {"type": "long", "logicalType": "timestamp-millis"},
                               {"type": "string", "logicalType": "uuid"},
                               dec(rng.randint(3, 8), rng.randint(0, 2))])
        if kind == "array":
            return {"type": "array", "items": self.type(depth - 1, namespace)}
        if kind == "map":
            return {"type": "map", "values": self.type(depth - 1, namespace)}
        if kind == "union":
            branches: list[Any] = rng.sample(PRIMITIVES, rng.randint(1, 3))
            if rng.random() < 0.5:
                branches.append(self.named(rng.choice(["record", "enum", "fixed"]),
                                           namespace, depth - 1))
            elif self.open and rng.random() < 0.3:
                # recursion, ended by the null branch: data stays finite
                back = rng.choice([n for n in self.open if "." in n or not namespace] or [""])
                if back:
                    branches = [b for b in branches if b != "null"] + ["null", back]
            if rng.random() < 0.2:
                branches.append({"type": "array", "items": rng.choice(PRIMITIVES)})
            rng.shuffle(branches)
            return branches
        return self.named(kind, namespace, depth)


_NONE = object()


def default_for(schema: Any) -> Any:
    """A valid default for simple types, else _NONE."""
    if isinstance(schema, str):
        return DEFAULTS.get(schema, _NONE)
    if isinstance(schema, list):
        return default_for(schema[0]) if schema else _NONE
    kind = schema.get("type")
    if kind in DEFAULTS:
        return DEFAULTS[kind] if kind != "bytes" else "\u0001"
    if kind == "array":
        return []
    if kind == "map":
        return {}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "fixed":
        return "\u0000" * schema["size"]
    return _NONE


class _Mutator:
    """A changed copy of a writer schema as a reader: most changes keep it valid and some keep
    it readable; a few make it invalid (the checker must refuse those, not judge them)."""

    def __init__(self, rng: random.Random, rate: float):
        self.rng = rng
        self.rate = rate

    def hit(self, factor: float = 1.0) -> bool:
        return self.rng.random() < self.rate * factor

    def change(self, schema: Any) -> Any:
        rng = self.rng
        if isinstance(schema, str):
            if schema in PRIMITIVES and self.hit():
                return rng.choice([*PROMOTABLE.get(schema, []), *PRIMITIVES])
            if schema not in PRIMITIVES and self.hit(0.1):
                return schema.rpartition(".")[2] if "." in schema else f"a.{schema}"
            return schema
        if isinstance(schema, list):
            branches = [self.change(b) for b in schema]
            unused = [p for p in PRIMITIVES if p not in branches]
            if unused and self.hit():
                branches.insert(rng.randint(0, len(branches)), rng.choice(unused))
            plain = [b for b in branches if isinstance(b, str) and b in PRIMITIVES]
            if len(plain) > 1 and self.hit():
                branches.remove(rng.choice(plain))
            if self.hit(0.3):
                rng.shuffle(branches)
            if self.hit(0.05):
                branches.append(rng.choice([b for b in branches if isinstance(b, str)] or
                                           ["int"]))  # duplicate: invalid
            if self.hit(0.03):
                branches.append(["null", "int"])  # nested union: invalid
            return branches
        schema = dict(schema)
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            self.rename(schema)
        if kind == "array":
            schema["items"] = self.change(schema["items"])
        elif kind == "map":
            schema["values"] = self.change(schema["values"])
        elif kind == "enum":
            if self.hit(2):
                symbols = rng.sample("ABCD", rng.randint(1, 4))
                schema["symbols"] = symbols
            schema.pop("default", None)
            if self.hit(2):
                schema["default"] = rng.choice(schema["symbols"])
            elif self.hit(0.1):
                schema["default"] = rng.choice(["Z", 1])  # invalid
        elif kind == "fixed":
            if self.hit():
                schema["size"] += rng.choice([-1, 1]) if schema["size"] > 1 else 1
            if self.hit() and "logicalType" in schema:
                schema["precision"] = rng.randint(1, 3)
        elif kind == "bytes" and schema.get("logicalType") == "decimal":
            if self.hit():
                schema["precision"] += rng.choice([-1, 1, 2])
            if self.hit():
                schema["scale"] = rng.randint(0, 3)
        elif kind == "record":
            schema["fields"] = self.fields(schema["fields"])
        return schema

    def rename(self, schema: dict) -> None:
        rng = self.rng
        if not self.hit(0.4):
            return
        old = schema["name"]
        namespace = schema.get("namespace")
        old_space, _, short = old.rpartition(".")
        old_full = old if "." in old else (f"{namespace}.{old}" if namespace else old)
        how = rng.choice(["new-name", "new-name-alias", "new-name-full-alias",
                          "namespace", "namespace-alias", "namespace-full-alias"])
        if how.startswith("new-name"):
            schema["name"] = (f"{old_space}." if old_space else "") + f"{short}x"
        else:
            space = rng.choice(NAMESPACES)
            schema["name"] = f"{space}.{short}"
        if how.endswith("full-alias"):
            schema["aliases"] = [old_full]
        elif how.endswith("alias"):
            schema["aliases"] = [short]

    def fields(self, fields: list[dict]) -> list[dict]:
        rng = self.rng
        out = []
        names = [f["name"] for f in fields]
        for f in fields:
            action = rng.choices(["keep", "drop", "rename", "alias", "collide"],
                                 [8, 1, 1, 1, 0.3])[0]
            if not self.hit(2) or action == "keep":
                f = {**f, "type": self.change(f["type"])}
                action = "keep"
            if action == "drop":
                continue
            f = dict(f)
            if action in ("rename", "alias"):
                f["name"] = f"{f['name']}r"
                if action == "alias":
                    f["aliases"] = [f["name"][:-1]]
            elif action == "collide" and len(names) > 1:
                other = rng.choice([n for n in names if n != f["name"]])
                f["aliases"] = [other]
            if "default" in f and self.hit(0.5):
                del f["default"]
            elif "default" not in f and self.hit(0.5):
                default = default_for(f["type"])
                if default is not _NONE:
                    f["default"] = default
            if self.hit(0.05) and isinstance(f["type"], str) and f["type"] in WRONG_DEFAULTS:
                f["default"] = WRONG_DEFAULTS[f["type"]]  # invalid
            out.append(f)
        for i in range(rng.randint(0, 2) if self.hit() else 0):
            out.append(rng.choice([
                {"name": f"added{i}", "type": "int", "default": 0},
                {"name": f"added{i}", "type": ["null", "string"], "default": None},
                {"name": f"added{i}", "type": "long"},
                {"name": f"added{i}", "type": ["string", "null"], "default": None},  # second
                {"name": f"added{i}", "type": "string", "default": 5},  # invalid
            ]))
        return out


def generated_pairs(count: int, seed: int = 14) -> list[tuple[str, Any, Any]]:
    """`count` (name, reader, writer) pairs: a random writer and a mutated reader; every
    fifth pair swaps them so both directions are met."""
    rng = random.Random(seed)
    generator = _Generator(rng)
    pairs = []
    for number in range(count):
        writer = generator.schema()
        mutator = _Mutator(rng, rate=rng.choice([0.1, 0.25, 0.5]))
        reader = mutator.change(copy.deepcopy(writer))
        if number % 5 == 4:
            reader, writer = writer, reader
        pairs.append((f"gen-{seed}-{number}", reader, writer))
    return pairs
