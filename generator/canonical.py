"""EventBlock rows → canonical event dicts (analytics_core.events), with invalid rows broken on purpose."""

from __future__ import annotations

from typing import Any

import numpy as np

from generator.block import (
    EVENT_TYPES,
    FIRST_INVALID,
    KIND_NAMES,
    PAGE_VIEW,
    PURCHASE,
    EventBlock,
    hex_strings,
    uuid_strings,
)
from generator.catalogue import PAGES
from generator.config import DAY_US, EXPERIMENT_KEY, VARIANTS
from generator.geo import COUNTRIES, ip_text
from generator.population import DEVICES, LIBRARY, USER_AGENTS, Population, user_ids

LIBRARY_TEXT = f"{LIBRARY[0]}/{LIBRARY[1]}"
FUTURE_SHIFT_US = 400 * DAY_US  # a device clock a year ahead: > 24 h in the future of any receipt time
FALLBACK_REVENUE_CENTS = 1999  # revenue flaws on events that had no amount
_VIEW_PREFIX = [f'{{"path":"{p}","session_id":"' for p in PAGES]  # page_view properties up to the session id


def properties_json(
    etype: int,
    page: str,
    session: str,
    amount: int,
    product: int,
    currency: str,
    variant: str | None,
    revenue: Any = None,
) -> str:
    """The properties object as JSON text, built by hand because it is on the hot path (no key needs escaping)."""
    if etype == PURCHASE:
        value = amount / 100 if revenue is None else revenue
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        body = f'"currency":"{currency}","revenue":{shown},"session_id":"{session}"'
    elif product:
        body = f'"path":"{page}","price":{amount / 100},"product_id":"sku-{product:04d}","session_id":"{session}"'
    else:
        body = f'"path":"{page}","session_id":"{session}"'
    if variant is not None:
        body = f'"experiment_key":"{EXPERIMENT_KEY}","experiment_variant":"{variant}",' + body
    return "{" + body + "}"


def materialise(block: EventBlock, pop: Population) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Canonical dicts in block order, and {position: invalid kind} for the rows that are invalid."""
    users, inverse = np.unique(block.user, return_inverse=True)
    templates = _templates(pop, users)
    columns = zip(
        inverse.tolist(),
        uuid_strings(block.event_id),
        block.event_type.tolist(),
        block.timestamp.tolist(),
        block.original_timestamp.tolist(),
        block.sent_at.tolist(),
        block.received_at.tolist(),
        block.page.tolist(),
        hex_strings(block.session),
        block.tagged.tolist(),
        block.amount.tolist(),
        block.product.tolist(),
        strict=True,
    )
    events: list[dict[str, Any]] = []
    append = events.append
    for j, eid, etype, ts, ots, sent, recv, page_ix, session, tagged, amount, product in columns:
        # Copying a per-user template is ~3x faster than a 22-key dict literal.
        event, currency, variant = templates[j]
        event = event.copy()
        event["event_id"] = eid
        event["timestamp"] = ts
        event["original_timestamp"] = ots
        event["sent_at"] = sent
        event["received_at"] = recv
        event["page"] = PAGES[page_ix]
        if etype == PAGE_VIEW and not tagged:
            event["properties"] = _VIEW_PREFIX[page_ix] + session + '"}'
        else:
            event["event_type"] = EVENT_TYPES[etype]
            shown = variant if tagged else None
            event["properties"] = properties_json(etype, PAGES[page_ix], session, amount, product, currency, shown)
            if tagged:
                event["experiment_key"], event["experiment_variant"] = EXPERIMENT_KEY, variant
            if etype == PURCHASE:
                event["revenue"], event["currency"] = amount / 100, currency
        append(event)
    invalid = {int(i): KIND_NAMES[block.kind[i]] for i in np.flatnonzero(block.kind >= FIRST_INVALID)}
    for i, kind in invalid.items():
        currency = pop.currencies[int(pop.tenant[block.user[i]])]
        cents = int(block.amount[i]) or FALLBACK_REVENUE_CENTS
        _break(events[i], kind, cents, f"{int(block.session[i]):016x}", currency)
    return events, invalid


def _templates(pop: Population, users: np.ndarray) -> list[tuple[dict[str, Any], str, str | None]]:
    """Per user: the fields fixed per user (a page_view by default), its tenant's currency and its variant."""
    out = []
    for u, t, c, d, a, ip, key, identified, v in zip(
        users.tolist(),
        pop.tenant[users].tolist(),
        pop.country[users].tolist(),
        pop.device[users].tolist(),
        pop.agent[users].tolist(),
        pop.ip[users].tolist(),
        pop.key[users].tolist(),
        pop.identified[users].tolist(),
        pop.variant[users].tolist(),
        strict=True,
    ):
        user_id, anonymous_id = user_ids(key, identified)
        event = {
            "event_id": None,
            "tenant_id": pop.tenant_ids[t],
            "message_type": "track",
            "event_type": "page_view",
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "timestamp": None,
            "original_timestamp": None,
            "sent_at": None,
            "received_at": None,
            "properties": None,
            "page": None,
            "country": COUNTRIES[c],
            "device": DEVICES[d],
            "revenue": None,
            "currency": None,
            "experiment_key": None,
            "experiment_variant": None,
            "ip": ip_text(ip),
            "user_agent": USER_AGENTS[d][a],
            "library": LIBRARY_TEXT,
            "is_bot": u >= pop.n_humans,
        }
        out.append((event, pop.currencies[t], VARIANTS[v] if v >= 0 else None))
    return out


def _break(event: dict[str, Any], kind: str, cents: int, session: str, currency: str) -> None:
    """Apply one invalid shape; the collector must dead-letter the result."""
    if kind == "missing_event_name":
        event["event_type"] = None
    elif kind == "missing_user":
        event["user_id"] = event["anonymous_id"] = None
    elif kind == "future_timestamp":
        event["timestamp"] += FUTURE_SHIFT_US
        event["original_timestamp"] += FUTURE_SHIFT_US
    else:
        revenue: Any = -cents / 100 if kind == "negative_revenue" else f"{cents // 100},{cents % 100:02d}"
        event.update(
            event_type="purchase", revenue=revenue, currency=currency, experiment_key=None, experiment_variant=None
        )
        event["properties"] = properties_json(PURCHASE, event["page"], session, cents, 0, currency, None, revenue)
