"""Two traders in one conference on the real Asterisk, heard through real RTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.integration.conftest import Desk, Trader, eventually, make_desk
from tests.support.api import Api
from tests.support.phone import Phone, PhoneError

pytestmark = pytest.mark.asterisk

# Goertzel power share of the received audio at the tone's frequency. A tone
# that crosses the bridge scores near 1; silence or comfort noise near 0.
HEARD = 0.3
NOT_HEARD = 0.05


async def heard(listener: Trader, frequency: float, seconds: float = 1.0) -> float:
    return await asyncio.to_thread(listener.phone.heard, frequency, seconds)


async def hears(listener: Trader, frequency: float) -> bool:
    return await heard(listener, frequency, 0.5) > HEARD


async def does_not_hear(listener: Trader, frequency: float) -> bool:
    return await heard(listener, frequency, 0.5) < NOT_HEARD


async def test_two_traders_hear_each_other_until_one_leaves(desk: Desk) -> None:
    alice, bob = desk.traders
    room = await desk.conference()

    await desk.join(room["id"], alice)
    await desk.join(room["id"], bob)
    alice.phone.play_tone(1000)
    bob.phone.play_tone(600)

    await eventually(lambda: hears(bob, 1000), within=10)
    await eventually(lambda: hears(alice, 600), within=10)
    left = await desk.ask(room["id"], "leave", alice.user_id)
    assert left.status == 200, left.body
    assert left.body["state"] == "left"
    await asyncio.to_thread(alice.phone.wait_for_hangup, 10)
    # Audio already in flight drains within a few packets.
    await eventually(lambda: does_not_hear(bob, 1000), within=5)
    assert await heard(bob, 1000, 1.0) < NOT_HEARD
    assert [m["user_id"] for m in await desk.members(room["id"])] == [bob.user_id]


async def test_members_and_history_record_the_call(desk: Desk) -> None:
    alice, _ = desk.traders
    room = await desk.conference()

    joined = await desk.join(room["id"], alice)

    members = await desk.members(room["id"])
    assert members == [
        {
            "id": joined["member_id"],
            "user_id": alice.user_id,
            "state": "joined",
            "muted": False,
            "speaking": False,
            "source": "api",
            "joined_at": members[0]["joined_at"],
            "reason": None,
        }
    ]
    events = await desk.api.call("GET", f"/conferences/{room['id']}/events", desk.admin)
    kinds = [e["type"] for e in events.body["items"]]
    assert kinds == ["created", "member_calling", "member_joined"]


async def test_a_locked_conference_refuses_a_third_join(desk: Desk) -> None:
    alice, bob = desk.traders
    carol_id, _ = await desk.api.user(desk.admin, "acme-carol")
    room = await desk.conference()
    await desk.join(room["id"], alice)
    await desk.join(room["id"], bob)

    locked = await desk.api.call("POST", f"/conferences/{room['id']}/lock", desk.admin)
    third = await desk.ask(room["id"], "join", carol_id)

    assert locked.body["locked"] is True
    assert third.status == 409
    assert third.body["error"] == "conference_locked"
    assert len(await desk.members(room["id"])) == 2
    unlocked = await desk.api.call(
        "POST", f"/conferences/{room['id']}/unlock", desk.admin
    )
    assert unlocked.body["locked"] is False


async def test_joining_a_user_without_a_registered_phone_is_409(desk: Desk) -> None:
    carol_id, _ = await desk.api.user(desk.admin, "acme-carol")
    room = await desk.conference()

    reply = await desk.ask(room["id"], "join", carol_id)

    assert reply.status == 409
    assert reply.body["error"] == "no_registered_device"
    assert await desk.members(room["id"]) == []


async def test_joining_twice_is_409_already_member(desk: Desk) -> None:
    alice, _ = desk.traders
    room = await desk.conference()
    await desk.join(room["id"], alice)

    again = await desk.ask(room["id"], "join", alice.user_id)

    assert again.status == 409
    assert again.body["error"] == "already_member"


async def test_deleting_a_conference_with_members_is_409(desk: Desk) -> None:
    alice, _ = desk.traders
    room = await desk.conference()
    joined = await desk.join(room["id"], alice)

    refused = await desk.api.call("DELETE", f"/conferences/{room['id']}", desk.admin)
    kicked = await desk.api.call(
        "DELETE",
        f"/conferences/{room['id']}/members/{joined['member_id']}",
        desk.admin,
    )
    await asyncio.to_thread(alice.phone.wait_for_hangup, 10)
    deleted = await desk.api.call("DELETE", f"/conferences/{room['id']}", desk.admin)
    gone = await desk.api.call("GET", f"/conferences/{room['id']}", desk.admin)
    late_join = await desk.ask(room["id"], "join", alice.user_id)

    assert refused.status == 409
    assert refused.body["error"] == "conference_not_empty"
    assert kicked.status == 200
    assert kicked.body["reason"] == "kicked"
    assert deleted.status == 204
    assert gone.status == 404
    assert late_join.status == 404


async def test_a_muted_member_is_not_heard(desk: Desk) -> None:
    alice, bob = desk.traders
    room = await desk.conference()
    member = await desk.join(room["id"], alice)
    await desk.join(room["id"], bob)
    alice.phone.play_tone(1000)
    await eventually(lambda: hears(bob, 1000), within=10)

    muted = await desk.api.call(
        "PATCH",
        f"/conferences/{room['id']}/members/{member['member_id']}",
        desk.admin,
        {"muted": True},
    )
    await eventually(lambda: does_not_hear(bob, 1000), within=5)

    assert muted.body["muted"] is True
    assert await heard(bob, 1000, 1.0) < NOT_HEARD
    unmuted = await desk.api.call(
        "PATCH",
        f"/conferences/{room['id']}/members/{member['member_id']}",
        desk.admin,
        {"muted": False},
    )
    assert unmuted.body["muted"] is False
    await eventually(lambda: hears(bob, 1000), within=10)


async def test_dialling_the_conference_number_joins(desk: Desk) -> None:
    alice, bob = desk.traders
    room = await desk.conference()
    await desk.join(room["id"], alice)

    await asyncio.to_thread(bob.phone.dial, room["dial_in"])

    async def bob_joined() -> bool:
        return any(
            m["user_id"] == bob.user_id and m["state"] == "joined"
            for m in await desk.members(room["id"])
        )

    await eventually(bob_joined, within=10)
    bob.phone.play_tone(800)
    await eventually(lambda: hears(alice, 800), within=10)
    sources = {m["user_id"]: m["source"] for m in await desk.members(room["id"])}
    assert sources[bob.user_id] == "dial_in"


async def test_another_tenants_conference_cannot_be_joined_or_seen(
    live: Api, phones: Callable[..., Phone]
) -> None:
    acme = await make_desk(live, phones, "acme", count=1)
    globex = await make_desk(live, phones, "globex", count=1)
    room = await acme.conference()
    outsider = globex.traders[0]

    seen = await live.call("GET", f"/conferences/{room['id']}", globex.admin)
    join = await acme.ask(room["id"], "join", outsider.user_id, globex.admin)
    pulled = await acme.ask(room["id"], "join", outsider.user_id)
    listed = await live.call("GET", "/conferences", globex.admin)
    with pytest.raises(PhoneError):
        await asyncio.to_thread(outsider.phone.dial, room["dial_in"], 5)

    assert seen.status == 404
    assert join.status == 404
    assert pulled.status == 404
    assert listed.body["items"] == []
    assert await acme.members(room["id"]) == []


async def test_rotating_a_credential_unregisters_its_phone(desk: Desk) -> None:
    alice, _ = desk.traders

    rotated = await desk.api.call(
        "POST", f"/sip/credentials/{alice.credential['id']}/rotate", desk.admin
    )
    registrations = await desk.api.call("GET", "/sip/registrations", desk.admin)
    room = await desk.conference()
    join = await desk.ask(room["id"], "join", alice.user_id)

    assert rotated.status == 200
    names = {r["username"] for r in registrations.body["items"]}
    assert alice.credential["username"] not in names
    assert (join.status, join.body["error"]) == (409, "no_registered_device")
    with pytest.raises(PhoneError):
        await asyncio.to_thread(alice.phone.register_again)
