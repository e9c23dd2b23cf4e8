"""All records of one time window: human sessions, bots, exact resends and invalid events."""

from __future__ import annotations

import numpy as np

from generator.block import DUPLICATE, FIRST_INVALID, INVALID_KINDS, PAGE_VIEW, VALID, EventBlock, random_event_ids
from generator.catalogue import BROWSE_PAGES
from generator.config import SECOND_US, GeneratorConfig
from generator.population import Population
from generator.sessions import SessionMaker
from generator.timing import LATENCY_MIN_US

RESEND_MIN_US, RESEND_MEAN_US = SECOND_US, 20 * SECOND_US  # an SDK retry after a lost acknowledgement


class Traffic:
    """Draws every record of consecutive windows from one numpy Generator, so a seed fixes them all."""

    def __init__(self, config: GeneratorConfig, population: Population, rng: np.random.Generator) -> None:
        self.config = config
        self.pop = population
        self.rng = rng
        self.sessions = SessionMaker(config, population)

    def window(self, w0: int, w1: int, diurnal: bool) -> EventBlock:
        humans = self.sessions.window(self.rng, w0, w1, diurnal)
        return self._with_noise(humans, EventBlock.concat([humans, self._bots(w0, w1)]))

    def in_progress(self, at: int) -> EventBlock:
        """Rest of the sessions running at `at`: a live run starts at full rate instead of ramping up."""
        humans = self.sessions.in_progress(self.rng, at)
        return self._with_noise(humans, humans)

    def _with_noise(self, humans: EventBlock, valid: EventBlock) -> EventBlock:
        return EventBlock.concat([valid, self._resends(valid), self._invalid(humans)])

    def _bots(self, w0: int, w1: int) -> EventBlock:
        """Crawlers fetch pages around the clock, each far faster than any human."""
        cfg, rng = self.config, self.rng
        if cfg.bots == 0:
            return EventBlock.empty()
        per_bot = cfg.records_per_second * cfg.bot_share / cfg.bots * (w1 - w0) / SECOND_US
        counts = rng.poisson(per_bot, cfg.bots)
        bot = np.repeat(np.arange(cfg.bots), counts)
        n = len(bot)
        timestamp = w0 + (rng.random(n) * (w1 - w0)).astype(np.int64)
        received = timestamp + LATENCY_MIN_US
        zeros = np.zeros(n, dtype=np.int64)
        flags = np.zeros(n, dtype=bool)
        return EventBlock(
            received_at=received,
            timestamp=timestamp,
            original_timestamp=timestamp,
            sent_at=received,
            user=self.pop.n_humans + bot,
            event_type=np.full(n, PAGE_VIEW, dtype=np.int8),
            page=BROWSE_PAGES[rng.integers(0, len(BROWSE_PAGES), n)].astype(np.int32),
            session=rng.integers(0, 2**62, cfg.bots, dtype=np.int64)[bot],
            landing=flags,
            partial=flags,
            tagged=flags,
            kind=np.full(n, VALID, dtype=np.int8),
            late=flags,
            amount=zeros,
            product=np.zeros(n, dtype=np.int32),
            event_id=random_event_ids(rng, n),
        )

    def _resends(self, valid: EventBlock) -> EventBlock:
        """Exact copies (same event id) sent again a little later."""
        rows = valid.take(np.flatnonzero(self.rng.random(len(valid)) < self.config.duplicate_per_event))
        delay = (RESEND_MIN_US + self.rng.exponential(RESEND_MEAN_US, len(rows))).astype(np.int64)
        return rows.with_columns(
            received_at=rows.received_at + delay,
            sent_at=rows.sent_at + delay,
            kind=np.full(len(rows), DUPLICATE, dtype=np.int8),
        )

    def _invalid(self, humans: EventBlock) -> EventBlock:
        """Broken variants of human events, each with its own id; materialising applies the flaw."""
        rows = humans.take(np.flatnonzero(self.rng.random(len(humans)) < self.config.invalid_per_human_event))
        n = len(rows)
        flags = np.zeros(n, dtype=bool)
        return rows.with_columns(
            received_at=rows.received_at + 1000,
            sent_at=rows.sent_at + 1000,
            kind=(FIRST_INVALID + self.rng.integers(0, len(INVALID_KINDS), n)).astype(np.int8),
            landing=flags,
            tagged=flags,
            late=flags,
            event_id=random_event_ids(self.rng, n),
        )
