"""Import rules import-linter leaves out (its contracts are in pyproject.toml, run by `make lint`): no private
name (leading underscore) is imported across top-level packages, and no package has an import cycle.

Read with ast, nothing is imported. Every import statement counts, in a function or under TYPE_CHECKING
too: a loop held together by a lazy import is still a loop, only hidden.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    target: str  # the imported module, or the module a name is imported from
    names: tuple[str, ...]  # names taken from `target` (empty for `import target`)


def packages(root: Path) -> list[str]:
    """The top-level packages of the repository (directories with an __init__.py)."""
    return sorted(p.parent.name for p in root.glob("*/__init__.py"))


def modules(root: Path) -> dict[str, Path]:
    """Dotted name → file of every module of those packages."""
    found = {}
    for package in packages(root):
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path) -> Iterator[Import]:
    """Every import of a project module by a project module, relative imports resolved."""
    found = modules(root)
    tops = set(packages(root))
    for name, path in sorted(found.items()):
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [(base, tuple(alias.name for alias in node.names))]
            else:
                continue
            for target, names in targets:
                if target.split(".")[0] in tops:
                    yield Import(name, node.lineno, target, names)


def private_imports(root: Path) -> list[str]:
    """`module:line` of each private name or module imported from another top-level package."""
    found = []
    for imp in imports(root):
        if imp.module.split(".")[0] == imp.target.split(".")[0]:
            continue
        private = [p for p in [*imp.target.split("."), *imp.names] if p.startswith("_") and not p.endswith("__")]
        if private:
            found.append(f"{imp.module}:{imp.line} imports {', '.join(private)} from {imp.target}")
    return found


def cycles(root: Path) -> list[list[str]]:
    """The import cycles between modules of one top-level package, each as the modules in it."""
    known = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports(root):
        # `from a.b import c` imports the module a.b.c when there is one, else a name of a.b.
        targets = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in known]
        if len(targets) < len(imp.names) or not imp.names:
            targets.append(imp.target)
        for target in targets:
            if target in known and target != imp.module and target.split(".")[0] == imp.module.split(".")[0]:
                graph[imp.module].add(target)
    return [sorted(c) for c in strongly_connected(graph) if len(c) > 1]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
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
                components.append(component)
    return components


def test_no_private_name_is_imported_across_packages() -> None:
    assert private_imports(ROOT) == []


def test_no_package_has_an_import_cycle() -> None:
    assert cycles(ROOT) == []


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The rules on a small tree that breaks both, so a silently blind check cannot pass."""
    files = {
        "alpha/__init__.py": "",
        "alpha/one.py": "from alpha.two import helper\n",
        "alpha/two.py": "def helper():\n    from alpha import one\n",  # a lazy import closes the loop
        "alpha/three.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .four import X\n",
        "alpha/four.py": "from alpha.three import Y\n",
        "alpha/_inner.py": "from . import one\n",
        "beta/__init__.py": "",
        "beta/uses.py": "from alpha.one import _private, public\nimport alpha._inner\nfrom alpha import __version__\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert private_imports(tmp_path) == [
        "beta.uses:1 imports _private from alpha.one",
        "beta.uses:2 imports _inner from alpha._inner",
    ]
    assert sorted(cycles(tmp_path)) == [["alpha.four", "alpha.three"], ["alpha.one", "alpha.two"]]
