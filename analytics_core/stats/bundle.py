"""The experiment statistics as one self-contained Python file: the body of BigQuery's experiment_analyze.

A BigQuery Python UDF is its body alone (it cannot import analytics_core), so
dbt_project/functions/experiment_analyze.py is generated from the modules that compute the rows
everywhere else: distributions, document, estimates and experiments, in that (dependency) order,
their imports of each other dropped and their standard-library imports merged once at the top,
plus `main(document)`, the entry point dbt's function YAML names, which answers what
`rows_json(analyze(document))` does (the DuckDB function experiment_analyze, `analytics
experiments analyze --json`). The code is copied line for line, comments included; only the
module docstrings go (each module is named in a comment instead).

    python -m analytics_core.stats.bundle           # (re)write the file
    python -m analytics_core.stats.bundle --check   # exit 1 if the committed file is stale

What the bundle refuses (BundleError): an import outside the standard library, a name two modules
define, an import of the package that no earlier module satisfies, and text that would end the
function body early: `'''` (dbt-bigquery quotes the body as r'''...''') or a Jinja `endraw` (dbt
renders a function file as Jinja; the bundle sits in a raw block, so `{{` in the code is kept).

`from __future__ import annotations` is left out: with it every annotation is a string, and
dataclasses then look the defining module up in sys.modules, which fails when a host runs the body
in a namespace of its own rather than importing it. Python 3.11 evaluates the annotations as they
are (`X | None` included).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "analytics_core.stats"
MODULES = ("distributions", "document", "estimates", "experiments")  # each imports only those before it
STATS_DIR = Path(__file__).resolve().parent
ROOT = STATS_DIR.parents[1]
TARGET = ROOT / "dbt_project" / "functions" / "experiment_analyze.py"
COMMAND = "python -m analytics_core.stats.bundle"
ENTRY_POINT = "main"
FORBIDDEN = {"'''": "dbt-bigquery quotes the function body as r'''...'''", "endraw": "the bundle is a Jinja raw block"}

_ENTRY = f'''

# --- the entry point -----------------------------------------------------------------------------------


def {ENTRY_POINT}(document: str | None) -> str | None:
    """experiment_analyze(document STRING) RETURNS STRING: the rows as a JSON array; NULL gives NULL."""
    if document is None:
        return None
    return rows_json(analyze(document))
'''


class BundleError(Exception):
    """The modules cannot be bundled as they are (the message says which rule and where)."""


@dataclass
class _Imports:
    plain: set[tuple[str, str | None]] = field(default_factory=set)  # import json [as j]
    names: dict[str, set[tuple[str, str | None]]] = field(default_factory=dict)  # from m import a [as b]

    def add(self, node: ast.Import | ast.ImportFrom, where: str) -> None:
        _standard_library(node, where)
        for alias in node.names:
            module = alias.name if isinstance(node, ast.Import) else node.module or ""
            if isinstance(node, ast.Import):
                self.plain.add((alias.name, alias.asname))
            else:
                self.names.setdefault(module, set()).add((alias.name, alias.asname))

    def bound(self) -> set[str]:
        out = {asname or name.split(".")[0] for name, asname in self.plain}
        return out | {asname or name for found in self.names.values() for name, asname in found}

    def render(self) -> list[str]:
        def named(name: str, asname: str | None) -> str:
            return f"{name} as {asname}" if asname else name

        lines = [f"import {named(*item)}" for item in sorted(self.plain, key=lambda i: (i[0], i[1] or ""))]
        for module in sorted(self.names):
            listed = sorted(self.names[module], key=lambda i: (i[0].lower(), i[0], i[1] or ""))
            lines.append(f"from {module} import {', '.join(named(*item) for item in listed)}")
        return lines


def _standard_library(node: ast.Import | ast.ImportFrom, where: str) -> None:
    if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
    else:
        modules = ["." * node.level + (node.module or "")]
    for module in modules:
        if module.split(".")[0] not in sys.stdlib_module_names:
            raise BundleError(f"{where}: imports {module}, which is not in the standard library")


def _defined(tree: ast.Module) -> set[str]:
    """The names a module's top level defines (functions, classes, assignments)."""
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def _is_package_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == PACKAGE.split(".")[0]
    return any(alias.name.split(".")[0] == PACKAGE.split(".")[0] for alias in node.names)


def bundle() -> str:
    """The text of dbt_project/functions/experiment_analyze.py, from the modules as they are now."""
    imports = _Imports()
    defined: dict[str, str] = {}  # name -> the module defining it
    sections: list[str] = []
    for name in MODULES:
        path = STATS_DIR / f"{name}.py"
        where = f"{PACKAGE}.{name}"
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        dropped: set[int] = set()  # 1-based line numbers
        body = tree.body
        if ast.get_docstring(tree, clean=False) is not None:  # dropped: the section comment names the module
            dropped |= set(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
        for node in body:
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            dropped |= set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue
            if _is_package_import(node):
                for alias in node.names:
                    if alias.asname or defined.get(alias.name) is None:
                        raise BundleError(
                            f"{where}: imports {alias.name} from the package, which no module before it defines"
                            " (or renames it): keep MODULES in dependency order, imports without `as`"
                        )
                continue
            imports.add(node, where)
        for inner in ast.walk(tree):  # imports inside functions stay where they are: standard library only
            if isinstance(inner, ast.Import | ast.ImportFrom) and inner not in body:
                if _is_package_import(inner):
                    raise BundleError(f"{where}, line {inner.lineno}: an import of the package inside a function")
                _standard_library(inner, f"{where}, line {inner.lineno}")
        for found in sorted(_defined(tree)):
            if found in defined:
                raise BundleError(f"{where}: {found} is defined by {defined[found]} too; one namespace holds both")
            defined[found] = where
        lines = [line for i, line in enumerate(source.splitlines(), start=1) if i not in dropped]
        text = "\n".join(lines).strip("\n")
        sections.append(f"# --- {where.replace('.', '/')}.py ".ljust(104, "-") + "\n\n" + text)
    clash = sorted((imports.bound() & set(defined)) | ({ENTRY_POINT} & set(defined)))
    if clash:
        raise BundleError(f"{clash[0]} is both imported (or the entry point) and defined by {defined[clash[0]]}")
    code = "\n".join(imports.render()) + "\n\n\n" + "\n\n\n".join(sections) + "\n" + _ENTRY
    for text, why in FORBIDDEN.items():
        if text in code:
            raise BundleError(f"the bundle contains {text!r}, which cannot be in it: {why}")
    header = (
        f"# Generated by `{COMMAND}`: do not edit (`make stats-bundle` rewrites it).\n"
        f"# analytics_core/stats/{{{','.join(MODULES)}}}.py in one file, standard library only:\n"
        "# the body of the BigQuery function experiment_analyze (experiment_analyze.yml), entry point\n"
        f"# {ENTRY_POINT}(document). The raw markers keep dbt's Jinja off the code.\n"
    )
    return header + "# {% raw %}\n" + code + "# {% endraw %}\n"


def rendered(text: str) -> str:
    """The file as dbt renders it (the raw markers gone): the Python that BigQuery runs."""
    return text.replace("# {% raw %}\n", "# \n", 1).replace("# {% endraw %}\n", "# \n", 1)


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stale(path: Path | None = None) -> str | None:
    """Why the file at `path` (TARGET) is not the bundle of the modules as they are, or None."""
    path = path or TARGET
    if not path.exists():
        return f"{_shown(path)} is missing"
    if path.read_text(encoding="utf-8") != bundle():
        return f"{_shown(path)} is stale: it is not what the statistics modules give now"
    return None


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    try:
        problem = stale()
        if argv == ["--check"]:
            if problem:
                print(f"{problem}; run `{COMMAND}` and commit the result", file=sys.stderr)
                return 1
            return 0
        if problem:
            TARGET.parent.mkdir(parents=True, exist_ok=True)
            TARGET.write_text(bundle(), encoding="utf-8")
            print(f"wrote {_shown(TARGET)}")
        else:
            print(f"{_shown(TARGET)} is up to date")
    except BundleError as err:
        print(f"cannot bundle the statistics: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
