"""SIP credentials and live registrations."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from api.routing import Router, current_principal, respond
from api.schemas import PageQuery, Strict
from app.models import SipCredential
from app.platform import PLATFORM_KEY
from app.services.sip import IssuedCredential

router = Router()


class CredentialCreate(Strict):
    user_id: str = Field(min_length=1, max_length=40)


class CredentialQuery(PageQuery):
    user_id: str | None = Field(default=None, max_length=40)


class CredentialOut(BaseModel):
    id: str
    user_id: str
    username: str
    domain: str
    registrar: str
    created_at: datetime
    rotated_at: datetime | None


class CredentialSecret(CredentialOut):
    password: str = Field(description="shown only in this response; store it now")


class CredentialPage(BaseModel):
    items: list[CredentialOut]
    next_cursor: str | None


class RegistrationOut(BaseModel):
    credential_id: str
    user_id: str
    username: str
    contact: str
    status: str
    user_agent: str
    source_address: str
    expires_in: int | None


class RegistrationList(BaseModel):
    items: list[RegistrationOut]
    next_cursor: str | None


def _out(request: web.Request, credential: SipCredential) -> CredentialOut:
    settings = request.app[PLATFORM_KEY].settings
    return CredentialOut(
        id=credential.id,
        user_id=credential.user_id,
        username=credential.username,
        domain=settings.effective_sip_domain,
        registrar=settings.registrar,
        created_at=credential.created_at,
        rotated_at=credential.rotated_at,
    )


def _secret(request: web.Request, issued: IssuedCredential) -> CredentialSecret:
    return CredentialSecret(
        **_out(request, issued.credential).model_dump(), password=issued.password
    )


@router.route(
    "POST",
    "/sip/credentials",
    tag="sip",
    summary="Issue a SIP credential for a user",
    body=CredentialCreate,
    status=201,
    response=CredentialSecret,
    errors=(403, 404, 409),
)
async def create_credential(
    request: web.Request, body: CredentialCreate
) -> web.Response:
    """The password is in this response only; register a phone with it."""
    issued = await request.app[PLATFORM_KEY].sip.create(
        current_principal(request), body.user_id
    )
    return respond(_secret(request, issued), 201)


@router.route(
    "GET",
    "/sip/credentials",
    tag="sip",
    summary="List SIP credentials",
    query=CredentialQuery,
    response=CredentialPage,
)
async def list_credentials(
    request: web.Request, query: CredentialQuery
) -> web.Response:
    """Never includes passwords. Traders see only their own."""
    page = await request.app[PLATFORM_KEY].sip.list_page(
        current_principal(request), query.user_id, query.limit, query.cursor
    )
    return respond(
        CredentialPage(
            items=[_out(request, c) for c in page.items], next_cursor=page.next_cursor
        )
    )


@router.route(
    "POST",
    "/sip/credentials/{credential_id}/rotate",
    tag="sip",
    summary="Replace a credential's password",
    status=200,
    response=CredentialSecret,
    errors=(404,),
)
async def rotate_credential(request: web.Request) -> web.Response:
    """The old password stops working at once; phones must re-register."""
    issued = await request.app[PLATFORM_KEY].sip.rotate(
        current_principal(request), request.match_info["credential_id"]
    )
    return respond(_secret(request, issued))


@router.route(
    "DELETE",
    "/sip/credentials/{credential_id}",
    tag="sip",
    summary="Delete a SIP credential",
    status=204,
    errors=(404,),
)
async def delete_credential(request: web.Request) -> web.Response:
    """Removed from the mixers too; registered phones lose service."""
    await request.app[PLATFORM_KEY].sip.delete(
        current_principal(request), request.match_info["credential_id"]
    )
    return web.Response(status=204)


@router.route(
    "GET",
    "/sip/registrations",
    tag="sip",
    summary="Live registrations of this tenant's credentials",
    query=CredentialQuery,
    response=RegistrationList,
    errors=(503,),
)
async def list_registrations(
    request: web.Request, query: CredentialQuery
) -> web.Response:
    """Read from the mixers now: which devices are registered where."""
    page = await request.app[PLATFORM_KEY].sip.registrations(
        current_principal(request), query.limit, query.cursor, query.user_id
    )
    items = [
        RegistrationOut(
            credential_id=r.credential_id,
            user_id=r.user_id,
            username=r.username,
            contact=r.uri,
            status=r.status,
            user_agent=r.user_agent,
            source_address=r.via_address,
            expires_in=r.expires_in,
        )
        for r in page.items
    ]
    return respond(RegistrationList(items=items, next_cursor=page.next_cursor))
