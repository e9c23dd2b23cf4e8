"""The Confluent Schema Registry REST API subset the pipeline needs, served from the registry topic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from analytics_core.docs_pages import install_docs
from analytics_core.registry.compatibility import SCHEMA_TYPES
from analytics_core.registry.service import Registry, RegistryError
from analytics_core.schema_topic import SchemaVersion, TopicSchemaStore
from analytics_core.settings import Settings

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryJSON(JSONResponse):
    media_type = MEDIA_TYPE


class SchemaBody(BaseModel):
    """A schema as clients send it; metadata and ruleSet are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    schema_text: str = Field(alias="schema")
    schemaType: str = "AVRO"  # Confluent's default when the field is absent
    references: list[dict[str, Any]] | None = None

    def checked(self) -> tuple[str, str]:
        if self.references:
            raise RegistryError(422, 42201, "Invalid schema: schema references are not supported by this registry")
        return self.schema_text, self.schemaType.upper()


class ConfigBody(BaseModel):
    compatibility: str | None = None
    compatibilityLevel: str | None = None


def _version_json(v: SchemaVersion) -> dict[str, Any]:
    return {
        "subject": v.subject,
        "version": v.version,
        "id": v.schema_id,
        "schema": v.schema,
        "schemaType": v.schema_type,
    }


def _error(status: int, code: int, message: str) -> RegistryJSON:
    return RegistryJSON({"error_code": code, "message": message}, status_code=status)


def create_app(settings: Settings) -> FastAPI:
    """The registry app; its state is the schemas topic, so any number of instances agree."""
    store = TopicSchemaStore(settings)
    registry = Registry(store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="analytics schema registry",
        default_response_class=RegistryJSON,
        lifespan=lifespan,
        docs_url=None,  # /docs from the vendored Swagger UI (install_docs), not FastAPI's CDN
        redoc_url=None,
    )
    install_docs(app)
    app.state.registry = registry

    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> Response:
        return _error(422, 422, f"Unprocessable entity: {exc.errors()}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")

    @app.get("/")
    def root() -> dict[str, Any]:
        return {}

    @app.get("/schemas/types")
    def schema_types() -> list[str]:
        return list(SCHEMA_TYPES)

    @app.get("/subjects")
    def subjects(deleted: bool = False) -> list[str]:
        return registry.subjects(deleted)

    @app.get("/subjects/{subject}/versions")
    def versions(subject: str, deleted: bool = False) -> list[int]:
        return [v.version for v in registry.versions(subject, deleted)]

    @app.get("/subjects/{subject}/versions/{version}")
    def version(subject: str, version: str, deleted: bool = False) -> dict[str, Any]:
        return _version_json(registry.version(subject, version, deleted))

    @app.get("/subjects/{subject}/versions/{version}/schema")
    def version_schema(subject: str, version: str, deleted: bool = False) -> Response:
        return Response(registry.version(subject, version, deleted).schema, media_type=MEDIA_TYPE)

    @app.post("/subjects/{subject}/versions")
    def register(subject: str, body: SchemaBody) -> dict[str, Any]:
        return {"id": registry.register(subject, *body.checked())}

    @app.post("/subjects/{subject}")
    def lookup(subject: str, body: SchemaBody, deleted: bool = False) -> dict[str, Any]:
        return _version_json(registry.lookup(subject, *body.checked(), deleted=deleted))

    @app.delete("/subjects/{subject}")
    def delete_subject(subject: str, permanent: bool = False) -> list[int]:
        return registry.delete_subject(subject, permanent)

    @app.delete("/subjects/{subject}/versions/{version}")
    def delete_version(subject: str, version: str, permanent: bool = False) -> int:
        return registry.delete_version(subject, version, permanent)

    @app.get("/schemas/ids/{schema_id}")
    def by_id(schema_id: int) -> dict[str, Any]:
        found = registry.by_id(schema_id)
        return {"schema": found.schema, "schemaType": found.schema_type}

    @app.get("/schemas/ids/{schema_id}/versions")
    def id_versions(schema_id: int, deleted: bool = False) -> list[dict[str, Any]]:
        return [{"subject": v.subject, "version": v.version} for v in registry.id_versions(schema_id, deleted)]

    @app.get("/schemas/ids/{schema_id}/subjects")
    def id_subjects(schema_id: int, deleted: bool = False) -> list[str]:
        return sorted({v.subject for v in registry.id_versions(schema_id, deleted)})

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    def test_version(subject: str, version: str, body: SchemaBody, verbose: bool = False) -> dict[str, Any]:
        return _compatibility(registry.test(subject, version, *body.checked()), verbose)

    @app.post("/compatibility/subjects/{subject}/versions")
    def test_all(subject: str, body: SchemaBody, verbose: bool = False) -> dict[str, Any]:
        return _compatibility(registry.test(subject, None, *body.checked()), verbose)

    @app.get("/config")
    def get_config() -> dict[str, Any]:
        return {"compatibilityLevel": registry.level(None)}

    @app.put("/config")
    def put_config(body: ConfigBody) -> dict[str, Any]:
        return {"compatibility": registry.set_level(None, body.compatibility or body.compatibilityLevel)}

    @app.get("/config/{subject}")
    def get_subject_config(subject: str, defaultToGlobal: bool = False) -> dict[str, Any]:
        return {"compatibilityLevel": registry.level(subject, default_to_global=defaultToGlobal)}

    @app.put("/config/{subject}")
    def put_subject_config(subject: str, body: ConfigBody) -> dict[str, Any]:
        return {"compatibility": registry.set_level(subject, body.compatibility or body.compatibilityLevel)}

    @app.delete("/config/{subject}")
    def delete_subject_config(subject: str) -> dict[str, Any]:
        return {"compatibilityLevel": registry.delete_level(subject)}

    return app


def _compatibility(issues: list[str], verbose: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"is_compatible": not issues}
    if verbose:
        result["messages"] = issues
    return result
