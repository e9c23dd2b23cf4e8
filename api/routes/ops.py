"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep
from api.openapi import READY

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up.")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The warehouse answers; says whether realtime (Redis) does.",
    responses={
        200: {"description": "Ready: the warehouse answers.", "content": {"application/json": {"schema": READY}}},
        503: {"description": "Not ready.", "content": {"application/json": {"schema": READY}}},
    },
)
def readyz(state: StateDep) -> Response:
    checks: dict[str, str] = {}
    try:
        watermark = state.query_engine().watermark("__readiness__")
        checks["warehouse"] = "ok" if watermark is None else watermark.isoformat()
    except Exception as exc:  # any failure means not ready; the reason goes into the answer
        checks["warehouse"] = f"unavailable: {exc}"
    engine = state.engine
    replica = engine.replica_status() if engine is not None else None
    if replica is not None:  # queries read the lake until the in-memory replica has loaded
        checks["replica"] = f"snapshot {replica.snapshot_id}" if replica.ready else "loading"
    try:
        state.redis.ping()
        checks["realtime"] = "ok"
    except redis.RedisError as exc:
        checks["realtime"] = f"unavailable (answers come from the warehouse alone): {exc}"
    ready = not checks["warehouse"].startswith("unavailable")
    return JSONResponse({"status": "ready" if ready else "unavailable", **checks}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format).",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
