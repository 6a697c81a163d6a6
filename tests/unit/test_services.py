"""Pure rules of the services: placement, ids, cursors, locks, settings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from app.config import ConfigError, Settings
from app.errors import InvalidRequest
from app.ids import new_id
from app.locks import KeyedLocks
from app.models import Mixer
from app.pagination import decode_cursor, encode_cursor
from app.security import role_at_least, sip_ha1
from app.services.conferences import endpoint_of
from app.services.mixers import place


def _mixer(mixer_id: str, age: int, draining: bool = False) -> Mixer:
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=age)
    return Mixer(
        id=mixer_id, name=mixer_id, ari_url="", draining=draining, created_at=created
    )


def test_placement_picks_the_least_loaded_mixer_that_is_not_draining() -> None:
    mixers = [_mixer("a", 0), _mixer("b", 1), _mixer("c", 2, draining=True)]

    least_loaded = place(mixers, {"a": 3, "b": 1, "c": 0})
    oldest = place(mixers, {})

    assert least_loaded is not None and least_loaded.id == "b"
    assert oldest is not None and oldest.id == "a"
    assert place([_mixer("c", 0, draining=True)], {}) is None


def test_ids_are_prefixed_unique_and_time_ordered() -> None:
    ids = [new_id("conf") for _ in range(200)]

    assert all(i.startswith("conf_") for i in ids)
    assert len(set(ids)) == 200
    assert new_id("conf") > ids[0]


def test_cursors_round_trip_and_garbage_is_invalid_request() -> None:
    assert decode_cursor(encode_cursor("conf_abc")) == "conf_abc"
    for bad in ("%%%", "", "a"):
        with pytest.raises(InvalidRequest):
            decode_cursor(bad)


def test_endpoint_is_read_from_the_channel_name() -> None:
    assert endpoint_of({"name": "PJSIP/sip0a1b2c-0000002a"}) == "sip0a1b2c"
    assert endpoint_of({"name": "Local/x@y-0001;1"}) is None
    assert endpoint_of({}) is None


def test_roles_are_ordered() -> None:
    assert role_at_least("tenant_admin", "desk_head")
    assert not role_at_least("trader", "desk_head")
    assert not role_at_least("unknown", "viewer")


def test_sip_ha1_matches_rfc_2617() -> None:
    # HA1 = MD5("user:realm:password").
    assert sip_ha1("alice", "somvad", "secret") == "c01e9d5f3caf97f59d97c14e6df9f066"


async def test_keyed_locks_serialise_one_key_and_forget_idle_keys() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def work(key: str, name: str, delay: float) -> None:
        async with locks.hold(key):
            order.append(f"{name}+")
            await asyncio.sleep(delay)
            order.append(f"{name}-")

    await asyncio.gather(work("k", "a", 0.05), work("k", "b", 0), work("j", "c", 0))

    assert order.index("a-") < order.index("b+")
    assert len(locks) == 0


def test_default_admin_password_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError):
        Settings(host="0.0.0.0").check()
    Settings(host="127.0.0.1").check()
    Settings(host="0.0.0.0", admin_password="a-real-password").check()
