"""Registry operations over TopicSchemaStore with Confluent's error codes; the HTTP layer only maps them.

Shared: the registry server (schema_registry/) answers its REST API with them, and the collector
registers its schemas through them in-process when no registry URL is set.
"""

from __future__ import annotations

from analytics_core.registry import compatibility
from analytics_core.schema_topic import SchemaVersion, TopicSchemaStore

_MAX_VERSION = 2**31 - 1


class RegistryError(Exception):
    """An error answered as {"error_code", "message"} with an HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


class Registry:
    """Subjects, versions, ids and compatibility levels; every call first reads new topic records."""

    def __init__(self, store: TopicSchemaStore) -> None:
        self.store = store

    def subjects(self, deleted: bool = False) -> list[str]:
        self.store.refresh()
        return sorted(s for s, vs in self.store.versions.items() if deleted or any(not v.deleted for v in vs))

    def versions(self, subject: str, deleted: bool = False) -> list[SchemaVersion]:
        self.store.refresh()
        found = [v for v in self.store.versions.get(subject, []) if deleted or not v.deleted]
        if not found:
            raise subject_not_found(subject)
        return found

    def version(self, subject: str, version: str, deleted: bool = False) -> SchemaVersion:
        number = self._parse_version(version)
        versions = self.versions(subject, deleted=deleted)
        if number is None:
            return versions[-1]
        found = next((v for v in versions if v.version == number), None)
        if found is None:
            raise RegistryError(404, 40402, f"Version {number} not found.")
        return found

    @staticmethod
    def _parse_version(version: str) -> int | None:
        """None for the latest version; the number otherwise."""
        if version in ("latest", "-1"):
            return None
        if version.isdigit() and 1 <= int(version) <= _MAX_VERSION:
            return int(version)
        message = f"The specified version '{version}' is not a valid version id. "
        raise RegistryError(422, 42202, message + 'Allowed values are between [1, 2^31-1] and the string "latest"')

    def by_id(self, schema_id: int) -> SchemaVersion:
        self.store.refresh()
        found = self.store.lookup(schema_id)
        if found is None:
            raise RegistryError(404, 40403, f"Schema {schema_id} not found")
        return found

    def id_versions(self, schema_id: int, deleted: bool = False) -> list[SchemaVersion]:
        self.by_id(schema_id)
        every = [v for vs in self.store.versions.values() for v in vs]
        return [v for v in every if v.schema_id == schema_id and (deleted or not v.deleted)]

    def register(self, subject: str, schema: str, schema_type: str) -> int:
        """The schema's id under `subject`, added as a new version when compatible (409 when not)."""
        with self.store.lock:  # check and write as one step: no other thread registers in between
            self.store.refresh()
            live = [v for v in self.store.versions.get(subject, []) if not v.deleted]
            same = next((v for v in live if v.schema == schema and v.schema_type == schema_type), None)
            if same is not None:
                return same.schema_id
            _validate(schema_type, schema)
            issues = compatibility.check(schema_type, schema, live, self.level(subject))
            if issues:
                detail = "; ".join(issues)
                message = f'Schema being registered is incompatible with an earlier schema for subject "{subject}"'
                raise RegistryError(409, 409, f"{message}, details: [{detail}]")
            return self.store.register(subject, schema, schema_type)

    def lookup(self, subject: str, schema: str, schema_type: str, deleted: bool = False) -> SchemaVersion:
        versions = self.versions(subject, deleted=deleted)
        found = next((v for v in versions if v.schema == schema and v.schema_type == schema_type), None)
        if found is None:
            raise RegistryError(404, 40403, "Schema not found")
        return found

    def test(self, subject: str, version: str | None, schema: str, schema_type: str) -> list[str]:
        """Rules `schema` breaks against one version, or (None, "latest") those its subject's level compares."""
        _validate(schema_type, schema)
        level = self.level(subject)
        if version is None or self._parse_version(version) is None:
            live = [v for v in self.store.versions.get(subject, []) if not v.deleted]
            return compatibility.check(schema_type, schema, live, level)
        old = self.version(subject, version)
        return compatibility.check(schema_type, schema, [old], level.replace("_TRANSITIVE", ""))

    def level(self, subject: str | None, default_to_global: bool = True) -> str:
        self.store.refresh()
        if subject is not None and subject in self.store.configs:
            return self.store.configs[subject]
        if subject is not None and not default_to_global:
            message = f"Subject '{subject}' does not have subject-level compatibility configured"
            raise RegistryError(404, 40408, message)
        return self.store.configs.get(None, compatibility.DEFAULT_LEVEL)

    def set_level(self, subject: str | None, level: str | None) -> str:
        level = (level or "").upper()
        if level not in compatibility.LEVELS:
            valid = ", ".join(lv.lower() for lv in compatibility.LEVELS)
            raise RegistryError(422, 42203, f"Invalid compatibility level. Valid values are {valid}")
        self.store.set_compatibility(subject, level)
        return level

    def delete_level(self, subject: str | None) -> str:
        previous = self.level(subject, default_to_global=subject is None)
        self.store.set_compatibility(subject, None)
        return previous

    def delete_version(self, subject: str, version: str, permanent: bool = False) -> int:
        with self.store.lock:
            found = self.version(subject, version, deleted=permanent)
            if permanent and not found.deleted:
                message = f"Subject '{subject}' Version {found.version} was not deleted first"
                raise RegistryError(404, 40407, message)
            self.store.delete_version(subject, found.version, permanent=permanent)
            return found.version

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        with self.store.lock:
            every = self.versions(subject, deleted=True)
            live = [v for v in every if not v.deleted]
            if permanent and live:
                message = f"Subject '{subject}' was not deleted first before being permanently deleted"
                raise RegistryError(404, 40405, message)
            if not permanent and not live:
                message = f"Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
                raise RegistryError(404, 40404, message)
            targets = every if permanent else live
            for v in targets:
                self.store.delete_version(subject, v.version, permanent=permanent)
            return [v.version for v in targets]


def _validate(schema_type: str, schema: str) -> None:
    try:
        compatibility.validate(schema_type, schema)
    except compatibility.InvalidSchemaError as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from exc
