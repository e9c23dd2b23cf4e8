"""The dbt project, prepared once at load, and dbt invocations pointed at the settings' warehouse."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, DbtProject
from dagster_dbt.asset_utils import group_from_dbt_resource_props_fallback_to_directory
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from filelock import FileLock

from analytics_core import warehouse
from analytics_core.dbt import lock_failures, prepare_warehouse, venv_tool, writer_lock
from analytics_core.settings import Settings

STAGING = "stg_tracking__events"
# What the rebuild (backfill, replay) and the schedules build; tags are set in the models.
MINUTE_SELECT = f"{STAGING} tag:minute"
HOURLY_SELECT = f"{STAGING} tag:hourly"
REBUILD_SELECT = f"{STAGING} tag:minute tag:hourly"

_SKIP = {"target", "logs", "dbt_packages"}
# The dbt of this environment (the venv's bin/ is not on PATH when run as .venv/bin/dagster or pytest).
DBT_EXECUTABLE = venv_tool("dbt")


def _manifest_is_stale(project: DbtProject) -> bool:
    if not project.manifest_path.exists():
        return True
    built = project.manifest_path.stat().st_mtime
    for path in project.project_dir.rglob("*"):
        rel = path.relative_to(project.project_dir)
        if rel.parts[0] not in _SKIP and path.is_file() and path.stat().st_mtime > built:
            return True
    return False


def prepare(project: DbtProject) -> DbtProject:
    """`dbt parse` when the manifest is missing or older than a project file (target/ is git-ignored).

    Like DbtProject.prepare_if_dev, but also outside `dagster dev` (tests, a clean checkout) and only
    when needed; the lock file is the one dagster-dbt's preparer uses.
    """
    if _manifest_is_stale(project):
        project.manifest_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(project.manifest_path.with_suffix(".concurrent-update-lock")).acquire(timeout=300):
            if _manifest_is_stale(project):
                cli = DbtCliResource(project_dir=project, dbt_executable=DBT_EXECUTABLE)
                cli.cli(["parse", "--quiet"], target_path=project.target_path).wait()
    return project


class Translator(DagsterDbtTranslator):
    """dbt assets grouped by their models/ folder (staging, marts); tests become asset checks."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return group_from_dbt_resource_props_fallback_to_directory(dbt_resource_props)


dbt_project = prepare(DbtProject(project_dir=warehouse.DBT_PROJECT_DIR, profiles_dir=warehouse.DBT_PROJECT_DIR))
translator = Translator()
dbt_resource = DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)

_ENV_LOCK = threading.Lock()
LOCK_RETRIES = 5


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    # DbtCliResource.cli copies os.environ into the dbt subprocess and takes no env argument.
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, old in saved.items():
                if old is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = old


def dbt_events(
    dbt: DbtCliResource,
    settings: Settings,
    args: Sequence[str],
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    manifest: Path | None = None,
) -> Iterator[Any]:
    """Run `dbt <args>` and yield its Dagster events, holding the warehouse writer lock from start to end.

    The one way the dbt assets and the replay run dbt: the loader's commits wait while the build runs
    (analytics_core/writer_lock.py), so no model loses its commit to them. The lock is released when the
    invocation ends, fails, or the step stops iterating; a step process that dies releases it too.
    """
    with writer_lock(settings, args, f"dagster run {context.run_id[:8]}: dbt"):
        yield from stream(run_dbt(dbt, settings, args, context, manifest))


def run_dbt(
    dbt: DbtCliResource,
    settings: Settings,
    args: Sequence[str],
    context: dg.AssetExecutionContext | dg.OpExecutionContext,
    manifest: Path | None = None,
) -> DbtCliInvocation:
    """`dbt <args>` with the ANALYTICS_DBT_* variables of `settings` (which warehouse, which target).

    Tests run with cautious indirect selection: only those whose every parent is built in this run
    (the day-reconciliation test reads staging and the day rollups: the minute job builds only one).
    """
    prepare_warehouse(settings)
    selection = os.environ.get("DBT_INDIRECT_SELECTION", "cautious")
    env = {"DBT_INDIRECT_SELECTION": selection, **warehouse.dbt_env(settings)}
    with _environment(env):
        if manifest is None:
            return dbt.cli(args, context=context)
        return dbt.cli(args, context=context, manifest=manifest, dagster_dbt_translator=translator)


def _lock_conflict(invocation: DbtCliInvocation) -> bool:
    try:
        results = invocation.get_artifact("run_results.json")["results"]
    except (OSError, ValueError, KeyError):
        return False
    return lock_failures(results) > 0


def stream(invocation: DbtCliInvocation) -> Iterator[Any]:
    """The invocation's Dagster events; its target folder is removed after success (failures keep theirs).

    dagster-dbt gives every invocation its own target/<op>-<run>-<id>/ folder: a minute schedule
    would leave 1,440 of them a day. A model that failed on a SQLite-catalog lock conflict anyway (a
    writer that does not take the writer lock, analytics_core/dbt.py) makes Dagster retry the step:
    every model can run again.
    """
    try:
        yield from invocation.stream()
    except DagsterDbtCliRuntimeError as exc:
        if _lock_conflict(invocation):
            raise dg.RetryRequested(max_retries=LOCK_RETRIES, seconds_to_wait=2.0) from exc
        raise
    shutil.rmtree(invocation.target_path, ignore_errors=True)
