"""The collector's routes, one APIRouter per resource: Segment, PostHog, browsers (analytics.js) and operations."""
