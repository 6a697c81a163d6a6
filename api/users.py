"""Users of the caller's tenant (their per-tenant profiles)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api.routing import Router, current_principal, respond
from api.schemas import PRINTABLE, DisplayName, PageQuery, Password, Strict, Username
from app.platform import PLATFORM_KEY
from app.services.users import Profile

router = Router()

Role = Literal["platform_admin", "tenant_admin", "desk_head", "trader", "viewer"]


class UserCreate(Strict):
    username: str = Username
    password: str = Password
    display_name: str = DisplayName
    role: Role = "trader"


class UserUpdate(Strict):
    display_name: str | None = Field(default=None, max_length=120, pattern=PRINTABLE)
    role: Role | None = None


class PasswordChange(Strict):
    password: str = Password
    current_password: str | None = Field(
        default=None,
        max_length=256,
        description="required when changing your own password",
    )


class UserOut(BaseModel):
    id: str
    tenant_id: str
    username: str
    display_name: str
    role: str
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


def _out(profile: Profile) -> UserOut:
    return UserOut(**profile.__dict__)


@router.route(
    "POST",
    "/users",
    tag="users",
    summary="Create a user in this tenant",
    body=UserCreate,
    status=201,
    response=UserOut,
    errors=(403, 409),
)
async def create_user(request: web.Request, body: UserCreate) -> web.Response:
    """Tenant admins create users with a password and a role up to their own."""
    profile = await request.app[PLATFORM_KEY].users.create(
        current_principal(request),
        body.username,
        body.password,
        body.display_name,
        body.role,
    )
    return respond(_out(profile), 201)


@router.route(
    "GET",
    "/users",
    tag="users",
    summary="List users of this tenant",
    query=PageQuery,
    response=UserPage,
)
async def list_users(request: web.Request, query: PageQuery) -> web.Response:
    """Every profile in the caller's tenant, oldest first."""
    page = await request.app[PLATFORM_KEY].users.list_page(
        current_principal(request), query.limit, query.cursor
    )
    return respond(
        UserPage(items=[_out(p) for p in page.items], next_cursor=page.next_cursor)
    )


@router.route(
    "GET",
    "/users/{user_id}",
    tag="users",
    summary="Get a user",
    response=UserOut,
    errors=(404,),
)
async def get_user(request: web.Request) -> web.Response:
    """A user without a profile in the caller's tenant is a 404."""
    profile = await request.app[PLATFORM_KEY].users.get(
        current_principal(request), request.match_info["user_id"]
    )
    return respond(_out(profile))


@router.route(
    "PATCH",
    "/users/{user_id}",
    tag="users",
    summary="Change display name or role",
    body=UserUpdate,
    response=UserOut,
    errors=(403, 404, 409),
)
async def update_user(request: web.Request, body: UserUpdate) -> web.Response:
    """Anyone may rename themselves; roles are changed by tenant admins."""
    profile = await request.app[PLATFORM_KEY].users.update(
        current_principal(request),
        request.match_info["user_id"],
        body.display_name,
        body.role,
    )
    return respond(_out(profile))


@router.route(
    "PUT",
    "/users/{user_id}/password",
    tag="users",
    summary="Set a user's password",
    body=PasswordChange,
    status=204,
    errors=(403, 404, 422),
)
async def set_password(request: web.Request, body: PasswordChange) -> web.Response:
    """Every session of the user ends. Your own needs `current_password` (422
    `wrong_password` otherwise); tenant admins set anyone's in their tenant."""
    await request.app[PLATFORM_KEY].users.set_password(
        current_principal(request),
        request.match_info["user_id"],
        body.password,
        body.current_password,
    )
    return web.Response(status=204)


@router.route(
    "DELETE",
    "/users/{user_id}",
    tag="users",
    summary="Remove a user from this tenant",
    status=204,
    errors=(403, 404, 409),
)
async def delete_user(request: web.Request) -> web.Response:
    """Removes the profile and the user's SIP credentials; refused mid-call."""
    await request.app[PLATFORM_KEY].users.delete(
        current_principal(request), request.match_info["user_id"]
    )
    return web.Response(status=204)
