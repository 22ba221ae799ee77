"""The package's shape: no import cycles, layers that import only downward, modules of a readable size, a curated API.

Imports are read from the source with ``ast``, lazy ones (inside functions)
included; only ``if TYPE_CHECKING:`` imports are left out, since they never run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import realtime_async

PACKAGE = Path(realtime_async.__file__).parent
#: About 400 lines, the house limit (docs/architecture.md); a feature that grows past it becomes a subpackage.
MAX_LINES = 400

#: What each private layer may import, besides itself (docs/architecture.md, "Layers").
#: The root's foundation modules (exceptions, conf, signals, protocol) import no layer above ``_core``.
FOUNDATION = {"realtime_async.exceptions", "realtime_async.conf", "realtime_async.signals"}
ALLOWED = {
    "realtime_async._core": FOUNDATION,
    "realtime_async.protocol": FOUNDATION | {"realtime_async._core"},
    "realtime_async._writing": FOUNDATION | {"realtime_async._core"},
    "realtime_async._delivery": FOUNDATION | {"realtime_async._core", "realtime_async.protocol"},
    "realtime_async._web": FOUNDATION | {"realtime_async._core"},
    "realtime_async.exceptions": set(),
    "realtime_async.conf": {"realtime_async.exceptions"},
    "realtime_async.signals": set(),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py")) if "migrations" not in path.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The package module that importing ``name`` runs (the longest prefix that is a module)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            names = []
        for name in names:
            target = _resolve(name)
            if target is not None and target != module and name.startswith("realtime_async"):
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # ``from pkg import submodule`` resolves to the submodule; ``from pkg import name`` to pkg itself.
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_sees_lazy_imports_and_ignores_type_checking_ones():
    # The manager is reached through the setting everywhere below it; its type only under TYPE_CHECKING.
    assert "realtime_async.async_manager" not in GRAPH["realtime_async._core.access"]
    assert "realtime_async._core.store" in GRAPH["realtime_async.apps"]  # imported inside ready()
    assert "realtime_async._core.records" in GRAPH["realtime_async._writing.writer"]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def _layer(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _layer(m) is not None))
def test_layers_import_only_downward(module):
    layer = _layer(module)
    allowed = ALLOWED[layer] | {layer}
    upward = sorted(target for target in GRAPH[module] if _layer(target) not in allowed)
    assert upward == [], f"{module} ({layer}) imports {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_readable(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it (docs/architecture.md)"


def test_public_api_is_sorted_complete_and_importable():
    names = realtime_async.__all__
    assert names == sorted(names)
    assert set(names) == set(realtime_async._SOURCES)
    for name in names:
        assert not name.startswith("_")
        value = getattr(realtime_async, name)
        source = importlib.import_module(realtime_async._SOURCES[name])
        assert value is getattr(source, name)
    assert set(names) <= set(dir(realtime_async))
    with pytest.raises(AttributeError):
        realtime_async.Writer  # noqa: B018 - internals are not public


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.split(".")[-1].startswith("_")))
def test_every_module_says_what_it_exports(module):
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    exported = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    ]
    defines_public = any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")
        for node in tree.body
    )
    is_django_module = (
        module.split(".")[-1] in {"apps", "admin", "models", "urls", "migrations"} or ".management." in module
    )
    if defines_public and not is_django_module:
        assert exported, f"{module} defines public names but no __all__"
