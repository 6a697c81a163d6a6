"""Login, token refresh and logout, and turning a bearer token into a caller.

Refresh tokens are opaque and single-use: each refresh hands out a new one,
and presenting a used one again revokes the whole session, since only a
stolen copy would be replayed.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import Unauthorized
from app.ids import new_id
from app.models import Membership, RefreshToken, RevokedSession, Tenant, User
from app.security import Principal, TokenCodec, verify_password

logger = logging.getLogger(__name__)

ROLE_CACHE_TTL = 5.0
ROLE_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    principal: Principal


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        codec: TokenCodec,
        refresh_ttl: int,
    ) -> None:
        self._db = db
        self._codec = codec
        self._refresh_ttl = refresh_ttl
        self._revoked: set[str] = set()
        # (user, tenant) -> (role, monotonic expiry). Saves a database round
        # trip on every request; changes made through this process drop the
        # entry at once (forget), other nodes see them within ROLE_CACHE_TTL.
        self._roles: dict[tuple[str, str], tuple[str | None, float]] = {}

    async def load_revocations(self) -> None:
        """Revoked sessions survive restarts: read them back on start."""
        now = datetime.now(UTC)
        async with self._db() as session, session.begin():
            await session.execute(
                delete(RevokedSession).where(RevokedSession.expires_at < now)
            )
            rows = await session.scalars(select(RevokedSession.session_id))
            self._revoked = set(rows)

    async def login(
        self, username: str, password: str, tenant_id: str | None
    ) -> TokenPair:
        async with self._db() as session:
            user = await session.scalar(select(User).where(User.username == username))
            if not verify_password(user.password_hash if user else None, password):
                logger.info("login refused for a bad username or password")
                raise Unauthorized("wrong username or password")
            assert user is not None
            membership = await self._choose_membership(session, user.id, tenant_id)
        principal = Principal(
            user_id=user.id,
            tenant_id=membership.tenant_id,
            role=membership.role,
            username=user.username,
            session_id=new_id("ses"),
        )
        logger.info("user %s logged in to tenant %s", user.id, membership.tenant_id)
        return await self._issue(principal)

    async def _choose_membership(
        self, session: AsyncSession, user_id: str, tenant_id: str | None
    ) -> Membership:
        statement = (
            select(Membership)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(Membership.user_id == user_id)
            .order_by(Tenant.is_platform.desc(), Membership.created_at)
        )
        if tenant_id is not None:
            statement = statement.where(Membership.tenant_id == tenant_id)
        membership = await session.scalar(statement.limit(1))
        if membership is None:
            raise Unauthorized("wrong username or password")
        return membership

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = datetime.now(UTC)
        async with self._db() as session, session.begin():
            stored = await session.get(RefreshToken, _digest(refresh_token))
            if stored is None or stored.expires_at < now:
                raise Unauthorized("the refresh token is not valid; log in again")
            if stored.used_at is not None or stored.session_id in self._revoked:
                await self._revoke(session, stored.session_id)
                logger.warning(
                    "refresh token reused; session %s revoked", stored.session_id
                )
                raise Unauthorized("the refresh token was already used; log in again")
            stored.used_at = now
            membership = await session.scalar(
                select(Membership).where(
                    Membership.user_id == stored.user_id,
                    Membership.tenant_id == stored.tenant_id,
                )
            )
            user = await session.get(User, stored.user_id)
            if membership is None or user is None:
                raise Unauthorized("the user no longer exists in this tenant")
            principal = Principal(
                user_id=user.id,
                tenant_id=membership.tenant_id,
                role=membership.role,
                username=user.username,
                session_id=stored.session_id,
            )
        return await self._issue(principal)

    async def logout(self, principal: Principal) -> None:
        async with self._db() as session, session.begin():
            await self._revoke(session, principal.session_id)
        logger.info("session %s logged out", principal.session_id)

    async def _revoke(self, session: AsyncSession, session_id: str) -> None:
        expires = datetime.now(UTC) + timedelta(seconds=self._refresh_ttl)
        if await session.get(RevokedSession, session_id) is None:
            session.add(RevokedSession(session_id=session_id, expires_at=expires))
        await session.execute(
            delete(RefreshToken).where(RefreshToken.session_id == session_id)
        )
        self._revoked.add(session_id)

    async def _issue(self, principal: Principal) -> TokenPair:
        refresh_token = "rt_" + secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(seconds=self._refresh_ttl)
        async with self._db() as session, session.begin():
            session.add(
                RefreshToken(
                    id=_digest(refresh_token),
                    user_id=principal.user_id,
                    tenant_id=principal.tenant_id,
                    session_id=principal.session_id,
                    expires_at=expires,
                )
            )
        return TokenPair(
            access_token=self._codec.issue(principal),
            refresh_token=refresh_token,
            expires_in=self._codec.ttl,
            principal=principal,
        )

    async def _current_role(self, user_id: str, tenant_id: str) -> str | None:
        key = (user_id, tenant_id)
        cached = self._roles.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._db() as session:
            role = await session.scalar(
                select(Membership.role).where(
                    Membership.user_id == user_id, Membership.tenant_id == tenant_id
                )
            )
        if len(self._roles) > ROLE_CACHE_SIZE:
            self._roles.clear()
        self._roles[key] = (role, time.monotonic() + ROLE_CACHE_TTL)
        return role

    def forget(self, user_id: str) -> None:
        """Drop cached roles of a user whose profiles just changed."""
        for key in [key for key in self._roles if key[0] == user_id]:
            del self._roles[key]

    async def authenticate(self, token: str) -> Principal:
        principal = self._codec.decode(token)
        if principal.session_id in self._revoked:
            raise Unauthorized("the token was revoked by logout; log in again")
        # The role comes from the database, not the token, so a role change or
        # a removed user takes effect on the next request.
        role = await self._current_role(principal.user_id, principal.tenant_id)
        if role is None:
            raise Unauthorized("the user no longer exists in this tenant")
        if role != principal.role:
            principal = Principal(
                user_id=principal.user_id,
                tenant_id=principal.tenant_id,
                role=role,
                username=principal.username,
                session_id=principal.session_id,
                impersonator_id=principal.impersonator_id,
            )
        return principal
