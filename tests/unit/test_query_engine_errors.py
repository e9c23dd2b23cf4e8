"""The engine on a warehouse that cannot answer: 503-style errors, never numbers; bad requests first."""

from __future__ import annotations

import pytest

from analytics_core import warehouse
from analytics_core.settings import Settings
from api.engine import QueryEngine, QueryError, WarehouseUnavailable
from api.models import QueryRequest

REQUEST = QueryRequest.model_validate(
    {"metrics": ["events"], "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}
)


def test_a_warehouse_not_created_yet_is_unavailable_not_a_crash(lake: Settings) -> None:
    engine = QueryEngine(lake)  # starts anyway: the API can come up before the warehouse
    try:
        with pytest.raises(WarehouseUnavailable, match="cannot attach"):
            engine.run("tenant_a", REQUEST)
        with pytest.raises(QueryError):  # the request is checked before the warehouse is needed
            engine.run("tenant_a", REQUEST.model_copy(update={"metrics": ["nope"]}))
    finally:
        engine.close()


def test_rollups_not_built_yet_are_unavailable(lake: Settings) -> None:
    warehouse.connect(lake).close()  # the raw tables only, as before the first dbt build
    engine = QueryEngine(lake)
    try:
        # Not "retry shortly": a table that is not there stays so until dbt builds it, and the answer says so.
        with pytest.raises(WarehouseUnavailable, match=r"is not there \(dbt builds it.*Catalog Error"):
            engine.run("tenant_a", REQUEST)
        assert isinstance(WarehouseUnavailable("x"), RuntimeError) and isinstance(QueryError("f", "r", "m"), ValueError)
    finally:
        engine.close()
