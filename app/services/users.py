"""Users and their per-tenant profiles (role and display name).

A user logs in with one username; what it may do depends on the tenant its
token names. Everything here is scoped to the caller's tenant: a user with
no profile in it does not exist for the caller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.ids import new_id
from app.models import Membership, User
from app.pagination import Page, paginate
from app.security import Principal, hash_password, role_at_least, verify_password
from app.services.auth import AuthService
from app.services.conferences import ConferenceService
from app.services.sip import SipService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Profile:
    id: str
    tenant_id: str
    username: str
    display_name: str
    role: str
    created_at: datetime


def _profile(user: User, membership: Membership) -> Profile:
    return Profile(
        id=user.id,
        tenant_id=membership.tenant_id,
        username=user.username,
        display_name=membership.display_name,
        role=membership.role,
        created_at=membership.created_at,
    )


class UserService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        sip: SipService,
        conferences: ConferenceService,
        auth: AuthService,
    ) -> None:
        self._db = db
        self._sip = sip
        self._conferences = conferences
        self._auth = auth

    def _check_may_grant(self, principal: Principal, role: str) -> None:
        if not principal.at_least("tenant_admin"):
            raise Forbidden("managing users needs the tenant_admin role")
        if role == "platform_admin" and principal.role != "platform_admin":
            raise Forbidden("only a platform admin grants platform_admin")
        if not role_at_least(principal.role, role):
            raise Forbidden(f"you cannot grant a role above your own ({role})")

    async def create(
        self,
        principal: Principal,
        username: str,
        password: str,
        display_name: str,
        role: str,
    ) -> Profile:
        self._check_may_grant(principal, role)
        user = User(
            id=new_id("usr"), username=username, password_hash=hash_password(password)
        )
        membership = Membership(
            id=new_id("mem"),
            user_id=user.id,
            tenant_id=principal.tenant_id,
            role=role,
            display_name=display_name or username,
        )
        async with self._db() as session:
            try:
                async with session.begin():
                    taken = await session.scalar(
                        select(User.id).where(User.username == username)
                    )
                    if taken:
                        raise Conflict(
                            "username_taken", f"the username {username!r} is taken"
                        )
                    session.add(user)
                    await session.flush()
                    session.add(membership)
            except IntegrityError as exc:
                raise Conflict(
                    "username_taken", f"the username {username!r} is taken"
                ) from exc
        logger.info("created user %s with role %s", user.id, role)
        return _profile(user, membership)

    async def list_page(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> Page[Profile]:
        statement = (
            select(User, Membership)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.tenant_id == principal.tenant_id)
        )
        async with self._db() as session:
            page = await paginate(session, statement, User.id, limit, cursor)
        return Page(
            items=[_profile(user, membership) for user, membership in page.items],
            next_cursor=page.next_cursor,
        )

    async def get(self, principal: Principal, user_id: str) -> Profile:
        async with self._db() as session:
            return _profile(*await self._load(session, principal.tenant_id, user_id))

    async def _load(
        self, session: AsyncSession, tenant_id: str, user_id: str
    ) -> tuple[User, Membership]:
        row = (
            await session.execute(
                select(User, Membership)
                .join(Membership, Membership.user_id == User.id)
                .where(User.id == user_id, Membership.tenant_id == tenant_id)
            )
        ).first()
        if row is None:
            raise NotFound("user", user_id)
        return row[0], row[1]

    async def update(
        self,
        principal: Principal,
        user_id: str,
        display_name: str | None,
        role: str | None,
    ) -> Profile:
        if user_id != principal.user_id or role is not None:
            self._check_may_grant(principal, role or "viewer")
        async with self._db() as session, session.begin():
            user, membership = await self._load(session, principal.tenant_id, user_id)
            if role is not None and role != membership.role:
                if not role_at_least(principal.role, membership.role):
                    raise Forbidden("you cannot change the role of a higher role")
                await self._check_not_last_admin(session, membership, role)
                membership.role = role
            if display_name is not None:
                membership.display_name = display_name
        # After the commit, so a concurrent request cannot cache the old role.
        self._auth.forget(user_id)
        if display_name is not None:
            await self._sip.push_user(principal.tenant_id, user_id)
        logger.info("updated user %s", user_id)
        return _profile(user, membership)

    async def set_password(
        self,
        principal: Principal,
        user_id: str,
        password: str,
        current_password: str | None,
    ) -> None:
        """Set a password and end every session of the user.

        Users changing their own password prove they know the current one, so
        a stolen token alone cannot lock its owner out.
        """
        own = user_id == principal.user_id
        if not own and not principal.at_least("tenant_admin"):
            raise Forbidden("changing another user's password needs tenant_admin")
        # Guessing current_password with a stolen token is throttled like a
        # login.
        key = (user_id, "password_change")
        started = self._auth.throttle.begin(key) if own else 0.0
        async with self._db() as session, session.begin():
            user, membership = await self._load(session, principal.tenant_id, user_id)
            if own and not verify_password(user.password_hash, current_password or ""):
                raise Unprocessable(
                    "wrong_password",
                    "current_password is missing or wrong",
                    details={"fields": {"current_password": "does not match"}},
                )
            if own:
                self._auth.throttle.succeeded(key, started)
            if not own and not role_at_least(principal.role, membership.role):
                raise Forbidden("you cannot change the password of a higher role")
            user.password_hash = hash_password(password)
        await self._auth.end_all_sessions(user_id)
        logger.info("password changed for user %s", user_id)

    async def delete(self, principal: Principal, user_id: str) -> None:
        if not principal.at_least("tenant_admin"):
            raise Forbidden("removing users needs the tenant_admin role")
        async with self._db() as session:
            _, membership = await self._load(session, principal.tenant_id, user_id)
            if not role_at_least(principal.role, membership.role):
                raise Forbidden("you cannot remove a user with a higher role")
            await self._check_not_last_admin(session, membership, None)
        if await self._conferences.user_is_live(principal.tenant_id, user_id):
            raise Conflict(
                "user_in_conference",
                "the user is in a conference; remove them from it first",
            )
        await self._sip.delete_for_user(principal.tenant_id, user_id)
        async with self._db() as session, session.begin():
            await session.execute(
                delete(Membership).where(
                    Membership.user_id == user_id,
                    Membership.tenant_id == principal.tenant_id,
                )
            )
            profiles = await session.scalar(
                select(func.count())
                .select_from(Membership)
                .where(Membership.user_id == user_id)
            )
            if not profiles:
                await session.execute(delete(User).where(User.id == user_id))
        self._auth.forget(user_id)
        logger.info("removed user %s from tenant %s", user_id, principal.tenant_id)

    async def _check_not_last_admin(
        self, session: AsyncSession, membership: Membership, new_role: str | None
    ) -> None:
        if membership.role != "tenant_admin" or new_role == "tenant_admin":
            return
        admins = await session.scalar(
            select(func.count())
            .select_from(Membership)
            .where(
                Membership.tenant_id == membership.tenant_id,
                Membership.role == "tenant_admin",
            )
        )
        if (admins or 0) <= 1:
            raise Conflict("last_admin", "a tenant keeps at least one tenant_admin")

    async def exists(self, tenant_id: str, user_id: str) -> bool:
        async with self._db() as session:
            found = await session.scalar(
                select(Membership.id).where(
                    Membership.tenant_id == tenant_id, Membership.user_id == user_id
                )
            )
        return found is not None
