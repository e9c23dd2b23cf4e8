"""`make demo`, then `make down`, as a new user runs them, on ports and a state folder of their own.

The demo's Kafka, Redis, collector, realtime consumer, continuous loader, query API, Dagster and live
traffic start; the API answers with the history's numbers; Dagster's minute schedule materialises the
minute rollups on its own while the loader keeps loading (the two share the warehouse's writer lock);
`make down` then stops everything, and no process the demo started is left (every process is looked
for by the demo's state folder in its environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pytest

from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
READ_KEY = "demo_read_tenant_1"


def demo_env(state: Path) -> dict[str, str]:
    ports = {name: free_port() for name in ("kafka", "controller", "redis", "collector", "api", "dagster")}
    return {
        **os.environ,
        "ANALYTICS_STATE_DIR": str(state),
        "ANALYTICS_WAREHOUSE_PATH": str(state / "warehouse"),
        "ANALYTICS_TENANTS_DB": str(state / "tenants.sqlite"),
        "ANALYTICS_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['kafka']}",
        "ANALYTICS_KAFKA_CONTROLLER_PORT": str(ports["controller"]),
        "ANALYTICS_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "ANALYTICS_COLLECTOR_PORT": str(ports["collector"]),
        "ANALYTICS_API_PORT": str(ports["api"]),
        "ANALYTICS_DAGSTER_PORT": str(ports["dagster"]),
        "DEMO_DAYS": "2",
    }


def make(target: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", target], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def processes_of(state: Path) -> list[str]:
    """pid and command line of every live process whose environment names the demo's state folder."""
    marker = f"ANALYTICS_STATE_DIR={state}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, waiting for its parent to collect it
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {command[:200]}")
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def minute_rollups_by_schedule(home: Path) -> bool:
    """A metrics_minute run started by its schedule succeeded and fct_metrics_minute was materialised."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_run_records(
            dg.RunsFilter(job_name="metrics_minute", statuses=[dg.DagsterRunStatus.SUCCESS])
        )
        scheduled = [
            r for r in runs if r.dagster_run.tags.get("dagster/schedule_name") == "metrics_minute_every_minute"
        ]
        return (
            bool(scheduled) and instance.get_latest_materialization_event(dg.AssetKey("fct_metrics_minute")) is not None
        )
    finally:
        instance.dispose()


def test_make_demo_keeps_the_pipeline_running_and_make_down_stops_all_of_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = demo_env(state)
    # A state folder an older `make dagster` used links its dagster.yaml to the repository's; starting Dagster
    # once truncated the repository's file through that link. (Linked here to a copy: a regression must not
    # empty the checkout's file.)
    linked = tmp_path / "dagster.yaml"
    shutil.copyfile(ROOT / "dagster.yaml", linked)
    (state / "dagster").mkdir(parents=True)
    (state / "dagster" / "dagster.yaml").symlink_to(linked)
    try:
        demo = make("demo", env, timeout=900)
        assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
        api = f"http://127.0.0.1:{env['ANALYTICS_API_PORT']}"
        assert f"Dagster UI: http://127.0.0.1:{env['ANALYTICS_DAGSTER_PORT']}" in demo.stdout
        assert f"{api}/docs" in demo.stdout
        assert f"dashboard:  {api}/  (read key: {READ_KEY})" in demo.stdout
        page = httpx.get(f"{api}/")
        assert page.status_code == 200 and "web/dashboard.js" in page.text

        # The history's numbers from the query API.
        end = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        body = {"metrics": ["events"], "start": (end - timedelta(days=3)).isoformat(), "end": end.isoformat()}
        answer = httpx.post(
            f"{api}/api/v1/query",
            json={**body, "granularity": "total"},
            headers={"Authorization": f"Bearer {READ_KEY}"},
        )
        assert answer.status_code == 200, answer.text
        assert sum(row["values"]["events"] for row in answer.json()["rows"]) > 1_000
        # The demo dashboard answers every tile, revenue with money in it.
        board = httpx.get(f"{api}/api/v1/dashboards/demo", headers={"Authorization": f"Bearer {READ_KEY}"}, timeout=60)
        assert board.status_code == 200, board.text
        tiles = {tile["id"]: tile for tile in board.json()["tiles"]}
        assert not [(t, tile["error"]) for t, tile in tiles.items() if tile.get("error")]
        revenue = tiles["revenue"]["answers"][0]["rows"]
        assert sum(row["values"]["revenue"] or 0 for row in revenue) > 0

        # Dagster's minute schedule runs by itself (a tick a minute, the wait for the loader, the build).
        deadline = time.monotonic() + 240
        while not minute_rollups_by_schedule(state / "dagster"):
            assert time.monotonic() < deadline, "no scheduled metrics_minute run succeeded within 4 minutes"
            time.sleep(5)
        running = processes_of(state)  # the check below can see the demo's processes
        assert [p for p in running if "analytics loader" in p and "--idle-exit" not in p], running
        assert linked.read_bytes() == (ROOT / "dagster.yaml").read_bytes()
        assert str(state / "dagster") in (state / "dagster" / "dagster.yaml").read_text()
    finally:
        down = make("down", env, timeout=300)
    assert down.returncode == 0, down.stdout[-4000:] + down.stderr[-4000:]
    assert processes_of(state) == []
