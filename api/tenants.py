"""Tenants: onboarding with a first admin."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel

from api.routing import Router, current_principal, respond
from api.schemas import DisplayName, Name, PageQuery, Password, Strict, Username
from app.models import Tenant
from app.platform import PLATFORM_KEY

router = Router()


class FirstAdmin(Strict):
    username: str = Username
    password: str = Password
    display_name: str = DisplayName


class TenantCreate(Strict):
    name: str = Name
    admin: FirstAdmin


class TenantUpdate(Strict):
    name: str = Name


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: datetime


class TenantCreated(TenantOut):
    admin_user_id: str


class TenantPage(BaseModel):
    items: list[TenantOut]
    next_cursor: str | None


def _out(tenant: Tenant) -> TenantOut:
    return TenantOut(id=tenant.id, name=tenant.name, created_at=tenant.created_at)


@router.route(
    "POST",
    "/tenants",
    tag="tenants",
    summary="Onboard a tenant with its first admin",
    body=TenantCreate,
    status=201,
    response=TenantCreated,
    errors=(403, 409),
)
async def create_tenant(request: web.Request, body: TenantCreate) -> web.Response:
    """Platform admins only. The admin logs in with the given username."""
    created = await request.app[PLATFORM_KEY].tenants.create(
        current_principal(request),
        body.name,
        body.admin.username,
        body.admin.password,
        body.admin.display_name,
    )
    out = TenantCreated(
        **_out(created.tenant).model_dump(), admin_user_id=created.admin_user_id
    )
    return respond(out, 201)


@router.route(
    "GET",
    "/tenants",
    tag="tenants",
    summary="List tenants",
    query=PageQuery,
    response=TenantPage,
)
async def list_tenants(request: web.Request, query: PageQuery) -> web.Response:
    """A platform admin sees every tenant; anyone else sees their own."""
    page = await request.app[PLATFORM_KEY].tenants.list_page(
        current_principal(request), query.limit, query.cursor
    )
    return respond(
        TenantPage(items=[_out(t) for t in page.items], next_cursor=page.next_cursor)
    )


@router.route(
    "GET",
    "/tenants/{tenant_id}",
    tag="tenants",
    summary="Get a tenant",
    response=TenantOut,
    errors=(404,),
)
async def get_tenant(request: web.Request) -> web.Response:
    """Another tenant is a 404."""
    tenant = await request.app[PLATFORM_KEY].tenants.get(
        current_principal(request), request.match_info["tenant_id"]
    )
    return respond(_out(tenant))


@router.route(
    "PATCH",
    "/tenants/{tenant_id}",
    tag="tenants",
    summary="Rename a tenant",
    body=TenantUpdate,
    response=TenantOut,
    errors=(403, 404, 409),
)
async def update_tenant(request: web.Request, body: TenantUpdate) -> web.Response:
    """Tenant admins rename their own tenant; platform admins any."""
    tenant = await request.app[PLATFORM_KEY].tenants.rename(
        current_principal(request), request.match_info["tenant_id"], body.name
    )
    return respond(_out(tenant))


@router.route(
    "DELETE",
    "/tenants/{tenant_id}",
    tag="tenants",
    summary="Remove a tenant and everything in it",
    status=204,
    errors=(403, 404, 409),
)
async def delete_tenant(request: web.Request) -> web.Response:
    """Platform admins only; refused (409 tenant_busy) while anyone is in a call."""
    await request.app[PLATFORM_KEY].tenants.delete(
        current_principal(request), request.match_info["tenant_id"]
    )
    return web.Response(status=204)
