import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.avro.compat import CompatibilityMode, can_read, check_compatibility


def record(*fields: dict, name: str = "R", **extra) -> dict:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def field(name: str, type_, **extra) -> dict:
    return {"name": name, "type": type_, **extra}


V1 = record(field("id", "string"))


def ok(new, old, mode) -> bool:
    return check_compatibility(new, [old], mode) == []


def test_field_added_with_default_is_backward_and_forward() -> None:
    v2 = record(field("id", "string"), field("n", "int", default=0))
    assert ok(v2, V1, "BACKWARD") and ok(v2, V1, "FORWARD") and ok(v2, V1, "FULL")


def test_field_added_without_default_breaks_backward_only() -> None:
    v2 = record(field("id", "string"), field("n", "int"))
    problems = check_compatibility(v2, [V1], "BACKWARD")
    assert len(problems) == 1
    assert problems[0].path == "/fields/n" and "no default" in problems[0].message
    assert ok(v2, V1, "FORWARD")
    assert not ok(v2, V1, "FULL")


def test_field_removed_with_and_without_default() -> None:
    old_with_default = record(field("id", "string"), field("n", "int", default=1))
    old_required = record(field("id", "string"), field("n", "int"))
    assert ok(V1, old_with_default, "FORWARD")  # old readers use their default
    assert not ok(V1, old_required, "FORWARD")
    assert ok(V1, old_required, "BACKWARD")  # new reader ignores the extra field


@pytest.mark.parametrize(("writer", "reader"),
                         [("int", "long"), ("int", "float"), ("int", "double"),
                          ("long", "float"), ("long", "double"), ("float", "double"),
                          ("string", "bytes"), ("bytes", "string")])
def test_promotions(writer: str, reader: str) -> None:
    assert can_read(reader, writer) == []


@pytest.mark.parametrize(("writer", "reader"),
                         [("long", "int"), ("double", "float"), ("float", "long"),
                          ("string", "int"), ("boolean", "int")])
def test_narrowing_is_refused(writer: str, reader: str) -> None:
    assert can_read(reader, writer) != []


def test_int_to_long_field_is_backward_not_forward() -> None:
    old = record(field("n", "int"))
    new = record(field("n", "long"))
    assert ok(new, old, "BACKWARD")
    [problem] = check_compatibility(new, [old], "FORWARD")
    assert problem.path == "/fields/n/type" and "long" in problem.message


def enum(*symbols: str, **extra) -> dict:
    return {"type": "enum", "name": "E", "symbols": list(symbols), **extra}


def test_enum_symbol_added() -> None:
    old, new = record(field("e", enum("A", "B"))), record(field("e", enum("A", "B", "C")))
    assert ok(new, old, "BACKWARD")
    assert not ok(new, old, "FORWARD")
    old_with_default = record(field("e", enum("A", "B", default="A")))
    assert ok(new, old_with_default, "FORWARD")


def test_enum_symbol_removed() -> None:
    old, new = record(field("e", enum("A", "B", "C"))), record(field("e", enum("A", "B")))
    problems = check_compatibility(new, [old], "BACKWARD")
    assert len(problems) == 1 and "['C']" in problems[0].message
    assert ok(new, old, "FORWARD")


def test_union_widened_and_narrowed() -> None:
    narrow = record(field("v", ["null", "string"]))
    wide = record(field("v", ["null", "string", "long"]))
    assert ok(wide, narrow, "BACKWARD")  # new union reads every old branch
    assert not ok(wide, narrow, "FORWARD")  # old reader meets a long
    assert not ok(narrow, wide, "BACKWARD")


def test_union_and_plain_type() -> None:
    plain = record(field("v", "string"))
    union = record(field("v", ["null", "string"]))
    assert ok(union, plain, "BACKWARD")  # a union reader reads a plain string
    assert not ok(union, plain, "FORWARD")  # a plain reader cannot read the null branch
    assert can_read(["null", "int"], "long") != []


def test_field_renamed_with_alias() -> None:
    old = record(field("name", "string"))
    renamed = record(field("full_name", "string", aliases=["name"]))
    assert ok(renamed, old, "BACKWARD")
    bare_rename = record(field("full_name", "string"))
    assert not ok(bare_rename, old, "BACKWARD")


def test_record_renamed_with_alias() -> None:
    old = record(field("id", "string"), name="Old")
    assert not ok(record(field("id", "string"), name="New"), old, "BACKWARD")
    assert ok(record(field("id", "string"), name="New", aliases=["Old"]), old, "BACKWARD")


def test_nested_records_arrays_and_maps() -> None:
    inner_v1 = record(field("x", "int"), name="Inner")
    inner_v2 = record(field("x", "long"), field("y", "string"), name="Inner")
    old = record(field("items", {"type": "array", "items": inner_v1}),
                 field("tags", {"type": "map", "values": "int"}))
    new = record(field("items", {"type": "array", "items": inner_v2}),
                 field("tags", {"type": "map", "values": "long"}))
    problems = check_compatibility(new, [old], "BACKWARD")
    assert [p.path for p in problems] == ["/fields/items/type/items/fields/y"]


def test_fixed_size_change() -> None:
    old = record(field("f", {"type": "fixed", "name": "F", "size": 16}))
    new = record(field("f", {"type": "fixed", "name": "F", "size": 32}))
    assert "size" in check_compatibility(new, [old], "BACKWARD")[0].message


def test_recursive_schema_and_named_references() -> None:
    node = {"type": "record", "name": "Node", "namespace": "x.y", "fields": [
        field("value", "int"), field("next", ["null", "Node"], default=None)]}
    node_v2 = {"type": "record", "name": "Node", "namespace": "x.y", "fields": [
        field("value", "long"), field("next", ["null", "x.y.Node"], default=None),
        field("label", "string", default="")]}
    assert ok(node_v2, node, "BACKWARD")
    assert not ok(node_v2, node, "FORWARD")
    pair = record(field("a", {"type": "enum", "name": "Color", "symbols": ["RED"]}),
                  field("b", "Color"))
    pair_v2 = record(field("a", {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}),
                     field("b", "Color"))
    assert ok(pair_v2, pair, "BACKWARD")
    assert len(check_compatibility(pair_v2, [pair], "FORWARD")) == 2


def test_transitive_checks_every_version() -> None:
    v1 = record(field("id", "string"))
    v2 = record(field("id", "string"), field("n", "int", default=0))
    v3 = record(field("id", "string"), field("n", "int"))  # reads v2 (has n), not v1
    assert ok(v3, v2, "BACKWARD")
    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    problems = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE")
    assert len(problems) == 1 and "version 1" in problems[0].message


def test_full_transitive_and_none() -> None:
    v1 = record(field("id", "string"))
    v2 = record(field("id", "long"))
    assert check_compatibility(v2, [v1], CompatibilityMode.NONE) == []
    assert len(check_compatibility(v2, [v1, v1], "FULL_TRANSITIVE")) == 4
    assert check_compatibility(v2, [], "FULL") == []


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError):
        check_compatibility(V1, [V1], "SIDEWAYS")


PRIMITIVE = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "bytes",
                             "string"])


def schemas(depth: int = 2):
    names = iter(f"T{i}" for i in range(10_000))
    if depth == 0:
        return PRIMITIVE
    inner = schemas(depth - 1)
    return st.one_of(
        PRIMITIVE,
        st.builds(lambda t: {"type": "array", "items": t}, inner),
        st.builds(lambda t: {"type": "map", "values": t}, inner),
        st.builds(lambda symbols: {"type": "enum", "name": next(names), "symbols": symbols},
                  st.lists(st.sampled_from(["A", "B", "C", "D"]), min_size=1, unique=True)),
        st.builds(lambda types: {"type": "record", "name": next(names),
                                 "fields": [{"name": f"f{i}", "type": t}
                                            for i, t in enumerate(types)]},
                  st.lists(inner, max_size=3)),
    )


@given(schemas())
def test_any_schema_is_fully_compatible_with_itself(schema) -> None:
    assert check_compatibility(schema, [schema], "FULL_TRANSITIVE") == []
