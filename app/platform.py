"""The running platform: settings, database, mixers and services, wired once.

``Platform`` is what the API handlers reach through ``request.app``; tests
build one against a temporary database and the test Asterisk.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings, load_or_create_secret
from app.db import make_engine, make_sessionmaker, migrate
from app.security import TokenCodec
from app.services.auth import AuthService
from app.services.conferences import ConferenceService
from app.services.mixers import MixerLink, MixerPool
from app.services.sip import SipService
from app.services.tenants import TenantService
from app.services.users import UserService
from ari_handlers import conferences as conference_events
from ari_handlers import mixers as mixer_events
from ari_handlers.ami import AmiClient
from ari_handlers.client import AriClient
from ari_handlers.errors import AriUnavailable

logger = logging.getLogger(__name__)

LOCAL_MIXER_ID = "mixer-1"


class StartupError(Exception):
    """The platform cannot start; the message says why and what to do."""


def package_version() -> str:
    try:
        return metadata.version("somvad")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Platform:
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    auth: AuthService
    mixers: MixerPool
    sip: SipService
    conferences: ConferenceService
    tenants: TenantService
    users: UserService

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = package_version()
        self.created_admin = False
        # How long start() waits for the mixer before serving without it.
        self.connect_wait = 15.0

    async def start(self) -> None:
        settings = self.settings
        link = self._mixer_link() if settings.ari_url else None
        if link is not None:
            # Before anything is written: a refused start changes nothing.
            await self._check_mixer_free(link)
        self.engine = make_engine(settings.database_url)
        await migrate(self.engine)
        self.db = make_sessionmaker(self.engine)
        secret = settings.jwt_secret or load_or_create_secret(
            Path(settings.data_dir) / "jwt.key"
        )
        codec = TokenCodec(
            secret,
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.access_token_ttl,
        )
        self.auth = AuthService(self.db, codec, settings.refresh_token_ttl)
        await self.auth.load_revocations()
        self.mixers = MixerPool(self.db)
        self.sip = SipService(self.db, self.mixers, settings)
        self.conferences = ConferenceService(self.db, self.mixers, self.sip, settings)
        self.tenants = TenantService(
            self.db, self.sip, self.conferences, self.auth.forget
        )
        self.users = UserService(self.db, self.sip, self.conferences, self.auth)
        self.created_admin = await self.tenants.ensure_platform(
            settings.admin_username, settings.admin_password
        )
        if link is not None:
            await self._connect_mixer(link)

    def _mixer_link(self) -> MixerLink:
        settings = self.settings
        return MixerLink(
            id=LOCAL_MIXER_ID,
            ari=AriClient(
                settings.ari_url,
                settings.ari_username,
                settings.ari_password,
                settings.ari_app,
                exclusive=True,
            ),
            ami=AmiClient(
                settings.ami_host,
                settings.ami_port,
                settings.ami_username,
                settings.ami_password,
            ),
        )

    async def _check_mixer_free(self, link: MixerLink) -> None:
        settings = self.settings
        try:
            taken = await link.ari.app_in_use()
        except AriUnavailable:
            # Down now: the client checks again before every connect and
            # stays away while another control plane holds the app.
            taken = False
        if taken:
            raise StartupError(
                f"another control plane is connected to the Asterisk at "
                f"{settings.ari_url} as ARI application {settings.ari_app!r}; "
                "one Asterisk belongs to one SOMVAD deployment (stop the other "
                "or give this one its own instance)"
            )

    async def _connect_mixer(self, link: MixerLink) -> None:
        settings = self.settings
        await self.mixers.register(link.id, "local Asterisk", settings.ari_url)
        self.mixers.add(link)
        conference_events.register(link.ari, link.id, self.conferences)
        mixer_events.register(link, self.sip, self.conferences)
        await link.ari.start()
        if not await link.ari.wait_connected(timeout=self.connect_wait):
            logger.warning(
                "mixer %s not reachable at %s yet; retrying in the background",
                link.id,
                settings.ari_url,
            )

    async def database_ok(self) -> bool:
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:
            logger.exception("database check failed")
            return False
        return True

    async def stop(self) -> None:
        """Release what start() got, also when start() failed half-way."""
        mixers: MixerPool | None = getattr(self, "mixers", None)
        for link in mixers.links() if mixers else []:
            await link.ari.close()
            await link.ami.close()
        engine: AsyncEngine | None = getattr(self, "engine", None)
        if engine is not None:
            await engine.dispose()


PLATFORM_KEY = web.AppKey("platform", Platform)
