"""What the query API's routes share: settings, catalogue, clients, cache, live hub, metrics; built at startup."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from redis.asyncio import Redis as AsyncRedis

from analytics_core.catalogue import Catalogue, get_catalogue
from analytics_core.clients import redis_async_client, redis_client
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.cache import QueryCache, catalogue_hash
from api.engine import QueryEngine, WarehouseUnavailable
from api.live import LiveReader
from api.live_hub import LiveHub
from api.metrics import ApiMetrics, RealtimeCollector
from api.ratelimit import QueryRateLimiter
from tenants import KeyCache, TenantStore

log = logging.getLogger("api")


@dataclass
class ApiState:
    settings: Settings
    catalogue: Catalogue
    tenants: KeyCache
    redis: redis.Redis
    redis_async: AsyncRedis
    cache: QueryCache
    live: LiveReader
    live_hub: LiveHub = field(init=False)  # what every live stream shares: subscription, reads, limits
    metrics: ApiMetrics
    engine: QueryEngine | None = None
    limiter: QueryRateLimiter | None = None  # queries per read key (Redis); None: no limit

    def query_engine(self) -> QueryEngine:
        """The engine, built on first use: the API starts (and answers 503) before the warehouse exists."""
        if self.engine is None:
            try:
                self.engine = QueryEngine(self.settings, redis=self.redis, catalogue=self.catalogue)
            except WarehouseUnavailable:
                raise
            except Exception as exc:  # a missing or locked lake: tell the client, keep serving
                raise WarehouseUnavailable(f"warehouse not reachable: {exc}") from exc
        return self.engine


def build_state(settings: Settings) -> ApiState:
    catalogue = get_catalogue()
    keys = RealtimeKeys.from_settings(settings)
    sync_redis = redis_client(settings, socket_timeout=2.0, socket_connect_timeout=1.0)
    async_redis = redis_async_client(settings, socket_timeout=2.0, socket_connect_timeout=1.0)
    metrics = ApiMetrics()
    metrics.registry.register(RealtimeCollector(sync_redis, keys))
    state = ApiState(
        settings=settings,
        catalogue=catalogue,
        tenants=KeyCache(TenantStore(settings.tenants_db)),
        redis=sync_redis,
        redis_async=async_redis,
        cache=QueryCache(async_redis, settings.redis_key_prefix, catalogue_hash(catalogue)),
        live=LiveReader(catalogue, keys, settings.live_window_s),
        metrics=metrics,
    )
    state.live_hub = LiveHub.for_api(settings, state.live, state.tenants)
    if settings.api_rate_limit_queries:
        state.limiter = QueryRateLimiter(
            async_redis, settings.redis_key_prefix, settings.api_rate_limit_queries, settings.api_rate_limit_window_s
        )
    try:
        state.query_engine()
    except WarehouseUnavailable as exc:
        log.warning("starting without the warehouse; queries answer 503 until it is there: %s", exc)
    return state
