"""The OpenAPI 3.1 document, built from the registered operations at run time.

Pydantic emits JSON Schema 2020-12, which is what OpenAPI 3.1 uses, so each
model's schema goes into components as it is; apispec assembles paths and
components. Nothing here is written by hand per operation.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apispec import APISpec
from pydantic import BaseModel

from api.routing import Operation
from api.schemas import ErrorBody

_ERROR_TEXT = {
    400: "The request is malformed or does not match the schema (invalid_request).",
    401: "Missing, expired, revoked or forged token (unauthorized).",
    403: "The caller's role does not allow this (forbidden).",
    404: "No such resource in the caller's tenant (not_found).",
    409: "The resource's state does not allow this; `error` names the state.",
    413: "The body is too large (payload_too_large).",
    415: "The body is not JSON (unsupported_media_type).",
    422: "The body parses but breaks a rule; `error` names the rule.",
    429: "Too many attempts (too_many_requests); wait Retry-After seconds.",
    503: "The mixer (Asterisk) needed for this is unreachable (mixer_unavailable).",
}


class _SchemaCollector:
    def __init__(self, spec: APISpec) -> None:
        self._spec = spec
        self._seen: set[str] = set()

    def ref(
        self, model: type[BaseModel], mode: str = "serialization"
    ) -> dict[str, str]:
        """A $ref to the model, adding it (and what it uses) to components.

        Request bodies use the validation form of a model, responses the
        serialization form; the two differ only for computed and aliased fields.
        """
        name = model.__name__
        if name not in self._seen:
            schema = model.model_json_schema(
                ref_template="#/components/schemas/{model}",
                mode="validation" if mode == "validation" else "serialization",
            )
            for def_name, definition in schema.pop("$defs", {}).items():
                if def_name not in self._seen:
                    self._seen.add(def_name)
                    self._spec.components.schema(def_name, definition)
            self._seen.add(name)
            self._spec.components.schema(name, schema)
        return {"$ref": f"#/components/schemas/{name}"}


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in operation.path_params
    ]
    if operation.query is not None:
        schema = operation.query.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
            )
    return parameters


def _errors(operation: Operation) -> list[int]:
    statuses = set(operation.errors)
    if not operation.public:
        statuses.add(401)
    if operation.body is not None:
        statuses.update({400, 413, 415})
    if operation.query is not None or operation.path_params:
        statuses.add(400)
    return sorted(statuses)


def build(operations: list[Operation], version: str) -> dict[str, Any]:
    spec = APISpec(
        title="SOMVAD API",
        version=version,
        openapi_version="3.1.0",
        info={
            "description": (
                "SIP-native telephony application server for trading floors. "
                "Send `Authorization: Bearer <token>` from POST /auth/login on "
                "every request except the public ones. Errors share one body: "
                "ErrorBody. Every response carries X-Trace-Id."
            )
        },
    )
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    collector = _SchemaCollector(spec)
    error_ref = collector.ref(ErrorBody)
    tags: set[str] = set()
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        tags.add(operation.tag)
        responses: dict[str, Any] = {}
        success: dict[str, Any] = {"description": "Success"}
        if operation.response is not None:
            success["content"] = {
                "application/json": {"schema": collector.ref(operation.response)}
            }
        responses[str(operation.status)] = success
        for status in _errors(operation):
            responses[str(status)] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        entry: dict[str, Any] = {
            "tags": [operation.tag],
            "summary": operation.summary,
            "operationId": operation.operation_id,
            "parameters": _parameters(operation),
            "responses": responses,
            "security": [] if operation.public else [{"bearerAuth": []}],
        }
        if operation.description:
            entry["description"] = operation.description
        if operation.body is not None:
            entry["requestBody"] = {
                "required": not operation.body_optional,
                "content": {
                    "application/json": {
                        "schema": collector.ref(operation.body, "validation")
                    }
                },
            }
        paths.setdefault(operation.path, {})[operation.method.lower()] = entry
    for tag in sorted(tags):
        spec.tag({"name": tag})
    for path, path_operations in paths.items():
        spec.path(path=path, operations=path_operations)
    return spec.to_dict()


_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SOMVAD API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""

_NO_ASSETS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SOMVAD API</title></head>
<body><p>Swagger UI is not installed next to this server (run <code>make
venv</code>, which installs it from npm). The contract itself is at
<a href="/openapi.json">/openapi.json</a>.</p></body></html>
"""


def docs_page(assets_installed: bool) -> web.Response:
    """Swagger UI, served from the npm package `make` installs (no CDN)."""
    page = _DOCS_PAGE if assets_installed else _NO_ASSETS_PAGE
    return web.Response(text=page, content_type="text/html")
