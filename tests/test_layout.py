"""The package's shape: no import circle, folders of a readable size, a core without adapters.

The import graph is read from the source (every `import` and `from ... import`, including those
inside functions, which still form a circle at run time), so a test run needs no import side
effect to see it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "domainclust"
MAX_MODULES = 12  # modules per package folder, `__init__` not counted


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (an import of a package is of its `__init__`)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for target in imported_modules(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # a module's own parent packages run before it: importing them is no edge
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_circle_in_the_package() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_the_cycle_finder_sees_a_circle_through_a_lazy_import(tmp_path: Path) -> None:
    package = tmp_path / "domainclust"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "a.py").write_text("from domainclust.data.b import f\n")
    (package / "data" / "b.py").write_text("def f():\n    from domainclust.data import a\n")
    (package / "data" / "c.py").write_text("import domainclust.data.a\n")
    assert cycles(import_graph(package)) == [["domainclust.data.a", "domainclust.data.b"]]


@pytest.mark.parametrize("folder", sorted(p.parent for p in PACKAGE.rglob("__init__.py")),
                         ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_a_package_folder_holds_at_most_a_dozen_modules(folder: Path) -> None:
    modules = [p.name for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(modules) <= MAX_MODULES, f"{folder.name}/ holds {len(modules)}: {sorted(modules)}"


def test_the_core_never_imports_an_adapter() -> None:
    offenders = {
        module_name(path): sorted(n for n in imported_modules(path)
                                  if n == "modalities" or n.startswith(("modalities.",
                                                                        "domainclust.modalities")))
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: found for name, found in offenders.items() if found} == {}
