"""The real SDKs in their own languages (Node, Go, Java) → collector → tracking.events, read back decoded.

Each SDK runs in a small driver program (tests/sdk_drivers/<language>/) that sends four events for the user
u-<run> (identify, track "Product Viewed", track "Order Completed" with revenue and currency, page), flushes and
prints one line of JSON with what the SDK reported (delivered, failed, its error texts). For every SDK: the events
arrive exactly once and right; a wrong write key is given up as the SDK's code says it is, in bounded time; a 429
is retried until every event is in. A test runs when its toolchain (node, go, mvn) is on PATH.

Drivers are built once into ~/.cache/analytics-pipeline/sdk-drivers/<language>-<hash of the driver's sources>/
(npm ci, go build, mvn package of a shaded jar), never inside the repository, so a second run starts at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from analytics_core.settings import Settings
from collector.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.hardening import serve_like_production
from tests.integration.helpers import forget_redis_keys, read_events

pytestmark = pytest.mark.integration

DRIVERS = Path(__file__).resolve().parents[1] / "sdk_drivers"
CACHE = Path.home() / ".cache" / "analytics-pipeline" / "sdk-drivers"
TAG = uuid.uuid4().hex[:8]
KEY = f"wk_poly_{TAG}"
BURST = 2  # events_per_second_limit of each SDK's rate-limit tenant; its drivers send 2 events a request
SENT = 4


@dataclass(frozen=True)
class Sdk:
    id: str
    language: str  # node, go or java: the driver program
    name: str  # the driver's name for it
    version: str  # pinned in the driver's manifest; the driver reports the one it ran
    library: str  # context.library.name (PostHog: $lib) on its events
    agent: str  # how its User-Agent starts: which requests are its
    path: str  # where it posts
    wrong_key_requests: int  # requests a run with an unknown key makes before the SDK gives up (see the test)

    @property
    def tenant(self) -> str:
        return f"tiny_{self.id.replace('-', '_')}_{TAG}"

    @property
    def tiny_key(self) -> str:
        return f"wk_{self.tenant}"


SDKS = (
    Sdk("segment-node", "node", "segment", "3.1.0", "@segment/analytics-node", "analytics-node-next/", "/v1/batch", 1),
    Sdk("rudderstack-node", "node", "rudderstack", "3.1.1", "analytics-node", "analytics-node/", "/v1/batch", 2),
    Sdk("posthog-node", "node", "posthog", "5.74.0", "posthog-node", "posthog-node/", "/batch/", 1),
    Sdk("segment-go", "go", "segment", "v3.3.0", "analytics-go", "analytics-go ", "/v1/batch", 10),
    Sdk("posthog-go", "go", "posthog", "v1.5.2", "posthog-go", "posthog-go/", "/batch/", 10),
    Sdk("segment-java", "java", "segment", "3.5.1", "analytics-java", "analytics-java/", "/v1/import/", 1),
)
TOOLCHAINS = {"node": ("node", "npm"), "go": ("go",), "java": ("java", "mvn")}
GO_HOME_BIN = Path("/usr/local/go/bin")  # where Go's own installer puts it, not always on PATH
if shutil.which("go") is None and (GO_HOME_BIN / "go").exists():
    os.environ["PATH"] = f"{os.environ.get('PATH', '')}{os.pathsep}{GO_HOME_BIN}"


@dataclass(frozen=True)
class Answered:
    agent: str
    path: str
    status: int


class RecordAnswers:
    """ASGI middleware noting the User-Agent, path and status of every answer: what each SDK really sent."""

    def __init__(self, app: ASGIApp, answered: list[Answered]) -> None:
        self.app = app
        self.answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        agent = dict(scope["headers"]).get(b"user-agent", b"").decode("latin-1")

        async def noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answered.append(Answered(agent, scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, noted)


@dataclass(frozen=True)
class Polyglot:
    url: str
    settings: Settings
    answered: list[Answered]

    def statuses(self, sdk: Sdk, since: int = 0) -> list[tuple[str, int]]:
        """(path, status) of each request the SDK made, from the `since`th answer on."""
        return [(a.path, a.status) for a in self.answered[since:] if a.agent.startswith(sdk.agent)]


@pytest.fixture(scope="module")
def polyglot(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Polyglot]:
    """A collector of this module: one tenant with the default limits, and one per SDK with a burst of 2 events."""
    settings = kafka_settings.model_copy(
        update={
            "tenants_db": tmp_path_factory.mktemp("polyglot") / "tenants.sqlite",
            "redis_key_prefix": f"test:{TAG}:",
        }
    )
    store = TenantStore(settings.tenants_db)
    create_tenant_with_keys(store, f"poly_{TAG}", KEY, f"rk_poly_{TAG}")
    for sdk in SDKS:
        create_tenant_with_keys(store, sdk.tenant, sdk.tiny_key, f"rk_{sdk.tenant}", events_per_second_limit=BURST)
    app, answered = create_app(settings), list[Answered]()
    app.add_middleware(RecordAnswers, answered=answered)
    try:
        with serve_like_production(app, settings) as url:
            yield Polyglot(url, settings, answered)
    finally:
        forget_redis_keys(settings, TAG)


# --- the drivers, built once ----------------------------------------------------------------------------------


def _sources_hash(language: str) -> str:
    digest = hashlib.sha256()
    for path in sorted((DRIVERS / language).rglob("*")):
        if path.is_file() and not {"node_modules", "target"} & set(path.parts):
            digest.update(str(path.relative_to(DRIVERS)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _run_build(command: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"building the SDK driver failed: {' '.join(command)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )


def _missing(language: str) -> list[str]:
    return [tool for tool in TOOLCHAINS[language] if shutil.which(tool) is None]


@functools.cache
def _built(language: str) -> Path:
    """The driver's cache directory, built there first when its sources changed (a new hash)."""
    if missing := _missing(language):
        pytest.skip(f"{', '.join(missing)} not on PATH: the {language} SDKs are not tested")
    home = CACHE / f"{language}-{_sources_hash(language)}"
    if (home / ".built").exists():
        return home
    work = CACHE / f"{home.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    source = DRIVERS / language
    if language == "node":  # the driver goes next to its node_modules, where require() finds the SDKs
        shutil.copytree(source, work, ignore=shutil.ignore_patterns("node_modules"))
        _run_build(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], work, 600)
    elif language == "go":
        work.mkdir(parents=True)
        _run_build(["go", "build", "-mod=readonly", "-trimpath", "-o", str(work / "driver"), "."], source, 600)
    else:
        work.mkdir(parents=True)
        build_dir = f"-Ddriver.build.dir={work / 'target'}"
        _run_build(["mvn", "-q", "-B", "package", build_dir, "-f", str(source / "pom.xml")], source, 900)
    (work / ".built").touch()
    try:
        work.rename(home)
    except OSError:  # another session built it meanwhile
        shutil.rmtree(work, ignore_errors=True)
    return home


def driver_command(sdk: Sdk, url: str, key: str, run: str, batch: int = 0, retry_ms: int = 0) -> list[str]:
    home = _built(sdk.language)
    if sdk.language == "node":
        return ["node", str(home / "driver.js"), sdk.name, url, key, run, *([str(batch)] if batch else [])]
    if sdk.language == "go":
        options = [*(["-batch", str(batch)] if batch else []), *(["-retry-ms", str(retry_ms)] if retry_ms else [])]
        return [str(home / "driver"), "-sdk", sdk.name, "-url", url, "-key", key, "-run", run, *options]
    return ["java", "-jar", str(home / "target" / "sdk-driver.jar"), url, key, run, *([str(batch)] if batch else [])]


@dataclass(frozen=True)
class Outcome:
    status: int
    report: dict[str, Any]
    seconds: float
    stderr: str


@dataclass(frozen=True)
class Started:
    sdk: Sdk
    run: str
    process: subprocess.Popen[str]
    at: float
    since: int  # the number of answers the collector had given when the driver started

    def outcome(self, timeout: float = 180) -> Outcome:
        """Wait for the driver to end; its last line of output is its report."""
        try:
            stdout, stderr = self.process.communicate(timeout=max(1.0, self.at + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            pytest.fail(f"{self.sdk.id}: the driver did not end within {timeout:.0f} s\n{stdout}\n{stderr[-4000:]}")
        lines = stdout.strip().splitlines()
        assert lines, f"{self.sdk.id}: the driver printed no report (exit {self.process.returncode})\n{stderr[-4000:]}"
        report = json.loads(lines[-1])
        assert report["version"] == self.sdk.version, (
            f"{self.sdk.id}: ran {report['version']}, pinned {self.sdk.version}"
        )
        return Outcome(self.process.returncode, report, time.monotonic() - self.at, stderr[-4000:])


def start(sdk: Sdk, url: str, key: str, run: str, since: int = 0, **options: int) -> Started:
    command = driver_command(sdk, url, key, run, **options)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Started(sdk, run, process, time.monotonic(), since)


def drive(sdk: Sdk, url: str, key: str, run: str, timeout: float = 180, **options: int) -> Outcome:
    return start(sdk, url, key, run, **options).outcome(timeout)


def read_run(settings: Settings, run: str) -> list[dict[str, Any]]:
    return read_events(settings, lambda e: e["user_id"] == f"u-{run}", SENT)


def check_events(sdk: Sdk, events: list[dict[str, Any]], run: str, tenant: str) -> None:
    """The driver's four events, each once, with type, user, tenant, properties and library right."""
    assert len(events) == SENT and len({e["event_id"] for e in events}) == SENT, [e["event_type"] for e in events]
    by_type = {e["event_type"]: e for e in events}
    assert sorted(by_type) == ["Order Completed", "Product Viewed", "identify", "page_view"]
    assert {(e["user_id"], e["tenant_id"]) for e in events} == {(f"u-{run}", tenant)}
    assert all(e["library"] and e["library"].startswith(sdk.library + "/") for e in events), events[0]["library"]
    order, viewed, page = by_type["Order Completed"], by_type["Product Viewed"], by_type["page_view"]
    assert (order["message_type"], order["revenue"], order["currency"]) == ("track", 42.5, "EUR")
    assert json.loads(order["properties"])["order_id"] == f"o-{run}"
    assert json.loads(viewed["properties"])["product_id"] == "sku-1"
    assert (page["message_type"], page["page"]) == ("page", "/home")
    traits = json.loads(by_type["identify"]["properties"])["traits"]
    assert traits == {"plan": "pro", "run": run}  # posthog-go sends $set beside properties, the others in them


def _param(sdk: Sdk, slow: bool = False) -> Any:
    return pytest.param(sdk, id=sdk.id, marks=[pytest.mark.slow] if slow else [])


# --- the routes an SDK posts to -------------------------------------------------------------------------------


def test_import_answers_both_spellings_without_a_redirect(polyglot: Polyglot) -> None:
    """analytics-java posts to /v1/import/ (analytics-ruby to /v1/import) with writeKey in the body, no Basic auth."""
    run = uuid.uuid4().hex
    for i, path in enumerate(("/v1/import/", "/v1/import")):
        message = {"type": "track", "event": "Product Viewed", "userId": f"u-{run}", "messageId": f"{run}-{i}",
                   "properties": {"product_id": "sku-1"}}  # fmt: skip
        body = {"batch": [message], "sentAt": "2026-01-15T10:00:01Z", "writeKey": KEY}
        answer = httpx.post(f"{polyglot.url}{path}", json=body, follow_redirects=False, timeout=30)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
    assert len(read_events(polyglot.settings, lambda e: e["user_id"] == f"u-{run}", 2)) == 2


# --- every SDK ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sdk", [_param(sdk) for sdk in SDKS])
def test_every_event_arrives_exactly_once(polyglot: Polyglot, sdk: Sdk) -> None:
    run, since = uuid.uuid4().hex[:12], len(polyglot.answered)
    outcome = drive(sdk, polyglot.url, KEY, run)
    assert (outcome.status, outcome.report["delivered"], outcome.report["errors"]) == (0, SENT, []), outcome
    statuses = polyglot.statuses(sdk, since)
    assert statuses and set(statuses) == {(sdk.path, 200)}, statuses  # answered where it posts, no redirect
    check_events(sdk, read_run(polyglot.settings, run), run, f"poly_{TAG}")


@pytest.mark.parametrize("sdk", [_param(sdk) for sdk in SDKS])
def test_a_wrong_key_is_given_up_and_reported(polyglot: Polyglot, sdk: Sdk) -> None:
    """A 401 is final for every SDK but the Go ones, which resend any failed batch: 10 attempts, then the failure
    callback. The Go driver sets their RetryAfter (the SDKs' own setting) to 50 ms, so the 10 attempts take half a
    second rather than the default backoff's 43 s. The rudderstack SDK sends the first event of a run on its own,
    so two batches: two requests."""
    run, since = uuid.uuid4().hex[:12], len(polyglot.answered)
    outcome = drive(sdk, polyglot.url, f"wk_wrong_{run}", run, timeout=60, retry_ms=50 if sdk.language == "go" else 0)
    report = outcome.report
    assert (outcome.status, report["delivered"], report["failed"], report["timed_out"]) == (1, 0, SENT, False), outcome
    assert report["errors"] and all("401" in error for error in report["errors"]), report["errors"]
    assert polyglot.statuses(sdk, since) == [(sdk.path, 401)] * sdk.wrong_key_requests
    assert outcome.seconds < 30, outcome


@pytest.fixture(scope="module")
def rate_limited(polyglot: Polyglot, request: pytest.FixtureRequest) -> Iterator[dict[str, Started]]:
    """The run of every SDK whose 429 test is selected, each against its own tenant (a burst of 2 events), all
    started at once: their backoffs (15 to 30 s for Java) pass together instead of one after the other."""
    chosen = [
        item.callspec.params["sdk"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == "test_a_429_is_retried_until_every_event_arrives_once"
        and item.module is not None
        and item.module.__name__ == __name__
    ]
    since = len(polyglot.answered)
    runs = {
        sdk.id: start(sdk, polyglot.url, sdk.tiny_key, uuid.uuid4().hex[:12], batch=BURST, since=since)
        for sdk in chosen
        if not _missing(sdk.language)
    }
    try:
        yield runs
    finally:
        for started in runs.values():
            if started.process.poll() is None:
                started.process.kill()
                started.process.communicate()


@pytest.mark.parametrize("sdk", [_param(sdk, slow=sdk.language == "java") for sdk in SDKS])
def test_a_429_is_retried_until_every_event_arrives_once(
    polyglot: Polyglot, rate_limited: dict[str, Started], sdk: Sdk
) -> None:
    """Two requests of two events against a burst of two: one gets 429 with Retry-After: 1, and the SDK sends it
    again (Segment Node after Retry-After, RudderStack after the longer of its backoff and Retry-After, PostHog
    Node after its fixed 3 s, the Go SDKs after their backoff from 100 ms, Java after its backoff of 15 to 30 s).
    PostHog Node puts all four events in one request (flushAt only starts a flush): 413, which it answers by
    halving the batch."""
    if sdk.id not in rate_limited:
        _built(sdk.language)  # skips, naming the missing toolchain
    started = rate_limited[sdk.id]
    outcome = started.outcome()
    assert (outcome.status, outcome.report["delivered"], outcome.report["errors"]) == (0, SENT, []), outcome
    answers = polyglot.statuses(sdk, started.since)
    statuses = [status for _, status in answers]
    assert {path for path, _ in answers} == {sdk.path} and 429 in statuses, f"never met the rate limit: {answers}"
    assert statuses[-1] == 200 and set(statuses) <= {200, 413, 429}, answers
    check_events(sdk, read_run(polyglot.settings, started.run), started.run, sdk.tenant)
