"""One test per class of checker bug found by the differential run against Java Avro (issue
14), and schema validation: an invalid schema is refused with one line naming the place."""

import pytest

from app.avro.compat import SchemaError, can_read, check_compatibility
from app.avro.schema import Named, validate
from tests.avro_pairs import dec, enum, fixed, fld, rec


def verdict(reader, writer) -> list[str]:
    return [str(p) for p in can_read(reader, writer)]


# --- names resolve where they are defined -------------------------------------------------


def holder(kind_symbols: list[str]) -> dict:
    # x.Holder defines Kind (x.Kind) and refers to it by its short name; Outer, in namespace
    # o, refers to x.Holder again by full name: "Kind" inside it is still x.Kind.
    return rec("o.Outer",
               fld("h", rec("x.Holder", fld("k", enum("Kind", kind_symbols)), fld("k2", "Kind"))),
               fld("again", "x.Holder"))


def test_a_type_referenced_from_another_namespace_keeps_its_own_namespace() -> None:
    assert verdict(holder(["A", "B"]), holder(["A"])) == []
    problems = can_read(holder(["A"]), holder(["A", "B"]))
    assert [p.path for p in problems] == ["/fields/h/type/fields/k/type",
                                          "/fields/h/type/fields/k2/type",
                                          "/fields/again/type/fields/k/type",
                                          "/fields/again/type/fields/k2/type"]
    assert problems[0].writer == "enum x.Kind"


def test_references_resolve_to_the_defined_object() -> None:
    root = validate(holder(["A"]))
    assert isinstance(root, Named)
    first, again = root.fields[0].type, root.fields[1].type
    assert first is again
    assert isinstance(first, Named) and first.fields[1].type is first.fields[0].type


# --- aliases are full names ---------------------------------------------------------------


def test_a_rename_into_another_namespace_needs_the_full_old_name_as_alias() -> None:
    old = rec("a.Old", fld("x", "int"))
    assert verdict(rec("b.New", fld("x", "int"), aliases=["Old"]), old) != []  # b.Old
    assert verdict(rec("b.New", fld("x", "int"), aliases=["a.Old"]), old) == []
    assert verdict(enum("b.New", ["A"], aliases=["Old"]), enum("a.Old", ["A"])) != []
    assert verdict(enum("b.New", ["A"], aliases=["a.Old"]), enum("a.Old", ["A"])) == []


def test_field_aliases_apply_between_records_of_one_full_name() -> None:
    writer = rec("a.R", fld("old", "int"))
    assert verdict(rec("a.R", fld("new", "int", aliases=["old"])), writer) == []
    assert verdict(rec("b.R", fld("new", "int", aliases=["old"]), aliases=["a.R"]), writer) == []
    # b.R matches a.R by unqualified name, but Java's decoder applies no field alias then
    [problem] = can_read(rec("b.R", fld("new", "int", aliases=["old"])), writer)
    assert problem.path == "/fields/new" and "no default" in problem.message


def test_a_reader_field_matching_two_writer_fields_is_refused() -> None:
    writer = rec("R", fld("a", "int"), fld("b", "int"))
    [problem] = can_read(rec("R", fld("a", "int", aliases=["b"])), writer)
    assert problem.path == "/fields/a" and "several writer fields" in problem.message


# --- unions: the branch a decoder picks ---------------------------------------------------


def test_a_named_writer_type_goes_to_the_union_branch_of_its_full_name() -> None:
    writer = rec("a.R", fld("x", "int"))
    reader = [rec("a.R", fld("x", "int"), fld("y", "int")), rec("b.R", fld("x", "int"))]
    # the decoder takes branch 0 (same full name) and fails there; Java's checker said yes
    [problem] = can_read(reader, writer)
    assert problem.path == "/0/fields/y"


def test_enum_and_fixed_in_a_union_match_by_full_name() -> None:
    assert verdict(["null", enum("b.E", ["A"])], enum("a.E", ["A"])) != []
    assert verdict(["null", fixed("b.F", 2)], fixed("a.F", 2)) != []
    assert verdict(["null", enum("b.E", ["A"], aliases=["a.E"])], enum("a.E", ["A"])) == []
    # a record of the same unqualified name that fits is taken, as by the spec and Java
    assert verdict(["null", rec("b.R", fld("x", "int"))], rec("a.R", fld("x", "int"))) == []
    # one of another name is not, though Java's decoder would take it
    assert verdict(["null", rec("b.S", fld("x", "int"))], rec("a.R", fld("x", "int"))) != []


def test_the_same_union_but_for_namespaces_reads_branch_by_branch() -> None:
    writer = ["null", fixed("d.e.T", 1), "long"]
    reader = ["null", fixed("a.T", 1), "long"]
    assert verdict(reader, writer) == []


# --- decimals -----------------------------------------------------------------------------


@pytest.mark.parametrize(("reader", "writer", "ok"), [
    (dec(5, 2), dec(5, 2), True),
    (dec(9, 2), dec(5, 2), False),  # the spec: precisions and scales must match
    (dec(5, 3), dec(5, 2), False),
    ("bytes", dec(5, 2), True),
    (dec(5, 2), "bytes", True),
    (dec(2, 5), dec(5, 2), True),  # an invalid decimal is ignored: plain bytes
    ({**fixed("F", 4), "logicalType": "decimal", "precision": 9, "scale": 3},
     {**fixed("F", 4), "logicalType": "decimal", "precision": 9, "scale": 2}, False),
    ({**fixed("F", 2), "logicalType": "decimal", "precision": 9, "scale": 3},  # too wide for 2
     {**fixed("F", 2), "logicalType": "decimal", "precision": 9, "scale": 2}, True),
])
def test_decimals(reader, writer, ok: bool) -> None:
    assert (verdict(reader, writer) == []) is ok


# --- invalid schemas are refused, not judged ----------------------------------------------


@pytest.mark.parametrize(("schema", "where", "what"), [
    (rec("R", fld("a", "int", default=1.5)), "/fields/0/default", "not a valid int"),
    (rec("R", fld("a", "int", default=2**31)), "/fields/0/default", "not a valid int"),
    (rec("R", fld("a", "string", default=3)), "/fields/0/default", "not a valid string"),
    (rec("R", fld("a", "null", default=0)), "/fields/0/default", "not a valid null"),
    (rec("R", fld("a", "bytes", default="\u0100")), "/fields/0/default", "bytes"),
    (rec("R", fld("a", fixed("F", 2), default="abc")), "/fields/0/default", "fixed F"),
    (rec("R", fld("a", ["null", "string"], default=1)), "/fields/0/default", "union"),
    (rec("R", fld("a", ["double", "int"], default=[])), "/fields/0/default", "union"),
    (rec("R", fld("a", "float", default={"x": 1})), "/fields/0/default", "float"),
    (rec("R", fld("a", rec("S", fld("x", "int")), default={})), "/fields/0/default", "record S"),
    (rec("R", fld("e", enum("E", ["A"]), default="B")), "/fields/0/default", "enum E"),
    (enum("E", ["A"], default="Z"), "/default", "not one of its symbols"),
    (enum("E", ["A"], default=1), "/default", "not one of its symbols"),
    (enum("E", ["A", "A"]), "/symbols/1", "twice"),
    (enum("E", ["1A"]), "/symbols/0", "not a valid Avro name"),
    (rec("R", fld("a", "Missing")), "/fields/0/type", "unknown type name 'Missing'"),
    (rec("R", fld("a", ["null", "E"]), fld("b", enum("E", ["A"]))), "/fields/0/type/1",
     "defined, earlier"),
    (rec("R", fld("a", enum("E", ["A"])), fld("b", enum("E", ["A"]))), "/fields/1/type/name",
     "defined twice"),
    (["int", "int"], "/1", "two branches of type int"),
    (["null", enum("E", ["A"]), enum("E2", ["A"]), {"type": "array", "items": "int"},
      {"type": "array", "items": "long"}], "/4", "two branches of type array"),
    (["null", ["int", "string"]], "/1", "union may not contain a union"),
    (fixed("a.int", 2), "/name", "primitive type name"),
    (rec("R", fld("a", {"type": {"type": "array", "items": "int"}})), "/fields/0/type",
     "\"type\" must be"),
    (rec("R", fld("a", "int"), fld("a", "int")), "/fields/1/name", "appears twice"),
    # "Top" inside namespace a is a.Top; the null namespace's Top is still being defined
    (rec("Top", fld("in", rec("a.In", fld("back", ["null", "Top"])))),
     "/fields/0/type/fields/0/type/1", "unknown type name 'Top'"),
    (rec("R", fld("a", "int", order="sideways")), "/fields/0/order", "order"),
    (fixed("F", -1), "/size", "non-negative"),
    ({"type": "record", "name": "R"}, "/fields", "needs \"fields\""),
    (rec("a..R"), "/name", "not a valid Avro name"),
    (rec("R", namespace="a-b"), "/namespace", "not a valid Avro name"),
    ("record", "/", "not a type by itself"),
    ({"type": "array"}, "/", "needs \"items\""),
])
def test_invalid_schemas_are_refused_with_the_place(schema, where: str, what: str) -> None:
    with pytest.raises(SchemaError) as raised:
        validate(schema)
    message = str(raised.value)
    assert message.startswith(f"{where}: ") and what in message and "\n" not in message
    with pytest.raises(SchemaError):  # never judged, whichever side it is on
        can_read(schema, "int")
    with pytest.raises(SchemaError):
        check_compatibility("int", [schema], "FULL")


@pytest.mark.parametrize("schema", [
    rec("R", fld("a", ["null", "string"], default="x")),  # a union default: any branch
    rec("R", fld("a", "double", default="NaN"), fld("b", "float", default=1)),
    rec("R", fld("a", "bytes", default="\u00ff"), fld("b", fixed("F", 2), default="\u0000a")),
    rec("R", fld("e", enum("E", ["A"])), fld("s", rec("x.S", fld("c", "E")))),  # null namespace
    rec("x.Node", fld("next", ["null", "Node"], default=None)),
    dec(2, 5),  # an invalid logical type is ignored, not an error
    {"type": "error", "name": "Oops", "fields": []},
])
def test_valid_schemas_pass(schema) -> None:
    validate(schema)
    assert can_read(schema, schema) == []


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WORDS = st.sampled_from(["type", "name", "namespace", "fields", "symbols", "items", "values",
                          "size", "default", "aliases", "record", "enum", "fixed", "array",
                          "map", "int", "string", "null", "R", "a.R", "logicalType", "decimal",
                          "precision", "scale", "order", "error", "bytes", "double"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**40) | st.floats(allow_nan=False) | _WORDS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=5),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_JSON, _JSON)
def test_any_json_is_validated_or_refused_never_a_crash(reader, writer) -> None:
    try:
        can_read(reader, writer)
    except SchemaError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("/")
