"""EventBlock: generated events as columns, so generation, ordering and truth stay vectorised."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from analytics_core.deadletter import Reason

EVENT_TYPES = ("page_view", "add_to_cart", "checkout", "purchase")
PAGE_VIEW, ADD_TO_CART, CHECKOUT, PURCHASE = range(4)

# Record kinds: a first send, an exact resend, or one of the invalid shapes the collector rejects.
VALID, DUPLICATE = 0, 1
INVALID_REASONS: dict[str, Reason] = {  # invalid kind → the DeadLetter reason the collector gives it
    "missing_event_name": "schema_violation",
    "negative_revenue": "schema_violation",
    "non_numeric_revenue": "schema_violation",
    "future_timestamp": "enrichment_failure",
    "missing_user": "schema_violation",
}
INVALID_KINDS = tuple(INVALID_REASONS)
FIRST_INVALID = 2
KIND_NAMES = ("valid", "duplicate", *INVALID_KINDS)


@dataclass(frozen=True)
class EventBlock:
    """One row per record; timestamps are microseconds since the epoch, UTC."""

    received_at: np.ndarray  # int64, server clock
    timestamp: np.ndarray  # int64, true event time
    original_timestamp: np.ndarray  # int64, event time by the client clock
    sent_at: np.ndarray  # int64, send time by the client clock
    user: np.ndarray  # int64 index into the Population
    event_type: np.ndarray  # int8 index into EVENT_TYPES
    page: np.ndarray  # int32 index into catalogue.PAGES
    session: np.ndarray  # int64 random session id
    landing: np.ndarray  # bool, first event of its session
    partial: np.ndarray  # bool, of a session already running when a live run started (no funnel or experiment)
    tagged: np.ndarray  # bool, carries the experiment exposure
    kind: np.ndarray  # int8 index into KIND_NAMES
    late: np.ndarray  # bool, delivered hours after it happened
    amount: np.ndarray  # int64 cents: revenue of a purchase, price of an added product
    product: np.ndarray  # int32 product number, 0 for none
    event_id: np.ndarray  # uint8 (n, 16), UUID bytes

    def __len__(self) -> int:
        return len(self.received_at)

    def take(self, index: np.ndarray) -> EventBlock:
        """Rows at `index` (integer positions or a boolean mask), in that order."""
        return EventBlock(*(getattr(self, f.name)[index] for f in fields(self)))

    def with_columns(self, **columns: np.ndarray) -> EventBlock:
        return replace(self, **columns)

    @staticmethod
    def concat(blocks: list[EventBlock]) -> EventBlock:
        return EventBlock(*(np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(EventBlock)))

    @staticmethod
    def empty() -> EventBlock:
        ints = np.zeros(0, dtype=np.int64)
        flags = np.zeros(0, dtype=bool)
        small = np.zeros(0, dtype=np.int8)
        return EventBlock(
            ints,
            ints,
            ints,
            ints,
            ints,
            small,
            np.zeros(0, dtype=np.int32),
            ints,
            flags,
            flags,
            flags,
            small,
            flags,
            ints,
            np.zeros(0, dtype=np.int32),
            np.zeros((0, 16), dtype=np.uint8),
        )


def random_event_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random version-4 UUIDs as (n, 16) bytes, drawn from the run's generator for determinism."""
    ids = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    ids[:, 6] = (ids[:, 6] & 0x0F) | 0x40
    ids[:, 8] = (ids[:, 8] & 0x3F) | 0x80
    return ids


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).astype(np.uint32)
_DASHES = (8, 13, 18, 23)
_DIGIT_POS = np.array([i for i in range(36) if i not in _DASHES])


def _hex_digits(data: np.ndarray) -> np.ndarray:
    """(n, k) bytes → (n, 2k) code points of their lowercase hex digits."""
    digits = np.empty((len(data), 2 * data.shape[1]), dtype=np.uint32)
    digits[:, 0::2] = _HEX[data >> 4]
    digits[:, 1::2] = _HEX[data & 0x0F]
    return digits


def uuid_strings(ids: np.ndarray) -> list[str]:
    """Canonical 36-character text of each UUID row, built as one unicode array (no per-row formatting)."""
    chars = np.full((len(ids), 36), ord("-"), dtype=np.uint32)
    chars[:, _DIGIT_POS] = _hex_digits(ids)
    return chars.view("<U36").ravel().tolist()


def hex_strings(values: np.ndarray) -> list[str]:
    """16-digit hex text of each non-negative int64, vectorised like uuid_strings."""
    data = values.astype(">i8").view(np.uint8).reshape(len(values), 8)
    return np.ascontiguousarray(_hex_digits(data)).view("<U16").ravel().tolist()
