"""The query engine: validate, plan, read the warehouse (and Redis past its watermark), answer with provenance.

The HTTP layer (api/state.py, api/routes/, api/openapi.py) imports what it needs of the engine from
here; the engine imports nothing of the HTTP layer, only api/models.py (the request and answer bodies).

- `query_engine.py`: QueryEngine, one query from request to QueryResult: the DuckDB connection with the
  lake attached, read retries, watermarks, the choice between the two strategies below, Redis health.
- `validation.py`: a QueryRequest checked against the catalogue and the server's limits (Query, check).
- `timebuckets.py`: the query's buckets in its time zone, as UTC instants.
- `planner.py`: which source answers which stretch (rollup grain, Redis past the watermark, or raw events).
- `definitions.py`: whether the rollups a plan reads were built by the catalogue's metric definitions; when
  not, the query goes to raw events (short ranges) or carries a caveat naming the metric and the command.
- `from_rollups.py`: strategy: a query answered from the rollups, plus the realtime Redis numbers past the
  watermark (RollupPath).
- `from_raw_events.py`: strategy: a query answered exactly from the staged raw events (answer_from_raw).
- `realtime_reads.py`: reading the realtime layer's Redis counters and user sketches (RealtimeSource).
- `sql/`: the SQL over the warehouse: `rollups.py`, `raw_events.py` and the `parts.py` they share.
- `replica/`: the in-memory replica of the rollup tables and its change-feed refresh thread.
- `versions.py`: what an answer was computed from (Stamp) and what the lake holds now (Versions, LakeHistory):
  whether a cached answer is still current.
- `answer.py`: the numbers as they are gathered (Answer), which are estimates, and the QueryResult built from them.
- `errors.py`: QueryError (the caller's mistake, 400) and WarehouseUnavailable (retry later, 503).
"""

from api.engine.errors import QueryError, WarehouseUnavailable
from api.engine.query_engine import QueryEngine
from api.engine.timebuckets import known_zones
from api.engine.validation import check
from api.engine.versions import Stamp, Versions

__all__ = ["QueryEngine", "QueryError", "Stamp", "Versions", "WarehouseUnavailable", "check", "known_zones"]
