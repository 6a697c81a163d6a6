"""Test-side handle on a running platform: HTTP calls with a bearer token."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from api.app import create_app
from app.config import Settings
from app.platform import Platform

ADMIN_PASSWORD = "test-admin-password"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base = Settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir}/somvad.db",
        jwt_secret="x" * 48,
        admin_username="admin",
        admin_password=ADMIN_PASSWORD,
        demo=False,
        manage_asterisk=False,
    )
    return dataclasses.replace(base, **overrides)


@dataclasses.dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str, platform: Platform):
        self.session = session
        self.base = base
        self.platform = platform

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=json, data=data, headers=sent
        ) as response:
            text = await response.text()
            body: Any = None
            if text and response.content_type == "application/json":
                body = await response.json()
            return Reply(response.status, body, dict(response.headers))

    async def login(
        self, username: str, password: str, tenant_id: str | None = None
    ) -> str:
        payload: dict[str, Any] = {"username": username, "password": password}
        if tenant_id:
            payload["tenant_id"] = tenant_id
        reply = await self.call("POST", "/auth/login", json=payload)
        assert reply.status == 200, reply.body
        return str(reply.body["access_token"])

    async def admin_token(self) -> str:
        return await self.login("admin", ADMIN_PASSWORD)

    async def onboard(self, name: str) -> tuple[str, str]:
        """A new tenant; returns (tenant_id, its admin's token)."""
        admin = await self.admin_token()
        reply = await self.call(
            "POST",
            "/tenants",
            admin,
            {
                "name": name,
                "admin": {"username": f"{name}-admin", "password": "tenant-admin-pw"},
            },
        )
        assert reply.status == 201, reply.body
        return reply.body["id"], await self.login(f"{name}-admin", "tenant-admin-pw")

    async def user(
        self, token: str, username: str, role: str = "trader"
    ) -> tuple[str, str]:
        """A new user in the token's tenant; returns (user_id, its token)."""
        reply = await self.call(
            "POST",
            "/users",
            token,
            {
                "username": username,
                "password": "user-password",
                "display_name": username.title(),
                "role": role,
            },
        )
        assert reply.status == 201, reply.body
        return reply.body["id"], await self.login(username, "user-password")


@asynccontextmanager
async def running(
    settings: Settings, *, wait_for_mixers: bool = True
) -> AsyncIterator[Api]:
    platform = Platform(settings)
    if not wait_for_mixers:
        platform.connect_wait = 0.0
    await platform.start()
    server = TestServer(create_app(platform), host="127.0.0.1")
    try:
        for link in platform.mixers.links() if wait_for_mixers else []:
            # Reconciling what earlier tests left in Asterisk can take a while.
            connected = await link.ari.wait_connected(timeout=60)
            assert connected, "mixer did not connect"
        await server.start_server()
        async with aiohttp.ClientSession() as session:
            yield Api(session, str(server.make_url("")).rstrip("/"), platform)
    finally:
        await server.close()
        await platform.stop()
