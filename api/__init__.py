"""Query API (FastAPI): dashboard queries from rollups plus the realtime layer, cached in Redis; live SSE."""
