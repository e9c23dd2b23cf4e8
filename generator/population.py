"""Tenants and users: power-law activity, country, device, IP, clock skew, experiment variant; plus bots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from generator.config import CURRENCIES, SECOND_US, GeneratorConfig
from generator.geo import BOT_COUNTRY, COUNTRIES, COUNTRY_WEIGHTS, bot_ips, random_ips

DEVICES = ("desktop", "mobile", "tablet", "bot")
BOT_DEVICE = DEVICES.index("bot")
DEVICE_WEIGHTS = np.array([0.55, 0.38, 0.07])
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"
_SAFARI = "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4"
USER_AGENTS: tuple[tuple[str, ...], ...] = (  # by device: desktop, mobile, tablet, bot
    (
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_WEBKIT} Chrome/124.0.0.0 Safari/537.36",
        f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_SAFARI} Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ),
    (
        f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) {_SAFARI} Mobile/15E148 Safari/604.1",
        f"Mozilla/5.0 (Linux; Android 14; Pixel 8) {_WEBKIT} Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        f"Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) {_SAFARI} Mobile/15E148 Safari/604.1",
        f"Mozilla/5.0 (Linux; Android 13; SM-X710) {_WEBKIT} Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    ),
)
LIBRARY = ("analytics.js", "5.2.1")
IDENTIFIED_SHARE = 0.6  # humans who are logged in and send a userId
SKEWED_CLOCK_SHARE = 0.1  # devices whose clock is off, so the collector's skew correction has work
PARETO_SHAPE = 1.5  # activity weight ~ Pareto(1.5), capped so no human nears a bot's rate
ACTIVITY_CAP = 50.0


@dataclass(frozen=True)
class Population:
    """Users 0..n_humans-1 are humans, the rest bots; attributes are arrays indexed by user."""

    tenant_ids: list[str]
    currencies: list[str]
    n_humans: int
    tenant: np.ndarray
    country: np.ndarray
    device: np.ndarray
    agent: np.ndarray  # index into USER_AGENTS[device]
    ip: np.ndarray
    skew_us: np.ndarray
    identified: np.ndarray
    variant: np.ndarray  # 0 control, 1 treatment; bots -1
    key: np.ndarray  # random 62-bit number behind the user's ids
    human_cdf: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.tenant)

    def pick_humans(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Users of n sessions, drawn in proportion to their activity weight."""
        return np.minimum(np.searchsorted(self.human_cdf, rng.random(n), side="right"), self.n_humans - 1)


def user_ids(key: int, identified: bool) -> tuple[str | None, str]:
    """user_id (None for an anonymous user) and anonymous_id, both derived from the user's random key."""
    return (f"usr_{key:015x}" if identified else None), f"anon-{key ^ 0x5DEECE66D:016x}"


def build_population(config: GeneratorConfig, rng: np.random.Generator) -> Population:
    """Humans spread over tenants with Zipf sizes (tenant_1 largest), then config.bots bots round-robin."""
    n, n_bots, t = config.user_count, config.bots, config.tenants
    tenant_weights = 1.0 / np.arange(1, t + 1)
    human_tenant = rng.choice(t, size=n, p=tenant_weights / tenant_weights.sum())
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS)
    device = rng.choice(3, size=n, p=DEVICE_WEIGHTS)
    agent = (rng.random(n) * np.array([len(USER_AGENTS[d]) for d in range(3)])[device]).astype(np.int64)
    weights = np.minimum(rng.pareto(PARETO_SHAPE, n) + 1.0, ACTIVITY_CAP)
    skewed = rng.random(n) < SKEWED_CLOCK_SHARE
    skew = np.where(skewed, rng.normal(0.0, 120.0, n) * SECOND_US, 0.0).astype(np.int64)
    cdf = np.cumsum(weights)
    return Population(
        tenant_ids=config.tenant_ids,
        currencies=[CURRENCIES[i % len(CURRENCIES)] for i in range(t)],
        n_humans=n,
        tenant=np.concatenate([human_tenant, np.arange(n_bots) % t]).astype(np.int64),
        country=np.concatenate([country, np.full(n_bots, COUNTRIES.index(BOT_COUNTRY))]).astype(np.int64),
        device=np.concatenate([device, np.full(n_bots, BOT_DEVICE)]).astype(np.int64),
        agent=np.concatenate([agent, np.arange(n_bots) % len(USER_AGENTS[BOT_DEVICE])]),
        ip=np.concatenate([random_ips(rng, country), bot_ips(rng, n_bots)]),
        skew_us=np.concatenate([skew, np.zeros(n_bots, dtype=np.int64)]),
        identified=np.concatenate([rng.random(n) < IDENTIFIED_SHARE, np.zeros(n_bots, dtype=bool)]),
        variant=np.concatenate([rng.integers(0, 2, n), np.full(n_bots, -1)]).astype(np.int8),
        key=rng.integers(0, 2**62, n + n_bots, dtype=np.int64),
        human_cdf=cdf / cdf[-1],
    )
