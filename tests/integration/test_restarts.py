"""Asterisk restarting under the platform, and the platform under Asterisk."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from app.asterisk_host import down, status, up
from app.config import Settings
from app.platform import Platform, StartupError
from tests.integration.conftest import Desk, Trader, eventually, make_desk
from tests.integration.test_conferences import hears
from tests.support.api import Api, running
from tests.support.asterisk import asterisk_test_instance
from tests.support.phone import Phone, PhoneError

pytestmark = pytest.mark.asterisk


async def _mixer_connected(api: Api, connected: bool) -> bool:
    reply = await api.call("GET", "/health/ready")
    return all(m["connected"] is connected for m in reply.body["mixers"])


async def _stop_asterisk(api: Api) -> None:
    await asyncio.to_thread(down, asterisk_test_instance())
    await eventually(lambda: _mixer_connected(api, False), within=15)


async def _crash_asterisk(api: Api) -> None:
    """Kill Asterisk outright: no hang-up events reach the platform."""
    pid = status(asterisk_test_instance())["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: _mixer_connected(api, False), within=15)
    await eventually(lambda: _port_closed(asterisk_test_instance().http_port))


def _port_closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_asterisk_crashing_mid_call_is_503_then_reconciled(
    desk: Desk,
) -> None:
    alice, bob = desk.traders
    room = await desk.conference()
    await desk.join(room["id"], alice)
    await desk.join(room["id"], bob)
    carol_id, _ = await desk.api.user(desk.admin, "acme-carol")

    await _crash_asterisk(desk.api)
    join = await desk.ask(room["id"], "join", carol_id)
    leave = await desk.ask(room["id"], "leave", alice.user_id)
    ready = await desk.api.call("GET", "/health/ready")
    await asyncio.to_thread(up, asterisk_test_instance())
    await eventually(lambda: _mixer_connected(desk.api, True), within=20)

    assert (join.status, join.body["error"]) == (503, "mixer_unavailable")
    assert (leave.status, leave.body["error"]) == (503, "mixer_unavailable")
    assert ready.status == 503
    await eventually(lambda: _no_members(desk, room["id"]), within=15)
    events = await desk.api.call("GET", f"/conferences/{room['id']}/events", desk.admin)
    reasons = [e["data"].get("reason") for e in events.body["items"]]
    assert reasons.count("channel_lost") == 2


async def _no_members(desk: Desk, conference_id: str) -> bool:
    return await desk.members(conference_id) == []


async def test_asterisk_stopping_cleanly_ends_the_calls(desk: Desk) -> None:
    alice, bob = desk.traders
    room = await desk.conference()
    await desk.join(room["id"], alice)
    await desk.join(room["id"], bob)

    await _stop_asterisk(desk.api)
    await eventually(lambda: _no_members(desk, room["id"]), within=15)
    await asyncio.to_thread(up, asterisk_test_instance())
    await eventually(lambda: _mixer_connected(desk.api, True), within=20)

    events = await desk.api.call("GET", f"/conferences/{room['id']}/events", desk.admin)
    left = [
        e["data"]["user_id"] for e in events.body["items"] if e["type"] == "member_left"
    ]
    assert sorted(left) == sorted([alice.user_id, bob.user_id])


async def test_after_asterisk_restarts_traders_meet_again(desk: Desk) -> None:
    alice, bob = desk.traders
    room = await desk.conference()
    await desk.join(room["id"], alice)

    await _stop_asterisk(desk.api)
    await asyncio.to_thread(up, asterisk_test_instance())
    await eventually(lambda: _mixer_connected(desk.api, True), within=20)
    await eventually(lambda: _no_members(desk, room["id"]), within=15)
    await asyncio.to_thread(alice.phone.wait_for_hangup, 10)

    await _reregister(desk, [alice, bob])
    await desk.join(room["id"], alice)
    await desk.join(room["id"], bob)
    alice.phone.play_tone(1000)
    await eventually(lambda: hears(bob, 1000), within=10)


async def _reregister(desk: Desk, traders: list[Trader]) -> None:
    for trader in traders:
        await asyncio.to_thread(trader.phone.register_again)

    async def registered() -> bool:
        reply = await desk.api.call("GET", "/sip/registrations", desk.admin)
        ids = {r["credential_id"] for r in reply.body["items"]}
        return ids >= {t.credential["id"] for t in traders}

    await eventually(registered, within=15)


async def test_credentials_changed_while_asterisk_was_down_are_applied(
    desk: Desk, phones: Callable[..., Phone]
) -> None:
    _, bob = desk.traders
    await _stop_asterisk(desk.api)
    removed = await desk.api.call(
        "DELETE", f"/sip/credentials/{bob.credential['id']}", desk.admin
    )
    issued = await desk.api.call(
        "POST", "/sip/credentials", desk.admin, {"user_id": bob.user_id}
    )
    await asyncio.to_thread(up, asterisk_test_instance())
    await eventually(lambda: _mixer_connected(desk.api, True), within=20)

    assert removed.status == 204
    assert issued.status == 201
    newcomer = phones(issued.body["username"], issued.body["password"])
    await asyncio.to_thread(newcomer.start)
    with pytest.raises(PhoneError):
        await asyncio.to_thread(bob.phone.register_again)
    reply = await desk.api.call("GET", "/sip/registrations", desk.admin)
    names = {r["username"] for r in reply.body["items"]}
    assert issued.body["username"] in names
    assert bob.credential["username"] not in names


async def test_platform_restart_keeps_calls_and_state(
    settings: Settings, phones: Callable[..., Phone]
) -> None:
    async with running(settings) as api:
        desk = await make_desk(api, phones, "acme")
        alice, bob = desk.traders
        room = await desk.conference()
        await desk.join(room["id"], alice)
        await desk.join(room["id"], bob)
        token = desk.admin

    async with running(settings) as api:
        desk.api = api
        members = await desk.members(room["id"])
        alice.phone.play_tone(1000)
        await eventually(lambda: hears(bob, 1000), within=10)
        credentials = await api.call("GET", "/sip/credentials", token)
        left = await desk.ask(room["id"], "leave", alice.user_id, token)

    assert {m["user_id"] for m in members} == {alice.user_id, bob.user_id}
    assert {m["state"] for m in members} == {"joined"}
    assert len(credentials.body["items"]) == 2
    assert left.status == 200


async def test_a_second_control_plane_cannot_take_the_asterisk(
    desk: Desk, settings: Settings, tmp_path: Path
) -> None:
    alice, _ = desk.traders
    other = Platform(
        dataclasses.replace(
            settings,
            data_dir=tmp_path / "other",
            database_url=f"sqlite+aiosqlite:///{tmp_path}/other.db",
        )
    )

    with pytest.raises(StartupError):
        try:
            await other.start()
        finally:
            await other.stop()

    room = await desk.conference()
    await desk.join(room["id"], alice)
    registrations = await desk.api.call("GET", "/sip/registrations", desk.admin)
    assert len(registrations.body["items"]) == 2


async def test_a_second_control_plane_stays_away_when_asterisk_returns(
    live: Api, settings: Settings, tmp_path: Path
) -> None:
    await _stop_asterisk(live)
    other = Platform(
        dataclasses.replace(
            settings,
            data_dir=tmp_path / "other",
            database_url=f"sqlite+aiosqlite:///{tmp_path}/other.db",
        )
    )
    other.connect_wait = 0.0
    await other.start()  # Asterisk is down: nothing to check against yet
    try:
        await asyncio.to_thread(up, asterisk_test_instance())
        links = [*live.platform.mixers.links(), *other.mixers.links()]

        await eventually(lambda: any(link.available for link in links), within=20)
        # For several reconnect rounds, exactly one of the two holds the app.
        deadline = asyncio.get_running_loop().time() + 5
        while asyncio.get_running_loop().time() < deadline:
            assert sum(link.available for link in links) == 1
            await asyncio.sleep(0.2)
    finally:
        await other.stop()
    await eventually(lambda: _mixer_connected(live, True), within=20)
