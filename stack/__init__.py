"""The local Kafka and Redis the pipeline runs on: `analytics stack up | down | status`."""

from __future__ import annotations

from stack.checks import StackError

__all__ = ["StackError"]
