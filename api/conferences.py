"""Conferences: rooms, joining and leaving, moderation, history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from api.routing import Router, current_principal, respond
from api.schemas import Name, PageQuery, Strict
from app.models import Conference, ConferenceEvent, ConferenceMember
from app.platform import PLATFORM_KEY

router = Router()


class ConferenceCreate(Strict):
    name: str = Name


class ConferenceOut(BaseModel):
    id: str
    name: str
    locked: bool
    mixer_id: str
    dial_in: str = Field(description="number a registered phone dials to join")
    created_by: str
    created_at: datetime


class ConferencePage(BaseModel):
    items: list[ConferenceOut]
    next_cursor: str | None


class JoinRequest(Strict):
    user_id: str | None = Field(
        default=None, max_length=40, description="whom to call; yourself if absent"
    )


class JoinAccepted(BaseModel):
    member_id: str
    state: str
    devices: int = Field(description="how many registered devices are ringing")


class MemberOut(BaseModel):
    id: str
    user_id: str
    state: str
    muted: bool
    speaking: bool
    source: str
    joined_at: datetime | None
    reason: str | None


class MemberList(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


class MemberUpdate(Strict):
    muted: bool


class EventOut(BaseModel):
    id: int
    type: str
    data: dict[str, Any]
    ts: datetime


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


def _out(conference: Conference) -> ConferenceOut:
    return ConferenceOut(
        id=conference.id,
        name=conference.name,
        locked=conference.locked,
        mixer_id=conference.mixer_id,
        dial_in=conference.dial_in,
        created_by=conference.created_by,
        created_at=conference.created_at,
    )


def _member(member: ConferenceMember) -> MemberOut:
    return MemberOut(
        id=member.id,
        user_id=member.user_id,
        state=member.state,
        muted=member.muted,
        speaking=False,
        source=member.source,
        joined_at=member.joined_at,
        reason=member.reason,
    )


def _event(event: ConferenceEvent) -> EventOut:
    return EventOut(id=event.id, type=event.type, data=event.data, ts=event.created_at)


def _conference_id(request: web.Request) -> str:
    return request.match_info["conference_id"]


@router.route(
    "POST",
    "/conferences",
    tag="conferences",
    summary="Create a conference",
    body=ConferenceCreate,
    status=201,
    response=ConferenceOut,
    errors=(403, 503),
)
async def create_conference(
    request: web.Request, body: ConferenceCreate
) -> web.Response:
    """Placed on a mixer now; the mixing bridge is made when someone joins."""
    conference = await request.app[PLATFORM_KEY].conferences.create(
        current_principal(request), body.name
    )
    return respond(_out(conference), 201)


@router.route(
    "GET",
    "/conferences",
    tag="conferences",
    summary="List conferences",
    query=PageQuery,
    response=ConferencePage,
)
async def list_conferences(request: web.Request, query: PageQuery) -> web.Response:
    """Conferences of the caller's tenant, oldest first."""
    page = await request.app[PLATFORM_KEY].conferences.list_page(
        current_principal(request), query.limit, query.cursor
    )
    return respond(
        ConferencePage(
            items=[_out(c) for c in page.items], next_cursor=page.next_cursor
        )
    )


@router.route(
    "GET",
    "/conferences/{conference_id}",
    tag="conferences",
    summary="Get a conference",
    response=ConferenceOut,
    errors=(404,),
)
async def get_conference(request: web.Request) -> web.Response:
    """Another tenant's conference is a 404."""
    conference = await request.app[PLATFORM_KEY].conferences.get(
        current_principal(request), _conference_id(request)
    )
    return respond(_out(conference))


@router.route(
    "DELETE",
    "/conferences/{conference_id}",
    tag="conferences",
    summary="Delete an empty conference",
    status=204,
    errors=(403, 404, 409),
)
async def delete_conference(request: web.Request) -> web.Response:
    """409 conference_not_empty while anyone is calling in or joined."""
    await request.app[PLATFORM_KEY].conferences.delete(
        current_principal(request), _conference_id(request)
    )
    return web.Response(status=204)


@router.route(
    "POST",
    "/conferences/{conference_id}/join",
    tag="conferences",
    summary="Call a user's registered devices into the conference",
    body=JoinRequest,
    body_optional=True,
    status=202,
    response=JoinAccepted,
    errors=(403, 404, 409, 503),
)
async def join_conference(request: web.Request, body: JoinRequest) -> web.Response:
    """The member is `calling` until a device answers, then `joined`.

    409 `conference_locked`, `already_member` or `no_registered_device`;
    503 `mixer_unavailable` when Asterisk is unreachable.
    """
    result = await request.app[PLATFORM_KEY].conferences.join(
        current_principal(request), _conference_id(request), body.user_id
    )
    accepted = JoinAccepted(
        member_id=result.member.id, state=result.member.state, devices=result.devices
    )
    return respond(accepted, 202)


@router.route(
    "POST",
    "/conferences/{conference_id}/leave",
    tag="conferences",
    summary="Hang up a user's leg of the conference",
    body=JoinRequest,
    body_optional=True,
    response=MemberOut,
    errors=(403, 404, 409, 503),
)
async def leave_conference(request: web.Request, body: JoinRequest) -> web.Response:
    """Yourself if `user_id` is absent; 409 `not_in_conference` otherwise."""
    member = await request.app[PLATFORM_KEY].conferences.leave(
        current_principal(request), _conference_id(request), body.user_id
    )
    return respond(_member(member))


@router.route(
    "POST",
    "/conferences/{conference_id}/lock",
    tag="conferences",
    summary="Lock: nobody else may join",
    response=ConferenceOut,
    errors=(403, 404),
)
async def lock_conference(request: web.Request) -> web.Response:
    """Members stay; new joins and dial-ins get 409 `conference_locked`."""
    conference = await request.app[PLATFORM_KEY].conferences.set_locked(
        current_principal(request), _conference_id(request), True
    )
    return respond(_out(conference))


@router.route(
    "POST",
    "/conferences/{conference_id}/unlock",
    tag="conferences",
    summary="Unlock the conference",
    response=ConferenceOut,
    errors=(403, 404),
)
async def unlock_conference(request: web.Request) -> web.Response:
    """Joins are accepted again."""
    conference = await request.app[PLATFORM_KEY].conferences.set_locked(
        current_principal(request), _conference_id(request), False
    )
    return respond(_out(conference))


@router.route(
    "GET",
    "/conferences/{conference_id}/members",
    tag="conferences",
    summary="Members calling in or joined",
    query=PageQuery,
    response=MemberList,
    errors=(404,),
)
async def list_members(request: web.Request, query: PageQuery) -> web.Response:
    """Members that left are in the conference's events, not here."""
    page = await request.app[PLATFORM_KEY].conferences.members(
        current_principal(request), _conference_id(request), query.limit, query.cursor
    )
    return respond(
        MemberList(items=[_member(m) for m in page.items], next_cursor=page.next_cursor)
    )


@router.route(
    "PATCH",
    "/conferences/{conference_id}/members/{member_id}",
    tag="conferences",
    summary="Mute or unmute a member",
    body=MemberUpdate,
    response=MemberOut,
    errors=(403, 404, 409, 503),
)
async def update_member(request: web.Request, body: MemberUpdate) -> web.Response:
    """Muting stops the member's audio reaching the room; they still hear it."""
    member = await request.app[PLATFORM_KEY].conferences.set_muted(
        current_principal(request),
        _conference_id(request),
        request.match_info["member_id"],
        body.muted,
    )
    return respond(_member(member))


@router.route(
    "DELETE",
    "/conferences/{conference_id}/members/{member_id}",
    tag="conferences",
    summary="Kick a member",
    response=MemberOut,
    errors=(403, 404, 409, 503),
)
async def kick_member(request: web.Request) -> web.Response:
    """Hangs up the member's call; the creator or a desk_head may do it."""
    member = await request.app[PLATFORM_KEY].conferences.kick(
        current_principal(request),
        _conference_id(request),
        request.match_info["member_id"],
    )
    return respond(_member(member))


@router.route(
    "GET",
    "/conferences/{conference_id}/events",
    tag="conferences",
    summary="The conference's history",
    query=PageQuery,
    response=EventPage,
    errors=(404,),
)
async def list_events(request: web.Request, query: PageQuery) -> web.Response:
    """Created, locked, joined, left, muted... oldest first."""
    page = await request.app[PLATFORM_KEY].conferences.events(
        current_principal(request),
        _conference_id(request),
        query.limit,
        query.cursor,
    )
    return respond(
        EventPage(items=[_event(e) for e in page.items], next_cursor=page.next_cursor)
    )
