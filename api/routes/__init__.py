"""The query API's routes, one APIRouter per resource: query (catalogue, queries), live (SSE), ops."""
