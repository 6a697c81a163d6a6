"""Declaring operations once: route, request and response models, and docs.

Each handler is registered with ``Router.route``, which records what the
OpenAPI document needs (tag, summary, models, errors) and wraps the handler
so that it receives a validated body and query, and an authenticated caller
unless the operation is public. Handlers stay short: parse, authorize, call
the service, shape the answer.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from app.errors import AppError, InvalidRequest
from app.security import Principal

Handler = Callable[..., Awaitable[web.StreamResponse]]

PRINCIPAL_KEY = web.RequestKey("principal", Principal)
_PATH_PARAM = re.compile(r"{(\w+)}")


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    tag: str
    summary: str
    description: str = ""
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    public: bool = False
    body_optional: bool = False
    path_params: list[str] = field(default_factory=list)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def _field_errors(exc: ValidationError) -> dict[str, Any]:
    fields: dict[str, str] = {}
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "body"
        fields[location] = error["msg"]
    return {"fields": fields}


async def _read_body(request: web.Request, operation: Operation) -> Any:
    if not request.can_read_body:
        if operation.body_optional:
            return {}
        raise InvalidRequest("a JSON body is required", details={"fields": {}})
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            "send the body as JSON with Content-Type: application/json"
        )
    raw = await request.read()
    if not raw.strip() and operation.body_optional:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"the body is not valid JSON: {exc}", details={"fields": {}}
        ) from exc
    except RecursionError as exc:
        raise InvalidRequest(
            "the body nests too deeply to be a request", details={"fields": {}}
        ) from exc


def current_principal(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


class Router:
    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        tag: str,
        summary: str,
        description: str = "",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        status: int = 200,
        response: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        public: bool = False,
        body_optional: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            operation = Operation(
                method=method,
                path=path,
                handler=handler,
                tag=tag,
                summary=summary,
                description=description or (handler.__doc__ or "").strip(),
                body=body,
                query=query,
                status=status,
                response=response,
                errors=errors,
                public=public,
                body_optional=body_optional,
                path_params=_PATH_PARAM.findall(path),
            )
            self.operations.append(operation)
            return handler

        return register

    def install(self, app: web.Application, authenticate: Authenticator) -> None:
        for operation in self.operations:
            handler = _wrap(operation, authenticate)
            name = operation.operation_id
            if operation.method == "GET":
                # HEAD answers like GET without the body, as HTTP expects.
                app.router.add_get(operation.path, handler, name=name)
            else:
                app.router.add_route(
                    operation.method, operation.path, handler, name=name
                )


Authenticator = Callable[[web.Request], Awaitable[Principal]]


def _wrap(operation: Operation, authenticate: Authenticator) -> Handler:
    @functools.wraps(operation.handler)
    async def handle(request: web.Request) -> web.StreamResponse:
        if not operation.public:
            request[PRINCIPAL_KEY] = await authenticate(request)
        kwargs: dict[str, Any] = {}
        try:
            if operation.body is not None:
                kwargs["body"] = operation.body.model_validate(
                    await _read_body(request, operation)
                )
            if operation.query is not None:
                kwargs["query"] = operation.query.model_validate(dict(request.query))
        except ValidationError as exc:
            raise InvalidRequest(
                "the request does not match the schema; see details.fields",
                details=_field_errors(exc),
            ) from exc
        return await operation.handler(request, **kwargs)

    return handle


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(),
        status=status,
        content_type="application/json",
    )
