"""Schemathesis against the real collector: its own OpenAPI document, every check, bounded and deterministic.

The collector is served as `analytics collector` serves it (uvicorn with the CLI's server options:
tests/integration/hardening.py) on a loopback port with its real lifespan: a Kafka producer on topics of this
module alone, Redis for rate limits and dedupe, a tenants database of its own. Requests go over real HTTP, not
through an ASGI test client: the body limit, gzip handling and status codes are those an SDK meets, the lifespan
runs once (schemathesis' ASGI client would run it around each call), and an answer is sent only after Kafka
acknowledged, as in production. Generated requests carry the tenant's write key as the Basic-auth user (the
Segment SDKs' way); negative cases and the `ignored_auth` probes go without it or with a wrong one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from prometheus_client.parser import text_string_to_metric_families

from analytics_core.settings import Settings, get_settings
from analytics_core.topics import ensure_topics
from collector import state as collector_state
from collector.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.conftest import delete_topics
from tests.fuzz_helpers import (
    Outcomes,
    Target,
    basic_auth,
    delete_redis_keys,
    fuzz_schema,
    serving_the_fuzzed_document,
)

pytestmark = pytest.mark.integration

INGEST = ("/v1/batch", "/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/batch/")
TAG = uuid.uuid4().hex[:8]
TENANT, WRITE_KEY = f"fuzz_{TAG}", f"wk_fuzz_{TAG}"  # a tenant no other test writes to (rate limits, dedupe)
DOCUMENT = create_app(get_settings()).openapi()  # builds no client: those are made by the lifespan
OUTCOMES = Outcomes()
# No operation is narrowed: with the write key in Basic auth (which wins over a body `writeKey`), a request the
# document calls valid must be accepted (200, its bad messages dead-lettered) and one it calls invalid refused.
schema = fuzz_schema(DOCUMENT, basic_auth(WRITE_KEY), OUTCOMES)


@pytest.fixture(scope="module")
def fuzzed_collector(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A collector of its own: topics of this module, a tenants database holding the fuzz tenant alone."""
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": f"{kafka_settings.topic_prefix}fuzz{TAG}.",
            "tenants_db": tmp_path_factory.mktemp("fuzz_collector") / "tenants.sqlite",
        }
    )
    ensure_topics(settings)
    create_tenant_with_keys(TenantStore(settings.tenants_db), TENANT, WRITE_KEY, f"rk_fuzz_{TAG}")
    # The producer's linger.ms at 0, not 20: an answer still waits for Kafka's acknowledgement, but not 20 ms for
    # more records to batch with (a throughput setting for load: collector/state.py), which each of the fuzzer's
    # thousands of requests, sent one after the other, would wait otherwise (~25 ms an answer instead of ~3 ms).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collector_state, "COLLECTOR_LINGER_MS", 0)
        try:
            with serving_the_fuzzed_document(create_app(settings), settings, DOCUMENT, "collector") as target:
                yield target
        finally:
            delete_topics(settings)
            delete_redis_keys(settings, f"*{{{TENANT}}}*")  # the tenant's dedupe sets and rate-limit buckets


@schema.parametrize()
def test_collector_conforms_to_its_openapi_document(case: schemathesis.Case, fuzzed_collector: Target) -> None:
    case.call_and_validate(base_url=fuzzed_collector.url)


def test_the_document_declares_bodies_and_the_write_key(fuzzed_collector: Target) -> None:
    """Without request bodies and a security scheme in the document, the fuzzer could neither send events nor test
    auth: every ingest operation must describe its JSON body and accept the write key as HTTP Basic auth."""
    document = httpx.get(f"{fuzzed_collector.url}/openapi.json", timeout=10).json()
    schemes = document.get("components", {}).get("securitySchemes", {})
    basic = {name for name, s in schemes.items() if (s.get("type"), s.get("scheme", "").lower()) == ("http", "basic")}
    problems = []
    for path in INGEST:
        operation = document["paths"].get(path, {}).get("post")
        if operation is None:
            problems.append(f"POST {path}: not in the document")
            continue
        if "application/json" not in operation.get("requestBody", {}).get("content", {}):
            problems.append(f"POST {path}: no application/json request body")
        security = operation.get("security", document.get("security", []))
        if not any(basic & set(requirement) for requirement in security):
            problems.append(f"POST {path}: no HTTP Basic security requirement (schemes: {sorted(schemes)})")
    assert not problems, "\n".join(problems)


def test_the_fuzzer_reached_the_pipeline(fuzzed_collector: Target) -> None:
    """Generated bodies went through the adapters and the pipeline to Kafka: each ingest operation accepted some
    valid requests, and some of their messages became events (not only dead letters)."""
    if not OUTCOMES.seen:
        pytest.skip("runs after test_collector_conforms_to_its_openapi_document, in the same session")
    not_reached = [path for path in INGEST if OUTCOMES.statuses(f"POST {path}")[200] == 0]
    assert not not_reached, f"no generated request was accepted by {not_reached}:\n{OUTCOMES.summary()}"
    text = httpx.get(f"{fuzzed_collector.url}/metrics", timeout=10).text
    totals = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("collector_events_received_total", "collector_events_accepted_total")
    }
    assert totals.get("collector_events_accepted_total", 0) > 0, f"{totals}\n{OUTCOMES.summary()}"
