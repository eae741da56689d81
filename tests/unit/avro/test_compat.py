import io
import itertools
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.avro.compat import CompatibilityMode, Incompatibility, can_read, check_compatibility


def record(*fields: dict, name: str = "R", **extra) -> dict:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, type_, **extra) -> dict:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, name: str = "E", **extra) -> dict:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


V1 = record(field("id", "string"))


def ok(new, old, mode) -> bool:
    return check_compatibility(new, [old], mode) == []


# --- fields added and removed -------------------------------------------------------------


def test_field_added_with_default_is_backward_and_forward() -> None:
    v2 = record(field("id", "string"), field("n", "int", default=0))
    assert ok(v2, V1, "BACKWARD") and ok(v2, V1, "FORWARD") and ok(v2, V1, "FULL")


def test_field_added_without_default_breaks_backward_only() -> None:
    v2 = record(field("id", "string"), field("n", "int"))
    problems = check_compatibility(v2, [V1], "BACKWARD")
    assert len(problems) == 1
    assert problems[0].path == "/fields/n" and "no default" in problems[0].message
    assert ok(v2, V1, "FORWARD")
    [full] = check_compatibility(v2, [V1], "FULL")
    assert full.path == "/fields/n" and full.message.startswith("new schema cannot read")


def test_null_default_counts_as_a_default() -> None:
    v2 = record(field("id", "string"), field("note", ["null", "string"], default=None))
    assert ok(v2, V1, "FULL")


def test_field_removed_with_and_without_default() -> None:
    old_with_default = record(field("id", "string"), field("n", "int", default=1))
    old_required = record(field("id", "string"), field("n", "int"))
    assert ok(V1, old_with_default, "FORWARD")  # old readers use their default
    [problem] = check_compatibility(V1, [old_required], "FORWARD")
    assert problem.path == "/fields/n" and "version 1 cannot read" in problem.message
    assert ok(V1, old_required, "BACKWARD")  # the new reader ignores the extra field


# --- primitives and promotions ------------------------------------------------------------


@pytest.mark.parametrize(("writer", "reader"),
                         [("int", "long"), ("int", "float"), ("int", "double"),
                          ("long", "float"), ("long", "double"), ("float", "double"),
                          ("string", "bytes"), ("bytes", "string")])
def test_promotions(writer: str, reader: str) -> None:
    assert can_read(reader, writer) == []


@pytest.mark.parametrize(("writer", "reader"),
                         [("long", "int"), ("double", "float"), ("float", "long"),
                          ("double", "long"), ("string", "int"), ("boolean", "int"),
                          ("null", "string"), ("int", "boolean"), ("bytes", "long")])
def test_narrowing_and_unrelated_primitives_are_refused(writer: str, reader: str) -> None:
    [problem] = can_read(reader, writer)
    assert problem.path == "/" and problem.reader == reader and problem.writer == writer


def test_int_to_long_field_is_backward_not_forward() -> None:
    old = record(field("n", "int"))
    new = record(field("n", "long"))
    assert ok(new, old, "BACKWARD")
    [problem] = check_compatibility(new, [old], "FORWARD")
    assert problem.path == "/fields/n/type" and "long" in problem.message
    assert (problem.reader, problem.writer) == ("int", "long")


def test_float_to_double_field_is_backward_not_forward() -> None:
    old, new = record(field("x", "float")), record(field("x", "double"))
    assert ok(new, old, "BACKWARD")
    assert not ok(new, old, "FORWARD")


def test_string_and_bytes_read_each_other() -> None:
    as_string, as_bytes = record(field("b", "string")), record(field("b", "bytes"))
    assert ok(as_bytes, as_string, "FULL")
    assert ok(as_string, as_bytes, "FULL")


def test_logical_types_are_judged_by_their_underlying_type() -> None:
    date = {"type": "int", "logicalType": "date"}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert ok(record(field("d", date)), record(field("d", "int")), "FULL")
    assert ok(record(field("d", millis)), record(field("d", date)), "BACKWARD")  # int -> long
    assert not ok(record(field("d", date)), record(field("d", millis)), "BACKWARD")
    dec = {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2}
    wider = {**dec, "precision": 9}
    assert ok(record(field("m", wider)), record(field("m", dec)), "FULL")


def test_record_and_non_record_do_not_mix() -> None:
    [problem] = can_read(record(field("id", "string")), "string")
    assert "record" in problem.message and problem.writer == "string"
    assert can_read({"type": "array", "items": "int"}, {"type": "map", "values": "int"}) != []


# --- enums and fixed ----------------------------------------------------------------------


def test_enum_symbol_added() -> None:
    old, new = record(field("e", enum("A", "B"))), record(field("e", enum("A", "B", "C")))
    assert ok(new, old, "BACKWARD")
    [problem] = check_compatibility(new, [old], "FORWARD")
    assert problem.path == "/fields/e/type" and "['C']" in problem.message
    old_with_default = record(field("e", enum("A", "B", default="A")))
    assert ok(new, old_with_default, "FORWARD")  # old readers map C to their default


def test_enum_symbol_removed() -> None:
    old, new = record(field("e", enum("A", "B", "C"))), record(field("e", enum("A", "B")))
    problems = check_compatibility(new, [old], "BACKWARD")
    assert len(problems) == 1 and "['C']" in problems[0].message
    assert ok(new, old, "FORWARD")
    new_with_default = record(field("e", enum("A", "B", default="B")))
    assert ok(new_with_default, old, "FULL")


def test_enum_and_fixed_renamed_need_an_alias() -> None:
    assert can_read(enum("A", name="New"), enum("A", name="Old")) != []
    assert can_read(enum("A", name="New", aliases=["Old"]), enum("A", name="Old")) == []
    fixed_old = {"type": "fixed", "name": "Old", "size": 4}
    fixed_new = {"type": "fixed", "name": "New", "size": 4}
    [problem] = can_read(fixed_new, fixed_old)
    assert "'Old'" in problem.message and "'New'" in problem.message
    assert can_read({**fixed_new, "aliases": ["ns.Old"]}, fixed_old) == []


def test_fixed_size_change() -> None:
    old = record(field("f", {"type": "fixed", "name": "F", "size": 16}))
    new = record(field("f", {"type": "fixed", "name": "F", "size": 32}))
    [problem] = check_compatibility(new, [old], "BACKWARD")
    assert "size" in problem.message and problem.path == "/fields/f/type"
    assert not ok(new, old, "FORWARD")
    assert ok(old, old, "FULL")


# --- unions -------------------------------------------------------------------------------


def test_union_widened_and_narrowed() -> None:
    narrow = record(field("v", ["null", "string"]))
    wide = record(field("v", ["null", "string", "long"]))
    assert ok(wide, narrow, "BACKWARD")  # the new union reads every old branch
    [problem] = check_compatibility(wide, [narrow], "FORWARD")  # an old reader meets a long
    assert problem.path == "/fields/v/type" and problem.writer == "long"
    assert not ok(narrow, wide, "BACKWARD")


def test_union_branch_order_does_not_matter() -> None:
    assert ok(record(field("v", ["string", "null"])), record(field("v", ["null", "string"])),
              "FULL")


def test_union_and_plain_type() -> None:
    plain = record(field("v", "string"))
    union = record(field("v", ["null", "string"]))
    assert ok(union, plain, "BACKWARD")  # a union reader reads a plain string
    [problem] = check_compatibility(union, [plain], "FORWARD")  # not the null branch, though
    assert problem.writer == "null" and problem.reader == "string"
    assert can_read(["null", "int"], "long") != []
    assert can_read(["null", "double"], "int") == []  # by promotion to one of the branches


def test_writer_union_is_readable_when_every_branch_is() -> None:
    assert can_read("long", ["int", "long"]) == []
    assert can_read("double", ["int", "long", "float"]) == []
    assert len(can_read("long", ["int", "string", "boolean"])) == 2


def test_problem_inside_an_optional_record_is_located() -> None:
    inner_v1 = record(field("x", "int"), name="Inner")
    inner_v2 = record(field("x", "int"), field("y", "string"), name="Inner")
    old = record(field("inner", ["null", inner_v1], default=None))
    new = record(field("inner", ["null", inner_v2], default=None))
    [problem] = check_compatibility(new, [old], "BACKWARD")
    assert problem.path == "/fields/inner/type/1/fields/y"


# --- renames and aliases ------------------------------------------------------------------


def test_field_renamed_with_alias() -> None:
    old = record(field("name", "string"))
    renamed = record(field("full_name", "string", aliases=["name"]))
    assert ok(renamed, old, "BACKWARD")
    bare_rename = record(field("full_name", "string"))
    [problem] = check_compatibility(bare_rename, [old], "BACKWARD")
    assert problem.path == "/fields/full_name"


def test_record_renamed_with_alias() -> None:
    old = record(field("id", "string"), name="Old")
    [problem] = check_compatibility(record(field("id", "string"), name="New"), [old], "BACKWARD")
    assert problem.path == "/" and "'Old'" in problem.message
    assert ok(record(field("id", "string"), name="New", aliases=["Old"]), old, "BACKWARD")
    # the alias belongs to the reader: the old schema cannot read data named New
    assert not ok(record(field("id", "string"), name="New", aliases=["Old"]), old, "FORWARD")


def test_records_match_by_unqualified_name() -> None:
    a = record(field("id", "string"), name="com.a.Event")
    b = record(field("id", "string"), name="Event", namespace="com.b")
    assert ok(a, b, "FULL")


# --- nesting, names, recursion ------------------------------------------------------------


def test_nested_records_arrays_and_maps() -> None:
    inner_v1 = record(field("x", "int"), name="Inner")
    inner_v2 = record(field("x", "long"), field("y", "string"), name="Inner")
    old = record(field("items", {"type": "array", "items": inner_v1}),
                 field("tags", {"type": "map", "values": "int"}))
    new = record(field("items", {"type": "array", "items": inner_v2}),
                 field("tags", {"type": "map", "values": "long"}))
    problems = check_compatibility(new, [old], "BACKWARD")
    assert [p.path for p in problems] == ["/fields/items/type/items/fields/y"]
    forward = check_compatibility(new, [old], "FORWARD")
    assert [p.path for p in forward] == ["/fields/items/type/items/fields/x/type",
                                         "/fields/tags/type/values"]


def test_wrapped_and_spelled_out_types() -> None:
    spelled = record(field("xs", {"type": {"type": "array", "items": {"type": "int"}}}),
                     field("s", {"type": "string"}))
    plain = record(field("xs", {"type": "array", "items": "int"}), field("s", "string"))
    assert ok(spelled, plain, "FULL")


def test_recursive_schema_and_named_references() -> None:
    node = {"type": "record", "name": "Node", "namespace": "x.y", "fields": [
        field("value", "int"), field("next", ["null", "Node"], default=None)]}
    node_v2 = {"type": "record", "name": "Node", "namespace": "x.y", "fields": [
        field("value", "long"), field("next", ["null", "x.y.Node"], default=None),
        field("label", "string", default="")]}
    assert ok(node_v2, node, "BACKWARD")
    assert not ok(node_v2, node, "FORWARD")
    assert ok(node, node, "FULL")
    pair = record(field("a", {"type": "enum", "name": "Color", "symbols": ["RED"]}),
                  field("b", "Color"))
    pair_v2 = record(field("a", {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}),
                     field("b", "Color"))
    assert ok(pair_v2, pair, "BACKWARD")
    forward = check_compatibility(pair_v2, [pair], "FORWARD")
    assert [p.path for p in forward] == ["/fields/a/type", "/fields/b/type"]


def test_mutually_recursive_records() -> None:
    def tree(leaf_type: str) -> dict:
        return record(
            field("leaf", leaf_type),
            field("children", {"type": "array", "items": {
                "type": "record", "name": "Edge", "fields": [
                    field("weight", "int"), field("to", "Tree")]}}),
            name="Tree")

    assert ok(tree("int"), tree("int"), "FULL")
    assert ok(tree("long"), tree("int"), "BACKWARD")
    [problem] = check_compatibility(tree("long"), [tree("int")], "FORWARD")
    assert problem.path == "/fields/leaf/type"


def test_unqualified_reference_is_relative_to_the_enclosing_namespace() -> None:
    def schema(y_symbols: list[str]) -> dict:
        return {"type": "record", "name": "Outer", "namespace": "com.a", "fields": [
            field("x", {"type": "enum", "name": "Kind", "symbols": ["A"]}),  # com.a.Kind
            field("y", {"type": "enum", "name": "Kind", "namespace": "com.b",
                        "symbols": y_symbols}),
            field("z", {"type": "record", "name": "com.c.Holder", "fields": [
                field("k", "Kind"),  # relative to com.c: com.b.Kind is not it
                field("k2", "com.b.Kind")]}),
            field("short", "Kind"),  # com.a.Kind
            field("full", "com.b.Kind"),
        ]}

    # com.c.Kind does not exist
    with pytest.raises(ValueError, match="unknown type name"):
        can_read(schema(["B"]), schema(["B"]))


def test_namespaced_references_pick_the_right_type() -> None:
    def schema(y_symbols: list[str]) -> dict:
        return {"type": "record", "name": "Outer", "namespace": "com.a", "fields": [
            field("x", {"type": "enum", "name": "Kind", "symbols": ["A"]}),  # com.a.Kind
            field("y", {"type": "enum", "name": "Kind", "namespace": "com.b",
                        "symbols": y_symbols}),
            field("z", {"type": "record", "name": "Holder", "namespace": "com.b", "fields": [
                field("k", "Kind")]}),  # relative to com.b: com.b.Kind
            field("short", "Kind"),  # com.a.Kind
            field("full", "com.b.Kind"),
        ]}

    old, new = schema(["B"]), schema(["B", "C"])
    assert ok(new, old, "BACKWARD")
    forward = check_compatibility(new, [old], "FORWARD")
    assert [p.path for p in forward] == ["/fields/y/type", "/fields/z/type/fields/k/type",
                                         "/fields/full/type"]
    assert forward[0].writer == "enum com.b.Kind"


def test_unknown_type_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown type name"):
        can_read(record(field("a", "Missing")), V1)


# --- modes and versions -------------------------------------------------------------------


def test_transitive_checks_every_version() -> None:
    v1 = record(field("id", "string"))
    v2 = record(field("id", "string"), field("n", "int", default=0))
    v3 = record(field("id", "string"), field("n", "int"))  # reads v2 (has n), not v1
    assert ok(v3, v2, "BACKWARD")
    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    [problem] = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert "version 1" in problem.message and problem.version == 1


def test_forward_transitive_checks_every_version() -> None:
    v1 = record(field("id", "string"), field("n", "int"))
    v2 = record(field("id", "string"), field("n", "int", default=0))
    v3 = record(field("id", "string"))  # v2 readers default n; v1 readers cannot
    assert check_compatibility(v3, [v1, v2], "FORWARD") == []
    [problem] = check_compatibility(v3, [v1, v2], "FORWARD_TRANSITIVE")
    assert problem.version == 1 and problem.message.startswith("version 1 cannot read")
    assert check_compatibility(v3, [v1, v2], "FULL") == []
    assert len(check_compatibility(v3, [v1, v2], "FULL_TRANSITIVE")) == 1


def test_full_transitive_and_none() -> None:
    v1 = record(field("id", "string"))
    v2 = record(field("id", "long"))
    assert check_compatibility(v2, [v1], CompatibilityMode.NONE) == []
    assert check_compatibility(v2, [v1], "NONE") == []
    problems = check_compatibility(v2, [v1, v1], "FULL_TRANSITIVE")
    assert len(problems) == 4 and sorted(p.version for p in problems) == [1, 1, 2, 2]
    assert len(check_compatibility(v2, [v1, v1], "FULL")) == 2
    assert check_compatibility(v2, [], "FULL") == []


def test_full_needs_both_directions() -> None:
    added_required = record(field("id", "string"), field("n", "int"))
    assert ok(added_required, V1, "FORWARD") and not ok(added_required, V1, "FULL")
    promoted = record(field("id", "bytes"))
    assert ok(promoted, V1, "FULL")


def test_modes_accept_enum_or_any_case_string() -> None:
    v2 = record(field("id", "long"))
    assert len(check_compatibility(v2, [V1], CompatibilityMode.BACKWARD)) == 1
    assert len(check_compatibility(v2, [V1], "backward")) == 1


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError):
        check_compatibility(V1, [V1], "SIDEWAYS")


def test_incompatibility_prints_as_one_line() -> None:
    [problem] = check_compatibility(record(field("id", "long")), [V1], "BACKWARD")
    assert problem == Incompatibility(
        "/fields/id/type", "new schema cannot read version 1: reader type long cannot read "
        "writer type string", reader="long", writer="string", version=1)
    assert str(problem) == ("/fields/id/type: new schema cannot read version 1: reader type "
                            "long cannot read writer type string")


# --- properties ---------------------------------------------------------------------------

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
LOGICAL = [{"type": "int", "logicalType": "date"},
           {"type": "long", "logicalType": "timestamp-millis"},
           {"type": "string", "logicalType": "uuid"},
           {"type": "bytes", "logicalType": "decimal", "precision": 6, "scale": 2}]


@st.composite
def avro_schemas(draw: st.DrawFn, max_depth: int = 3) -> Any:
    """Small valid schemas: every kind of type, namespaces, and references to named types
    defined earlier in the same schema (written short or in full)."""
    numbers = itertools.count()
    defined: list[str] = []  # full names of the named types defined so far

    def named(kind: str, namespace: str | None, depth: int) -> dict:
        name = f"T{next(numbers)}"
        schema: dict[str, Any] = {"type": kind, "name": name}
        how = draw(st.sampled_from(["inherit", "namespace", "dotted"]))
        if how == "namespace":
            namespace = draw(st.sampled_from(["a", "a.b", "c"]))
            schema["namespace"] = namespace
        elif how == "dotted":
            namespace = draw(st.sampled_from(["a", "d.e"]))
            schema["name"] = f"{namespace}.{name}"
        full = f"{namespace}.{name}" if namespace else name
        if kind == "enum":
            schema["symbols"] = draw(st.lists(st.sampled_from("ABCD"), min_size=1,
                                              max_size=4, unique=True))
            if draw(st.booleans()):
                schema["default"] = draw(st.sampled_from(schema["symbols"]))
        elif kind == "fixed":
            schema["size"] = draw(st.integers(1, 4))
        else:
            count = draw(st.integers(0, 3))
            schema["fields"] = [{"name": f"f{i}", "type": gen(depth - 1, namespace)}
                                for i in range(count)]
        defined.append(full)
        return schema

    def reference(namespace: str | None) -> str | None:
        # a type in the null namespace cannot be named from inside another namespace
        usable = [n for n in defined if "." in n or not namespace]
        if not usable:
            return None
        full = draw(st.sampled_from(usable))
        space, _, short = full.rpartition(".")
        return short if space == (namespace or "") and draw(st.booleans()) else full

    def gen(depth: int, namespace: str | None) -> Any:
        kinds = ["primitive", "logical", "reference"]
        if depth > 0:
            kinds += ["array", "map", "union", "record", "enum", "fixed"]
        kind = draw(st.sampled_from(kinds))
        if kind == "reference":
            ref = reference(namespace)
            kind = "primitive" if ref is None else kind
        match kind:
            case "primitive":
                return draw(st.sampled_from(PRIMITIVES))
            case "logical":
                return dict(draw(st.sampled_from(LOGICAL)))
            case "reference":
                return ref
            case "array":
                return {"type": "array", "items": gen(depth - 1, namespace)}
            case "map":
                return {"type": "map", "values": gen(depth - 1, namespace)}
            case "union":
                branches: list[Any] = draw(st.lists(st.sampled_from(PRIMITIVES), min_size=1,
                                                    max_size=3, unique=True))
                if draw(st.booleans()):
                    branches.append(named(draw(st.sampled_from(["record", "enum", "fixed"])),
                                          namespace, depth - 1))
                return branches
            case _:
                return named(kind, namespace, depth)

    return gen(max_depth, None)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(avro_schemas())
def test_any_schema_is_fully_compatible_with_itself(schema: Any) -> None:
    parse_schema(schema, _write_hint=False)  # the generator makes valid schemas only
    assert check_compatibility(schema, [schema, schema], "FULL_TRANSITIVE") == []


PROMOTABLE = {"int": ["long", "float", "double"], "long": ["float", "double"],
              "float": ["double"], "string": ["bytes"], "bytes": ["string"]}


@st.composite
def reader_of(draw: st.DrawFn, writer: Any) -> Any:
    """A changed copy of `writer`: some changes keep it readable, some do not."""

    def change(schema: Any) -> Any:
        if isinstance(schema, str):
            if schema in PRIMITIVES and draw(st.integers(0, 3)) == 0:
                return draw(st.sampled_from([*PROMOTABLE.get(schema, []), *PRIMITIVES]))
            return schema
        if isinstance(schema, list):
            branches = [change(b) if isinstance(b, dict) else b for b in schema]
            unused = [p for p in PRIMITIVES if p not in branches]
            if unused and draw(st.integers(0, 3)) == 0:
                branches.append(draw(st.sampled_from(unused)))
            plain = [b for b in branches if isinstance(b, str)]
            if len(plain) > 1 and draw(st.integers(0, 3)) == 0:
                branches.remove(draw(st.sampled_from(plain)))
            return branches
        schema = dict(schema)
        match schema["type"]:
            case "array":
                schema["items"] = change(schema["items"])
            case "map":
                schema["values"] = change(schema["values"])
            case "enum":
                symbols = draw(st.lists(st.sampled_from("ABCD"), min_size=1, max_size=4,
                                        unique=True))
                schema["symbols"] = draw(st.sampled_from([schema["symbols"], symbols]))
                schema.pop("default", None)
                if draw(st.booleans()):
                    schema["default"] = schema["symbols"][0]
            case "fixed":
                schema["size"] = draw(st.sampled_from([schema["size"], schema["size"] + 1]))
            case "record":
                fields = []
                for f in schema["fields"]:
                    action = draw(st.sampled_from(["keep", "keep", "drop", "rename", "alias"]))
                    if action == "drop":
                        continue
                    f = {**f, "type": change(f["type"])}
                    if action in ("rename", "alias"):
                        f["name"] = f"{f['name']}_renamed"
                        if action == "alias":
                            f["aliases"] = [f["name"].removesuffix("_renamed")]
                    fields.append(f)
                for i in range(draw(st.integers(0, 2))):
                    new = draw(st.sampled_from([{"type": "int", "default": 0},
                                                {"type": ["null", "string"], "default": None},
                                                {"type": "long"}]))
                    fields.append({"name": f"added{i}", **new})
                schema["fields"] = fields
        return schema

    return change(writer)


@st.composite
def writer_and_reader(draw: st.DrawFn) -> tuple[Any, Any]:
    writer = draw(avro_schemas())
    return writer, draw(reader_of(writer))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writer_and_reader())
def test_what_is_called_compatible_fastavro_can_read(pair: tuple[Any, Any]) -> None:
    """Soundness against a real Avro implementation: when can_read finds no problem, fastavro
    resolves data written with the writer schema using the reader schema."""
    writer, reader = pair
    parsed_writer = parse_schema(writer, _write_hint=False)
    try:
        parsed_reader = parse_schema(reader, _write_hint=False)
    except Exception:  # a change made the reader invalid (e.g. a union with a repeated type)
        return
    if can_read(reader, writer):
        return
    for datum in generate_many(parsed_writer, 5):
        buffer = io.BytesIO()
        schemaless_writer(buffer, parsed_writer, datum)
        buffer.seek(0)
        try:
            schemaless_reader(buffer, parsed_writer, parsed_reader)
        except UnicodeDecodeError:
            # bytes promote to string by the spec, but random bytes are seldom UTF-8: a fault
            # of the data, not of the schemas
            continue
