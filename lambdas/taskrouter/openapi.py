"""The OpenAPI document of `/route` and `/tasks`, generated from the models that validate requests
(and the models of the answers). Served by `make local` at `GET /openapi.json`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from taskrouter.core.backends import BackendName, FallbackReason
from taskrouter.core.events import Event
from taskrouter.core.request import MAX_BODY_BYTES, RouteRequest
from taskrouter.core.task_spec import TaskBody
from taskrouter.core.tasks import TASK_NAME_PATTERN


class RouteDecision(BaseModel):
    task: str | None
    event: Event
    backend: BackendName
    fallback_reason: FallbackReason | None
    confidence: Annotated[
        float | None,
        Field(ge=0, le=1, description="the probability of the primary's answer under its constraint, whenever the "
              "primary answered (escalated or not); null when it gave no answer"),
    ]
    latency_ms: float
    request_id: str
    ignored_tasks: Annotated[list[str], Field(description="present when `tasks` named unknown tasks")] = []


class TaskOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    examples: list[str]
    version: int
    updated_at: str


class TaskList(BaseModel):
    tasks: list[TaskOut]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


_MODELS = (RouteRequest, RouteDecision, TaskBody, TaskOut, TaskList, ErrorBody)


def document() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(model, "validation") for model in _MODELS], ref_template="#/components/schemas/{model}"
    )

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def answer(description: str, model: type[BaseModel] | None = None) -> dict[str, Any]:
        content = {"content": {"application/json": {"schema": ref(model)}}} if model else {}
        return {"description": description, **content}

    errors = {
        "400": answer("a rule of the contract is broken; the message names the field", ErrorBody),
        "403": answer("missing or wrong credentials (API Gateway's own answer)"),
    }
    name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": TASK_NAME_PATTERN.pattern},
    }
    if_match = {
        "name": "If-Match",
        "in": "header",
        "required": False,
        "description": "write only if the stored version is this one, else 409",
        "schema": {"type": "string", "pattern": r'^"?[0-9]+"?$'},
    }
    if_none_match = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "`*`: create only; write only if the task does not exist, else 409",
        "schema": {"type": "string", "enum": ["*"]},
    }
    conflict = answer(
        "If-Match names another version, or If-None-Match: * and the task exists (code `version_conflict`)",
        ErrorBody,
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "TaskRouter", "version": "1.0.0", "description": "Routing and the task registry: docs/api.md in the repository"},
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization", "x-amazon-apigateway-authtype": "awsSigv4"},
            },
        },
        "paths": {
            "/route": {
                "post": {
                    "operationId": "route",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "description": f"at most {MAX_BODY_BYTES} bytes",
                        "content": {"application/json": {"schema": ref(RouteRequest)}},
                    },
                    "responses": {
                        "200": answer("the decision", RouteDecision),
                        **errors,
                        "413": answer("body over 64 KiB", ErrorBody),
                        "503": answer("no backend could decide; Retry-After is set", ErrorBody),
                    },
                }
            },
            "/tasks": {
                "get": {
                    "operationId": "listTasks",
                    "security": [{"apiKey": []}],
                    "responses": {"200": answer("every task, sorted by name", TaskList), "403": errors["403"]},
                }
            },
            "/tasks/{name}": {
                "parameters": [name],
                "get": {
                    "operationId": "getTask",
                    "security": [{"apiKey": []}],
                    "responses": {"200": answer("the task", TaskOut), "404": answer("no such task", ErrorBody), **errors},
                },
                "put": {
                    "operationId": "putTask",
                    "security": [{"sigv4": []}],
                    "description": "A body equal to the stored task changes nothing and answers 200, before any precondition.",
                    "parameters": [if_match, if_none_match],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": ref(TaskBody)}}},
                    "responses": {
                        "200": answer("replaced", TaskOut),
                        "201": answer("created", TaskOut),
                        **errors,
                        "409": conflict,
                        "413": answer("body over 64 KiB", ErrorBody),
                        "422": answer("the task catalogue would exceed its budget; nothing was written", ErrorBody),
                        "503": answer("the registry is unavailable; Retry-After is set", ErrorBody),
                    },
                },
                "delete": {
                    "operationId": "deleteTask",
                    "security": [{"sigv4": []}],
                    "parameters": [if_match],
                    "responses": {
                        "204": {"description": "deleted"},
                        "404": answer("no such task", ErrorBody),
                        **errors,
                        "409": conflict,
                    },
                },
            },
        },
    }


def gateway_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema as API Gateway validates bodies: JSON Schema draft 4, self-contained (its
    references inlined), without the documentation-only keywords."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: inline(value) for key, value in node.items() if key not in ("title", "default")}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return {"$schema": "http://json-schema.org/draft-04/schema#", **inline(schema)}
