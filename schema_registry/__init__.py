"""A Confluent Schema Registry compatible server storing schemas in the compacted registry topic.

Only the HTTP side lives here; the registry logic and compatibility checks are analytics_core.registry's
(the collector registers through them in-process too).
"""

from __future__ import annotations

from schema_registry.app import create_app

__all__ = ["create_app"]
