"""The real Asterisk that app.asterisk_host provisions for SOMVAD.

Runs the "test" instance (ports 8089, 5070, 20000-20999, 5039) and leaves it
running at the end, so later integration tests find it up.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from app import asterisk_host
from app.asterisk_host import (
    AsteriskCredentials,
    AsteriskError,
    AsteriskInstance,
    credentials,
    down,
    status,
    up,
)
from tests.support.asterisk import asterisk_test_instance, log_tail

pytestmark = pytest.mark.asterisk

# The first `up` on a fresh machine builds the Debian root (about a minute).
BUILD_TIMEOUT = 900


@pytest.fixture(scope="module")
def instance() -> AsteriskInstance:
    return asterisk_test_instance()


@pytest.fixture(scope="module")
def creds(instance: AsteriskInstance) -> AsteriskCredentials:
    return up(instance)


@pytest.fixture
def endpoint_id() -> Iterator[str]:
    yield f"hosttest-{secrets.token_hex(4)}"


def _auth_header(creds: AsteriskCredentials) -> dict[str, str]:
    token = f"{creds.ari_username}:{creds.ari_password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(token).decode()}


async def _ari(
    creds: AsteriskCredentials,
    method: str,
    path: str,
    body: dict[str, object] | None = None,
) -> tuple[int, object]:
    async with (
        aiohttp.ClientSession(headers=_auth_header(creds)) as session,
        session.request(method, f"{creds.ari_url}/ari{path}", json=body) as resp,
    ):
        data = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, data


def _fields(values: dict[str, str]) -> dict[str, object]:
    return {"fields": [{"attribute": k, "value": v} for k, v in values.items()]}


def _as_dict(data: object) -> dict[str, str]:
    assert isinstance(data, list), data
    return {item["attribute"]: item["value"] for item in data}


async def _push_endpoint(creds: AsteriskCredentials, name: str) -> None:
    pushes = [
        (
            "auth",
            {"auth_type": "userpass", "username": name, "password": "s3cret-pw"},
        ),
        ("aor", {"max_contacts": "1", "remove_existing": "yes"}),
        (
            "endpoint",
            {
                "transport": "transport-udp",
                "context": "somvad",
                "disallow": "all",
                "allow": "ulaw,alaw",
                "auth": name,
                "aors": name,
            },
        ),
    ]
    for object_type, values in pushes:
        path = f"/asterisk/config/dynamic/res_pjsip/{object_type}/{name}"
        code, data = await _ari(creds, "PUT", path, _fields(values))
        assert code == 200, (object_type, code, data)


@pytest.mark.timeout(BUILD_TIMEOUT)
async def test_up_returns_credentials_and_ari_reports_version_20_or_later(
    instance: AsteriskInstance, creds: AsteriskCredentials
) -> None:
    assert creds.ari_url == "http://127.0.0.1:8089"
    assert (creds.ami_port, creds.sip_port) == (5039, 5070)
    assert int(creds.version.split(".")[0]) >= 20, creds.version

    code, info = await _ari(creds, "GET", "/asterisk/info")

    assert code == 200, log_tail(instance)
    assert isinstance(info, dict)
    assert info["system"]["version"] == creds.version


def test_up_again_while_running_returns_same_credentials(
    instance: AsteriskInstance, creds: AsteriskCredentials
) -> None:
    pid = status(instance)["pid"]

    again = up(instance, log=lambda _line: None)

    assert again == creds
    assert status(instance)["pid"] == pid
    assert credentials(instance) == creds


async def test_pushed_endpoint_auth_and_aor_read_back(
    creds: AsteriskCredentials, endpoint_id: str
) -> None:
    await _push_endpoint(creds, endpoint_id)

    base = "/asterisk/config/dynamic/res_pjsip"
    _, endpoint = await _ari(creds, "GET", f"{base}/endpoint/{endpoint_id}")
    _, auth = await _ari(creds, "GET", f"{base}/auth/{endpoint_id}")
    _, aor = await _ari(creds, "GET", f"{base}/aor/{endpoint_id}")

    assert _as_dict(endpoint)["context"] == "somvad"
    assert _as_dict(endpoint)["aors"] == endpoint_id
    assert _as_dict(endpoint)["auth"] == endpoint_id
    assert _as_dict(endpoint)["allow"] == "(ulaw|alaw)"
    assert _as_dict(auth)["username"] == endpoint_id
    assert _as_dict(aor)["max_contacts"] == "1"
    code, _ = await _ari(creds, "GET", f"/endpoints/PJSIP/{endpoint_id}")
    assert code == 200
    await _delete_endpoint(creds, endpoint_id)


async def test_restart_keeps_ari_password_and_pushed_endpoint(
    instance: AsteriskInstance, creds: AsteriskCredentials, endpoint_id: str
) -> None:
    await _push_endpoint(creds, endpoint_id)

    down(instance, log=lambda _line: None)
    stopped = status(instance)
    again = up(instance, log=lambda _line: None)

    assert stopped["running"] is False and stopped["pid"] is None
    assert status(instance)["running"] is True
    assert again.ari_password == creds.ari_password
    assert again.ami_password == creds.ami_password
    path = f"/asterisk/config/dynamic/res_pjsip/endpoint/{endpoint_id}"
    code, endpoint = await _ari(again, "GET", path)
    assert code == 200, log_tail(instance)
    assert _as_dict(endpoint)["context"] == "somvad"
    await _delete_endpoint(again, endpoint_id)


def test_down_twice_is_harmless_and_up_leaves_instance_running(
    instance: AsteriskInstance,
) -> None:
    down(instance, log=lambda _line: None)
    down(instance, log=lambda _line: None)
    assert status(instance)["running"] is False

    up(instance, log=lambda _line: None)

    # Left running on purpose: later integration tests use this instance.
    assert status(instance)["running"] is True


def test_credentials_of_unprovisioned_instance_say_how_to_provision(
    tmp_path: Path,
) -> None:
    fresh = AsteriskInstance(name="never", cache_dir=tmp_path, state_dir=tmp_path)

    with pytest.raises(AsteriskError, match="somvad asterisk up --instance never"):
        credentials(fresh)


def test_missing_debootstrap_names_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asterisk_host.shutil, "which", lambda _name: None)
    asterisk_host._system_asterisk.cache_clear()
    fresh = AsteriskInstance(name="never", cache_dir=tmp_path, state_dir=tmp_path)

    try:
        with pytest.raises(AsteriskError, match="apt-get install debootstrap"):
            up(fresh, log=lambda _line: None)
    finally:
        monkeypatch.undo()
        asterisk_host._system_asterisk.cache_clear()


async def _delete_endpoint(creds: AsteriskCredentials, name: str) -> None:
    for object_type in ("endpoint", "aor", "auth"):
        path = f"/asterisk/config/dynamic/res_pjsip/{object_type}/{name}"
        code, data = await _ari(creds, "DELETE", path)
        assert code == 204, (object_type, code, data)
