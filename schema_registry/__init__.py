"""A Confluent Schema Registry compatible server storing schemas in the compacted registry topic."""

from __future__ import annotations

from schema_registry.app import create_app

__all__ = ["create_app"]
