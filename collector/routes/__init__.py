"""The collector's routes, one APIRouter per resource: Segment, PostHog and operations."""
