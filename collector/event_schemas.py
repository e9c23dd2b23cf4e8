"""Per-event-type JSON Schemas of `properties`, versioned in the file name, compiled once for the hot path."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft7Validator

from collector.validation import Rejected

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas" / "events"
# <name>.v<version>.json, e.g. order_completed.v1.json; the event type itself is "x-event-type" in the file.
_FILE_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>[1-9][0-9]*)\.json$")
EVENT_TYPE_KEY = "x-event-type"


@dataclass(frozen=True)
class SchemaFile:
    name: str  # the file's <event> part, e.g. order_completed
    event_type: str
    version: int
    schema: dict[str, Any]


def schema_files(directory: Path | str = SCHEMAS_DIR) -> list[SchemaFile]:
    """Every schema file in `directory`, checked against the JSON Schema standard, by name and version."""
    files = []
    for path in Path(directory).glob("*.json"):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: schema files are named <event>.v<version>.json")
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft7Validator.check_schema(schema)  # the meta-schema check that fastjsonschema does not do
        files.append(
            SchemaFile(match["name"], schema.get(EVENT_TYPE_KEY, match["name"]), int(match["version"]), schema)
        )
    return sorted(files, key=lambda f: (f.name, f.version))


def load_event_schemas(directory: Path | str = SCHEMAS_DIR) -> dict[str, tuple[int, dict[str, Any]]]:
    """{event_type: (version, schema)} with the highest version of each event type in `directory`."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for file in schema_files(directory):
        event_type, version, schema = file.event_type, file.version, file.schema
        if event_type in found and found[event_type][0] == version:
            raise ValueError(f"{file.name}.v{version}.json: {event_type!r} version {version} is defined twice")
        if event_type not in found or found[event_type][0] < version:
            found[event_type] = (version, schema)
    return found


@dataclass(frozen=True)
class EventSchemas:
    """Compiled validators by event type; fastjsonschema generates Python code (~20x jsonschema's speed)."""

    versions: dict[str, int]
    validators: dict[str, Callable[[Any], Any]]

    @classmethod
    def compile(cls, schemas: dict[str, tuple[int, dict[str, Any]]]) -> EventSchemas:
        validators = {
            # use_default=False: validation must never write defaults into the caller's properties.
            name: fastjsonschema.compile(schema, handlers={}, use_default=False)
            for name, (_, schema) in schemas.items()
        }
        return cls({name: version for name, (version, _) in schemas.items()}, validators)

    @classmethod
    def from_dir(cls, directory: Path | str = SCHEMAS_DIR) -> EventSchemas:
        return cls.compile(load_event_schemas(directory))

    def __contains__(self, event_type: object) -> bool:
        return event_type in self.validators

    def validate(self, event_type: str, properties: dict[str, Any], field: str = "properties") -> None:
        """Raise Rejected(schema_violation) naming the property and the rule it broke; no-op without a schema."""
        validator = self.validators.get(event_type)
        if validator is None:
            return
        try:
            validator(properties)
        except fastjsonschema.JsonSchemaValueException as exc:
            where, rule = _explain(exc)
            raise Rejected("schema_violation", field + where, rule) from exc


def _explain(exc: fastjsonschema.JsonSchemaValueException) -> tuple[str, str]:
    """(path suffix, rule in words) of a validation error, preferring the schema's own `description`."""
    where = "".join(f"[{p}]" if str(p).isdigit() else f".{p}" for p in (exc.path or [])[1:])
    definition = exc.definition if isinstance(exc.definition, dict) else {}
    if exc.rule == "required" and isinstance(exc.value, dict):
        missing = [key for key in definition.get("required", []) if key not in exc.value]
        return f"{where}.{missing[0]}" if missing else where, "is required"
    if exc.rule == "anyOf":
        options = [" and ".join(o.get("required", [])) for o in definition.get("anyOf", []) if isinstance(o, dict)]
        return where, f"needs one of: {', '.join(options)}"
    description = definition.get("description")
    return where, description if isinstance(description, str) else (exc.message or "").removeprefix(f"{exc.name} ")
