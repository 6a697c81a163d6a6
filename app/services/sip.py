"""SIP credentials: the source of truth, pushed to every mixer over ARI.

The password is shown once (on create and on rotate) and never stored: the
database keeps the digest HA1, which is all Asterisk needs to check a
REGISTER. Every credential is pushed again whenever a mixer (re)connects, so
Asterisk never has to keep anything the platform does not.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import Conflict, Forbidden, MixerUnavailable, NotFound
from app.ids import new_id
from app.locks import KeyedLocks
from app.models import Membership, SipCredential
from app.pagination import Page, decode_cursor, encode_cursor, paginate
from app.security import Principal, sip_ha1
from app.services.mixers import MixerLink, MixerPool
from ari_handlers.ami import AmiUnavailable, Contact
from ari_handlers.errors import AriError, AriUnavailable

logger = logging.getLogger(__name__)

SIP_REALM = "somvad"
DIALPLAN_CONTEXT = "somvad"
# One per desk phone, softphone and turret a trader uses, with room to spare.
MAX_CREDENTIALS_PER_USER = 10


@dataclass(frozen=True)
class IssuedCredential:
    credential: SipCredential
    password: str


@dataclass(frozen=True)
class Registration:
    credential_id: str
    user_id: str
    username: str
    uri: str
    status: str
    user_agent: str
    via_address: str
    expires_in: int | None


def _visible(principal: Principal, user_id: str | None) -> Select[SipCredential]:
    """Credentials the caller may see: its tenant's, only its own below admin."""
    statement = select(SipCredential).where(
        SipCredential.tenant_id == principal.tenant_id
    )
    if not principal.at_least("tenant_admin"):
        statement = statement.where(SipCredential.user_id == principal.user_id)
    if user_id is not None:
        statement = statement.where(SipCredential.user_id == user_id)
    return statement


def _quotable(text: str) -> str:
    """Text that cannot break out of a quoted SIP display name."""
    return "".join(c for c in text if c not in '"\\<>' and c.isprintable())


def _registration(
    credential: SipCredential, contact: Contact, now: int
) -> Registration:
    return Registration(
        credential_id=credential.id,
        user_id=credential.user_id,
        username=credential.username,
        uri=contact.uri,
        status=contact.status,
        user_agent=contact.user_agent,
        via_address=contact.via_address,
        expires_in=None if contact.reg_expire is None else contact.reg_expire - now,
    )


def _registration_key(registration: Registration) -> str:
    return f"{registration.credential_id} {registration.uri}"


def _asterisk_objects(
    credential: SipCredential, display_name: str
) -> list[tuple[str, dict[str, str]]]:
    """The auth, aor and endpoint objects of one credential, in push order."""
    name = credential.username
    return [
        (
            "auth",
            {
                "auth_type": "digest",
                "username": name,
                "realm": credential.realm,
                "password_digest": f"md5:{credential.ha1}",
            },
        ),
        (
            "aor",
            {
                "max_contacts": "5",
                "remove_existing": "yes",
                "qualify_frequency": "0",
            },
        ),
        (
            "endpoint",
            {
                "context": DIALPLAN_CONTEXT,
                "disallow": "all",
                "allow": "ulaw,alaw,g722",
                "auth": name,
                "aors": name,
                "direct_media": "no",
                "rtp_symmetric": "yes",
                "force_rport": "yes",
                "rewrite_contact": "yes",
                "callerid": f'"{_quotable(display_name) or name}" <{name}>',
            },
        ),
    ]


class SipService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        mixers: MixerPool,
        settings: Settings,
    ) -> None:
        self._db = db
        self._mixers = mixers
        self._settings = settings
        self._listing: dict[str, asyncio.Future[list[Contact]]] = {}
        self._user_locks = KeyedLocks()

    async def create(self, principal: Principal, user_id: str) -> IssuedCredential:
        if user_id != principal.user_id and not principal.at_least("tenant_admin"):
            raise Forbidden("issuing credentials for others needs tenant_admin")
        password = secrets.token_urlsafe(18)
        username = "sip" + secrets.token_hex(5)
        credential = SipCredential(
            id=new_id("sip"),
            tenant_id=principal.tenant_id,
            user_id=user_id,
            username=username,
            realm=SIP_REALM,
            ha1=sip_ha1(username, SIP_REALM, password),
        )
        # Count and insert under the user's lock, so parallel requests cannot
        # all see room under the cap.
        async with (
            self._user_locks.hold(user_id),
            self._db() as session,
            session.begin(),
        ):
            display_name = await self._display_name(session, principal, user_id)
            held = await session.scalar(
                select(func.count())
                .select_from(SipCredential)
                .where(SipCredential.user_id == user_id)
            )
            if (held or 0) >= MAX_CREDENTIALS_PER_USER:
                raise Conflict(
                    "credential_limit",
                    f"a user holds at most {MAX_CREDENTIALS_PER_USER} SIP "
                    "credentials; delete one first",
                )
            session.add(credential)
        logger.info("issued SIP credential %s for user %s", credential.id, user_id)
        await self._push_everywhere(credential, display_name)
        return IssuedCredential(credential=credential, password=password)

    async def _display_name(
        self, session: AsyncSession, principal: Principal, user_id: str
    ) -> str:
        display_name = await session.scalar(
            select(Membership.display_name).where(
                Membership.user_id == user_id,
                Membership.tenant_id == principal.tenant_id,
            )
        )
        if display_name is None:
            raise NotFound("user", user_id)
        return display_name

    async def list_page(
        self,
        principal: Principal,
        user_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[SipCredential]:
        statement = _visible(principal, user_id)
        async with self._db() as session:
            return await paginate(session, statement, SipCredential.id, limit, cursor)

    async def _load(
        self, session: AsyncSession, principal: Principal, credential_id: str
    ) -> SipCredential:
        credential = await session.get(SipCredential, credential_id)
        if credential is None or credential.tenant_id != principal.tenant_id:
            raise NotFound("sip_credential", credential_id)
        if credential.user_id != principal.user_id and not principal.at_least(
            "tenant_admin"
        ):
            raise NotFound("sip_credential", credential_id)
        return credential

    async def rotate(
        self, principal: Principal, credential_id: str
    ) -> IssuedCredential:
        password = secrets.token_urlsafe(18)
        async with self._db() as session, session.begin():
            credential = await self._load(session, principal, credential_id)
            credential.ha1 = sip_ha1(credential.username, credential.realm, password)
            credential.rotated_at = datetime.now(UTC)
            display_name = await self._display_name(
                session, principal, credential.user_id
            )
        logger.info("rotated SIP credential %s", credential_id)
        await self._push_everywhere(credential, display_name)
        await self._drop_contacts(credential.username)
        return IssuedCredential(credential=credential, password=password)

    async def _drop_contacts(self, username: str) -> None:
        """Unregister the phones that logged in with the old password.

        Otherwise they stay reachable, and get called into conferences,
        until their registration expires.
        """
        for link in self._mixers.links():
            try:
                contacts = await self._contacts_of(link)
            except AmiUnavailable as exc:
                # Its contacts expire on their own; the new password already
                # refuses their next REGISTER.
                logger.warning("cannot drop contacts on mixer %s: %s", link.id, exc)
                continue
            for contact in contacts:
                if contact.endpoint != username:
                    continue
                try:
                    await link.ari.delete_config("res_pjsip", "contact", contact.id)
                except AriError as exc:
                    logger.warning("could not drop contact of %s: %s", username, exc)

    async def delete(self, principal: Principal, credential_id: str) -> None:
        async with self._db() as session, session.begin():
            credential = await self._load(session, principal, credential_id)
            await session.delete(credential)
        logger.info("deleted SIP credential %s", credential_id)
        await self.unpush([credential.username])

    async def delete_for_user(self, tenant_id: str, user_id: str) -> None:
        async with self._db() as session, session.begin():
            usernames = list(
                await session.scalars(
                    select(SipCredential.username).where(
                        SipCredential.tenant_id == tenant_id,
                        SipCredential.user_id == user_id,
                    )
                )
            )
            await session.execute(
                delete(SipCredential).where(
                    SipCredential.tenant_id == tenant_id,
                    SipCredential.user_id == user_id,
                )
            )
        await self.unpush(usernames)

    async def usernames_of_tenant(self, tenant_id: str) -> list[str]:
        async with self._db() as session:
            return list(
                await session.scalars(
                    select(SipCredential.username).where(
                        SipCredential.tenant_id == tenant_id
                    )
                )
            )

    async def unpush(self, usernames: list[str]) -> None:
        # A mixer that cannot be told now removes the strays when it
        # reconnects (see _remove_strays).
        for link in self._mixers.links():
            for username in usernames:
                await self._unpush_one(link, username)

    async def _unpush_one(self, link: MixerLink, username: str) -> None:
        # Endpoint first: it refers to the aor and the auth.
        for object_type in ("endpoint", "aor", "auth"):
            try:
                await link.ari.delete_config("res_pjsip", object_type, username)
            except AriUnavailable:
                logger.warning(
                    "mixer %s is down; %s is removed when it is back",
                    link.id,
                    username,
                )
                return
            except AriError as exc:
                logger.warning(
                    "could not remove %s %s from mixer %s: %s",
                    object_type,
                    username,
                    link.id,
                    exc,
                )

    async def _push_everywhere(
        self, credential: SipCredential, display_name: str
    ) -> None:
        # Pushed even while the events socket is still reconnecting: a
        # reconcile that started before this credential existed would not
        # push it. A mixer that is down gets everything when it is back.
        for link in self._mixers.links():
            await self._push(link, credential, display_name)

    async def _push(
        self, link: MixerLink, credential: SipCredential, display_name: str
    ) -> None:
        for object_type, fields in _asterisk_objects(credential, display_name):
            try:
                await link.ari.push_config(
                    "res_pjsip", object_type, credential.username, fields
                )
            except AriUnavailable:
                logger.warning(
                    "mixer %s is down; credential %s is pushed when it is back",
                    link.id,
                    credential.id,
                )
                return
            except AriError as exc:
                logger.error(
                    "pushing %s of credential %s to mixer %s failed: %s",
                    object_type,
                    credential.id,
                    link.id,
                    exc,
                )
                return

    async def _with_names(
        self, *conditions: ColumnElement[bool]
    ) -> list[tuple[SipCredential, str]]:
        """Credentials with their owner's display name, which is the caller id."""
        statement = select(SipCredential, Membership.display_name).join(
            Membership,
            (Membership.user_id == SipCredential.user_id)
            & (Membership.tenant_id == SipCredential.tenant_id),
        )
        async with self._db() as session:
            rows = await session.execute(statement.where(*conditions))
            return [(credential, name) for credential, name in rows]

    async def push_user(self, tenant_id: str, user_id: str) -> None:
        """Push a user's credentials again, e.g. after a display name change
        (it is the caller id their calls carry)."""
        rows = await self._with_names(
            SipCredential.tenant_id == tenant_id, SipCredential.user_id == user_id
        )
        for credential, display_name in rows:
            await self._push_everywhere(credential, display_name)

    async def push_all(self, link: MixerLink) -> int:
        """Re-push every credential to a mixer that (re)connected."""
        credentials = await self._with_names()
        for credential, display_name in credentials:
            await self._push(link, credential, display_name)
        await self._remove_strays(link, {c.username for c, _ in credentials})
        logger.info("pushed %d SIP credentials to mixer %s", len(credentials), link.id)
        return len(credentials)

    async def _remove_strays(self, link: MixerLink, known: set[str]) -> None:
        """Endpoints deleted while the mixer was away still sit in its astdb."""
        try:
            endpoints = await link.ami.endpoints()
        except AmiUnavailable as exc:
            logger.warning("cannot list endpoints on mixer %s: %s", link.id, exc)
            return
        for name in endpoints:
            if name.startswith("sip") and name not in known:
                logger.info("removing stray endpoint %s from mixer %s", name, link.id)
                await self._unpush_one(link, name)

    async def _contacts(self) -> list[Contact]:
        """Every mixer's contacts; 503 when one cannot tell, because "nobody
        is registered" and "cannot know" must not look alike."""
        contacts: list[Contact] = []
        for link in self._mixers.links():
            try:
                contacts.extend(await self._contacts_of(link))
            except AmiUnavailable as exc:
                raise MixerUnavailable(
                    f"mixer {link.id} does not answer for registrations; retry "
                    "when it is back"
                ) from exc
        return contacts

    async def _contacts_of(self, link: MixerLink) -> list[Contact]:
        """One AMI listing at a time per mixer, shared by every caller waiting.

        Under a burst of joins each would otherwise queue its own listing on
        the single AMI connection; a caller arriving while one is in flight
        takes its answer, at most one AMI round trip old.
        """
        pending = self._listing.get(link.id)
        if pending is None:
            pending = asyncio.ensure_future(link.ami.contacts())
            self._listing[link.id] = pending
            pending.add_done_callback(lambda _: self._listing.pop(link.id, None))
        return await asyncio.shield(pending)

    async def registrations(
        self,
        principal: Principal,
        limit: int,
        cursor: str | None,
        user_id: str | None = None,
    ) -> Page[Registration]:
        """Live contacts of the caller's credentials, read from the mixers now."""
        async with self._db() as session:
            by_name = {
                c.username: c
                for c in await session.scalars(_visible(principal, user_id))
            }
        contacts = await self._contacts()
        now = int(time.time())
        registrations = sorted(
            (
                _registration(by_name[contact.endpoint], contact, now)
                for contact in contacts
                if contact.endpoint in by_name
                and (contact.reg_expire is None or contact.reg_expire > now)
            ),
            key=_registration_key,
        )
        after = decode_cursor(cursor) if cursor else ""
        remaining = [r for r in registrations if _registration_key(r) > after]
        page = remaining[:limit]
        more = len(remaining) > limit
        return Page(
            items=page,
            next_cursor=encode_cursor(_registration_key(page[-1])) if more else None,
        )

    async def devices(self, tenant_id: str, user_id: str) -> list[tuple[str, str]]:
        """(endpoint, contact URI) of every reachable device of a user."""
        async with self._db() as session:
            names = set(
                await session.scalars(
                    select(SipCredential.username).where(
                        SipCredential.tenant_id == tenant_id,
                        SipCredential.user_id == user_id,
                    )
                )
            )
        if not names:
            return []
        return [
            (contact.endpoint, contact.uri)
            for contact in await self._contacts()
            if contact.endpoint in names and contact.status != "Unreachable"
        ]

    async def owner_of(self, endpoint: str) -> SipCredential | None:
        async with self._db() as session:
            return await session.scalar(
                select(SipCredential).where(SipCredential.username == endpoint)
            )
