"""Schemathesis set-up shared by the fuzz tests of both services (tests/integration/test_fuzz_*.py).

One strict configuration: every built-in check on, positive and negative data, the examples, coverage and
fuzzing phases, a fixed number of examples per operation and a fixed seed with derandomised generation, so a
run sends the same requests every time and takes a bounded time. The services are real servers on loopback
ports (served as the CLIs serve them, with the app's own lifespan, run once), fuzzed over real HTTP against the
OpenAPI document they serve.
"""

from __future__ import annotations

import base64
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis import Case
from schemathesis.core.transport import Response
from schemathesis.schemas import BaseSchema

from analytics_core.clients import redis_client
from analytics_core.settings import Settings
from tests.integration.hardening import serve_like_production

# A fixed seed plus `deterministic` (Hypothesis' derandomize): the same requests each run.
SEED = 17
# Generated examples per operation in the fuzzing phase (the examples and coverage phases add their own,
# deterministic, cases). Enough to reach every body shape the documents describe, small enough for `make test`.
MAX_EXAMPLES = 40
# Seconds a request may take before it counts as a failure; queries on a busy 2-core box included.
REQUEST_TIMEOUT_S = 20

# Every built-in check, named so that a check added or renamed in a new schemathesis release is noticed
# (a name the pinned release does not know fails config validation instead of being silently ignored).
ALL_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "use_after_free",
    "ensure_resource_availability",
    "missing_required_header",
    "ignored_auth",
    "object_level_authorization",
    "unsupported_method",
    "allow_header_conformance",
)


def fuzz_config(operations: list[dict[str, Any]] | None = None) -> schemathesis.Config:
    """The strict, bounded configuration; `operations` narrows settings for single operations (with a reason)."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": REQUEST_TIMEOUT_S,
            "generation": {
                "mode": "all",  # positive and negative data
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",  # no .hypothesis/ in the checkout; derandomised runs need no replay store
            },
            # All checks, each named. `max_response_time` is the one left off: it needs a limit, and response
            # times on a shared 2-core box say nothing about the services; hangs are caught by the timeout.
            "checks": {"enabled": True, **{name: {"enabled": True} for name in ALL_CHECKS}},
            # `stateful` needs OpenAPI links between operations that create and read resources; neither service
            # has any (ingest is write-only, queries read-only), so use_after_free and ensure_resource_availability
            # are enabled but have nothing to observe: they would fire only on a stateful sequence.
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "operations": operations or [],
        }
    )


def fuzz_schema(
    document: dict[str, Any], authorization: str, outcomes: Outcomes, operations: list[dict[str, Any]] | None = None
) -> BaseSchema:
    """A schemathesis schema of `document`, with `authorization` sent on every generated request.

    The document is the app's own (`app.openapi()`, what FastAPI serves at /openapi.json), taken when the test
    module is imported: `@schema.parametrize()` needs it at collection, before any server runs. (The loader that
    would fetch it from a fixture's server, `schemathesis.pytest.from_fixture`, does not work with pytest 9.2 in
    schemathesis 4.32.5: it sets `Function._nodeid`, which pytest 9.2 no longer has.) Each test module's server
    fixture checks that the server serves exactly this document, so what is fuzzed is what the service publishes.

    The credential is set by an auth provider, not as a fixed header, so schemathesis knows it is the auth: its
    negative cases for a declared security scheme go out without it, and `ignored_auth` probes each operation
    that declares security once with no credential and once with a wrong one.
    """
    schema = schemathesis.openapi.from_dict(document, config=fuzz_config(operations))

    # refresh_interval=None: no caching wrapper, hence no re-authentication and silent replay after a 401.
    @schema.auth(refresh_interval=None)
    class ValidKey:
        def get(self, case: Case, context: schemathesis.AuthContext) -> str:
            return authorization

        def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
            case.headers["Authorization"] = data

    @schema.hook("after_call")
    def record(context: schemathesis.HookContext, case: Case, response: Response) -> None:
        outcomes.record(case, response)

    return schema


@contextmanager
def serving_the_fuzzed_document(
    app: FastAPI, settings: Settings, document: dict[str, Any], service: str
) -> Iterator[Target]:
    """`app` served as its CLI serves it; the test fails unless it serves `document`, the one being fuzzed."""
    with serve_like_production(app, settings) as url:
        problem = served_document_problem(url, document)
        if problem:
            pytest.fail(f"the {service} does not serve the document being fuzzed: {problem}")
        yield Target(url, settings)


def served_document_problem(base_url: str, document: dict[str, Any]) -> str | None:
    """Why the document served at `base_url` is not `document` (the one fuzzed), or None when it is."""
    answer = httpx.get(f"{base_url}/openapi.json", timeout=10)
    if answer.status_code != 200:
        return f"GET /openapi.json answered {answer.status_code}: {answer.text[:500]}"
    if answer.json() != document:
        return "the served /openapi.json differs from app.openapi() of a freshly built app"
    return None


def basic_auth(user: str) -> str:
    """Segment's SDK form: the write key as the Basic-auth user name, no password."""
    return "Basic " + base64.b64encode(f"{user}:".encode()).decode()


class Outcomes:
    """Status codes seen per operation and generation mode, to show the fuzzer reached the handlers."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)

    def record(self, case: Case, response: Response) -> None:
        mode = case.meta.generation.mode.value if case.meta is not None else "explicit"
        self.seen[(case.operation.label, mode)][response.status_code] += 1

    def statuses(self, label: str, mode: str = "positive") -> Counter[int]:
        return self.seen.get((label, mode), Counter())

    def summary(self) -> str:
        return "\n".join(f"{label} [{mode}]: {dict(codes)}" for (label, mode), codes in sorted(self.seen.items()))


def delete_redis_keys(settings: Settings, pattern: str) -> None:
    """Remove what a fuzzing run left in Redis under `pattern` (it expires anyway; a shared Redis is never flushed)."""
    conn = redis_client(settings)
    try:
        keys = list(conn.scan_iter(match=pattern, count=1000))
        if keys:
            conn.delete(*keys)
    finally:
        conn.close()


@dataclass(frozen=True)
class Target:
    """A service being fuzzed: its base URL and the settings it was started with."""

    url: str
    settings: Settings
