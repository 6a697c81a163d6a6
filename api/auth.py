"""Login, refresh, logout and who-am-I."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from api.routing import Router, current_principal, respond
from api.schemas import Strict
from app.platform import PLATFORM_KEY
from app.services.auth import TokenPair

router = Router()


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    tenant_id: str | None = Field(default=None, max_length=40)


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    user_id: str
    tenant_id: str
    role: str


class Me(BaseModel):
    user_id: str
    tenant_id: str
    username: str
    role: str
    impersonator_id: str | None


class AuthConfig(BaseModel):
    password_login: bool
    oidc: None = None
    access_token_ttl: int
    refresh_token_ttl: int


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        user_id=pair.principal.user_id,
        tenant_id=pair.principal.tenant_id,
        role=pair.principal.role,
    )


@router.route(
    "POST",
    "/auth/login",
    tag="auth",
    summary="Log in with a password",
    public=True,
    body=LoginRequest,
    response=TokenResponse,
    errors=(401, 429),
)
async def login(request: web.Request, body: LoginRequest) -> web.Response:
    """A bearer token for the profile in `tenant_id` (or the user's first)."""
    auth = request.app[PLATFORM_KEY].auth
    client = request.remote or "unknown"
    pair = await auth.login(body.username, body.password, body.tenant_id, client)
    return respond(_tokens(pair))


@router.route(
    "POST",
    "/auth/refresh",
    tag="auth",
    summary="Trade a refresh token for new tokens",
    public=True,
    body=RefreshRequest,
    response=TokenResponse,
    errors=(401,),
)
async def refresh(request: web.Request, body: RefreshRequest) -> web.Response:
    """Refresh tokens are single use; a reused one revokes the session."""
    auth = request.app[PLATFORM_KEY].auth
    return respond(_tokens(await auth.refresh(body.refresh_token)))


@router.route(
    "POST", "/auth/logout", tag="auth", summary="Revoke this session", status=204
)
async def logout(request: web.Request) -> web.Response:
    """Every access and refresh token of the session stops working at once."""
    await request.app[PLATFORM_KEY].auth.logout(current_principal(request))
    return web.Response(status=204)


@router.route(
    "GET", "/auth/me", tag="auth", summary="Who the token belongs to", response=Me
)
async def me(request: web.Request) -> web.Response:
    """The caller's user, tenant and role as the server sees them now."""
    principal = current_principal(request)
    return respond(
        Me(
            user_id=principal.user_id,
            tenant_id=principal.tenant_id,
            username=principal.username,
            role=principal.role,
            impersonator_id=principal.impersonator_id,
        )
    )


@router.route(
    "GET",
    "/auth/config",
    tag="auth",
    summary="How to log in",
    public=True,
    response=AuthConfig,
)
async def auth_config(request: web.Request) -> web.Response:
    """Login methods this deployment accepts."""
    settings = request.app[PLATFORM_KEY].settings
    return respond(
        AuthConfig(
            password_login=True,
            access_token_ttl=settings.access_token_ttl,
            refresh_token_ttl=settings.refresh_token_ttl,
        )
    )
