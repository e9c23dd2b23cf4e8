"""Human sessions: page views, then add_to_cart → checkout → purchase with drop-off, timed and delivered."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from generator.block import ADD_TO_CART, CHECKOUT, PURCHASE, VALID, EventBlock, random_event_ids
from generator.catalogue import (
    CHECKOUT_PAGE,
    COMPLETE_PAGE,
    FIRST_PRODUCT_PAGE,
    PRICES_CENTS,
    browse_pages,
    order_revenue,
    products,
)
from generator.config import (
    CART_RATE,
    CHECKOUT_RATE,
    MEAN_EVENTS_PER_SESSION,
    PAGE_VIEW_GEOMETRIC_P,
    PURCHASE_RATE,
    SECOND_US,
    GeneratorConfig,
)
from generator.population import Population
from generator.timing import (
    GAP_MEAN_US,
    GAP_MIN_US,
    LATE_LAG_MAX_US,
    LATE_LAG_MEAN_US,
    LATE_LAG_MIN_US,
    arrival_times,
    latencies,
    session_layout,
    window_weight,
)

IN_PROGRESS_HORIZON_US = 600 * SECOND_US  # sessions longer than 10 minutes are rare enough to ignore


@dataclass(frozen=True)
class Plan:
    """What each session does, before it is placed in time."""

    users: np.ndarray
    views: np.ndarray
    cart: np.ndarray
    checkout: np.ndarray
    purchase: np.ndarray
    exposing: np.ndarray  # the session in which its user first sees the experiment

    @property
    def count(self) -> np.ndarray:
        return self.views + self.cart + self.checkout + self.purchase

    def take(self, keep: np.ndarray) -> Plan:
        return Plan(*(getattr(self, f.name)[keep] for f in fields(self)))


class SessionMaker:
    """Builds sessions; remembers which users were already exposed to the experiment."""

    def __init__(self, config: GeneratorConfig, population: Population) -> None:
        self.config = config
        self.pop = population
        self.exposed = np.zeros(population.n_humans, dtype=bool)
        self.sessions_per_us = config.records_per_second * config.human_share / MEAN_EVENTS_PER_SESSION / SECOND_US

    def window(self, rng: np.random.Generator, w0: int, w1: int, diurnal: bool) -> EventBlock:
        """Sessions starting in [w0, w1), plus late sessions (from hours ago) delivered in it."""
        expected = self.sessions_per_us * window_weight(w0, w1, diurnal)
        late_p = self.config.late_session_prob
        n_on_time, n_late = rng.poisson(expected * (1 - late_p)), rng.poisson(expected * late_p)
        start = arrival_times(rng, w0, w1, n_on_time, diurnal)
        delivered = arrival_times(rng, w0, w1, n_late, diurnal)
        lag = np.minimum(LATE_LAG_MIN_US + rng.exponential(LATE_LAG_MEAN_US, n_late), LATE_LAG_MAX_US).astype(np.int64)
        plan = self._plan(rng, n_on_time + n_late, np.concatenate([start, delivered - lag]), expose=True)
        sess, pos, offset, duration = session_layout(rng, plan.count)
        # A late session happened `lag` before delivery and is sent in one go when the device is back online.
        begin = np.concatenate([start, delivered - lag - duration[n_on_time:]])
        timestamp = begin[sess] + offset
        late = sess >= n_on_time
        on_time_received = timestamp + latencies(rng, len(sess))
        late_received = np.concatenate([np.zeros(n_on_time, dtype=np.int64), delivered])[sess] + pos * 1000
        received = np.where(late, late_received, on_time_received)
        return self._columns(rng, plan, sess, pos, timestamp, received, late)

    def in_progress(self, rng: np.random.Generator, at: int) -> EventBlock:
        """Events received from `at` on, of the sessions that began in the horizon before it and still run."""
        n = rng.poisson(self.sessions_per_us * IN_PROGRESS_HORIZON_US)
        start = at - IN_PROGRESS_HORIZON_US + (rng.random(n) * IN_PROGRESS_HORIZON_US).astype(np.int64)
        plan = self._plan(rng, n, start, expose=False)
        # The sum of k exponential gaps is Gamma(k): draw each session's length first, build only the running ones.
        steps = plan.count - 1
        extra = np.where(steps > 0, rng.gamma(np.maximum(steps, 1), GAP_MEAN_US), 0.0)
        running = start + steps * GAP_MIN_US + extra.astype(np.int64) >= at
        plan, start, extra = plan.take(running), start[running], extra[running]
        sess, pos, offset, _ = session_layout(rng, plan.count, extra)
        timestamp = start[sess] + offset
        received = timestamp + latencies(rng, len(sess))
        block = self._columns(rng, plan, sess, pos, timestamp, received, np.zeros(len(sess), dtype=bool))
        block = block.take(block.received_at >= at)
        return block.with_columns(partial=np.ones(len(block), dtype=bool))

    def _plan(self, rng: np.random.Generator, n: int, begin: np.ndarray, expose: bool) -> Plan:
        users = self.pop.pick_humans(rng, n)
        u = rng.random((n, 3))
        views = rng.geometric(PAGE_VIEW_GEOMETRIC_P, n)
        cart = u[:, 0] < CART_RATE
        checkout = cart & (u[:, 1] < CHECKOUT_RATE)
        exposing = self._expose(users, checkout, begin) if expose else np.zeros(n, dtype=bool)
        lifted = exposing & (self.pop.variant[users] == 1)
        rate = np.where(lifted, PURCHASE_RATE * (1 + self.config.experiment_lift), PURCHASE_RATE)
        return Plan(users, views, cart, checkout, checkout & (u[:, 2] < rate), exposing)

    def _expose(self, users: np.ndarray, checkout: np.ndarray, begin: np.ndarray) -> np.ndarray:
        """The session of each not-yet-exposed user's first checkout: the checkout page shows the button."""
        cand = np.flatnonzero(checkout & ~self.exposed[users])
        cand = cand[np.argsort(begin[cand], kind="stable")]
        fresh, first = np.unique(users[cand], return_index=True)
        self.exposed[fresh] = True
        exposing = np.zeros(len(users), dtype=bool)
        exposing[cand[first]] = True
        return exposing

    def _columns(
        self,
        rng: np.random.Generator,
        plan: Plan,
        sess: np.ndarray,
        pos: np.ndarray,
        timestamp: np.ndarray,
        received: np.ndarray,
        late: np.ndarray,
    ) -> EventBlock:
        n = len(sess)
        user = plan.users[sess]
        etype = np.maximum(pos - plan.views[sess] + 1, 0).astype(np.int8)
        page = browse_pages(rng, n).astype(np.int32)
        product = np.zeros(n, dtype=np.int32)
        amount = np.zeros(n, dtype=np.int64)
        carts = np.flatnonzero(etype == ADD_TO_CART)
        product[carts] = products(rng, len(carts))
        page[carts] = FIRST_PRODUCT_PAGE + product[carts] - 1
        amount[carts] = PRICES_CENTS[product[carts]]
        page[etype == CHECKOUT] = CHECKOUT_PAGE
        purchases = np.flatnonzero(etype == PURCHASE)
        page[purchases] = COMPLETE_PAGE
        amount[purchases] = order_revenue(rng, len(purchases))
        skew = self.pop.skew_us[user]
        return EventBlock(
            received_at=received,
            timestamp=timestamp,
            original_timestamp=timestamp + skew,
            sent_at=received + skew,  # transit time is negligible next to clock skew
            user=user,
            event_type=etype,
            page=page,
            session=rng.integers(0, 2**62, len(plan.users), dtype=np.int64)[sess],
            landing=pos == 0,
            partial=np.zeros(n, dtype=bool),
            tagged=plan.exposing[sess] & (etype >= CHECKOUT),
            kind=np.full(n, VALID, dtype=np.int8),
            late=late,
            amount=amount,
            product=product,
            event_id=random_event_ids(rng, n),
        )
