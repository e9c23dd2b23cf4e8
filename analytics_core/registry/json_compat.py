"""JSON Schema BACKWARD compatibility: the new schema must accept every document the old one accepted.

Checked, recursively through properties, additionalProperties, items and anyOf/oneOf branches:
type narrowing (integer is inside number), enum/const narrowing, newly required properties,
a property removed while additionalProperties is false, additionalProperties closed or narrowed,
numeric/length/size bounds tightened, pattern/format/multipleOf/uniqueItems added or changed.
Keywords not modelled (allOf, not, $ref, if/then/else, dependencies, patternProperties, tuple
items) are compatible only when unchanged.
"""

from __future__ import annotations

import json
from typing import Any

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "multipleOf", "uniqueItems", "contentEncoding", "contentMediaType")
_OPAQUE = ("allOf", "not", "$ref", "if", "then", "else", "dependencies", "dependentSchemas", "patternProperties")
_TYPES = ("null", "boolean", "object", "array", "number", "integer", "string")


class JsonSchemaError(ValueError):
    """The text is not a JSON Schema (not JSON, or neither an object nor a boolean)."""


def parse_json_schema(text: str) -> Any:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonSchemaError(f"not valid JSON: {exc}") from exc
    if not isinstance(schema, dict | bool):
        raise JsonSchemaError("a JSON Schema must be an object or a boolean")
    bad = _bad_types(schema)
    if bad:
        raise JsonSchemaError(f"unknown type {bad!r}")
    return schema


def _bad_types(schema: Any) -> str | None:
    if isinstance(schema, dict):
        types = schema.get("type", [])
        for t in types if isinstance(types, list) else [types]:
            if t not in _TYPES:
                return str(t)
        for sub in schema.values():
            found = _bad_types(sub)
            if found:
                return found
    elif isinstance(schema, list):
        return next((found for sub in schema if (found := _bad_types(sub))), None)
    return None


def backward_issues(new_text: str, old_text: str) -> list[str]:
    """Why documents valid under `old_text` can be invalid under `new_text`; empty when they cannot."""
    return _check(parse_json_schema(new_text), parse_json_schema(old_text), "#")


def _value_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    names = {float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "object")


def _types(schema: dict[str, Any]) -> set[str] | None:
    """The types a schema allows, from `type` or else from its enum/const values; None: any."""
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    values = _enum(schema)
    return None if values is None else {_value_type(v) for v in values}


def _enum(schema: dict[str, Any]) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    return schema.get("enum")


def _check(new: Any, old: Any, path: str) -> list[str]:
    if new is True or new == {} or old is False:
        return []
    if new is False:
        return [f"{path}: schema changed to false, which rejects everything"]
    old = {} if old is True else old
    issues: list[str] = []
    new_types, old_types = _types(new), _types(old)
    if new_types is not None:
        lost = sorted(old_types - new_types if old_types is not None else {"any"})
        lost = [t for t in lost if not (t == "integer" and "number" in new_types)]
        if lost:
            issues.append(f"{path}: type narrowed, {', '.join(lost)} no longer allowed (now {sorted(new_types)})")
    new_enum, old_enum = _enum(new), _enum(old)
    if new_enum is not None:
        lost_values = [v for v in old_enum if v not in new_enum] if old_enum is not None else None
        if lost_values is None:
            issues.append(f"{path}: enum added, only {new_enum} allowed now")
        elif lost_values:
            issues.append(f"{path}: enum narrowed, {lost_values} no longer allowed")
    issues.extend(_keywords(new, old, path))
    issues.extend(_object(new, old, path))
    if isinstance(new.get("items"), dict | bool) and isinstance(old.get("items", {}), dict | bool):
        issues.extend(_check(new["items"], old.get("items", {}), f"{path}/items"))
    for key in ("anyOf", "oneOf"):
        if key in new:
            issues.extend(_branches(new[key], old.get(key, [old]), f"{path}/{key}"))
    return issues


def _keywords(new: dict[str, Any], old: dict[str, Any], path: str) -> list[str]:
    issues = []
    for key in _LOWER + _UPPER:
        if key not in new or new.get(key) == old.get(key):
            continue
        n, o = new[key], old.get(key)
        numeric = isinstance(n, int | float) and isinstance(o, int | float) and not isinstance(n, bool)
        if not numeric or (n > o if key in _LOWER else n < o):
            issues.append(f"{path}: {key} tightened from {o if o is not None else 'none'} to {n}")
    for key in _EXACT + _OPAQUE + (("items",) if isinstance(new.get("items"), list) else ()):
        if key in new and new[key] != old.get(key):
            rule = "added" if key not in old else "changed"
            issues.append(f"{path}: {key} {rule} ({json.dumps(old.get(key))} -> {json.dumps(new[key])})")
    return issues


def _object(new: dict[str, Any], old: dict[str, Any], path: str) -> list[str]:
    issues = []
    for name in sorted(set(new.get("required", [])) - set(old.get("required", []))):
        issues.append(f"{path}: property '{name}' became required")
    new_props, old_props = new.get("properties", {}), old.get("properties", {})
    new_extra, old_extra = new.get("additionalProperties", True), old.get("additionalProperties", True)
    for name, old_sub in old_props.items():
        where = f"{path}/properties/{name}"
        if name in new_props:
            issues.extend(_check(new_props[name], old_sub, where))
        elif new_extra is False:
            issues.append(f"{where}: property removed while additionalProperties is false")
        else:  # the new schema validates it as an additional property
            issues.extend(_check(new_extra, old_sub, where))
    if old_extra is not False:
        if new_extra is False:
            issues.append(f"{path}: additionalProperties changed to false; extra properties were allowed")
        else:
            issues.extend(_check(new_extra, old_extra, f"{path}/additionalProperties"))
    return issues


def _branches(new: list[Any], old: list[Any], path: str) -> list[str]:
    # Each old alternative must be accepted whole by some new alternative (oneOf exclusivity not checked).
    return [
        f"{path}: old alternative {i} is accepted by no new alternative"
        for i, old_branch in enumerate(old)
        if all(_check(b, old_branch, path) for b in new)
    ]
