"""The folders are the architecture: these rules keep their dependencies pointing one way.

Every import in app/ counts, the ones inside functions too (a late import hides a circle, it
does not remove it). docs/how-it-works.md states the same rules in prose."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[3] / "app"

# Lower layers never import higher ones; packages within one layer may not import each other
# unless listed in SAME_LAYER_ALLOWED.
LAYERS: dict[str, int] = {
    "settings": 0, "contracts": 0,
    "policy": 1, "avro": 1, "kafka": 1,
    "oversize": 2, "lag": 2,
    "client": 3, "replay": 3,
    "pipeline": 4,
    "scenarios": 5,
    "worker": 6,
    "cli": 7, "__main__": 7,
}
SAME_LAYER_ALLOWED = {("__main__", "cli")}
CLIENT_MAY_USE = {"client", "contracts", "kafka", "avro", "oversize", "settings"}


def module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, resolved to app modules."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:  # `from app.x import y` where y is a module
                candidate = f"{node.module}.{alias.name}"
                if module_path(candidate) is not None:
                    yield node.lineno, candidate


def module_path(name: str) -> Path | None:
    if not name.startswith("app"):
        return None
    base = APP.parent.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


SOURCES = sorted(APP.rglob("*.py"))
GRAPH: dict[str, set[str]] = {}
EDGES: list[tuple[str, int, str]] = []
for source in SOURCES:
    name = module_name(source)
    GRAPH.setdefault(name, set())
    for line, imported in imports_of(source):
        EDGES.append((name, line, imported))
        if module_path(imported) is not None and imported != name:
            GRAPH[name].add(imported)


def violations(rule) -> list[str]:
    return [f"{module}:{line} imports {imported}" for module, line, imported in EDGES
            if rule(module, imported)]


def test_every_package_has_a_layer() -> None:
    packages = {package_of(name) for name in GRAPH if name != "app"}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_contracts_import_nothing_else_from_app() -> None:
    assert violations(lambda m, i: package_of(m) == "contracts" and i.startswith("app.")
                      and package_of(i) != "contracts") == []


def test_pipeline_never_imports_faust() -> None:
    assert violations(lambda m, i: package_of(m) == "pipeline"
                      and i.split(".")[0] in {"faust", "mode", "aiokafka"}) == []


def test_nothing_imports_the_cli() -> None:
    assert violations(lambda m, i: package_of(i) == "cli"
                      and package_of(m) not in {"cli", "__main__"}) == []


def test_client_imports_only_contracts_kafka_avro_oversize() -> None:
    assert violations(lambda m, i: package_of(m) == "client" and i.startswith("app.")
                      and package_of(i) not in CLIENT_MAY_USE) == []


def test_dependencies_point_down_the_layers() -> None:
    def upward(module: str, imported: str) -> bool:
        if not imported.startswith("app.") or module == "app":
            return False
        here, there = package_of(module), package_of(imported)
        if here == there or there == "" or (here, there) in SAME_LAYER_ALLOWED:
            return False
        return LAYERS[there] >= LAYERS[here]
    assert violations(upward) == []


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            if target.startswith(node + ".") or node.startswith(target + "."):
                continue  # a package and its own submodules
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("rule", [
    lambda m, i: package_of(m) == "contracts" and package_of(i) == "pipeline",
])
def test_the_rules_see_a_violation(rule) -> None:
    """The checker itself: an edge the rules must catch is caught when present."""
    EDGES.append(("app.contracts.headers", 1, "app.pipeline.decide"))
    try:
        assert violations(rule) == ["app.contracts.headers:1 imports app.pipeline.decide"]
    finally:
        EDGES.pop()
