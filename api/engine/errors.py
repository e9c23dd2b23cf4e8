"""What a query can fail with: the caller's mistake (HTTP 400) or a warehouse that cannot answer now (503)."""

from __future__ import annotations


class QueryError(ValueError):
    """A request the catalogue or the server's limits refuse; names the field and the rule it breaks."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(f"{field}: {message} (rule: {rule})")
        self.field = field
        self.rule = rule
        self.message = message


class WarehouseUnavailable(RuntimeError):
    """The warehouse could not be read (catalog locked or busy, files missing, rollups not built): retry later.

    Raised instead of answering with whatever part could be read, so a number is never silently wrong.
    """
