"""The collector's typed dependencies, declared once: app.state is read here and nowhere else in the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from analytics_core.settings import Settings
from collector.state import CollectorState


async def get_state(request: Request) -> CollectorState:
    # async: FastAPI awaits it in the request's task instead of sending it to the threadpool.
    state: CollectorState = request.app.state.collector
    return state


async def get_settings(request: Request) -> Settings:
    # Set by create_app, so it is there before the lifespan has built the state.
    settings: Settings = request.app.state.settings
    return settings


StateDep = Annotated[CollectorState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
