"""Conferences: rooms on a mixer, their members, and what Asterisk says of them.

Every change to one conference, whether it comes from an API request or from
an ARI event, runs under that conference's lock. That is the one ordered
place the state of a room changes in, so a join racing a hang-up or a leave
racing an answer always resolves the same way.

A member's life: ``calling`` (the platform rings the user's devices) ->
``joined`` (a device answered and sits in the mixing bridge) -> ``left``;
or ``calling`` -> ``failed`` when no device answers. A member that dials the
conference's ``dial_in`` number starts at ``joined``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    MixerUnavailable,
    NotFound,
)
from app.ids import new_id
from app.locks import KeyedLocks
from app.logs import bound
from app.models import (
    Conference,
    ConferenceEvent,
    ConferenceMember,
    MemberCall,
    Membership,
)
from app.pagination import Page, paginate
from app.security import Principal
from app.services.mixers import MixerLink, MixerPool
from app.services.sip import SipService
from ari_handlers.errors import AriConflict, AriError, AriNotFound, AriUnavailable

logger = logging.getLogger(__name__)

LIVE = ("calling", "joined")
# Q.850 causes a ringing leg ends with, as the reason a member failed.
_CAUSES = {16: "hangup", 17: "busy", 18: "no_answer", 19: "no_answer", 21: "declined"}


@dataclass(frozen=True)
class JoinResult:
    member: ConferenceMember
    devices: int


def _now() -> datetime:
    return datetime.now(UTC)


def endpoint_of(channel: dict[str, Any]) -> str | None:
    """The PJSIP endpoint a channel belongs to, from its name (PJSIP/name-0001)."""
    name = str(channel.get("name", ""))
    if not name.startswith("PJSIP/"):
        return None
    return name[len("PJSIP/") :].rsplit("-", 1)[0] or None


class ConferenceService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        mixers: MixerPool,
        sip: SipService,
        settings: Settings,
    ) -> None:
        self._db = db
        self._mixers = mixers
        self._sip = sip
        self._settings = settings
        self._locks = KeyedLocks()

    # -- reads -------------------------------------------------------------

    async def get(self, principal: Principal, conference_id: str) -> Conference:
        async with self._db() as session:
            return await self._load(session, principal.tenant_id, conference_id)

    async def _load(
        self, session: AsyncSession, tenant_id: str, conference_id: str
    ) -> Conference:
        conference = await session.get(Conference, conference_id)
        if conference is None or conference.tenant_id != tenant_id:
            raise NotFound("conference", conference_id)
        return conference

    async def list_page(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> Page[Conference]:
        statement = select(Conference).where(
            Conference.tenant_id == principal.tenant_id
        )
        async with self._db() as session:
            return await paginate(session, statement, Conference.id, limit, cursor)

    async def members(
        self,
        principal: Principal,
        conference_id: str,
        limit: int,
        cursor: str | None,
    ) -> Page[ConferenceMember]:
        async with self._db() as session:
            await self._load(session, principal.tenant_id, conference_id)
            statement = select(ConferenceMember).where(
                ConferenceMember.conference_id == conference_id,
                ConferenceMember.state.in_(LIVE),
            )
            return await paginate(
                session, statement, ConferenceMember.id, limit, cursor
            )

    async def events(
        self,
        principal: Principal,
        conference_id: str,
        limit: int,
        cursor: str | None,
    ) -> Page[ConferenceEvent]:
        async with self._db() as session:
            await self._load(session, principal.tenant_id, conference_id)
            statement = select(ConferenceEvent).where(
                ConferenceEvent.conference_id == conference_id
            )
            if cursor:
                # Event ids are integers; the cursor is the last one seen.
                statement = statement.where(ConferenceEvent.id > _int_cursor(cursor))
            rows = list(
                await session.scalars(
                    statement.order_by(ConferenceEvent.id).limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(items=rows, next_cursor=str(rows[-1].id) if more else None)

    async def has_live_members(self, tenant_id: str) -> bool:
        async with self._db() as session:
            found = await session.scalar(
                select(ConferenceMember.id)
                .where(
                    ConferenceMember.tenant_id == tenant_id,
                    ConferenceMember.state.in_(LIVE),
                )
                .limit(1)
            )
        return found is not None

    async def user_is_live(self, tenant_id: str, user_id: str) -> bool:
        async with self._db() as session:
            found = await session.scalar(
                select(ConferenceMember.id)
                .where(
                    ConferenceMember.tenant_id == tenant_id,
                    ConferenceMember.user_id == user_id,
                    ConferenceMember.state.in_(LIVE),
                )
                .limit(1)
            )
        return found is not None

    # -- room lifecycle ----------------------------------------------------

    async def create(self, principal: Principal, name: str) -> Conference:
        if not principal.at_least("trader"):
            raise Forbidden("creating conferences needs the trader role")
        for _ in range(5):
            async with self._db() as session:
                try:
                    async with session.begin():
                        mixer = await self._mixers.place_conference(session)
                        conference = Conference(
                            id=new_id("conf"),
                            tenant_id=principal.tenant_id,
                            name=name,
                            mixer_id=mixer.id,
                            dial_in="8"
                            + "".join(secrets.choice("0123456789") for _ in range(6)),
                            created_by=principal.user_id,
                        )
                        session.add(conference)
                        await session.flush()
                        self._record(session, conference, "created", name=name)
                except IntegrityError:
                    # The random dial-in number was taken: draw another.
                    continue
            logger.info("created conference %s on mixer %s", conference.id, mixer.id)
            return conference
        raise Conflict("dial_in_exhausted", "no free dial-in number; try again")

    def _check_moderator(self, principal: Principal, conference: Conference) -> None:
        if conference.created_by != principal.user_id and not principal.at_least(
            "desk_head"
        ):
            raise Forbidden("only the conference's creator or a desk_head may do this")

    async def set_locked(
        self, principal: Principal, conference_id: str, locked: bool
    ) -> Conference:
        async with (
            self._locks.hold(conference_id),
            self._db() as session,
            session.begin(),
        ):
            conference = await self._load(session, principal.tenant_id, conference_id)
            self._check_moderator(principal, conference)
            if conference.locked != locked:
                conference.locked = locked
                self._record(
                    session,
                    conference,
                    "locked" if locked else "unlocked",
                    by=principal.user_id,
                )
        logger.info("conference %s locked=%s", conference_id, locked)
        return conference

    async def delete(self, principal: Principal, conference_id: str) -> None:
        async with self._locks.hold(conference_id), self._db() as session:
            async with session.begin():
                conference = await self._load(
                    session, principal.tenant_id, conference_id
                )
                self._check_moderator(principal, conference)
                live = await self._live_members(session, conference_id)
                if live:
                    raise Conflict(
                        "conference_not_empty",
                        "the conference has members; remove them or wait until "
                        "they leave",
                        details={"members": len(live)},
                    )
                await session.delete(conference)
            await self._destroy_bridge(conference)
        logger.info("deleted conference %s", conference_id)

    # -- joining and leaving -----------------------------------------------

    async def join(
        self, principal: Principal, conference_id: str, user_id: str | None
    ) -> JoinResult:
        target = user_id or principal.user_id
        if target != principal.user_id and not principal.at_least("desk_head"):
            raise Forbidden("joining someone else needs the desk_head role")
        if not principal.at_least("trader"):
            raise Forbidden("joining conferences needs the trader role")
        with bound(conference_id=conference_id, tenant_id=principal.tenant_id):
            conference = await self.get(principal, conference_id)
            link = self._mixers.link(conference.mixer_id)
            # Looking up the user's phones needs no lock: it reads the mixer,
            # not the room, so concurrent joins do not queue behind it.
            devices = await self._sip.devices(principal.tenant_id, target)
            async with self._locks.hold(conference_id):
                return await self._join_locked(
                    principal, link, conference_id, target, devices
                )

    async def _join_locked(
        self,
        principal: Principal,
        link: MixerLink,
        conference_id: str,
        user_id: str,
        devices: list[tuple[str, str]],
    ) -> JoinResult:
        async with self._db() as session:
            conference = await self._load(session, principal.tenant_id, conference_id)
            self._check_joinable(conference)
            if not await session.scalar(
                select(Membership.id).where(
                    Membership.tenant_id == principal.tenant_id,
                    Membership.user_id == user_id,
                )
            ):
                raise NotFound("user", user_id)
            if await self._live_member_of(session, conference_id, user_id):
                raise Conflict(
                    "already_member", "the user is already in this conference"
                )
        if not devices:
            raise Conflict(
                "no_registered_device",
                "the user has no registered SIP device to call; register a phone "
                "with one of the user's SIP credentials, or dial the conference's "
                "dial_in number",
                details={"user_id": user_id},
            )
        member = ConferenceMember(
            id=new_id("mem"),
            tenant_id=principal.tenant_id,
            conference_id=conference_id,
            user_id=user_id,
            state="calling",
            source="api",
        )
        legs = [
            MemberCall(
                channel_id=f"{member.id}.{index}",
                member_id=member.id,
                endpoint=f"PJSIP/{endpoint}/{uri}",
            )
            for index, (endpoint, uri) in enumerate(devices)
        ]
        async with self._db() as session, session.begin():
            session.add(member)
            await session.flush()
            session.add_all(legs)
            self._record(
                session,
                conference,
                "member_calling",
                member_id=member.id,
                user_id=user_id,
                by=principal.user_id,
            )
        placed = await self._ring(link, conference, legs)
        if not placed:
            await self._finish_member(member.id, "failed", "mixer_unavailable")
            raise MixerUnavailable(
                f"mixer {conference.mixer_id} did not take the call; retry shortly"
            )
        logger.info(
            "member %s calling user %s on %d device(s)", member.id, user_id, placed
        )
        return JoinResult(member=member, devices=placed)

    def _check_joinable(self, conference: Conference) -> None:
        if conference.locked:
            raise Conflict(
                "conference_locked",
                "the conference is locked; ask a moderator to unlock it",
            )

    async def _ring(
        self, link: MixerLink, conference: Conference, legs: Sequence[MemberCall]
    ) -> int:
        placed = 0
        for leg in legs:
            try:
                await link.ari.originate(
                    leg.channel_id,
                    leg.endpoint,
                    app_args=f"join,{leg.member_id}",
                    caller_id=f'"{conference.name}" <{conference.dial_in}>',
                    timeout=self._settings.ring_timeout,
                )
                placed += 1
            except AriError as exc:
                logger.warning("ringing %s failed: %s", leg.endpoint, exc)
        return placed

    async def leave(
        self, principal: Principal, conference_id: str, user_id: str | None
    ) -> ConferenceMember:
        target = user_id or principal.user_id
        if target != principal.user_id and not principal.at_least("desk_head"):
            raise Forbidden("removing someone else needs the desk_head role")
        async with self._locks.hold(conference_id):
            async with self._db() as session:
                await self._load(session, principal.tenant_id, conference_id)
                member = await self._live_member_of(session, conference_id, target)
            if member is None:
                raise Conflict(
                    "not_in_conference", "the user is not in this conference"
                )
            return await self._remove_locked(member, "left")

    async def kick(
        self, principal: Principal, conference_id: str, member_id: str
    ) -> ConferenceMember:
        async with self._locks.hold(conference_id):
            async with self._db() as session:
                conference = await self._load(
                    session, principal.tenant_id, conference_id
                )
                self._check_moderator(principal, conference)
                member = await self._member(session, conference_id, member_id)
            if member.state not in LIVE:
                raise Conflict("member_gone", "the member already left")
            return await self._remove_locked(member, "kicked")

    async def set_muted(
        self, principal: Principal, conference_id: str, member_id: str, muted: bool
    ) -> ConferenceMember:
        async with self._locks.hold(conference_id):
            async with self._db() as session:
                conference = await self._load(
                    session, principal.tenant_id, conference_id
                )
                member = await self._member(session, conference_id, member_id)
            if member.user_id != principal.user_id:
                self._check_moderator(principal, conference)
            if member.state not in LIVE:
                raise Conflict("member_gone", "the member already left")
            if member.state == "joined" and member.channel_id:
                link = self._mixers.link(conference.mixer_id)
                try:
                    if muted:
                        await link.ari.mute(member.channel_id, "in")
                    else:
                        await link.ari.unmute(member.channel_id, "in")
                except AriUnavailable as exc:
                    raise MixerUnavailable(str(exc)) from exc
                except AriNotFound:
                    logger.info("channel of member %s is gone", member_id)
            async with self._db() as session, session.begin():
                member = await self._member(session, conference_id, member_id)
                member.muted = muted
                self._record(
                    session,
                    conference,
                    "member_muted" if muted else "member_unmuted",
                    member_id=member_id,
                    by=principal.user_id,
                )
        return member

    async def _member(
        self, session: AsyncSession, conference_id: str, member_id: str
    ) -> ConferenceMember:
        member = await session.get(ConferenceMember, member_id)
        if member is None or member.conference_id != conference_id:
            raise NotFound("member", member_id)
        return member

    async def _remove_locked(
        self, member: ConferenceMember, reason: str
    ) -> ConferenceMember:
        """Hang up a member's channels, then record that it left.

        Caller holds the conference lock. The hang-up events that follow find
        the member already gone and change nothing.
        """
        async with self._db() as session:
            conference = await session.get(Conference, member.conference_id)
            legs = list(
                await session.scalars(
                    select(MemberCall.channel_id).where(
                        MemberCall.member_id == member.id
                    )
                )
            )
        assert conference is not None
        link = self._mixers.link(conference.mixer_id)
        channels = [*legs, *([member.channel_id] if member.channel_id else [])]
        for channel_id in channels:
            try:
                await link.ari.hangup(channel_id)
            except AriNotFound:
                pass
            except AriUnavailable as exc:
                raise MixerUnavailable(str(exc)) from exc
        return await self._finish_member(member.id, "left", reason)

    async def _finish_member(
        self, member_id: str, state: str, reason: str
    ) -> ConferenceMember:
        async with self._db() as session, session.begin():
            member = await session.get(ConferenceMember, member_id)
            assert member is not None
            if member.state not in LIVE:
                return member
            member.reason = reason
            member.left_at = _now()
            conference = await self._move(session, member, state, reason=reason)
            remaining = await self._live_members(session, conference.id)
        logger.info("member %s %s (%s)", member_id, state, reason)
        if not any(m.state == "joined" for m in remaining):
            await self._destroy_bridge(conference)
        return member

    # -- what Asterisk says ------------------------------------------------

    async def on_stasis_start(self, mixer_id: str, event: dict[str, Any]) -> None:
        channel = event.get("channel", {})
        channel_id = str(channel.get("id", ""))
        args = [str(arg) for arg in event.get("args", [])]
        with bound(channel_id=channel_id):
            if len(args) == 2 and args[0] == "join":
                await self._leg_answered(mixer_id, channel_id, args[1])
            elif len(args) == 2 and args[0] == "dialin":
                await self._dial_in(mixer_id, channel, args[1])
            else:
                logger.warning("channel entered Stasis with unknown args %s", args)
                await self._hangup_quietly(mixer_id, channel_id, "normal")

    async def _leg_answered(
        self, mixer_id: str, channel_id: str, member_id: str
    ) -> None:
        async with self._db() as session:
            member = await session.get(ConferenceMember, member_id)
        if member is None:
            await self._hangup_quietly(mixer_id, channel_id, "normal")
            return
        with bound(conference_id=member.conference_id, tenant_id=member.tenant_id):
            async with self._locks.hold(member.conference_id):
                await self._leg_answered_locked(mixer_id, channel_id, member_id)

    async def _leg_answered_locked(
        self, mixer_id: str, channel_id: str, member_id: str
    ) -> None:
        async with self._db() as session:
            member = await session.get(ConferenceMember, member_id)
            conference = (
                await session.get(Conference, member.conference_id) if member else None
            )
            others = list(
                await session.scalars(
                    select(MemberCall.channel_id).where(
                        MemberCall.member_id == member_id,
                        MemberCall.channel_id != channel_id,
                    )
                )
            )
        if member is None or conference is None or member.state != "calling":
            # Answered after the member left or another device won.
            await self._hangup_quietly(mixer_id, channel_id, "normal")
            return
        link = self._mixers.link(mixer_id)
        try:
            await self._ensure_bridge(link, conference)
            await link.ari.add_channel(conference.id, channel_id)
        except AriError as exc:
            logger.error("could not bridge member %s: %s", member_id, exc)
            await self._hangup_quietly(mixer_id, channel_id, "normal")
            return
        for other in others:
            await self._hangup_quietly(mixer_id, other, "normal")
        await self._mark_joined(member_id, channel_id)

    async def _move(
        self,
        session: AsyncSession,
        member: ConferenceMember,
        state: str,
        **data: Any,
    ) -> Conference:
        """Set a member's state, drop its ringing legs and record the event."""
        member.state = state
        await session.execute(
            delete(MemberCall).where(MemberCall.member_id == member.id)
        )
        conference = await session.get(Conference, member.conference_id)
        assert conference is not None
        self._record(
            session,
            conference,
            f"member_{state}",
            member_id=member.id,
            user_id=member.user_id,
            **data,
        )
        return conference

    async def _mark_joined(self, member_id: str, channel_id: str) -> None:
        async with self._db() as session, session.begin():
            member = await session.get(ConferenceMember, member_id)
            assert member is not None
            member.channel_id = channel_id
            member.joined_at = _now()
            await self._move(session, member, "joined", channel_id=channel_id)
        logger.info("member %s joined on channel %s", member_id, channel_id)

    async def _dial_in(
        self, mixer_id: str, channel: dict[str, Any], number: str
    ) -> None:
        channel_id = str(channel.get("id", ""))
        endpoint = endpoint_of(channel)
        credential = await self._sip.owner_of(endpoint) if endpoint else None
        async with self._db() as session:
            conference = await session.scalar(
                select(Conference).where(Conference.dial_in == number)
            )
        # A caller only reaches rooms of its own tenant: another tenant's
        # number sounds exactly like a number that does not exist.
        if (
            credential is None
            or conference is None
            or conference.tenant_id != credential.tenant_id
            or conference.mixer_id != mixer_id
        ):
            logger.info("dial-in to %s refused: no such conference", number)
            await self._hangup_quietly(mixer_id, channel_id, "unallocated")
            return
        with bound(conference_id=conference.id, tenant_id=conference.tenant_id):
            async with self._locks.hold(conference.id):
                await self._dial_in_locked(
                    mixer_id, channel_id, conference.id, credential.user_id
                )

    async def _dial_in_locked(
        self, mixer_id: str, channel_id: str, conference_id: str, user_id: str
    ) -> None:
        async with self._db() as session:
            conference = await session.get(Conference, conference_id)
            existing = await self._live_member_of(session, conference_id, user_id)
        if conference is None or conference.locked:
            await self._hangup_quietly(mixer_id, channel_id, "busy")
            return
        if existing is not None and existing.state == "joined":
            await self._hangup_quietly(mixer_id, channel_id, "busy")
            return
        link = self._mixers.link(mixer_id)
        if existing is None:
            member_id = new_id("mem")
            async with self._db() as session, session.begin():
                session.add(
                    ConferenceMember(
                        id=member_id,
                        tenant_id=conference.tenant_id,
                        conference_id=conference_id,
                        user_id=user_id,
                        state="calling",
                        source="dial_in",
                    )
                )
        else:
            # The user dialled in while the platform was ringing them: the
            # dialled call wins and the ringing stops.
            member_id = existing.id
        try:
            await link.ari.answer(channel_id)
            await self._ensure_bridge(link, conference)
            await link.ari.add_channel(conference.id, channel_id)
        except AriError as exc:
            logger.error("could not bridge dial-in channel %s: %s", channel_id, exc)
            await self._hangup_quietly(mixer_id, channel_id, "normal")
            await self._finish_member(member_id, "failed", "mixer_error")
            return
        async with self._db() as session:
            legs = list(
                await session.scalars(
                    select(MemberCall.channel_id).where(
                        MemberCall.member_id == member_id
                    )
                )
            )
        for leg in legs:
            await self._hangup_quietly(mixer_id, leg, "normal")
        await self._mark_joined(member_id, channel_id)

    async def on_channel_gone(
        self, mixer_id: str, channel_id: str, cause: int | None
    ) -> None:
        """A channel ended (StasisEnd or ChannelDestroyed; both may come)."""
        async with self._db() as session:
            member = await session.scalar(
                select(ConferenceMember).where(
                    ConferenceMember.channel_id == channel_id,
                    ConferenceMember.state.in_(LIVE),
                )
            )
            if member is None:
                leg = await session.get(MemberCall, channel_id)
                member = (
                    await session.get(ConferenceMember, leg.member_id) if leg else None
                )
        if member is None or member.state not in LIVE:
            return
        with bound(conference_id=member.conference_id, channel_id=channel_id):
            async with self._locks.hold(member.conference_id):
                await self._channel_gone_locked(member.id, channel_id, cause)

    async def _channel_gone_locked(
        self, member_id: str, channel_id: str, cause: int | None
    ) -> None:
        async with self._db() as session, session.begin():
            member = await session.get(ConferenceMember, member_id)
            if member is None or member.state not in LIVE:
                return
            if member.channel_id == channel_id:
                finish: tuple[str, str] | None = ("left", "hangup")
            else:
                await session.execute(
                    delete(MemberCall).where(MemberCall.channel_id == channel_id)
                )
                remaining = await session.scalar(
                    select(MemberCall.channel_id)
                    .where(MemberCall.member_id == member_id)
                    .limit(1)
                )
                finish = None
                if member.state == "calling" and remaining is None:
                    finish = ("failed", _CAUSES.get(cause or 0, "no_answer"))
        if finish is not None:
            await self._finish_member(member_id, *finish)

    async def reconcile(self, link: MixerLink) -> None:
        """Bring the database and a (re)connected mixer back in agreement.

        Members whose channels are gone have left; channels and bridges the
        platform no longer knows are removed so nothing is orphaned.
        """
        channels = {str(c["id"]): c for c in await link.ari.list_channels()}
        bridges = {str(b["id"]): b for b in await link.ari.list_bridges()}
        async with self._db() as session:
            rows = list(
                await session.execute(
                    select(ConferenceMember, Conference)
                    .join(Conference, Conference.id == ConferenceMember.conference_id)
                    .where(
                        Conference.mixer_id == link.id,
                        ConferenceMember.state.in_(LIVE),
                    )
                )
            )
            legs = list(await session.scalars(select(MemberCall)))
        known = {leg.channel_id for leg in legs}
        for member, conference in rows:
            async with self._locks.hold(conference.id):
                await self._reconcile_member(link, member, conference, channels, legs)
            if member.channel_id:
                known.add(member.channel_id)
        live_rooms = await self._rooms_with_joined(link.id)
        for channel_id, channel in channels.items():
            if channel_id not in known and self._is_ours(channel):
                logger.info("hanging up orphaned channel %s", channel_id)
                await self._hangup_quietly(link.id, channel_id, "normal")
        for bridge_id in bridges:
            if bridge_id.startswith("conf_") and bridge_id not in live_rooms:
                await self._destroy_bridge_on(link, bridge_id)
        logger.info(
            "reconciled mixer %s: %d channels, %d live members",
            link.id,
            len(channels),
            len(rows),
        )

    async def _reconcile_member(
        self,
        link: MixerLink,
        member: ConferenceMember,
        conference: Conference,
        channels: dict[str, dict[str, Any]],
        legs: list[MemberCall],
    ) -> None:
        if member.state == "joined":
            if member.channel_id not in channels:
                await self._finish_member(member.id, "left", "channel_lost")
                return
            try:
                await self._ensure_bridge(link, conference)
                await link.ari.add_channel(conference.id, member.channel_id)
            except AriConflict:
                pass
            except AriError as exc:
                logger.warning("re-bridging member %s failed: %s", member.id, exc)
            return
        mine = [leg for leg in legs if leg.member_id == member.id]
        alive = [leg for leg in mine if leg.channel_id in channels]
        if not alive:
            await self._finish_member(member.id, "failed", "channel_lost")

    def _is_ours(self, channel: dict[str, Any]) -> bool:
        if str(channel.get("id", "")).startswith("mem_"):
            return True
        dialplan = channel.get("dialplan") or {}
        app_data = str(dialplan.get("app_data", ""))
        return dialplan.get("app_name") == "Stasis" and app_data.startswith(
            self._settings.ari_app + ","
        )

    async def _rooms_with_joined(self, mixer_id: str) -> set[str]:
        async with self._db() as session:
            return set(
                await session.scalars(
                    select(Conference.id)
                    .join(
                        ConferenceMember,
                        ConferenceMember.conference_id == Conference.id,
                    )
                    .where(
                        Conference.mixer_id == mixer_id,
                        ConferenceMember.state == "joined",
                    )
                )
            )

    # -- helpers -----------------------------------------------------------

    async def _live_members(
        self, session: AsyncSession, conference_id: str
    ) -> list[ConferenceMember]:
        return list(
            await session.scalars(
                select(ConferenceMember).where(
                    ConferenceMember.conference_id == conference_id,
                    ConferenceMember.state.in_(LIVE),
                )
            )
        )

    async def _live_member_of(
        self, session: AsyncSession, conference_id: str, user_id: str
    ) -> ConferenceMember | None:
        return await session.scalar(
            select(ConferenceMember).where(
                ConferenceMember.conference_id == conference_id,
                ConferenceMember.user_id == user_id,
                ConferenceMember.state.in_(LIVE),
            )
        )

    async def _ensure_bridge(self, link: MixerLink, conference: Conference) -> None:
        # The bridge id is the conference id, so the platform can always find
        # or rebuild it; "already exists" is the answer when it is there.
        with contextlib.suppress(AriConflict):
            await link.ari.create_bridge(conference.id, name=conference.id)

    async def _destroy_bridge(self, conference: Conference) -> None:
        for link in self._mixers.links():
            if link.id == conference.mixer_id and link.available:
                await self._destroy_bridge_on(link, conference.id)

    async def _destroy_bridge_on(self, link: MixerLink, bridge_id: str) -> None:
        try:
            await link.ari.destroy_bridge(bridge_id)
        except AriNotFound:
            pass
        except AriError as exc:
            logger.warning("could not destroy bridge %s: %s", bridge_id, exc)

    async def _hangup_quietly(
        self, mixer_id: str, channel_id: str, reason: str
    ) -> None:
        for link in self._mixers.links():
            if link.id != mixer_id:
                continue
            try:
                await link.ari.hangup(channel_id, reason)
            except AriNotFound:
                pass
            except AriError as exc:
                logger.warning("hang-up of %s failed: %s", channel_id, exc)

    def _record(
        self, session: AsyncSession, conference: Conference, kind: str, **data: Any
    ) -> None:
        session.add(
            ConferenceEvent(
                tenant_id=conference.tenant_id,
                conference_id=conference.id,
                type=kind,
                data=data,
            )
        )


def _int_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError as exc:
        raise InvalidRequest(
            "cursor is not valid; pass the next_cursor of the previous page",
            details={"fields": {"cursor": "not a cursor this server issued"}},
        ) from exc
