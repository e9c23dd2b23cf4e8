"""Operations: liveness, readiness (Kafka reachable) and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from analytics_core.clients import kafka_admin
from analytics_core.settings import Settings
from collector import openapi
from collector.deps import SettingsDep, StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Kafka is reachable, so events can be accepted.",
    response_class=Response,
    responses=openapi.READYZ_RESPONSES,
)
async def readyz(settings: SettingsDep) -> Response:
    try:
        await asyncio.wait_for(run_in_threadpool(_kafka_reachable, settings), 5.0)
    except Exception as exc:  # any failure means not ready; the reason goes into the answer
        return JSONResponse({"status": "unavailable", "kafka": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get(
    "/metrics",
    summary="Prometheus metrics.",
    response_class=Response,
    responses=openapi.METRICS_RESPONSES,
)
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _kafka_reachable(settings: Settings) -> None:
    kafka_admin(settings).list_topics(timeout=4.0)
