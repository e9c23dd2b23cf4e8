"""Dead-letter records for tracking.events_dlq: a typed reason, the original payload, tenant and time."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

# Modelled on Snowplow's failed-event taxonomy.
Reason = Literal[
    "format",  # not parseable: bad JSON, wrong wire format, undecodable record
    "size",  # an event above the size limit
    "schema_violation",  # required field missing, wrong type, per-event-type schema broken
    "enrichment_failure",  # e.g. timestamp more than 24 h in the future
    "unknown_event_type",  # the tenant rejects event types it has no schema for
    "out_of_range",  # a number or time outside analytics_core/bounds.py: revenue 1e308, NaN, year 0001
]
REASONS: tuple[str, ...] = Reason.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DeadLetter:
    reason: Reason
    detail: str  # the field and the rule it broke, in words
    tenant_id: str | None
    received_at: int  # microseconds since the epoch, UTC
    payload: Any  # the original message as received (JSON-able), or base64 text for raw bytes
    source: str  # what produced it: collector, generator, loader, realtime …

    def to_json(self) -> bytes:
        # Not dataclasses.asdict: it deep-copies the payload, which dominates the cost here.
        record = {
            "reason": self.reason,
            "detail": self.detail,
            "tenant_id": self.tenant_id,
            "received_at": self.received_at,
            "payload": self.payload,
            "source": self.source,
        }
        return json.dumps(record, separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetter:
        return cls(**json.loads(data))

    @staticmethod
    def raw_payload(data: bytes) -> str:
        """Base64 of bytes that are not JSON, so the record stays one JSON document."""
        return base64.b64encode(data).decode()
