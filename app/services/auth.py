"""Login, token refresh and logout, and turning a bearer token into a caller.

Refresh tokens are opaque and single-use: each refresh hands out a new one,
and presenting a used one again revokes the whole session, since only a
stolen copy would be replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import TooManyRequests, Unauthorized
from app.ids import new_id
from app.models import Membership, RefreshToken, RevokedSession, Tenant, User
from app.security import Principal, TokenCodec, verify_password

logger = logging.getLogger(__name__)

ACCOUNT_CACHE_TTL = 5.0
ACCOUNT_CACHE_SIZE = 10_000


class LoginThrottle:
    """Refuses attempts for a while after repeated failures for one key.

    Logins are keyed by username and client address, so guessing at one
    account from one place is slowed down without letting anyone lock a
    trader out from elsewhere. An attempt counts from the moment it starts
    (``begin``) and is forgiven only when it succeeds, so a burst of parallel
    guesses cannot slip past the count while the first ones are checked.
    """

    MAX_KEYS = 100_000

    def __init__(self, attempts: int = 10, window: float = 300.0) -> None:
        self._attempts = attempts
        self._window = window
        self._failures: dict[tuple[str, str], list[float]] = {}

    def begin(self, key: tuple[str, str]) -> float:
        now = time.monotonic()
        recent = [t for t in self._failures.get(key, []) if now - t < self._window]
        if len(recent) >= self._attempts:
            wait = int(self._window - (now - recent[0])) + 1
            raise TooManyRequests(
                f"too many failed attempts; try again in {wait} s", retry_after=wait
            )
        if len(self._failures) >= self.MAX_KEYS:
            self._prune(now)
        recent.append(now)
        self._failures[key] = recent
        return now

    def succeeded(self, key: tuple[str, str], started: float) -> None:
        recent = self._failures.get(key, [])
        if started in recent:
            recent.remove(started)
        if not recent:
            self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        """Forget expired keys; under a spray of fresh keys, the oldest ones."""
        for key in [
            k for k, v in self._failures.items() if now - v[-1] >= self._window
        ]:
            del self._failures[key]
        excess = len(self._failures) - self.MAX_KEYS // 2
        for key in list(self._failures)[: max(0, excess)]:
            del self._failures[key]


@dataclass(frozen=True)
class _Account:
    role: str
    tokens_valid_after: float


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
        self.throttle = LoginThrottle()
        # (user, tenant) -> (account, monotonic expiry). Saves a database
        # round trip on every request; changes made through this process drop
        # the entry at once (forget), other nodes see them within the TTL.
        self._accounts: dict[tuple[str, str], tuple[_Account | None, float]] = {}

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
        self, username: str, password: str, tenant_id: str | None, client: str
    ) -> TokenPair:
        key = (username, client)
        started = self.throttle.begin(key)
        async with self._db() as session:
            user = await session.scalar(select(User).where(User.username == username))
            if not verify_password(user.password_hash if user else None, password):
                logger.info("login refused for a bad username or password")
                raise Unauthorized("wrong username or password")
            self.throttle.succeeded(key, started)
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
        digest = _digest(refresh_token)
        async with self._db() as session:
            stored = await session.get(RefreshToken, digest)
            if stored is None or stored.expires_at < now:
                raise Unauthorized("the refresh token is not valid; log in again")
            session_id = stored.session_id
        if session_id in self._revoked:
            raise Unauthorized("the session was ended; log in again")
        async with self._db() as session, session.begin():
            # Claimed atomically: of two uses of one token, even concurrent
            # ones, exactly one wins.
            claimed = await session.execute(
                update(RefreshToken)
                .where(RefreshToken.id == digest, RefreshToken.used_at.is_(None))
                .values(used_at=now)
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            # Only a stolen copy is used twice: end the session for everyone
            # holding it, committed before refusing.
            async with self._db() as session, session.begin():
                await self._revoke(session, session_id)
            logger.warning("refresh token reused; session %s revoked", session_id)
            raise Unauthorized("the refresh token was already used; log in again")
        async with self._db() as session:
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

    async def end_all_sessions(self, user_id: str) -> None:
        """After a password change: every token issued so far stops working."""
        async with self._db() as session, session.begin():
            user = await session.get(User, user_id)
            if user is not None:
                user.tokens_valid_after = datetime.now(UTC)
            await session.execute(
                delete(RefreshToken).where(RefreshToken.user_id == user_id)
            )
        self.forget(user_id)
        logger.info("ended every session of user %s", user_id)

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

    async def _account(self, user_id: str, tenant_id: str) -> _Account | None:
        key = (user_id, tenant_id)
        cached = self._accounts.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        async with self._db() as session:
            row = (
                await session.execute(
                    select(Membership.role, User.tokens_valid_after)
                    .join(User, User.id == Membership.user_id)
                    .where(
                        Membership.user_id == user_id,
                        Membership.tenant_id == tenant_id,
                    )
                )
            ).first()
        account = None
        if row is not None:
            valid_after = row[1].timestamp() if row[1] else 0.0
            account = _Account(role=row[0], tokens_valid_after=valid_after)
        if len(self._accounts) > ACCOUNT_CACHE_SIZE:
            self._accounts.clear()
        self._accounts[key] = (account, time.monotonic() + ACCOUNT_CACHE_TTL)
        return account

    def forget(self, user_id: str) -> None:
        """Drop cached roles of a user whose profiles just changed."""
        for key in [key for key in self._accounts if key[0] == user_id]:
            del self._accounts[key]

    async def authenticate(self, token: str) -> Principal:
        principal = self._codec.decode(token)
        if principal.session_id in self._revoked:
            raise Unauthorized("the session was ended; log in again")
        # The role comes from the database, not the token, so a role change or
        # a removed user takes effect on the next request.
        account = await self._account(principal.user_id, principal.tenant_id)
        if account is None:
            raise Unauthorized("the user no longer exists in this tenant")
        if principal.issued_at < account.tokens_valid_after:
            raise Unauthorized("the password was changed; log in again")
        if account.role != principal.role:
            principal = dataclasses.replace(principal, role=account.role)
        return principal
