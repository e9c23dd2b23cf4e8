"""Schema validation and compatibility levels (NONE, BACKWARD, FORWARD, FULL and their _TRANSITIVE forms).

BACKWARD is checked by the per-format checkers (proto_compat, json_compat); FORWARD is the same
check with the schemas swapped, FULL is both. AVRO schemas are validated and stored, but their
compatibility is not checked: under any level but NONE a second AVRO version is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Protocol

from fastavro._schema_common import SchemaParseException
from fastavro.schema import parse_schema

from analytics_core.registry import json_compat, proto_compat

DEFAULT_LEVEL = "BACKWARD"
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
SCHEMA_TYPES = ("AVRO", "JSON", "PROTOBUF")


class InvalidSchemaError(ValueError):
    """The schema text does not parse as its declared type."""


class Versioned(Protocol):
    """What the checks need of a registered version (analytics_core.schema_topic.SchemaVersion fits)."""

    @property
    def version(self) -> int: ...

    @property
    def schema(self) -> str: ...

    @property
    def schema_type(self) -> str: ...


def validate(schema_type: str, text: str) -> None:
    """Raise InvalidSchemaError with the parser's message when `text` is not a valid `schema_type` schema."""
    if schema_type not in SCHEMA_TYPES:
        raise InvalidSchemaError(f"unknown schemaType {schema_type!r}; expected one of {', '.join(SCHEMA_TYPES)}")
    try:
        if schema_type == "PROTOBUF":
            proto_compat.compile_proto(text)
        elif schema_type == "JSON":
            json_compat.parse_json_schema(text)
        else:
            parse_schema(json.loads(text))
    except (proto_compat.ProtoError, json_compat.JsonSchemaError) as exc:
        raise InvalidSchemaError(str(exc)) from exc
    except (ValueError, TypeError, KeyError, SchemaParseException) as exc:
        # fastavro raises SchemaParseException, UnknownType (a ValueError) or KeyError/TypeError.
        raise InvalidSchemaError(f"{type(exc).__name__}: {exc}") from exc


def backward_issues(schema_type: str, new: str, old: str) -> list[str]:
    """Why data written with `old` cannot be read with `new` (same schema type); empty when it can."""
    if schema_type == "PROTOBUF":
        return proto_compat.backward_issues(new, old)
    if schema_type == "JSON":
        return json_compat.backward_issues(new, old)
    return ["AVRO compatibility is not checked by this registry; set the subject's compatibility to NONE"]


def check(schema_type: str, schema: str, previous: Sequence[Versioned], level: str) -> list[str]:
    """Every rule `schema` breaks against the `previous` versions (oldest first) under `level`."""
    if level == "NONE" or not previous:
        return []
    against = previous if level.endswith("_TRANSITIVE") else previous[-1:]
    issues: list[str] = []
    for old in against:
        prefix = f"version {old.version}: "
        if old.schema_type != schema_type:
            issues.append(f"{prefix}schema type changed from {old.schema_type} to {schema_type}")
            continue
        if level.startswith(("BACKWARD", "FULL")):
            issues.extend(prefix + i for i in backward_issues(schema_type, schema, old.schema))
        if level.startswith(("FORWARD", "FULL")):
            issues.extend(f"{prefix}forward: {i}" for i in backward_issues(schema_type, old.schema, schema))
    # AVRO yields the same sentence per version and direction; say it once.
    return list(dict.fromkeys(issues))
