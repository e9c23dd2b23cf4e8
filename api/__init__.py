"""Query API (FastAPI): dashboard queries from rollups plus the realtime layer.

Built in the query-API issue.
"""
