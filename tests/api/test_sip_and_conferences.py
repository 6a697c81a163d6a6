"""SIP credentials and conferences through the API while no mixer answers.

The platform here points at an Asterisk that is not running, which is also
how it behaves when Asterisk is down: state changes that need no mixer work
and are kept; those that do are refused with 503 mixer_unavailable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.api import Api, make_settings, running


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Api]:
    settings = dataclasses.replace(
        make_settings(tmp_path),
        ari_url=f"http://127.0.0.1:{_closed_port()}",
        ari_username="somvad",
        ari_password="unused",
        ami_port=_closed_port(),
    )
    async with running(settings, wait_for_mixers=False) as api:
        yield api


async def test_a_credential_shows_its_password_once(offline: Api) -> None:
    _, admin = await offline.onboard("acme")
    user_id, _ = await offline.user(admin, "trader-one")

    created = await offline.call(
        "POST", "/sip/credentials", admin, {"user_id": user_id}
    )
    listed = await offline.call("GET", "/sip/credentials", admin)
    rotated = await offline.call(
        "POST", f"/sip/credentials/{created.body['id']}/rotate", admin
    )

    assert created.status == 201
    assert set(created.body) >= {
        "id",
        "user_id",
        "username",
        "password",
        "domain",
        "registrar",
    }
    assert created.body["registrar"].startswith("sip:")
    assert [c["id"] for c in listed.body["items"]] == [created.body["id"]]
    assert "password" not in listed.body["items"][0]
    assert rotated.status == 200
    assert rotated.body["password"] != created.body["password"]


async def test_credentials_are_walled_by_tenant_and_by_owner(offline: Api) -> None:
    _, acme = await offline.onboard("acme")
    _, globex = await offline.onboard("globex")
    alice_id, alice = await offline.user(acme, "alice")
    bob_id, bob = await offline.user(acme, "bob")
    mine = await offline.call("POST", "/sip/credentials", alice, {"user_id": alice_id})
    for_bob = await offline.call("POST", "/sip/credentials", alice, {"user_id": bob_id})
    theirs = (
        await offline.call("POST", "/sip/credentials", acme, {"user_id": bob_id})
    ).body["id"]

    assert mine.status == 201
    assert for_bob.status == 403
    bob_sees = await offline.call("GET", "/sip/credentials", bob)
    assert [c["id"] for c in bob_sees.body["items"]] == [theirs]
    for path in (f"/sip/credentials/{theirs}/rotate",):
        assert (await offline.call("POST", path, globex)).status == 404
        assert (await offline.call("POST", path, alice)).status == 404
    assert (
        await offline.call("DELETE", f"/sip/credentials/{theirs}", globex)
    ).status == 404
    assert (await offline.call("GET", "/sip/credentials", globex)).body["items"] == []
    unknown_user = await offline.call(
        "POST", "/sip/credentials", acme, {"user_id": "usr_nobody"}
    )
    assert unknown_user.status == 404


async def test_a_deleted_credential_is_gone(offline: Api) -> None:
    _, admin = await offline.onboard("acme")
    user_id, _ = await offline.user(admin, "trader-one")
    created = await offline.call(
        "POST", "/sip/credentials", admin, {"user_id": user_id}
    )

    deleted = await offline.call(
        "DELETE", f"/sip/credentials/{created.body['id']}", admin
    )
    again = await offline.call(
        "DELETE", f"/sip/credentials/{created.body['id']}", admin
    )

    assert deleted.status == 204
    assert again.status == 404
    assert (await offline.call("GET", "/sip/credentials", admin)).body["items"] == []


async def test_conferences_are_kept_while_the_mixer_is_away(offline: Api) -> None:
    _, admin = await offline.onboard("acme")
    user_id, _ = await offline.user(admin, "trader-one")

    created = await offline.call("POST", "/conferences", admin, {"name": "Rates"})
    room = created.body["id"]
    join = await offline.call(
        "POST", f"/conferences/{room}/join", admin, {"user_id": user_id}
    )
    locked = await offline.call("POST", f"/conferences/{room}/lock", admin)
    kept = await offline.call("GET", f"/conferences/{room}", admin)

    assert created.status == 201
    assert set(created.body) >= {"id", "name", "locked", "mixer_id", "dial_in"}
    assert (join.status, join.body["error"]) == (503, "mixer_unavailable")
    assert locked.body["locked"] is True
    assert kept.body["locked"] is True
    assert (await offline.call("GET", f"/conferences/{room}/members", admin)).body[
        "items"
    ] == []
    history = await offline.call("GET", f"/conferences/{room}/events", admin)
    assert [e["type"] for e in history.body["items"]] == ["created", "locked"]


async def test_conferences_of_another_tenant_are_404(offline: Api) -> None:
    _, acme = await offline.onboard("acme")
    _, globex = await offline.onboard("globex")
    room = (await offline.call("POST", "/conferences", acme, {"name": "Rates"})).body[
        "id"
    ]

    for method, path in (
        ("GET", f"/conferences/{room}"),
        ("DELETE", f"/conferences/{room}"),
        ("POST", f"/conferences/{room}/join"),
        ("POST", f"/conferences/{room}/lock"),
        ("GET", f"/conferences/{room}/members"),
        ("GET", f"/conferences/{room}/events"),
        ("GET", "/conferences/conf_does_not_exist"),
    ):
        reply = await offline.call(method, path, globex)
        assert reply.status == 404, (method, path)
        assert reply.body["error"] == "not_found"
    assert (await offline.call("GET", "/conferences", globex)).body["items"] == []
    assert (await offline.call("GET", f"/conferences/{room}", acme)).status == 200


async def test_viewers_cannot_create_and_traders_cannot_pull_others_in(
    offline: Api,
) -> None:
    _, admin = await offline.onboard("acme")
    _, viewer = await offline.user(admin, "watcher", role="viewer")
    _, trader = await offline.user(admin, "trader-one")
    room = (await offline.call("POST", "/conferences", admin, {"name": "Rates"})).body[
        "id"
    ]
    admin_id = (await offline.call("GET", "/auth/me", admin)).body["user_id"]

    create = await offline.call("POST", "/conferences", viewer, {"name": "x"})
    pull = await offline.call(
        "POST", f"/conferences/{room}/join", trader, {"user_id": admin_id}
    )
    lock = await offline.call("POST", f"/conferences/{room}/lock", trader)

    assert create.status == 403
    assert pull.status == 403
    assert lock.status == 403


async def test_readiness_reports_the_missing_mixer(offline: Api) -> None:
    reply = await offline.call("GET", "/health/ready")

    assert reply.status == 503
    assert reply.body["mixers"] == [{"id": "mixer-1", "connected": False}]


async def test_a_user_holds_a_bounded_number_of_credentials(offline: Api) -> None:
    _, admin = await offline.onboard("acme")
    user_id, _ = await offline.user(admin, "trader-one")

    replies = [
        await offline.call("POST", "/sip/credentials", admin, {"user_id": user_id})
        for _ in range(11)
    ]

    assert [r.status for r in replies[:10]] == [201] * 10
    assert (replies[10].status, replies[10].body["error"]) == (409, "credential_limit")


async def test_parallel_requests_cannot_pass_the_credential_cap(offline: Api) -> None:
    _, admin = await offline.onboard("acme")
    user_id, _ = await offline.user(admin, "trader-one")

    replies = await asyncio.gather(
        *(
            offline.call("POST", "/sip/credentials", admin, {"user_id": user_id})
            for _ in range(25)
        )
    )

    statuses = [r.status for r in replies]
    assert statuses.count(201) == 10
    assert statuses.count(409) == 15
