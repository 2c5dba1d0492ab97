"""No import cycle between the modules of ectool/ and agentd/.

The graph is read from the source (the AST), not from a running interpreter, so an
import inside a function counts as much as one at the top: a function-level import
hides a cycle from Python's import machinery, not from this test. Imports under
``if TYPE_CHECKING:`` are left out (they never run). ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module, else to ``pkg`` itself; a module is not
said to import its parent package (Python runs it first, but the package's own
imports are its edges).

KNOWN lists cycles through files other people were changing when this test came;
each entry is the cycle's modules (sorted) and why it is there. Empty it as they
are fixed: an entry that no longer matches a cycle fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ectool", "agentd")

#: frozenset of a cycle's modules -> why it is still allowed
KNOWN: dict[frozenset[str], str] = {}


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of PACKAGES."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth, outside ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if _type_checking_only(node):
            stack.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def edges_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] or [base]
        for target in targets:
            found = _resolve(target, modules)
            if found and found != module:
                out.add(found)
    return out


def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: edges_of(name, path, modules) for name, path in modules.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as one
    cycle through it in import order (the first module again at the end)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(g):
        if v not in index:
            visit(v)
    return [_one_cycle(g, c) for c in found]


def _one_cycle(g: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(component)  # unreachable for a strongly connected component


def test_graph_sees_function_level_and_relative_imports():
    modules = {"p": Path("p/__init__.py"), "p.a": Path("p/a.py"), "p.b": Path("p/b.py")}
    tree = ast.parse("import os\ndef f():\n    from . import b\n"
                     "if TYPE_CHECKING:\n    from p import a\n")
    got = set()
    for node in _imports(tree):
        got.add(type(node).__name__ + ":" + (getattr(node, "module", None) or "")
                + ":" + ",".join(a.name for a in node.names))
    assert got == {"Import::os", "ImportFrom::b"}
    assert _resolve("p.b.thing", modules) == "p.b"
    assert _resolve("os.path", modules) is None


def test_cycles_are_found_and_named():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    unknown = [" -> ".join(c) for c in found if frozenset(c) not in KNOWN]
    assert not unknown, "import cycles:\n" + "\n".join(unknown)
    stale = [sorted(k) for k in KNOWN if k not in {frozenset(c) for c in found}]
    assert not stale, f"KNOWN lists cycles that are gone (remove them): {stale}"
