"""Build the dbt project for BigQuery without BigQuery, and parse every statement with sqlglot.

BigQuery is unreachable from the machines that run the tests (no network, no credentials), yet
dbt-bigquery opens a client and looks relations up while it compiles (`is_incremental()` asks
`adapter.get_relation`). So `dbt run` runs in a child process with a shim: the client is a stub
that fails on any use (anything still reaching for the network shows up as an error, never as a
hang); `get_relation` answers "missing" (first build) or "exists" (incremental builds); and every
statement dbt would send (CREATE, MERGE, hooks) is recorded instead of sent, the existing table's
columns (which dbt puts in the MERGE) inferred from the model's first-build SQL. A child process
because the patches and dbt's global state must not leak into the caller.

For each mode and model the result holds the model's compiled SELECT, then the statements sent.
User-defined functions (dbt_project/functions/) are built too (`dbt build --select
resource_type:function`, since `dbt run` builds models only): for each the statements sent, the
CREATE FUNCTION. sqlglot parses a Python function's CREATE, body included as an opaque raw string,
so the body is checked on its own: the statement must be CREATE FUNCTION ... LANGUAGE python with
OPTIONS runtime_version "python-3.N" and entry_point, and its body must compile as Python (this
interpreter's grammar) and define the entry point at top level.
`python -m tests.dbt_bigquery [PROJECT_DIR]` prints what fails; tests/integration/test_dbt_bigquery.py
asserts nothing does.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT = ROOT / "dbt_project"
# Each mode is whether the models' tables exist, plus vars: the first build, an incremental build,
# and an incremental build that also replays from `rebuild_from` (the project's backfill var, see
# dbt_project.yml), whose branches render only when it is set.
MODES: dict[str, tuple[bool, dict[str, str]]] = {
    "first_build": (False, {}),
    "incremental": (True, {}),
    "rebuild": (True, {"rebuild_from": "2026-01-01T00:00:00+00:00"}),
}
# Statements sqlglot keeps as an opaque Command even when valid. Any other Command is a statement it
# could not parse: it falls back silently (a logged warning), e.g. on CREATE VIEW ... AS <bad query>.
OPAQUE_COMMANDS = frozenset({"EXECUTE", "BEGIN", "END", "CALL"})


@dataclass(frozen=True)
class Failure:
    mode: str
    model: str
    error: str

    def __str__(self) -> str:
        return f"[{self.mode}] {self.model}: {self.error}"


@dataclass(frozen=True)
class Compiled:
    models: list[str]  # every model of the project
    statements: dict[str, dict[str, list[str]]]  # mode -> model (or data test) -> compiled SELECT, then sent
    dbt_errors: list[Failure]
    functions: list[str]  # every enabled function of the project; statements holds what each sent (no SELECT)


def compile_for_bigquery(project_dir: Path = DBT_PROJECT) -> Compiled:
    """Run every model for the bigquery target, offline, in every mode."""
    return compile_projects([project_dir])[0]


def compile_projects(project_dirs: list[Path]) -> list[Compiled]:
    """compile_for_bigquery of several projects in one child process (importing dbt takes seconds)."""
    with tempfile.TemporaryDirectory(prefix="dbt-bigquery-") as tmp:
        works = [Path(tmp) / str(i) for i in range(len(project_dirs))]
        env = {
            **os.environ,
            "ANALYTICS_DBT_TARGET": "bigquery",
            "ANALYTICS_BIGQUERY_AUTH_METHOD": "oauth",  # a keyfile method would need a real file
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        env.setdefault("ANALYTICS_BIGQUERY_PROJECT", "offline-check-project")
        cmd = [sys.executable, "-m", "tests.dbt_bigquery", "--child"]
        cmd += [str(path) for pair in zip(project_dirs, works, strict=True) for path in pair]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"dbt shim failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
        results = [json.loads((work / "statements.json").read_text()) for work in works]
    return [
        Compiled(d["models"], d["statements"], [Failure(**f) for f in d["dbt_errors"]], d["functions"]) for d in results
    ]


def parse_error(sql: str) -> str | None:
    """Why sqlglot cannot parse `sql` as BigQuery statements, or None."""
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except SqlglotError as exc:
        return f"sqlglot: {exc}"
    for statement in statements:
        if isinstance(statement, exp.Command) and statement.name.upper() not in OPAQUE_COMMANDS:
            return f"sqlglot could not parse this {statement.name.upper()} statement (see the model's SELECT)"
    return None


def _parsed_function(sql: str) -> exp.Create | None:
    """`sql` parsed, when it is one CREATE FUNCTION statement."""
    try:
        statements = sqlglot.parse(sql, read="bigquery")
    except SqlglotError:
        return None  # parse_error reports it
    create = statements[0] if len(statements) == 1 else None
    if isinstance(create, exp.Create) and str(create.args.get("kind")).upper() == "FUNCTION":
        return create
    return None


def is_python_function(sql: str) -> bool:
    create = _parsed_function(sql)
    language = create.find(exp.LanguageProperty) if create is not None else None
    return language is not None and language.name.lower() == "python"


def function_body(sql: str) -> str | None:
    """The body of CREATE FUNCTION ... AS r'''...''' (the text between the quotes), else None."""
    create = _parsed_function(sql)
    if create is None or not isinstance(create.expression, exp.RawString):
        return None
    return create.expression.this


def python_function_error(sql: str) -> str | None:
    """What is wrong with a Python function's CREATE FUNCTION statement (options, body), or None."""
    create = _parsed_function(sql)
    if create is None or not is_python_function(sql):
        return "not a CREATE FUNCTION ... LANGUAGE python statement"
    options = {p.name.lower(): p.text("value") for p in create.find_all(exp.Property) if type(p) is exp.Property}
    runtime, entry_point = options.get("runtime_version", ""), options.get("entry_point", "")
    if not re.fullmatch(r"python-3\.\d+", runtime):
        return f"OPTIONS runtime_version must be python-3.N, not {runtime!r}"
    body = function_body(sql)
    if body is None:
        return "the body is not a raw string r'''...'''"
    try:
        tree = ast.parse(body, filename="<function body>")
        compile(tree, "<function body>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"the Python body does not compile: {exc}"
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    if entry_point not in defined:
        return f"OPTIONS entry_point {entry_point!r} is not a function the body defines at top level"
    return None


def parse_failures(compiled: Compiled) -> list[Failure]:
    """Every statement sqlglot cannot parse as BigQuery SQL, every model a mode did not compile, and
    every function a mode did not create or whose CREATE FUNCTION is not a sound Python function."""
    failures = []
    for mode in MODES:
        produced = compiled.statements.get(mode, {})
        failed_in_dbt = {f.model for f in compiled.dbt_errors if f.mode == mode}
        for model in compiled.models:
            if model not in produced and model not in failed_in_dbt:
                failures.append(Failure(mode, model, "dbt compiled no SQL for this model"))
        for function in compiled.functions:
            sent = produced.get(function, [])
            if len(sent) != 1 and function not in failed_in_dbt:
                failures.append(Failure(mode, function, f"dbt sent {len(sent)} statements, not one CREATE FUNCTION"))
            for sql in sent:
                error = python_function_error(sql) if is_python_function(sql) else None
                if error is not None:
                    failures.append(Failure(mode, function, f"{error}\n--- SQL ---\n{sql}"))
        for model, sqls in produced.items():
            for sql in sqls:
                error = parse_error(sql)
                if error is not None:
                    failures.append(Failure(mode, model, f"{error}\n--- SQL ---\n{sql}"))
    return failures


def check(project_dir: Path = DBT_PROJECT) -> list[Failure]:
    compiled = compile_for_bigquery(project_dir)
    return compiled.dbt_errors + parse_failures(compiled)


# --- the child process: dbt with the offline shim ---------------------------------------------------


def _install_shim(state: dict[str, Any], columns: dict[str, list[str]]) -> None:
    """Patch dbt-bigquery so that nothing reaches for BigQuery; `state` steers and records it."""
    from dbt.adapters.bigquery import connections as bq_connections
    from dbt.adapters.bigquery.column import BigQueryColumn
    from dbt.adapters.bigquery.connections import BigQueryAdapterResponse, BigQueryConnectionManager
    from dbt.adapters.bigquery.impl import BigQueryAdapter
    from dbt.adapters.bigquery.relation import BigQueryRelation
    from dbt_common.clients import agate_helper

    class Unreachable:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError(f"BigQuery is unreachable here: client.{name} was called; shim it in {__file__}")

        def close(self) -> None:
            pass

    def get_relation(self: Any, database: str, schema: str, identifier: str) -> BigQueryRelation | None:
        kind = state["kinds"].get(identifier)  # anything else (dbt's temp tables) is missing too
        if not state["exists"] or kind is None:
            return None
        return BigQueryRelation.create(database=database, schema=schema, identifier=identifier, type=kind)

    def execute(self: Any, sql: str, auto_begin: bool = False, fetch: Any = None, limit: Any = None) -> Any:
        state["sent"].append((self.get_thread_connection().name, sql))
        return BigQueryAdapterResponse(_message="OK (not sent)"), agate_helper.empty_table()

    def get_columns_in_relation(self: Any, relation: BigQueryRelation) -> list[BigQueryColumn]:
        if not columns.get(relation.identifier):
            state["no_columns"].add(relation.identifier)
        return [BigQueryColumn(name, "STRING") for name in columns.get(relation.identifier, [])]

    bq_connections.create_bigquery_client = lambda credentials: Unreachable()  # type: ignore[assignment]
    patches = {
        "get_relation": get_relation,
        "get_columns_in_relation": get_columns_in_relation,
        "list_relations_without_caching": lambda self, schema_relation: [],
        "list_schemas": lambda self, database: [],
        "check_schema_exists": lambda self, database, schema: True,
        "create_schema": lambda self, relation: None,
        "drop_relation": lambda self, relation: None,
        "is_replaceable": lambda self, relation, partition_by, cluster_by: True,
    }
    for name, fn in patches.items():
        setattr(BigQueryAdapter, name, fn)
    BigQueryConnectionManager.execute = execute  # type: ignore[method-assign]


def _child(project_dir: Path, work: Path, state: dict[str, Any], columns: dict[str, list[str]]) -> None:
    from dbt.cli.main import dbtRunner

    columns.clear()
    work.mkdir(parents=True)
    common = ["--project-dir", str(project_dir), "--profiles-dir", str(project_dir), "--target-path", str(work)]
    common += ["--log-path", str(work / "logs"), "--log-level-file", "none", "--quiet", "--threads", "1"]
    parsed = dbtRunner().invoke(["parse", *common])
    if not parsed.success:
        raise SystemExit(f"dbt parse failed: {parsed.exception}")
    manifest = parsed.result
    models = {n.unique_id: n for n in manifest.nodes.values() if n.resource_type == "model"}
    functions = dict(manifest.functions)  # the enabled ones
    state["kinds"] = {n.alias: "view" if n.config.materialized == "view" else "table" for n in models.values()}
    out: dict[str, Any] = {
        "models": sorted(n.name for n in models.values()),
        "functions": sorted(n.name for n in functions.values()),
        "statements": {},
        "dbt_errors": [],
    }
    errors: list[dict[str, str]] = out["dbt_errors"]

    def invoke(args: list[str]) -> tuple[list[Any], str | None]:
        res = dbtRunner(manifest=manifest).invoke([*args, *common, "--no-write-json", "--no-populate-cache"])
        return getattr(res.result, "results", None) or [], None if res.result is not None else str(res.exception)

    for mode, (exists, dbt_vars) in MODES.items():
        state["exists"], state["sent"], state["no_columns"] = exists, [], set()
        statements: dict[str, list[str]] = {}
        extra = ["--vars", json.dumps(dbt_vars)] if dbt_vars else []
        # All models in one invocation, then what that did not cover: a failed model makes dbt skip
        # its children (selected again without it), and an error outside any model aborts the whole
        # invocation (then each model alone, so each gets its own SQL or its own error).
        if functions:  # `dbt run` builds models only; the models that call a function come after it
            results, crash = invoke(["build", *extra, "--select", "resource_type:function"])
            if crash is not None:
                errors.append({"mode": mode, "model": "(functions)", "error": crash})
            for r in results:
                if str(r.status) != "success":
                    errors.append({"mode": mode, "model": r.node.name, "error": r.message or str(r.status)})
        todo = [sorted(n.name for n in models.values())]
        while todo:
            names = todo.pop()
            selectors = [f"{name},resource_type:model" for name in names]
            results, crash = invoke(["run", "--indirect-selection", "empty", *extra, "--select", *selectors])
            if crash is not None and len(names) > 1:
                todo += [[name] for name in names]
            elif crash is not None:
                errors.append({"mode": mode, "model": names[0], "error": crash})
            skipped = sorted(r.node.name for r in results if str(r.status) == "skipped")
            todo += [skipped] if skipped else []
            for r in results:
                if str(r.status) not in ("success", "skipped"):
                    errors.append({"mode": mode, "model": r.node.name, "error": r.message or str(r.status)})
                if getattr(r.node, "compiled_code", None):  # compiled even when the materialization failed
                    statements[r.node.name] = [r.node.compiled_code]
        if mode == "first_build":  # data tests are plain SELECTs whatever the mode: compiled once
            results, crash = invoke(["compile", *extra, "--select", "resource_type:test"])
            if crash is not None:
                errors.append({"mode": mode, "model": "(data tests)", "error": crash})
            statements.update({r.node.name: [r.node.compiled_code] for r in results if str(r.status) == "success"})
        for conn_name, sql in state["sent"]:
            node = models.get(conn_name) or functions.get(conn_name)
            if node is not None and sql.strip():
                statements.setdefault(node.name, []).append(sql)
        for identifier in sorted(state["no_columns"]):
            error = "the shim could not infer the existing table's columns (sqlglot could not expand `*`)"
            errors.append({"mode": mode, "model": identifier, "error": error})
        out["statements"][mode] = statements
        if mode == "first_build":
            columns.update(_infer_columns(manifest, models, statements))
    (work / "statements.json").write_text(json.dumps(out, indent=1))


def _infer_columns(manifest: Any, models: dict[str, Any], compiled: dict[str, list[str]]) -> dict[str, list[str]]:
    """Output columns of each model, from its first-build SQL, `*` expanded through upstream schemas."""
    from sqlglot.optimizer.qualify import qualify

    from analytics_core.events import FIELD_NAMES
    from analytics_core.warehouse import KAFKA_COLUMNS, RAW_EVENTS

    schema: dict[str, dict[str, dict[str, dict[str, str]]]] = {}

    def add(node: Any, names: list[str]) -> None:
        table = schema.setdefault(node.database, {}).setdefault(node.schema, {})
        table[getattr(node, "alias", None) or node.identifier] = dict.fromkeys(names, "STRING")

    for source in manifest.sources.values():
        if source.identifier == RAW_EVENTS:  # the loader's table: the canonical event model
            add(source, [*FIELD_NAMES, *(name for name, _ in KAFKA_COLUMNS)])
    done: dict[str, list[str]] = {}

    def visit(unique_id: str) -> None:
        node = models[unique_id]
        if node.alias in done:
            return
        for parent in node.depends_on.nodes:
            if parent in models:
                visit(parent)
        names: list[str] = []
        if node.name in compiled:
            try:
                expr = sqlglot.parse_one(compiled[node.name][0], read="bigquery")
                names = qualify(expr, schema=schema, dialect="bigquery", validate_qualify_columns=False).named_selects
            except SqlglotError:
                pass  # reported as a parse failure of the model
        done[node.alias] = names
        if names:  # a table without columns breaks sqlglot's schema for every other table
            add(node, names)

    for unique_id in models:
        visit(unique_id)
    return done


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        state: dict[str, Any] = {"exists": False, "sent": [], "no_columns": set(), "kinds": {}}
        columns: dict[str, list[str]] = {}  # relation identifier -> columns, for the incremental MERGE
        _install_shim(state, columns)
        for project_dir, work in zip(argv[1::2], argv[2::2], strict=True):
            _child(Path(project_dir).resolve(), Path(work), state, columns)
        return 0
    failures = check(Path(argv[0]) if argv else DBT_PROJECT)
    for failure in failures:
        print(failure, end="\n\n")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
