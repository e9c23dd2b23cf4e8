"""The collector (`analytics collector`): SDK payloads in, canonical events on Kafka and typed dead letters out.

`pipeline.process_messages` and the modules it calls (adapters, validation, event_schemas, enrichment,
promotion) are pure logic: no network, no Redis, no Kafka; they read only the schema files and the
packaged IP and user-agent data. Around them: the FastAPI app and one request's flow (app, ingest,
body), Redis for dedupe and rate limits (dedupe, ratelimit, redisconn), the Kafka producer (producer),
and schema registration at start (registration).
"""

from __future__ import annotations
