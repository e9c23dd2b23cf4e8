"""A small deterministic generator of realistic canonical event dicts for the benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from analytics_core.events import FIELD_NAMES

# A fixed origin so every run encodes the same bytes (2026-01-05T00:00:00Z in microseconds).
_BASE_US = 1_767_571_200_000_000
_TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
_EVENT_TYPES = (
    ("page", "page_view", 55),
    ("track", "product_viewed", 15),
    ("track", "add_to_cart", 10),
    ("track", "checkout_started", 5),
    ("track", "purchase", 3),
    ("screen", "screen_view", 8),
    ("identify", "identify", 4),
)
_PAGES = ("/", "/pricing", "/docs/getting-started", "/blog/2026/launch", "/products/widget-pro", "/cart")
_COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "NL", "CA", "ES")
_DEVICES = (("desktop", 55), ("mobile", 38), ("tablet", 5), ("bot", 2))
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Version/18.1 Mobile Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605",
)
_LIBRARIES = ("analytics.js 5.2.1", "analytics-ios 4.1.0", "analytics-android 4.11.3")
_CURRENCIES = ("USD", "EUR", "GBP")


def _properties(event_type: str, page: str, r: int) -> tuple[str, float | None]:
    """Properties JSON of one event (from one random int r) and its revenue (purchases only)."""
    # f-strings instead of json.dumps: the values are known JSON-safe and this is the generator's hot path.
    if event_type in ("page_view", "screen_view"):
        title = page.strip("/").title() or "Home"
        return f'{{"path": "{page}", "title": "{title}", "referrer": ""}}', None
    sku, price, qty = f"sku-{r % 5000:04d}", round(3 + (r >> 13) % 24_700 / 100, 2), 1 + (r >> 28) % 4
    if event_type == "purchase":
        revenue = round(price * qty, 2)
        order = f"ord-{r:010x}"
        return f'{{"order_id": "{order}", "sku": "{sku}", "quantity": {qty}, "revenue": {revenue}}}', revenue
    if event_type == "identify":
        plan = ("free", "team", "enterprise")[r % 3]
        return f'{{"plan": "{plan}", "seats": {1 + r % 50}}}', None
    return f'{{"sku": "{sku}", "price": {price}, "quantity": {qty}}}', None


def iter_events(n: int, seed: int = 7, chunk: int = 10_000) -> Iterator[dict[str, Any]]:
    """Yield n canonical events (every field present, optional ones often None), the same for a seed."""
    rng = np.random.default_rng(seed)
    kinds = [(m, e) for m, e, _ in _EVENT_TYPES]
    kind_p = np.array([w for _, _, w in _EVENT_TYPES], dtype=float)
    device_p = np.array([w for _, w in _DEVICES], dtype=float)
    # numpy draws a chunk of random numbers at once: random.Random per field was most of the cost.
    for lo in range(0, n, chunk):
        size = min(chunk, n - lo)
        # Always whole chunks, so the first k of n events are the same as make_events(k).
        kind = rng.choice(len(kinds), chunk, p=kind_p / kind_p.sum()).tolist()
        device = rng.choice(len(_DEVICES), chunk, p=device_p / device_p.sum()).tolist()
        users = rng.integers(0, 50_000, chunk).tolist()
        r = rng.integers(0, 2**62, (chunk, 4)).tolist()
        ids = rng.integers(0, 2**63, (chunk, 2)).tolist()
        for j in range(size):
            i = lo + j
            message_type, event_type = kinds[kind[j]]
            user_no, (r0, r1, r2, r3), dev = users[j], r[j], _DEVICES[device[j]][0]
            tenant = _TENANTS[i % len(_TENANTS)]
            identified = user_no % 5 < 3  # about 60% of users are logged in
            in_experiment = user_no % 10 < 3
            page = _PAGES[r0 % len(_PAGES)]
            properties, revenue = _properties(event_type, page, r1)
            ts = _BASE_US + i * 1_000 + r0 % 1_000
            skew = r2 % 4_000_000 - 2_000_000
            h = f"{ids[j][0]:016x}{ids[j][1]:016x}"  # formatted by hand: uuid.UUID costs a third of the loop
            yield {
                "event_id": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}",
                "tenant_id": tenant,
                "message_type": message_type,
                "event_type": event_type,
                "user_id": f"user-{user_no}" if identified else None,
                "anonymous_id": f"anon-{user_no:08x}-{tenant}",
                "timestamp": ts,
                "original_timestamp": ts + skew,
                "sent_at": ts + skew + r3 % 5_000_000,
                "received_at": ts + 100_000 + r2 % 800_000,
                "properties": properties,
                "page": page,
                "country": _COUNTRIES[r3 % len(_COUNTRIES)],
                "device": dev,
                "revenue": revenue,
                "currency": _CURRENCIES[r1 % len(_CURRENCIES)] if revenue is not None else None,
                "experiment_key": "checkout-redesign" if in_experiment else None,
                "experiment_variant": ("control", "treatment")[user_no % 2] if in_experiment else None,
                "ip": f"203.0.{user_no % 256}.{(user_no >> 8) % 256}",
                "user_agent": _AGENTS[r2 % len(_AGENTS)],
                "library": _LIBRARIES[r3 % len(_LIBRARIES)],
                "is_bot": dev == "bot",
            }


def partition_key(event: dict[str, Any]) -> bytes:
    """The tenant:user record key: one user's events stay in order on one partition."""
    user = event["user_id"] or event["anonymous_id"]
    return f"{event['tenant_id']}:{user}".encode()


def make_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """A list of n events; fails loudly if the generator has drifted from events.FIELDS."""
    events = list(iter_events(n, seed))
    if events and tuple(events[0]) != FIELD_NAMES:
        raise RuntimeError("bench.events no longer emits exactly the fields of analytics_core.events.FIELDS")
    return events
