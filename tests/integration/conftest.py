"""Fixtures for tests against the real Asterisk test instance.

The instance is started once per session. A platform per test connects to it
over ARI and AMI with its own database; reconciling on connect removes what
earlier tests left behind. When a test fails, the Asterisk log lines written
during that test are attached to its report.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import urllib.request
import warnings
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.asterisk_host import AsteriskCredentials, AsteriskError, down, log_path, up
from app.config import Settings
from tests.support.api import Api, Reply, make_settings, running
from tests.support.asterisk import asterisk_test_instance
from tests.support.phone import Phone

_log_offset = pytest.StashKey[int]()
_rtp_ports = itertools.count(31000, 40)


@pytest.fixture(scope="session")
def asterisk_instance_up() -> AsteriskCredentials:
    return _restart_if_wedged()


@pytest.fixture
def asterisk(asterisk_instance_up: AsteriskCredentials) -> AsteriskCredentials:
    """The test Asterisk, restarted first if its ARI stopped answering.

    Asterisk 22's HTTP server has been seen to stop answering after a control
    plane disconnected while a refused dial-in was being torn down (about one
    full run in ten); every later test would then fail on setup. A restart
    here keeps one wedge from failing the whole suite, and says so.
    """
    if _ari_answers(asterisk_instance_up):
        return asterisk_instance_up
    return _restart_if_wedged()


def _restart_if_wedged() -> AsteriskCredentials:
    instance = asterisk_test_instance()
    try:
        return up(instance)
    except AsteriskError:
        warnings.warn(
            "test Asterisk's ARI stopped answering; restarting it", stacklevel=1
        )
        down(instance)
        return up(instance)


def _ari_answers(creds: AsteriskCredentials) -> bool:
    token = base64.b64encode(
        f"{creds.ari_username}:{creds.ari_password}".encode()
    ).decode()
    request = urllib.request.Request(
        f"{creds.ari_url}/ari/asterisk/info",
        headers={"Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def live_settings(data_dir: Path, creds: AsteriskCredentials) -> Settings:
    return dataclasses.replace(
        make_settings(data_dir),
        ari_url=creds.ari_url,
        ari_username=creds.ari_username,
        ari_password=creds.ari_password,
        ami_port=creds.ami_port,
        ami_username=creds.ami_username,
        ami_password=creds.ami_password,
        sip_host=creds.sip_host,
        sip_port=creds.sip_port,
        ring_timeout=15,
    )


@pytest.fixture
def settings(tmp_path: Path, asterisk: AsteriskCredentials) -> Settings:
    return live_settings(tmp_path, asterisk)


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Api]:
    async with running(settings) as api:
        yield api


@pytest.fixture
def phones(asterisk: AsteriskCredentials) -> Iterator[Callable[..., Phone]]:
    """Makes registered phones; every one is stopped after the test."""
    made: list[Phone] = []

    def make(username: str, password: str, **options: Any) -> Phone:
        low = next(_rtp_ports)
        phone = Phone(
            username,
            password,
            asterisk.sip_host,
            asterisk.sip_port,
            rtp_low=low,
            rtp_high=low + 39,
            **options,
        )
        made.append(phone)
        return phone

    yield make
    for phone in made:
        phone.stop()


async def eventually(
    check: Callable[[], Any], within: float = 10.0, interval: float = 0.1
) -> Any:
    """Polls an (async) check until it returns something truthy, or fails."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "setup" and not report.failed:
        return
    if not report.failed:
        return
    path = log_path(asterisk_test_instance())
    offset = item.stash.get(_log_offset, 0)
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace")
    except OSError as exc:
        lines = f"(no Asterisk log: {exc})"
    report.sections.append(("Asterisk log during this test", lines[-20000:]))


@pytest.fixture(autouse=True)
def _remember_log_offset(request: pytest.FixtureRequest) -> None:
    path = log_path(asterisk_test_instance())
    request.node.stash[_log_offset] = path.stat().st_size if path.exists() else 0


@dataclasses.dataclass
class Trader:
    user_id: str
    token: str
    credential: dict[str, Any]
    phone: Phone


@dataclasses.dataclass
class Desk:
    """A tenant with registered traders, as a trading desk would have."""

    api: Api
    tenant_id: str
    admin: str
    traders: list[Trader]

    async def conference(self, name: str = "Rates desk") -> dict[str, Any]:
        reply = await self.api.call("POST", "/conferences", self.admin, {"name": name})
        assert reply.status == 201, reply.body
        return dict(reply.body)

    async def ask(
        self, conference_id: str, action: str, user_id: str, admin: str | None = None
    ) -> Reply:
        """POST /conferences/{id}/<action> for a user, as the desk's admin."""
        return await self.api.call(
            "POST",
            f"/conferences/{conference_id}/{action}",
            admin or self.admin,
            {"user_id": user_id},
        )

    async def join(self, conference_id: str, trader: Trader) -> dict[str, Any]:
        reply = await self.ask(conference_id, "join", trader.user_id)
        assert reply.status == 202, reply.body
        await asyncio.to_thread(trader.phone.wait_for_call, 10)
        await self.wait_member_state(conference_id, reply.body["member_id"], "joined")
        return dict(reply.body)

    async def members(self, conference_id: str) -> list[dict[str, Any]]:
        reply = await self.api.call(
            "GET", f"/conferences/{conference_id}/members", self.admin
        )
        assert reply.status == 200, reply.body
        return list(reply.body["items"])

    async def wait_member_state(
        self, conference_id: str, member_id: str, state: str | None
    ) -> None:
        """Waits until the member has `state` (None: no longer listed)."""

        async def reached() -> bool:
            found = {m["id"]: m["state"] for m in await self.members(conference_id)}
            return found.get(member_id) == state

        await eventually(reached, within=15)


async def make_desk(
    api: Api, phones: Callable[..., Phone], name: str, count: int = 2
) -> Desk:
    tenant_id, admin = await api.onboard(name)
    traders = []
    for index in range(count):
        user_id, token = await api.user(admin, f"{name}-trader-{index}")
        reply = await api.call("POST", "/sip/credentials", admin, {"user_id": user_id})
        assert reply.status == 201, reply.body
        phone = phones(reply.body["username"], reply.body["password"])
        await asyncio.to_thread(phone.start)
        traders.append(Trader(user_id, token, dict(reply.body), phone))
    desk = Desk(api, tenant_id, admin, traders)

    async def all_registered() -> bool:
        reply = await api.call("GET", "/sip/registrations", admin)
        registered = {r["credential_id"] for r in reply.body["items"]}
        return registered >= {t.credential["id"] for t in traders}

    await eventually(all_registered, within=15)
    return desk


@pytest.fixture
async def desk(live: Api, phones: Callable[..., Phone]) -> Desk:
    return await make_desk(live, phones, "acme")
