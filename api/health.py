"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from api.routing import Router, respond
from app.platform import PLATFORM_KEY

router = Router()


class Health(BaseModel):
    status: str
    version: str


class MixerHealth(BaseModel):
    id: str
    connected: bool


class Readiness(BaseModel):
    status: str
    database: bool
    mixers: list[MixerHealth]


@router.route(
    "GET", "/health", tag="health", summary="Liveness", public=True, response=Health
)
async def get_health(request: web.Request) -> web.Response:
    """Answers while the process serves requests."""
    return respond(Health(status="ok", version=request.app[PLATFORM_KEY].version))


@router.route(
    "GET",
    "/health/ready",
    tag="health",
    summary="Readiness: database and mixers reachable",
    public=True,
    response=Readiness,
    errors=(503,),
)
async def get_ready(request: web.Request) -> web.Response:
    """200 when the database answers and at least one mixer is connected."""
    platform = request.app[PLATFORM_KEY]
    database = await platform.database_ok()
    mixers = [
        MixerHealth(id=link.id, connected=link.available)
        for link in platform.mixers.links()
    ]
    ready = database and any(m.connected for m in mixers)
    body = Readiness(
        status="ready" if ready else "not_ready", database=database, mixers=mixers
    )
    return respond(body, 200 if ready else 503)
