"""The aiohttp application: middleware, every domain's routes, the contract."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from api import auth, conferences, health, sip, tenants, users
from api.middleware import trace_and_errors
from api.openapi import build, docs_page
from api.routing import Operation, Router
from app import logs
from app.errors import Unauthorized
from app.platform import PLATFORM_KEY, Platform
from app.security import Principal

ROUTERS: tuple[Router, ...] = (
    health.router,
    auth.router,
    tenants.router,
    users.router,
    sip.router,
    conferences.router,
)
SWAGGER_ASSETS = Path(__file__).resolve().parents[1] / ".venv" / "swagger-ui"


def operations() -> list[Operation]:
    return [operation for router in ROUTERS for operation in router.operations]


async def _authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token> from POST /auth/login")
    principal = await request.app[PLATFORM_KEY].auth.authenticate(token.strip())
    logs.bind(tenant_id=principal.tenant_id, user_id=principal.user_id)
    return principal


def create_app(platform: Platform) -> web.Application:
    app = web.Application(
        middlewares=[trace_and_errors],
        client_max_size=platform.settings.max_body_bytes,
    )
    app[PLATFORM_KEY] = platform
    for router in ROUTERS:
        router.install(app, _authenticate)
    document = build(operations(), platform.version)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    async def docs(_: web.Request) -> web.Response:
        return docs_page(SWAGGER_ASSETS.is_dir())

    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
    if SWAGGER_ASSETS.is_dir():
        app.router.add_static("/docs/assets", SWAGGER_ASSETS)
    return app
