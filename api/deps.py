"""The routes' dependencies, declared once: the app's state, its settings, the tenant of the read key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from analytics_core.settings import Settings
from api.state import ApiState
from tenants import Tenant


async def get_state(request: Request) -> ApiState:
    """The state built at startup (app.py's lifespan); the one place `request.app.state.api` is read."""
    state: ApiState = request.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


async def get_api_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_api_settings)]


async def tenant(request: Request, state: StateDep) -> Tenant:
    """The tenant of the read key in `Authorization: Bearer <key>`; the only source of the tenant.

    Unknown keys are counted per client address (tenants/throttle.py): past the limit, every request from
    that address answers 429 with Retry-After for a while, whatever key it carries."""
    from tenants.throttle import AuthThrottle

    throttle: AuthThrottle | None = getattr(request.app.state, "auth_throttle", None)
    if throttle is None:  # built once, on the first request: the Redis client exists only after startup
        throttle = request.app.state.auth_throttle = AuthThrottle.from_settings(
            state.settings, "api", state.redis_async
        )
    peer = request.client.host if request.client else None
    blocked_for = throttle.retry_after(peer)
    if blocked_for is None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        found = state.tenants.tenant_for_read_key(key) if key else None
        if found is not None:
            return found
        blocked_for = await throttle.failed(peer) if key else None  # only a key sent is a guess
    if blocked_for is not None:
        refusal = throttle.refusal(blocked_for, "read key")
        raise HTTPException(429, refusal, headers={"Retry-After": str(blocked_for)})
    raise HTTPException(
        401,
        "a valid read key is required: Authorization: Bearer <read key>",
        headers={"WWW-Authenticate": "Bearer"},
    )


TenantDep = Annotated[Tenant, Depends(tenant)]
