"""Tenants: onboarding with a first admin, listing and removal.

Only a platform admin onboards or removes tenants; every other caller sees
its own tenant and nothing else (another tenant is a 404, never a 403).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import Conflict, Forbidden, NotFound
from app.ids import new_id
from app.models import Membership, Tenant, User
from app.pagination import Page, paginate
from app.security import Principal, hash_password
from app.services.conferences import ConferenceService
from app.services.sip import SipService

logger = logging.getLogger(__name__)

PLATFORM_TENANT_NAME = "platform"


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    admin_user_id: str


class TenantService:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        sip: SipService,
        conferences: ConferenceService,
        forget_user: Callable[[str], None],
    ) -> None:
        self._db = db
        self._sip = sip
        self._conferences = conferences
        # Tells the token check that a user's profiles changed.
        self._forget_user = forget_user

    async def ensure_platform(self, username: str, password: str) -> bool:
        """Create the platform tenant and its admin on first start.

        Returns whether anything was created. An existing admin keeps its
        password: the environment only seeds it.
        """
        async with self._db() as session, session.begin():
            platform = await session.scalar(select(Tenant).where(Tenant.is_platform))
            if platform is not None:
                return False
            platform = Tenant(
                id=new_id("ten"), name=PLATFORM_TENANT_NAME, is_platform=True
            )
            user = User(
                id=new_id("usr"),
                username=username,
                password_hash=hash_password(password),
            )
            session.add_all([platform, user])
            await session.flush()
            session.add(
                Membership(
                    id=new_id("mem"),
                    user_id=user.id,
                    tenant_id=platform.id,
                    role="platform_admin",
                    display_name="Platform admin",
                )
            )
        logger.info("created platform tenant %s and admin %s", platform.id, user.id)
        return True

    async def create(
        self,
        principal: Principal,
        name: str,
        admin_username: str,
        admin_password: str,
        admin_display_name: str,
    ) -> NewTenant:
        if principal.role != "platform_admin":
            raise Forbidden("only a platform admin onboards tenants")
        tenant = Tenant(id=new_id("ten"), name=name)
        user = User(
            id=new_id("usr"),
            username=admin_username,
            password_hash=hash_password(admin_password),
        )
        async with self._db() as session:
            try:
                async with session.begin():
                    await self._check_free(session, name, admin_username)
                    session.add_all([tenant, user])
                    await session.flush()
                    session.add(
                        Membership(
                            id=new_id("mem"),
                            user_id=user.id,
                            tenant_id=tenant.id,
                            role="tenant_admin",
                            display_name=admin_display_name or admin_username,
                        )
                    )
            except IntegrityError as exc:
                # Lost a race with a concurrent create of the same name.
                raise Conflict(
                    "tenant_exists", "a tenant or username with that name exists"
                ) from exc
        logger.info("onboarded tenant %s with admin %s", tenant.id, user.id)
        return NewTenant(tenant=tenant, admin_user_id=user.id)

    async def _check_free(
        self, session: AsyncSession, name: str, username: str
    ) -> None:
        if await session.scalar(select(Tenant.id).where(Tenant.name == name)):
            raise Conflict("tenant_exists", f"a tenant named {name!r} exists")
        if await session.scalar(select(User.id).where(User.username == username)):
            raise Conflict("username_taken", f"the username {username!r} is taken")

    async def platform_admin(self) -> Principal:
        """Acts for the platform in start-up tasks such as seeding the demo."""
        async with self._db() as session:
            row = (
                await session.execute(
                    select(User, Membership)
                    .join(Membership, Membership.user_id == User.id)
                    .where(Membership.role == "platform_admin")
                    .order_by(Membership.created_at)
                    .limit(1)
                )
            ).first()
        if row is None:
            raise NotFound("platform admin", "-")
        user, membership = row
        return Principal(
            user_id=user.id,
            tenant_id=membership.tenant_id,
            role="platform_admin",
            username=user.username,
            session_id="startup",
        )

    async def find_by_name(self, name: str) -> Tenant | None:
        async with self._db() as session:
            return await session.scalar(select(Tenant).where(Tenant.name == name))

    async def list_page(
        self, principal: Principal, limit: int, cursor: str | None
    ) -> Page[Tenant]:
        statement = select(Tenant)
        if principal.role != "platform_admin":
            statement = statement.where(Tenant.id == principal.tenant_id)
        async with self._db() as session:
            return await paginate(session, statement, Tenant.id, limit, cursor)

    async def get(self, principal: Principal, tenant_id: str) -> Tenant:
        visible = principal.role == "platform_admin" or principal.tenant_id == tenant_id
        async with self._db() as session:
            tenant = await session.get(Tenant, tenant_id) if visible else None
        if tenant is None:
            raise NotFound("tenant", tenant_id)
        return tenant

    async def rename(self, principal: Principal, tenant_id: str, name: str) -> Tenant:
        tenant = await self.get(principal, tenant_id)
        if not principal.at_least("tenant_admin"):
            raise Forbidden("renaming a tenant needs the tenant_admin role")
        async with self._db() as session, session.begin():
            taken = await session.scalar(
                select(Tenant.id).where(Tenant.name == name, Tenant.id != tenant_id)
            )
            if taken:
                raise Conflict("tenant_exists", f"a tenant named {name!r} exists")
            tenant = await session.merge(tenant)
            tenant.name = name
        return tenant

    async def delete(self, principal: Principal, tenant_id: str) -> None:
        tenant = await self.get(principal, tenant_id)
        if principal.role != "platform_admin":
            raise Forbidden("only a platform admin removes tenants")
        if tenant.is_platform:
            raise Conflict("platform_tenant", "the platform tenant cannot be removed")
        if await self._conferences.has_live_members(tenant_id):
            raise Conflict(
                "tenant_busy",
                "the tenant has people in conferences; end them first",
            )
        sip_usernames = await self._sip.usernames_of_tenant(tenant_id)
        async with self._db() as session, session.begin():
            user_ids = list(
                await session.scalars(
                    select(Membership.user_id).where(Membership.tenant_id == tenant_id)
                )
            )
            # Cascades remove memberships, credentials and conferences.
            await session.execute(sql_delete(Tenant).where(Tenant.id == tenant_id))
            for user_id in user_ids:
                profiles = await session.scalar(
                    select(func.count())
                    .select_from(Membership)
                    .where(Membership.user_id == user_id)
                )
                if not profiles:
                    await session.execute(sql_delete(User).where(User.id == user_id))
        for user_id in user_ids:
            self._forget_user(user_id)
        await self._sip.unpush(sip_usernames)
        logger.info("removed tenant %s", tenant_id)
