"""Import circles, found from the source with ``ast`` (module- and function-level imports alike).

``python -m Testing.SegDeepLib.test_import_circles`` prints every circle in SegDeepLib. The tests
hold the packages that have none to that (extend ``CLEAN`` as circles are broken elsewhere).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLEAN = ("SegDeepLib",)  # no import circle anywhere in the library (issue 13, item 5)


def import_graph(root: Path, package: str = "SegDeepLib") -> dict[str, set[str]]:
    """``{module: modules of package it imports}``; ``from pkg import mod`` counts as pkg.mod."""
    files = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = set()
        for target in _imports(name, path):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def _imports(name: str, path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out += [f"{base}.{alias.name}" for alias in node.names]
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_finder_sees_a_function_level_circle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert circles(import_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b"]]


def test_no_import_circle_in_clean_packages():
    bad = [group for group in circles(import_graph(REPO))
           if any(m == p or m.startswith(p + ".") for m in group for p in CLEAN)]
    assert bad == []


# the library's layers, lowest first: a package imports only from packages before it
LAYERS = ("errors", "version", "progress", "registry", "core", "io", "preprocessing", "data",
          "metrics", "crf", "models", "losses", "inference", "training", "cli", "__main__")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import of a package ``b`` by a lower (or unlisted) package ``a``."""
    def package(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else ""  # "": the package's __init__ (the top)

    rank = {name: i for i, name in enumerate(LAYERS)}
    rank[""] = len(LAYERS)
    bad = set()
    for module, targets in graph.items():
        for target in targets:
            a, b = package(module), package(target)
            if a != b and (a not in rank or b not in rank or rank[b] > rank[a]):
                bad.add(f"{module} -> {target}")
    return sorted(bad)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert layer_violations(import_graph(REPO)) == []


def test_layer_check_catches_an_upward_import():
    graph = {"SegDeepLib.io.image": {"SegDeepLib.inference.predictor"},
             "SegDeepLib.inference.predictor": {"SegDeepLib.io.image"}}
    assert layer_violations(graph) == ["SegDeepLib.io.image -> SegDeepLib.inference.predictor"]


if __name__ == "__main__":
    print("\n".join(layer_violations(import_graph(REPO))))
    for group in circles(import_graph(REPO)):
        print(" <-> ".join(group))
